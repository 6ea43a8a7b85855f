"""Delete a manifest only if it still is the commit that was read and checked.

On an object store a delete is not a rename: between gc's check of what a manifest path
holds and its delete, a writer may PUT a later commit of the same key, and a plain DELETE
(or the delete half of a copy + delete) would take that commit with it. Where the store
deletes conditionally (``If-Match`` on DeleteObject: AWS S3, SeaweedFS; the backend probes
the server once), the manifest is read with the ETag of that very version and the delete
names it: a later commit is another version and stays. Elsewhere (a local directory, an
S3 server that ignores the header) ``Held.tag`` is None and the caller keeps its own
protocol (``retention._drop`` moves the manifest aside, one rename on local disk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
