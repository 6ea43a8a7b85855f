"""Training checkpoints: save/keep/stop policies, the Checkpointer, state adapters, progress.

Importable without Prefect and without torch (torch is imported only when a torch object
is checkpointed).
"""

from .adapters import register_adapter
from .checkpointer import Checkpointer
from .policies import (
    AnyKeep,
    AnySave,
    BestK,
    EarlyStopping,
    EveryNEpochs,
    EveryNSeconds,
    KeepAll,
    KeepPolicy,
    LatestN,
    OnImprovement,
    Record,
    SavePolicy,
)
from .progress import ProgressEvent, add_listener, listening, print_progress, rich_progress
from .state import TrainState

__all__ = [
    "Checkpointer",
    "TrainState",
    "SavePolicy",
    "EveryNEpochs",
    "EveryNSeconds",
    "OnImprovement",
    "AnySave",
    "KeepPolicy",
    "KeepAll",
    "LatestN",
    "BestK",
    "AnyKeep",
    "EarlyStopping",
    "Record",
    "register_adapter",
    "ProgressEvent",
    "add_listener",
    "listening",
    "print_progress",
    "rich_progress",
]
