"""The Lightning callbacks of a run directory: interval checkpoints saved after the step's validation
(``StepCheckpoint``), and checkpoints, metrics rows and a SIGTERM stop kept consistent (``RunFiles``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from scalelong.errors import OutputError, ScaleLongError
from scalelong.lightning_internals import (
    checkpoint_interval,
    defer_save_to_validation_end,
    log_training_row,
    saving_skipped,
    training_row_pending,
    validation_follows,
)
from scalelong.loggers import ResumableCSVLogger
from scalelong.runs.checkpoints import AtomicCheckpointIO

log = logging.getLogger(__name__)

CSV_ROWS_KEY = "scalelong_csv_rows"  # rows of metrics.csv written when the checkpoint was saved


class RunInterrupted(ScaleLongError):
    """The run received SIGTERM; its state up to the last completed step is saved."""


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that, when validation follows the step of an interval checkpoint, saves
    after that validation: a run resumed from it has the step's validation row already, instead of
    losing it (Lightning does not repeat the validation of the step it resumes from)."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        every = checkpoint_interval(self)
        due = every >= 1 and trainer.global_step % every == 0
        if due and validation_follows(trainer) and not saving_skipped(self, trainer):
            defer_save_to_validation_end(self)  # Lightning's own deferral, saved in on_validation_end
            return
        super().on_train_batch_end(trainer, pl_module, *args)


class RunFiles(L.Callback):
    """Keeps a run's files consistent with its checkpoints, so that a kill at any moment and a rerun
    give each metrics row exactly once.

    - Before a checkpoint is written, the CSV rows logged so far are flushed and their number is
      stored in it (``CSV_ROWS_KEY``); a run resumed from it keeps exactly those rows and logs the
      later ones again.
    - An interval checkpoint taken at the end of a training step that no validation follows is
      saved before Lightning logs that step's training row, and counts it: it stays a temporary
      file (``AtomicCheckpointIO.hold``) until the row is on disk, and is renamed into place when the
      next step starts or training ends. A kill in between resumes from the previous checkpoint.
    - Temporary files left by a killed attempt are deleted when the run starts.
    - SIGTERM (scheduler pre-emption, ``kill``): at the end of the current step (after its
      validation, if one is due) the state is saved to ``checkpoints/last.ckpt`` and the run stops
      with ``RunInterrupted``, so the command exits non-zero and the same command resumes.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._row_logged = False
        self._held_rows = 0  # rows the held checkpoints count

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.is_global_zero:
            for tmp in [*self.run_dir.glob(".*.tmp-*"), *self.run_dir.glob("*/.*.tmp-*")]:
                log.info("deleting %s, left by an attempt that was killed while writing it", tmp)
                tmp.unlink(missing_ok=True)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Saved from on_train_batch_end (the batch is processed, not yet completed), the step's own
        # training row is logged by Lightning right after: count it, and hold the checkpoint until then.
        pending = int(trainer.training and training_row_pending(trainer) and not self._row_logged)
        hold = False
        for logger in trainer.loggers:
            if isinstance(logger, ResumableCSVLogger) and trainer.is_global_zero:
                checkpoint[CSV_ROWS_KEY] = logger.experiment.rows_on_disk() + pending
                if pending:
                    hold, self._held_rows = True, checkpoint[CSV_ROWS_KEY]
            else:
                logger.save()
        if isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO):
            trainer.strategy.checkpoint_io.hold = hold

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._publish(trainer)  # the previous step, with its rows, has ended

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._publish(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """A held checkpoint is published only if metrics.csv holds every row it counts."""
        io = trainer.strategy.checkpoint_io
        if not isinstance(io, AtomicCheckpointIO) or not io.holding:
            return
        writers = [lg.experiment for lg in trainer.loggers if isinstance(lg, ResumableCSVLogger)]
        try:
            complete = all(w.rows_on_disk() >= self._held_rows for w in writers)
        except OutputError:  # the disk is still full
            complete = False
        if complete:
            io.publish()
        else:
            io.discard()

    def _publish(self, trainer: L.Trainer) -> None:
        io = trainer.strategy.checkpoint_io
        if isinstance(io, AtomicCheckpointIO) and io.holding:
            for logger in trainer.loggers:
                logger.save()
            io.publish()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.received_sigterm and not validation_follows(trainer):
            # Lightning logs the step's training row after this hook, which the stop would skip.
            log_training_row(trainer)
            self._row_logged = True
            self._stop(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.received_sigterm and trainer.training is False and not trainer.sanity_checking:
            self._stop(trainer)

    def _stop(self, trainer: L.Trainer) -> None:
        path = self.run_dir / "checkpoints" / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)
        raise RunInterrupted(f"stopped by SIGTERM after step {trainer.global_step}; saved {path}. "
                             "Run the same command again to resume")
