"""A worker process of ``verify``'s lean pass (``pipeline.store.verify_scan``): reads
``(store root, sealer, manifest paths)`` pickled from stdin, writes the Share it found
pickled to stdout. Started by ``verify_scan`` as a fresh interpreter, never forked."""

from __future__ import annotations

import gc
import pickle
import sys

from .local import LocalBackend
from .verify_scan import scan


def main() -> None:
    gc.disable()  # (this process holds only what it reads: nothing to collect, and 10% faster)
    root, sealer, rels = pickle.load(sys.stdin.buffer)
    share = scan(LocalBackend(root, fsync=False), sealer, rels)
    sys.stdout.buffer.write(pickle.dumps(share, pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
