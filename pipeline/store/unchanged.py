"""Delete a manifest only if it still is the commit that was read and checked.

On an object store a delete is not a rename: between gc's check of what a manifest path
holds and its delete, a writer may PUT a later commit of the same key, and a plain DELETE
(or the delete half of a copy + delete) would take that commit with it. Where the store
deletes conditionally (``If-Match`` on DeleteObject: AWS S3, SeaweedFS; the backend probes
the server once), the manifest is read with the ETag of that very version and the delete
names it: a later commit is another version and stays. Elsewhere (a local directory, an
S3 server that ignores the header) ``Held.tag`` is None and the caller keeps its own
protocol (``retention._drop`` moves the manifest aside, one rename on local disk); on an
object store without conditional deletes that move is a copy + delete, and the writer does
its half (``lost_to_a_drop``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import layout

if TYPE_CHECKING:
    from .backend import Backend
    from .manifest import Manifest
    from .store import Store


@dataclass(frozen=True)
class Held:
    """What a manifest path held when it was read: the manifest, and the version tag a
    conditional delete of it names (None: the store can't delete conditionally)."""

    manifest: Manifest
    tag: str | None = None


def read(store: Store, rel: str) -> Held:
    """The manifest at ``rel`` (checked as ``Store._parse_manifest`` checks it) and its version
    tag; FileNotFoundError when there is none, ValueError (TypeError, KeyError) when damaged."""
    read_tagged = getattr(store._backend, "read_tagged", None)
    got = read_tagged(rel) if read_tagged is not None else None
    if got is None:
        return Held(store._parse_manifest(rel))
    return Held(store._check_manifest(rel, got.data), got.etag or None)


def delete(store: Store, rel: str, held: Held) -> bool:
    """Delete ``rel`` if it still holds ``held`` (the version it was read as, when ``held.tag``
    names one; else unconditionally, for a caller whose own protocol made it safe). True when
    deleted."""
    if held.tag is None:
        store._backend.delete(rel)
        return True
    return bool(store._backend.delete_tagged(rel, held.tag))  # type: ignore[attr-defined]


SETTLE_SECONDS = 30.0
"""How long a writer waits at most for a gc to settle a manifest it moved aside (``lost_to_a_drop``)."""
STALE_SECONDS = 600.0
"""An aside older than this is a killed gc's (the next gc settles it): a writer does not wait for it."""
_POLL_SECONDS = 0.02


def lost_to_a_drop(backend: Backend, rel: str) -> bool:
    """The writer's half where a store can't delete conditionally, asked right after a
    manifest was written to ``rel``: True when a gc may have deleted it and it must be written
    again (only if ``rel`` is still empty: ``create``, so a later commit there stays).

    A gc dropping an older commit of that key by copy + delete (``retention._move_and_settle``)
    deletes a PUT that lands between its copy and its delete, and its aside copy is then the
    dropped one. Such a gc wrote the drop record before its copy. So when ``rel`` has a record,
    this waits until no copy of ``rel`` is aside (that gc settled; at most ``SETTLE_SECONDS``,
    and not for an aside older than ``STALE_SECONDS``: a killed gc's, the next gc settles it),
    then says whether ``rel`` is gone. Without a
    record (the usual case: one HEAD) no gc had started dropping ``rel`` when the write landed,
    and one that starts now copies this commit aside and puts it back."""
    if not backend.exists(layout.dropped_path(rel)):
        return False
    folder = layout.dropped_path(rel).rpartition("/")[0]
    deadline = time.monotonic() + SETTLE_SECONDS

    def settling() -> bool:  # an aside of a gc killed long ago is not waited for (clocks may differ a little)
        now = time.time()
        asides = (st for r, st in backend.scan(folder) if layout.dropping_manifest(r) == rel)
        return any(now - st.mtime < STALE_SECONDS for st in asides)

    while settling() and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
    return not backend.exists(rel)
