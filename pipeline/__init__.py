"""Stage cache and checkpoint system for iterative ML work on Prefect 3.

The core (fingerprints, store, StageCache) imports without Prefect; the Prefect
integration lives in :mod:`pipeline.integrations.prefect`.
"""

from .cache import CachedStage, Explanation, StageCache, StageKey
from .errors import (
    CheckpointError,
    ConfigError,
    FingerprintError,
    IntegrityError,
    PipelineError,
    StoreError,
)
from .fingerprint import code_fingerprint, fingerprint
from .fingerprint import register as register_fingerprint
from .store import Manifest, Store, VerifyReport

__version__ = "0.1.0"

__all__ = [
    "fingerprint",
    "code_fingerprint",
    "register_fingerprint",
    "Store",
    "Manifest",
    "VerifyReport",
    "StageCache",
    "CachedStage",
    "StageKey",
    "Explanation",
    "PipelineError",
    "ConfigError",
    "FingerprintError",
    "StoreError",
    "IntegrityError",
    "CheckpointError",
]
