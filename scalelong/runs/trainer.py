"""The Lightning ``Trainer`` of a run, as ``scalelong-train`` builds it (and ``scalelong-bench`` times it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from scalelong.compiling import check_compile_setting
from scalelong.loggers import ResumableCSVLogger
from scalelong.runs.callbacks import RunFiles
from scalelong.runs.checkpoints import AtomicCheckpointIO


def lightning_trainer(compile: bool | str = False, **options: Any) -> L.Trainer:
    """``lightning.Trainer(**options)``, the ``_target_`` of ``conf/trainer``. ``trainer.compile`` is checked here and
    is a setting of the run's module, which :func:`scalelong.lit.build_module` reads from the config
    (:mod:`scalelong.compiling`); the ``Trainer`` itself has no such option."""
    check_compile_setting(compile)
    return L.Trainer(**options)


def build_trainer(cfg: DictConfig, run_dir: Path, kept_rows: int | None = None,
                  extra_callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """The config's callbacks and loggers, :class:`~scalelong.runs.callbacks.RunFiles` of ``run_dir`` and atomic
    checkpoints, in a ``Trainer`` of the ``trainer`` settings (:func:`lightning_trainer`). ``kept_rows``: the rows
    of ``metrics.csv`` the checkpoint being resumed counts; the CSV logger drops the later ones, which the run logs
    again. ``extra_callbacks`` run after the others."""
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
    if kept_rows is not None:
        for logger in loggers:
            if isinstance(logger, ResumableCSVLogger) and rank_zero_only.rank == 0:
                logger.experiment.keep_rows(kept_rows)
    return instantiate(cfg.trainer, callbacks=[*callbacks, RunFiles(run_dir), *extra_callbacks],
                       logger=loggers or False, plugins=[AtomicCheckpointIO()])
