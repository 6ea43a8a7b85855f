"""``Store.verify``: every manifest checked, every object it references re-hashed.

The lean pass (:mod:`.verify_scan`; on a large local store split over worker processes)
vouches for the manifests and objects that are fine; whatever it can't vouch for is judged
here by the full checks: an object that fails is quarantined, a gc's set-aside one put back,
a damaged manifest quarantined. The outcome is a :class:`VerifyReport` naming each problem
with every result that uses it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import IntegrityError
from . import layout, verify_scan
from .manifest import Unsigned
from .objects import checksum, leaf_path
from .tree import leaves

if TYPE_CHECKING:
    from .store import Store

__all__ = ["Problem", "VerifyReport", "verify_store"]


@dataclass(frozen=True)
class Problem:
    """One thing ``verify`` found wrong: a ``"corrupt"`` or ``"missing"`` object with every
    result that references it, or a ``"bad manifest"`` (damaged, or not the key its path names)."""

    kind: str
    what: str
    """The object id, or the manifest's path in the store."""
    used_by: tuple[tuple[str, str, int | None], ...] = ()
    """(stage, key, step) of each manifest that references the object."""

    def __str__(self) -> str:
        if not self.used_by:
            return f"{self.kind} {self.what}"
        users = ", ".join(
            f"{stage} {key}" + ("" if step is None else f" step {step}") for stage, key, step in self.used_by
        )
        return f"{self.kind} object {self.what} (used by {users})"


@dataclass(frozen=True)
class VerifyReport:
    """What ``Store.verify()`` found. ``clean`` when nothing is corrupt, missing or unreadable.

    ``unverified``: manifests of format 1 (no seal), kept but never served. ``problems``:
    each corrupt or missing object and bad manifest, by name."""

    manifests: int
    ok: int
    corrupt: int
    missing: int
    quarantined: int
    bad_manifests: int
    orphans: int
    temp_files: int
    unverified: int = 0
    unsigned: int = 0
    """Manifests not signed with this store's signing key (unsigned, another key's, or
    signed while no key is set): kept, never served; their stages recompute."""
    problems: tuple[Problem, ...] = ()

    @property
    def clean(self) -> bool:
        return not (self.corrupt or self.missing or self.bad_manifests)


def verify_store(store: Store, workers: int | None = None) -> VerifyReport:
    """Check every manifest and re-hash every object they reference; quarantine what fails.

    The lean pass (``pipeline.store.verify_scan``; on a large local store split over
    ``workers`` worker processes, None: as many as pay) vouches for the manifests and
    objects that are fine; whatever it can't vouch for is judged here by the full checks."""
    # The objects in place (to count orphans) are listed meanwhile: on S3 that is a request
    # per fan-out folder, hundreds of them.
    with ThreadPoolExecutor(1, thread_name_prefix="verify-list") as lister:
        listed = lister.submit(lambda: [r for r in store._backend.list(layout.OBJECTS) if layout.is_object(r)])
        shares = verify_scan.scan_all(store._backend, store._sealer, store._manifest_paths(), workers)
        present = listed.result()
    ok_paths: set[str] = set()
    to_check: dict[str, str] = {}  # object path -> id, checked again here
    sizes: dict[str, int] = {}  # (what each should be, for the read-ahead; a failed one: unknown)
    users: dict[str, list[tuple[str, tuple[str, str, int | None]]]] = {}
    n_manifests = sum(share.fine for share in shares)
    for share in shares:
        ok_paths.update(share.ok)
        for path in share.failed:
            to_check[path] = layout.object_id(path) or ""
            sizes[path] = verify_scan.GROUP
        for path, named in share.users.items():
            users.setdefault(path, []).extend(named)
    problems: list[Problem] = []
    bad = unverified = unsigned = 0
    slow = sorted(rel for share in shares for rel in share.slow)
    for rel, m, unserved in store._walk(quarantine=True, rels=slow):
        if isinstance(unserved, Unsigned):
            unsigned += 1
        if m is None:
            if unserved is None:
                bad += 1
                problems.append(Problem("bad manifest", rel))
            continue
        if m.format == 1:
            unverified += 1
        elif unserved is None:
            n_manifests += 1
        for leaf in leaves(m.outputs):
            path = leaf_path(leaf)
            users.setdefault(path, []).append((rel, (m.stage, m.key, m.step)))
            if path not in ok_paths:
                to_check[path] = leaf.object
                sizes.setdefault(path, leaf.bytes)
    ok_paths.difference_update(to_check)  # (found failed by one share, fine by another: checked again)
    referenced = ok_paths | to_check.keys()
    ok, corrupt, missing = len(ok_paths), 0, 0
    failed: list[tuple[str, str]] = []  # (kind, object id), named with their users below
    for rel, buf in verify_scan.read_grouped(store._backend, sizes):
        if isinstance(buf, FileNotFoundError):
            try:
                buf = store._objects._read(rel)  # a gc sweep may have set it aside: put back
            except FileNotFoundError:
                missing += 1
                failed.append(("missing", rel))
                continue
            except IntegrityError:
                buf = None
        if isinstance(buf, IntegrityError):  # a symbolic link
            buf = None
        elif isinstance(buf, BaseException):
            raise buf
        if buf is not None and checksum(buf) == to_check[rel]:
            ok += 1
        else:
            corrupt += 1
            del buf
            store._objects.quarantine(rel)
            failed.append(("corrupt", rel))
    for kind, rel in failed:  # each with every result that uses it, in manifest path order
        problems.append(Problem(kind, to_check[rel], tuple(who for _m, who in sorted(users.get(rel, ())))))
    return VerifyReport(
        manifests=n_manifests,
        ok=ok,
        corrupt=corrupt,
        missing=missing,
        quarantined=sum(1 for _ in store._backend.list(layout.QUARANTINE)),
        bad_manifests=bad,
        orphans=sum(1 for r in present if r not in referenced),
        temp_files=sum(1 for _ in store._backend.list(layout.TMP)),
        unverified=unverified,
        unsigned=unsigned,
        problems=tuple(problems),
    )
