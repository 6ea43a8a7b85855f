"""Numbers for people: byte sizes as the CLI, the report and the Prefect artifacts print them."""

from __future__ import annotations


def size(n: float) -> str:
    """``6.4 KB``: a byte count in B, KB, MB or GB (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


__all__ = ["size"]
