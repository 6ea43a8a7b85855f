"""Preprocessing stages: load the raw data, clean it, engineer features, split it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import stage

TARGET = "target"
RAW_DIR = Path(__file__).resolve().parent.parent / "data" / "raw"


def raw_path(source: str) -> Path:
    """The shipped CSV file of a named source."""
    path = RAW_DIR / f"{source}.csv"
    if not path.is_file():
        from pipeline.errors import ConfigError

        known = [*sorted(p.stem for p in RAW_DIR.glob("*.csv")), "synthetic"]
        restore = "" if len(known) > 1 else f" (restore the shipped CSV with `git checkout -- {RAW_DIR}`)"
        raise ConfigError(f"data file {path} not found: set data.source to one of {known}{restore}")
    return path


@stage
def load_csv(path: Path) -> pd.DataFrame:
    """Read a raw CSV file (keyed by the file's content, not its name)."""
    return pd.read_csv(path)


@stage
def make_synthetic(rows: int, features: int = 30, seed: int = 0) -> pd.DataFrame:
    """A synthetic binary classification table of any size."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=rows, n_features=features, n_informative=features // 3, random_state=seed, flip_y=0.02
    )
    df = pd.DataFrame(x, columns=[f"f{i:02d}" for i in range(features)])
    df[TARGET] = y
    return df


def fill_missing(df: pd.DataFrame) -> pd.DataFrame:
    """Median-impute numeric columns."""
    return df.fillna(df.median(numeric_only=True))


def clip_outliers(col: pd.Series, z: float) -> pd.Series:
    """Clip a column to mean +/- z standard deviations."""
    mean, std = col.mean(), col.std()
    return col.clip(mean - z * std, mean + z * std)


def feature_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c != TARGET]


@stage
def clean(df: pd.DataFrame, clip_z: float = 4.0) -> pd.DataFrame:
    """Drop duplicate rows, impute missing values, clip outliers."""
    out = fill_missing(df.drop_duplicates().reset_index(drop=True))
    cols = feature_columns(out)
    out[cols] = out[cols].apply(clip_outliers, z=clip_z)
    return out


@stage
def engineer(df: pd.DataFrame) -> pd.DataFrame:
    """Add log-scaled copies of the skewed features and pairwise ratios of the first few."""
    out = df.copy()
    cols = feature_columns(df)
    skewed = [c for c in cols if df[c].min() >= 0 and df[c].skew() > 1.0]
    for c in skewed:
        out[f"log_{c}"] = np.log1p(df[c])
    for a, b in zip(cols[:4], cols[1:5]):
        out[f"{a}_per_{b}"] = df[a] / (df[b].abs() + 1e-9)
    return out


@stage
def split(
    df: pd.DataFrame, test_size: float = 0.2, val_size: float = 0.2, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Stratified train / validation / test split."""
    from sklearn.model_selection import train_test_split

    rest, test = train_test_split(df, test_size=test_size, random_state=seed, stratify=df[TARGET])
    train, val = train_test_split(rest, test_size=val_size / (1 - test_size), random_state=seed, stratify=rest[TARGET])
    return train.reset_index(drop=True), val.reset_index(drop=True), test.reset_index(drop=True)
