"""Training checkpoints: the Checkpointer, its policies (when to save, what to keep, when to
stop, what a checkpoint holds, how it is written), state adapters, progress.

Importable without Prefect and without torch (torch is imported only when a torch object
is checkpointed).
"""

from .adapters import register_adapter
from .checkpointer import Checkpointer
from .content import Content, Full, Light, Partial
from .policies import (
    AnyKeep,
    AnySave,
    BestK,
    EarlyStopping,
    EveryNEpochs,
    EveryNSeconds,
    FailedRuns,
    KeepAll,
    KeepPolicy,
    LatestN,
    MaxBytes,
    OlderThan,
    OnImprovement,
    Pinned,
    Record,
    SavePolicy,
    SkipFinal,
)
from .progress import ProgressEvent, add_listener, listening, print_progress, rich_progress
from .state import TrainState
from .writer import Background, Sync, WritePolicy

__all__ = [
    "Checkpointer",
    "TrainState",
    "SavePolicy",
    "EveryNEpochs",
    "EveryNSeconds",
    "OnImprovement",
    "AnySave",
    "SkipFinal",
    "KeepPolicy",
    "KeepAll",
    "LatestN",
    "BestK",
    "AnyKeep",
    "OlderThan",
    "MaxBytes",
    "Pinned",
    "FailedRuns",
    "EarlyStopping",
    "Content",
    "Full",
    "Partial",
    "Light",
    "WritePolicy",
    "Sync",
    "Background",
    "Record",
    "register_adapter",
    "ProgressEvent",
    "add_listener",
    "listening",
    "print_progress",
    "rich_progress",
]
