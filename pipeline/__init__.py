"""Stage cache and checkpoint system for iterative ML work on Prefect 3.

The core (fingerprints, store, StageCache) imports without Prefect; the Prefect
integration lives in :mod:`pipeline.integrations.prefect`.
"""

from .cache import CachedStage, Explanation, StageCache, StageKey
from .context import current_stage, current_store, run_context, use_store
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
from .lazy import materialize
from .store import Manifest, Store, VerifyReport

__version__ = "0.2.0"

_PREFECT_EXPORTS = {"stage", "StageCachePolicy"}
_TRAINING_EXPORTS = {"Checkpointer", "TrainState", "EveryNEpochs", "EveryNSeconds", "OnImprovement", "SkipFinal",
                     "LatestN", "BestK", "OlderThan", "MaxBytes", "Pinned", "FailedRuns", "EarlyStopping", "Full",
                     "Partial", "Light", "Sync", "Background"}  # fmt: skip
_TUNING_EXPORTS = {"tune", "load_best", "Search", "TrialCheckpointing"}


def __getattr__(name: str):
    """Prefect-backed names are imported on first use, so ``import pipeline`` stays Prefect-free."""
    if name in _PREFECT_EXPORTS:
        from .integrations import prefect

        return getattr(prefect, name)
    if name in _TRAINING_EXPORTS:
        from . import training

        return getattr(training, name)
    if name in _TUNING_EXPORTS:
        from . import tuning

        return getattr(tuning, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


__all__ = [
    "fingerprint",
    "code_fingerprint",
    "register_fingerprint",
    "Store",
    "Manifest",
    "VerifyReport",
    "StageCache",
    "materialize",
    "CachedStage",
    "StageKey",
    "Explanation",
    "PipelineError",
    "ConfigError",
    "FingerprintError",
    "StoreError",
    "IntegrityError",
    "CheckpointError",
    "stage",
    "StageCachePolicy",
    "use_store",
    "current_store",
    "current_stage",
    "run_context",
    *sorted(_TRAINING_EXPORTS),
    *sorted(_TUNING_EXPORTS),
]
