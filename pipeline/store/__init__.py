"""The content-addressed checkpoint store (knows nothing of stages or training)."""

from .checkpoints import Checkpoints
from .manifest import Manifest
from .store import Store, VerifyReport
from .tree import DictNode, Leaf, Tree, TupleNode

__all__ = ["Store", "Manifest", "VerifyReport", "Checkpoints", "Tree", "Leaf", "TupleNode", "DictNode"]
