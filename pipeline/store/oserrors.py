"""An OSError on a store path -> one StoreError line that names the path and says what to do.

``describe_oserror`` makes the error; ``with described(rel, url, verb):`` raises it for any
OSError of its block, so a backend method states only what is special about it (its verb,
what a missing path does, what to undo).
"""

from __future__ import annotations

import errno
from typing import Any, Callable

from ..errors import StoreError, StoreUnreachable

__all__ = ["UNREACHABLE_HINT", "describe_oserror", "described"]

UNREACHABLE_HINT = "start its server, or check its endpoint (AWS_ENDPOINT_URL or storage option endpoint_url)"


def describe_oserror(e: OSError, what: str, url: str, verb: str = "write") -> StoreError:
    """Turn an OSError on a store path into one line that names it and says what to do."""
    if e.errno == errno.ENOSPC:
        hint = "free disk space on that volume or point --store / PIPELINE_STORE elsewhere"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "choose a writable store (--store / PIPELINE_STORE) or fix its permissions"
    elif e.errno in (errno.ENOTDIR, errno.EISDIR):
        hint = f"something not made by the store is in the way: move it out of {url}"
    elif e.errno == errno.ENAMETOOLONG:
        hint = "choose a store location with a shorter path"
    elif isinstance(e, ConnectionError) or e.errno in (errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EHOSTUNREACH):
        return StoreUnreachable(f"cannot {verb} {what} in store {url}: {e.strerror or e} ({UNREACHABLE_HINT})")
    else:
        hint = "check the store location"
    return StoreError(f"cannot {verb} {what} in store {url}: {e.strerror or e} ({hint})")


class described:  # (a context manager, named like contextlib.suppress)
    """``with described(rel, url, verb):``: an OSError the block raises is raised as the
    StoreError ``describe_oserror`` makes of it (from the OSError).

    ``missing`` says what a FileNotFoundError does instead: ``"raise"``: it goes through as
    it is (the Backend protocol's missing path); ``"ignore"``: it ends the block, as under
    ``contextlib.suppress``; ``"describe"``: the same as any other OSError. ``undo`` is
    called before the StoreError is raised (a temp file removed, say)."""

    __slots__ = ("what", "url", "verb", "missing", "undo")

    def __init__(
        self,
        what: str,
        url: str,
        verb: str = "write",
        *,
        missing: str = "describe",
        undo: Callable[[], Any] | None = None,
    ) -> None:
        self.what, self.url, self.verb, self.missing, self.undo = what, url, verb, missing, undo

    def __enter__(self) -> None:
        return None

    def __exit__(self, tp: Any, e: BaseException | None, tb: Any) -> bool:
        if not isinstance(e, OSError):
            return False
        if self.missing != "describe" and isinstance(e, FileNotFoundError):
            return self.missing == "ignore"
        if self.undo is not None:
            self.undo()
        raise describe_oserror(e, self.what, self.url, self.verb) from e
