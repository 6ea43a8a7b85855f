"""TensorBoard sink (the ``[tensorboard]`` extra, via tensorboardX): event files per training
stage key under ``<log_dir>/<stage>/<key>/``: every metric as a scalar per epoch (step =
epoch) and, at the end, the hyperparameters with the final metrics (``hparam/<metric>``) for
TensorBoard's HParams tab. A run resumed from checkpoint N writes to the same folder and
purges the events it is about to redo (steps > N), so the curves have no doubled epochs.

``tensorboard --logdir data/tensorboard`` shows them; ``tbparse.SummaryReader`` reads them
(tbparse does not apply purges: read a resumed run with TensorBoard's ``EventAccumulator``).
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..errors import ConfigError
from ..store.layout import component as safe_name
from ..training.progress import ProgressEvent
from .base import Sink, TrainingResult, TrainingRun, flat
from .settings import TrackingSettings


class TensorBoardSink(Sink):
    name = "tensorboard"
    background = True

    def __init__(self, log_dir: str | os.PathLike = "data/tensorboard", *, flush_secs: int = 10) -> None:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise ConfigError(
                "the TensorBoard sink needs the [tensorboard] extra: pip install 'pipeline[tensorboard]'"
            ) from None
        self.log_dir = os.fspath(log_dir)
        self.flush_secs = flush_secs
        self._writers: dict[tuple[str, str], Any] = {}

    @classmethod
    def from_settings(cls, settings: TrackingSettings) -> TensorBoardSink:
        return cls(settings.tensorboard_path)

    def run_dir(self, run: TrainingRun) -> str:
        """The folder of a training run's event files."""
        return os.path.join(self.log_dir, safe_name(run.stage), run.short_key)

    def start(self, run: TrainingRun) -> None:
        from tensorboardX import SummaryWriter

        self._close(run)
        purge = run.resumed_from + 1 if run.resumed_from else None
        # Event files are named by the second, and a resumed run may start in the same second as
        # the one it resumes: a suffix that keeps the name unique (else the old file is
        # overwritten) and sorting in time order (TensorBoard reads the files in name order).
        suffix = f".{time.time_ns():020d}.{os.getpid()}"
        self._writers[run.ident] = SummaryWriter(
            logdir=self.run_dir(run), purge_step=purge, flush_secs=self.flush_secs, filename_suffix=suffix
        )

    def epoch(self, run: TrainingRun, event: ProgressEvent) -> None:
        writer = self._writers[run.ident]
        for name, value in event.metrics.items():
            writer.add_scalar(name, float(value), event.epoch)
        writer.add_scalar("epoch_seconds", float(event.seconds), event.epoch)

    def finish(self, result: TrainingResult) -> None:
        from tensorboardX.summary import hparams

        writer = self._writers.get(result.run.ident)
        if writer is None:
            return
        try:
            hp = {k: _hparam(v) for k, v in flat(result.hyperparameters).items()}
            final = {f"hparam/{k}": float(v) for k, v in result.final_metrics.items()}
            if hp:
                for summary in hparams(hp, final):
                    writer.file_writer.add_summary(summary)
                for k, v in final.items():
                    writer.add_scalar(k, v, result.epochs)
        finally:
            self._close(result.run)

    def abandon(self, run: TrainingRun) -> None:
        self._close(run)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _close(self, run: TrainingRun) -> None:
        writer = self._writers.pop(run.ident, None)
        if writer is not None:
            writer.close()


def _hparam(v: Any) -> bool | int | float | str:
    return v if isinstance(v, (bool, int, float, str)) else repr(v)


__all__ = ["TensorBoardSink"]
