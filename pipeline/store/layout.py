"""Every path in a store: the one place that turns ids, stage names, keys and steps into paths.

::

    store.json                                        format marker
    objects/<2 hex>/<30 hex>.<parquet|arrow|joblib|json>  content-addressed by file checksum
    objects/tmp/<host>-<pid>-<uuid>                   temp files of writers in flight
    stages/<stage>/<key>.json                         manifest = the commit of a stage result
    checkpoints/<stage>/<key>/<step>.json             training checkpoint manifests
    runs/<run id>.json, runs/<run id>/...             run records (events, trial events)
    searches/<search>/<search key>.json               search indexes (trial tables)
    quarantine/<time>-<unique>-<what>                 objects and manifests that failed verification
    gc/<sweep>/<object id>.<suffix>                   objects a gc sweep is about to delete
    tags/<tag>/<stage>/<key>[@<step>].json            tags (pins) of results and checkpoints
    dropped/<manifest path>                           the entries gc dropped (mirrors drop them too)
    leases/<stage>/<key>.<generation>.json            who is computing a stage key (see ``locks``)
    index/deltas/<ms>-<host>-<pid>-<unique>.json      manifest index: one record per manifest write
                                                      or delete, named in time order (see ``manifest_index``)
    index/snapshots/<ms>-<unique>.idx                 manifest index: every manifest as of a mark

Paths are relative to the store root with ``/`` separators. Every component made from a
name is safe (``[A-Za-z0-9._-]``, never ``.`` or ``..``) and bounded to ``MAX_COMPONENT``
bytes: a name that is already safe and short is used as it is, anything else is escaped,
truncated and given a hash suffix of the original name (so distinct names stay distinct).
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import socket
import time
import uuid

import xxhash

MARKER = "store.json"
OBJECTS = "objects"
TMP = "objects/tmp"
STAGES = "stages"
CHECKPOINTS = "checkpoints"
RUNS = "runs"
SEARCHES = "searches"
QUARANTINE = "quarantine"
TRASH = "gc"
TAGS = "tags"
DROPPED = "dropped"
MANIFEST_ROOTS = (STAGES, CHECKPOINTS)

MAX_COMPONENT = 120
"""Bytes per path component made from a name (file systems allow 255; leave room for suffixes)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_OID = re.compile(r"[0-9a-f]{32}")
_STEP = re.compile(r"(\d+)\.json")
_OBJECT = re.compile(r"objects/([0-9a-f]{2})/([0-9a-f]{30})\.([a-z]+)")


def component(name: str) -> str:
    """``name`` as one safe, bounded path component (unchanged when already safe and short)."""
    if len(name) <= MAX_COMPONENT and name.isascii() and name.isalnum():  # safe as it is (hex digests)
        return name
    safe = _UNSAFE.sub("_", name)
    if safe == name and name not in ("", ".", "..") and len(name) <= MAX_COMPONENT:
        return name
    digest = xxhash.xxh3_64_hexdigest(name.encode("utf-8", "surrogatepass"))
    if len(safe) + 9 <= MAX_COMPONENT:
        return f"{safe}-{digest[:8]}"  # the spelling stores of format 1 used: same paths as before
    return f"{safe[: MAX_COMPONENT - 17]}-{digest}"


def key_file(key: str) -> str:
    """A key (``xxh3:<hex>``) as a file-name stem: its digest."""
    return component(key.partition(":")[2] or key)


# -- objects ---------------------------------------------------------------------------------
def object_path(oid: str, suffix: str) -> str:
    if not _OID.fullmatch(oid):
        raise ValueError(f"not an object id: {oid!r}")
    return f"{OBJECTS}/{oid[:2]}/{oid[2:]}.{suffix}"


def is_object(rel: str) -> bool:
    return _OBJECT.fullmatch(rel) is not None


def object_id(rel: str) -> str | None:
    """The object id an object path names (None: not an object path)."""
    m = _OBJECT.fullmatch(rel)
    return m.group(1) + m.group(2) if m else None


def trash_path(sweep: str, rel: str) -> str:
    """Where a gc sweep sets object ``rel`` aside: ``gc/<sweep>/<object id>.<suffix>``, one flat
    directory a sweep (one ``mkdir``, not one per shard the sweep touches)."""
    m = _OBJECT.fullmatch(rel)
    if m is None:
        raise ValueError(f"not an object path: {rel!r} (a sweep sets only objects aside)")
    return f"{TRASH}/{sweep}/{m.group(1)}{m.group(2)}.{m.group(3)}"


_TRASHED = re.compile(r"([0-9a-f]{2})([0-9a-f]{30})\.([a-z]+)")


def untrash(rel: str) -> str | None:
    """The object path a trashed file came from (None: not a trashed object). Also the layout
    of sweeps before the flat one, ``gc/<sweep>/objects/<2 hex>/<30 hex>.<suffix>`` (one
    killed then is put back by the next gc or read as well)."""
    parts = rel.split("/", 2)
    if len(parts) != 3 or parts[0] != TRASH:
        return None
    if (m := _TRASHED.fullmatch(parts[2])) is not None:
        return f"{OBJECTS}/{m.group(1)}/{m.group(2)}.{m.group(3)}"
    return parts[2] if is_object(parts[2]) else None


# -- temp files ------------------------------------------------------------------------------
@functools.cache
def _host() -> str:
    return xxhash.xxh3_64_hexdigest(socket.gethostname().encode())[:8]


def temp_path() -> str:
    """A fresh temp file name that says which writer (host, process) it belongs to: unique by
    the process's random prefix (drawn anew in a forked child) and a counter (no ``uuid4`` and
    ``getpid`` per file)."""
    return f"{_temp_prefix}{next(_temp_counter):x}"


def _new_temp_prefix() -> None:
    global _temp_prefix, _temp_counter
    _temp_prefix = f"{TMP}/{_host()}-{os.getpid()}-{uuid.uuid4().hex[:16]}"
    _temp_counter = itertools.count()


_temp_prefix = ""
_temp_counter = itertools.count()
_new_temp_prefix()
if hasattr(os, "register_at_fork"):  # (not on Windows: no fork there)
    os.register_at_fork(after_in_child=_new_temp_prefix)


def temp_writer(rel: str) -> tuple[str, int] | None:
    """(host, pid) of the writer of a temp file; None for names of another scheme."""
    host, _, rest = rel.rpartition("/")[2].partition("-")
    pid, _, _ = rest.partition("-")
    return (host, int(pid)) if pid.isdigit() else None


def temp_state(rel: str) -> str:
    """ "dead" / "alive": the temp file's writer ran on this host and is gone / still runs;
    "unknown": another host's (or an older naming scheme's)."""
    writer = temp_writer(rel)
    if writer is None or writer[0] != _host():
        return "unknown"
    try:
        os.kill(writer[1], 0)
    except ProcessLookupError:
        return "dead"
    except OSError:  # alive, another user's
        return "alive"
    return "alive"


# -- manifests -------------------------------------------------------------------------------
def stage_dir(stage: str) -> str:
    return f"{STAGES}/{component(stage)}"


def checkpoint_dir(stage: str, key: str) -> str:
    return f"{CHECKPOINTS}/{component(stage)}/{key_file(key)}"


CHECKPOINT_DIR_DEPTH = 2
"""How deep a key's checkpoint directory lies below ``CHECKPOINTS`` (``<stage>/<key>``)."""


def manifest_path(stage: str, key: str, step: int | None = None) -> str:
    if step is None:
        return f"{stage_dir(stage)}/{key_file(key)}.json"
    return f"{checkpoint_dir(stage, key)}/{int(step)}.json"


def step_of(rel: str, directory: str) -> int | None:
    """The step of a checkpoint manifest directly in ``directory`` (None: not one)."""
    head, _, name = rel.rpartition("/")
    m = _STEP.fullmatch(name)
    return int(m.group(1)) if m and head == directory else None


def is_manifest(rel: str) -> bool:
    return rel.endswith(".json") and rel.split("/", 1)[0] in MANIFEST_ROOTS


# -- records ---------------------------------------------------------------------------------
def run_dir(run_id: str) -> str:
    return f"{RUNS}/{component(run_id)}"


def run_summary(run_id: str) -> str:
    return f"{run_dir(run_id)}.json"


def run_event(run_id: str, stage: str, key: str) -> str:
    return f"{run_dir(run_id)}/{component(stage)}-{(key.partition(':')[2] or key)[:12]}.json"


def trial_dir(run_id: str) -> str:
    return f"{run_dir(run_id)}/trials"


def trial_event(run_id: str, search: str, number: int) -> str:
    return f"{trial_dir(run_id)}/{component(search)}-{int(number):05d}.json"


def search_dir(name: str) -> str:
    return f"{SEARCHES}/{component(name)}"


def search_index(name: str, search_key: str) -> str:
    return f"{search_dir(name)}/{key_file(search_key)}.json"


# -- tags ------------------------------------------------------------------------------------
def dropped_path(manifest_rel: str) -> str:
    """The record that gc dropped the manifest at ``manifest_rel`` (``pipeline.store.drops``)."""
    return f"{DROPPED}/{manifest_rel}"


def dropped_manifest(rel: str) -> str:
    """The manifest path a drop record at ``rel`` is about."""
    return rel[len(DROPPED) + 1 :]


def dropping_path(manifest_rel: str) -> str:
    """Where gc moves a manifest it drops before it deletes it (``retention._drop``): beside its
    drop record, under a unique name that is no record (``.aside``)."""
    return f"{DROPPED}/{manifest_rel}.{uuid.uuid4().hex[:12]}.aside"


def dropping_manifest(rel: str) -> str | None:
    """The manifest path a file moved aside by gc came from (None: not one)."""
    if not (rel.startswith(DROPPED + "/") and rel.endswith(".aside")):
        return None
    return dropped_manifest(rel).rsplit(".", 2)[0]


def tag_dir(tag: str) -> str:
    return f"{TAGS}/{component(tag)}"


def tag_path(tag: str, stage: str, key: str, step: int | None = None) -> str:
    """One file per (tag, entry): tagging is a single atomic write, never a read-modify-write."""
    at = "" if step is None else f"@{int(step)}"
    return f"{tag_dir(tag)}/{component(stage)}/{key_file(key)}{at}.json"


# -- quarantine ------------------------------------------------------------------------------
def quarantine_path(rel: str) -> str:
    """A unique quarantine name for ``rel``: two quarantines of one path never collide."""
    flat = rel[len(OBJECTS) + 1 :].replace("/", "") if is_object(rel) else rel.replace("/", "__")
    if len(flat) > MAX_COMPONENT:
        flat = flat[-MAX_COMPONENT:]
    return f"{QUARANTINE}/{int(time.time())}-{uuid.uuid4().hex[:12]}-{flat}"


# -- leases ----------------------------------------------------------------------------------
LEASES = "leases"
_GEN = re.compile(r"(.+)\.(\d+)\.json")


def lease_dir(stage: str) -> str:
    """``leases/<stage>/``: the leases in flight of one stage's keys (one flat folder: no
    folder per key to create and remove on every computation)."""
    return f"{LEASES}/{component(stage)}"


def lease_path(stage: str, key: str, generation: int) -> str:
    return f"{lease_dir(stage)}/{key_file(key)}.{int(generation)}.json"


def lease_generation(rel: str, stage: str, key: str) -> int | None:
    """The generation of a lease file of ``stage`` ``key`` (None: another key's, or not one)."""
    head, _, name = rel.rpartition("/")
    m = _GEN.fullmatch(name)
    return int(m.group(2)) if m and head == lease_dir(stage) and m.group(1) == key_file(key) else None


def host_id() -> str:
    """This host, as temp files and leases name it."""
    return _host()


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` (of this host) still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, another user's
        return True
    return True


# -- manifest index --------------------------------------------------------------------------
INDEX = "index"
INDEX_DELTAS = "index/deltas"
INDEX_SNAPSHOTS = "index/snapshots"
_DELTA = re.compile(r"index/deltas/(\d{13})-[0-9a-f]+-\d+-[0-9a-f]{12}\.json")
_SNAPSHOT = re.compile(r"index/snapshots/(\d{13})-[0-9a-f]{12}\.idx")


def index_delta(ms: int) -> str:
    """A fresh delta record name at ``ms`` (milliseconds since the epoch): names sort by time."""
    return f"{INDEX_DELTAS}/{int(ms):013d}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:12]}.json"


def index_deltas_after(ms: int) -> str:
    """The key to list deltas after (``StartAfter``): every delta named at ``ms`` or later sorts after it."""
    return f"{INDEX_DELTAS}/{max(0, int(ms)) - 1:013d}~" if ms > 0 else f"{INDEX_DELTAS}/"


def index_snapshot(ms: int) -> str:
    return f"{INDEX_SNAPSHOTS}/{int(ms):013d}-{uuid.uuid4().hex[:12]}.idx"


def index_time(rel: str) -> int | None:
    """The milliseconds a delta or snapshot name carries (None: not one)."""
    m = _DELTA.fullmatch(rel) or _SNAPSHOT.fullmatch(rel)
    return int(m.group(1)) if m else None
