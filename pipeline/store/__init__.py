"""The content-addressed checkpoint store (knows nothing of stages or training)."""

from .manifest import Manifest
from .store import Store, VerifyReport

__all__ = ["Store", "Manifest", "VerifyReport"]
