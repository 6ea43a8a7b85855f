"""Numbers for people: byte sizes as the CLI, the report and the Prefect artifacts print them."""

from __future__ import annotations

import re


def size(n: float) -> str:
    """``6.4 KB``: a byte count in B, KB, MB or GB (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(i?b?)\s*", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(value: object, what: str = "size") -> int:
    """A byte count from ``1000``, ``"500MB"``, ``"1.5 GB"``, ``"2GiB"`` (powers of 1024, as
    :func:`size` prints them); a ConfigError naming ``what`` otherwise."""
    from .errors import ConfigError

    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if m is None or (m.group(3).lower() == "i"):
        raise ConfigError(f"{what} must be a byte count such as 500MB or 10GB, not {value!r}")
    return int(float(m.group(1)) * 1024 ** _POWERS[m.group(2).lower()])


__all__ = ["size", "parse_size"]
