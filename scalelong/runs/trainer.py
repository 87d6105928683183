"""The Lightning ``Trainer`` of a run, as ``scalelong-train`` builds it (and ``scalelong-bench`` times it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from scalelong.compiling import trainer_options
from scalelong.loggers import ResumableCSVLogger
from scalelong.runs.callbacks import RunFiles
from scalelong.runs.checkpoints import AtomicCheckpointIO


def build_trainer(cfg: DictConfig, run_dir: Path, kept_rows: int | None = None,
                  extra_callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """The config's callbacks and loggers, :class:`~scalelong.runs.callbacks.RunFiles` of ``run_dir`` and atomic
    checkpoints, in a ``Trainer`` of the ``trainer`` settings (``trainer.compile`` is the module's:
    :mod:`scalelong.compiling`). ``kept_rows``: the rows of ``metrics.csv`` the checkpoint being resumed counts;
    the CSV logger drops the later ones, which the run logs again. ``extra_callbacks`` run after the others."""
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
    if kept_rows is not None:
        for logger in loggers:
            if isinstance(logger, ResumableCSVLogger) and rank_zero_only.rank == 0:
                logger.experiment.keep_rows(kept_rows)
    options = trainer_options(OmegaConf.to_container(cfg.trainer, resolve=True))
    return instantiate(options, callbacks=[*callbacks, RunFiles(run_dir), *extra_callbacks],
                       logger=loggers or False, plugins=[AtomicCheckpointIO()])
