"""Per-key leases: while one process computes a stage key, the others wait and load its result.

A lease is a small JSON file ``leases/<stage>/<key>.<generation>.json`` (``layout``) naming
its holder (host, pid), an expiry and a token. The newest generation is the lease. It is
taken by creating the next generation exclusively (``Backend.create``: a hard link locally,
a conditional PUT on S3), so of several takers exactly one wins; the winner deletes the
older generations. A holder renews its expiry from a heartbeat thread (one per store) and deletes its file
when done. A lease whose holder is dead (same host, pid gone) or whose expiry passed (a
holder elsewhere, or one that hangs) is taken over by the next generation.

Leases only avoid duplicate work; nothing depends on them for correctness: results are
content-addressed and the manifest, written last, is the commit. A waiter that waits longer
than ``Leasing.wait`` computes itself, a lease that fails (an unwritable store, a lost
lease) never stops a computation or its commit, and a holder taken over keeps computing.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Callable, TypeVar

from ..errors import ConfigError, StoreError
from . import layout
from .backend import Backend

T = TypeVar("T")
IDLE_SECONDS = 5.0
"""How long a store's heartbeat thread waits, holding no lease, for the next one before it ends."""


@dataclass(frozen=True)
class Leasing:
    """How stage keys are leased. ``ttl``: seconds a lease lives without a heartbeat (renewed
    every ``ttl / 3``); ``wait``: seconds a waiter waits for a live holder before it computes
    itself; ``poll``: seconds between a waiter's first looks (then up to 8 times longer).
    ``Leasing.off()``: no leases."""

    ttl: float = 30.0
    wait: float = 3600.0
    poll: float = 0.25
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("ttl", "wait", "poll"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"Leasing({name}={getattr(self, name)!r}): must be a positive number of seconds")

    @classmethod
    def off(cls) -> Leasing:
        return cls(enabled=False)


@dataclass(frozen=True)
class Holder:
    """What a lease file says: who holds it, until when, and its generation."""

    host: str
    pid: int
    expires: float
    """Wall-clock time (seconds since the epoch) after which the lease counts as abandoned."""
    token: str
    generation: int

    def to_json(self) -> bytes:
        return json.dumps(
            {"host": self.host, "pid": self.pid, "expires": self.expires, "token": self.token}, sort_keys=True
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, generation: int) -> Holder:
        doc = json.loads(data)
        return cls(str(doc["host"]), int(doc["pid"]), float(doc["expires"]), str(doc["token"]), generation)

    def state(self, now: float | None = None) -> str:
        """``"dead"`` (its process on this host is gone), ``"expired"``, or ``"live"``."""
        if self.host == layout.host_id() and not layout.pid_alive(self.pid):
            return "dead"
        if self.expires < (time.time() if now is None else now):
            return "expired"
        return "live"


class Lease:
    """A lease this process holds: renewed by its store's heartbeat thread until :meth:`release`."""

    def __init__(self, backend: Backend, rel: str, holder: Holder, leasing: Leasing, heartbeat: _Heartbeat) -> None:
        self._backend, self.rel, self.holder, self._leasing = backend, rel, holder, leasing
        self._heartbeat = heartbeat
        self.lost = False
        """True once another process took the lease over (this one kept computing)."""
        heartbeat.add(self)

    def _renew(self) -> bool:
        """Renew the expiry once (from the heartbeat thread); False once there is nothing more to renew."""
        try:
            current = Holder.from_json(bytes(self._backend.read(self.rel)), self.holder.generation)
        except (FileNotFoundError, ValueError, KeyError, TypeError, OSError, StoreError):
            current = None
        if current is None or current.token != self.holder.token:
            self.lost = True  # taken over: the taker deleted or replaced our generation
            return False
        expires = time.time() + self._leasing.ttl
        renewed = Holder(self.holder.host, self.holder.pid, expires, self.holder.token, current.generation)
        try:
            self._backend.write_atomic(self.rel, renewed.to_json(), durable=False)
        except (OSError, StoreError):
            return False  # not renewed: it expires, another process may compute too (duplicate work only)
        return True

    def release(self) -> None:
        """Stop renewing and delete the lease (unless it was taken over)."""
        self._heartbeat.remove(self)  # no renewal in flight after this: none rewrites the file deleted below
        if self.lost:
            return
        with contextlib.suppress(OSError, StoreError):
            current = Holder.from_json(bytes(self._backend.read(self.rel)), self.holder.generation)
            if current.token == self.holder.token:
                self._backend.delete(self.rel)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Heartbeat:
    """One daemon thread per store that renews every lease this process holds on it, each
    every ``ttl / 3``. (A thread per lease cost each short stage its start and join: up to
    milliseconds each on a loaded machine, per trial of a search.) Started at the first
    lease, it ends once no lease was held for ``IDLE_SECONDS`` (started again at the next,
    and after a fork)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[Lease, float] = {}
        self._thread: threading.Thread | None = None
        self._wakes = 0.0
        """When (monotonic) the thread wakes next by itself (0: not waiting yet): a lease due
        later needs no notify."""

    def __reduce__(self) -> tuple:
        return (_Heartbeat, ())  # a store sent to a worker process: its leases there, its own thread

    def add(self, lease: Lease) -> None:
        with self._cond:
            self._due[lease] = time.monotonic() + lease._leasing.ttl / 3
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="pipeline-lease-heartbeat", daemon=True)
                self._wakes = 0.0
                self._thread.start()
            if not self._wakes or self._due[lease] < self._wakes:  # (a lease per trial of a search woke it each trial)
                self._cond.notify()

    def remove(self, lease: Lease) -> None:
        """Renewals run holding the lock: once this returns, none of ``lease`` is in flight."""
        with self._cond:
            self._due.pop(lease, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for lease in [lease for lease, due in self._due.items() if due <= now]:
                    if lease._renew():
                        self._due[lease] = time.monotonic() + lease._leasing.ttl / 3
                    else:
                        del self._due[lease]
                if not self._due:  # idle: end unless a lease comes within IDLE_SECONDS
                    self._wakes = time.monotonic() + IDLE_SECONDS
                    self._cond.wait(IDLE_SECONDS)
                    if not self._due:
                        self._thread = None
                        return
                    continue
                self._wakes = min(self._due.values())
                self._cond.wait(max(0.0, self._wakes - time.monotonic()))


class Leases:
    """The leases of one store."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._warned = False
        self._heartbeat = _Heartbeat()

    def _generations(self, stage: str, key: str) -> list[int]:
        found = (layout.lease_generation(rel, stage, key) for rel in self._backend.list(layout.lease_dir(stage)))
        return sorted(g for g in found if g is not None)

    def holder(self, stage: str, key: str) -> Holder | None:
        """The newest lease of ``stage`` ``key`` (live or not); None when there is none."""
        for generation in reversed(self._generations(stage, key)):
            try:
                data = bytes(self._backend.read(layout.lease_path(stage, key, generation)))
            except FileNotFoundError:
                continue  # released meanwhile
            try:
                return Holder.from_json(data, generation)
            except (ValueError, KeyError, TypeError):
                return Holder("", 0, 0.0, "", generation)  # unreadable: counts as expired
        return None

    def try_acquire(self, stage: str, key: str, leasing: Leasing) -> Lease | None:
        """The lease of ``stage`` ``key`` if it is free, dead or expired; None while another holds it."""
        generations = self._generations(stage, key)
        current = self.holder(stage, key) if generations else None
        if current is not None and current.state() == "live":
            return None
        generation = generations[-1] + 1 if generations else 0
        mine = Holder(layout.host_id(), os.getpid(), time.time() + leasing.ttl, uuid.uuid4().hex, generation)
        rel = layout.lease_path(stage, key, generation)
        if not self._backend.create(rel, mine.to_json()):
            return None  # another process took it first
        for old in generations:  # the dead or expired generations before ours
            if old < generation:
                self._backend.delete(layout.lease_path(stage, key, old))
        return Lease(self._backend, rel, mine, leasing, self._heartbeat)

    def acquire_or_wait(
        self, stage: str, key: str, leasing: Leasing, ready: Callable[[], T | None]
    ) -> tuple[T | None, Lease | None]:
        """Either what ``ready()`` returns once another process committed ``stage`` ``key``
        (not None), or the lease to compute it under, or ``(None, None)``: compute without a
        lease (the wait timed out, or leases do not work on this store)."""
        deadline = time.monotonic() + leasing.wait
        delay = leasing.poll
        try:
            while True:
                lease = self.try_acquire(stage, key, leasing)
                try:
                    found = ready()  # after taking the lease too: a holder may have committed just before
                except BaseException:
                    if lease is not None:
                        lease.release()
                    raise
                if found is not None:
                    if lease is not None:
                        lease.release()
                    return found, None
                if lease is not None:
                    return None, lease
                if time.monotonic() >= deadline:
                    return None, None
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 1.5, leasing.poll * 8)  # a long computation: fewer looks (S3 requests)
        except (OSError, StoreError) as e:
            if not self._warned:
                self._warned = True
                warnings.warn(f"leases do not work on store {self._backend.url} ({e}); computing without", stacklevel=3)
            return None, None


__all__ = ["Leasing", "Holder", "Lease", "Leases"]
