"""frames="small": frames of plain numbers as Parquet (byte-stream-split + zstd), exact round trips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import Store, fingerprint


def _numeric_frames() -> list[pd.DataFrame]:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(1000)
    x[::7] = np.nan
    x[3] = -np.nan  # the sign bit of a NaN computed as 0/0
    plain = pd.DataFrame({"x": x, "i8": np.arange(1000, dtype=np.int8), "u": np.arange(1000, dtype=np.uint32),
                          "f32": x.astype(np.float32), "b": x > 0})  # fmt: skip
    return [
        plain,
        plain.set_index("u"),
        plain.iloc[::3],
        plain.set_index(["i8", "u"]),
        pd.DataFrame(rng.standard_normal((50, 3)), columns=[10, 20, 30]),
    ]


@pytest.mark.parametrize("i", range(5))
def test_small_frames_go_to_parquet_and_round_trip_exactly(tmp_path, i):
    df = _numeric_frames()[i]
    small, fast = Store(tmp_path / "s", frames="small"), Store(tmp_path / "s")
    leaf = small.save(df)
    assert leaf.codec == "parquet-pandas"
    assert fingerprint(small.load(leaf)) == fingerprint(df) == leaf.fingerprint
    assert fingerprint(fast.load(leaf)) == fingerprint(df)  # the codec is the object's: any store reads it
    other = fast.save(df)
    assert other.codec == "arrow-pandas" and fingerprint(small.load(other)) == fingerprint(df)


def test_frames_setting_is_checked():
    from pipeline.errors import StoreError

    with pytest.raises(StoreError, match="frames='tiny'"):
        Store("memory://frames-check", frames="tiny")
