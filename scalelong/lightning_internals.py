"""Lightning's private members that scalelong relies on, each behind one public name: when Lightning
renames or changes one, this module (and ``tests/test_lightning_internals.py``) is the one place to
fix. Written against Lightning 2.6.

- When the fit loop validates (``_TrainingEpochLoop._should_check_val_fx``), so that a checkpoint or
  a SIGTERM stop waits for the step's validation row (``StepCheckpoint``, ``RunFiles``).
- The training metrics row of a step, which the logger connector (``Trainer._logger_connector``)
  writes after ``on_train_batch_end``: ``RunFiles`` counts it in a checkpoint taken before, or writes
  it before a stop would skip it.
- ``ModelCheckpoint``'s step interval and its own deferral of a save to ``on_validation_end``, which
  ``StepCheckpoint`` extends to interval checkpoints.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


def validation_follows(trainer: L.Trainer) -> bool:
    """Whether the fit loop runs validation right after the current training batch."""
    loop = trainer.fit_loop
    return bool(trainer.enable_validation) and loop.epoch_loop._should_check_val_fx(loop._data_fetcher)


def training_row_pending(trainer: L.Trainer) -> bool:
    """Whether Lightning has yet to log the training metrics row of the current step: the batch is
    processed but its step not completed (``on_train_batch_end``), and the step is one that
    ``trainer.log_every_n_steps`` logs."""
    progress = trainer.fit_loop.epoch_loop.batch_progress.current
    return progress.processed > progress.completed and trainer._logger_connector.should_update_logs


def log_training_row(trainer: L.Trainer) -> None:
    """Log the current step's training metrics row now, as Lightning would after ``on_train_batch_end``."""
    trainer._logger_connector.update_train_step_metrics()


def checkpoint_interval(callback: ModelCheckpoint) -> int:
    """``every_n_train_steps`` of a ``ModelCheckpoint`` (0: no interval checkpoints)."""
    return callback._every_n_train_steps


def saving_skipped(callback: ModelCheckpoint, trainer: L.Trainer) -> bool:
    """Whether ``ModelCheckpoint`` saves nothing now (sanity check, fast_dev_run, step already saved)."""
    return callback._should_skip_saving_checkpoint(trainer)


def defer_save_to_validation_end(callback: ModelCheckpoint) -> None:
    """Make ``ModelCheckpoint`` save the due checkpoint in ``on_validation_end`` instead of now: its own
    mechanism for a monitored metric that only validation logs."""
    callback._defer_save_until_validation = True
