"""Run directories that survive their users: one process per run, resume from the newest valid
checkpoint of the same configuration, atomic writes, and a status record per run.

A run directory ``outputs/runs/<name>/`` is owned by one ``scalelong-train`` at a time
(``RunLock``); ``status.json`` says whether its last attempt is running, completed or failed (and
why), which ``scalelong-aggregate`` reports for every job of a sweep.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from scalelong.atomic import write_atomic, write_error_message
from scalelong.errors import CheckpointError, ConfigError, OutputError, ScaleLongError
from scalelong.lit import read_checkpoint
from scalelong.loggers import ResumableCSVLogger

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
LOCK_FILE = ".lock"
CSV_ROWS_KEY = "scalelong_csv_rows"  # rows of metrics.csv written when the checkpoint was saved


class RunInterrupted(ScaleLongError):
    """The run received SIGTERM; its state up to the last completed step is saved."""

# Config fields that change what a run computes. A run resumes only from a checkpoint whose stored
# config agrees on all of them (``config_differences``); the rest (trainer.max_steps, logging,
# checkpoint intervals, devices, paths) may change between the attempts of one run.
RESULT_KEYS = ("model", "scaler", "data", "diffusion", "optim", "seed", "trainer.gradient_clip_val",
               "trainer.gradient_clip_algorithm", "trainer.accumulate_grad_batches", "trainer.precision",
               "callbacks.ema")
# ... except these, which say where or how fast data is read.
_NOT_RESULT_KEYS = ("data.root", "data.num_workers")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, writing through a temporary file in the checkpoint's own
    directory (atomic rename, no copy across filesystems) and reading with ``weights_only=True``.

    While ``hold`` is set, a written checkpoint stays a temporary file until ``publish``: ``RunFiles``
    holds a checkpoint that counts a metrics row Lightning has not logged yet, so that a kill before
    the row is on disk leaves the previous checkpoint in place rather than one that skips the row.
    """

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self._held: dict[Path, Path] = {}  # checkpoint path -> its written temporary file

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            if self.hold:
                self._held[path] = tmp
            else:
                os.replace(tmp, path)
        except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError
            tmp.unlink(missing_ok=True)
            if isinstance(err, OSError):
                raise OutputError(write_error_message(path, err)) from err
            raise OutputError(f"cannot write {path} ({err}); the previous checkpoint is kept. Free space or "
                              "set paths.output_dir to a writable directory with room, then rerun") from err

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def publish(self) -> None:
        """Rename the held checkpoints into place, in the order they were written."""
        while self._held:
            path = next(iter(self._held))
            os.replace(self._held.pop(path), path)

    def discard(self) -> None:
        """Delete the held checkpoints (the run goes on from, or resumes at, the previous ones)."""
        for tmp in self._held.values():
            tmp.unlink(missing_ok=True)
        self._held.clear()

    def remove_checkpoint(self, path: _PATH) -> None:
        held = self._held.pop(Path(path), None)
        if held is not None:
            held.unlink(missing_ok=True)
        super().remove_checkpoint(path)

    def load_checkpoint(self, path: _PATH, map_location: Any | None = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        return read_checkpoint(path, map_location or "cpu")


class RunLock:
    """An exclusive ``fcntl.flock`` on ``<run dir>/.lock`` for the life of a run; a second process
    on the same run directory gets a ConfigError instead of sharing its files. The kernel releases
    the lock when the process dies, so a killed run never leaves a stale lock."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"run directory {self.path.parent} is in use by another scalelong-train (pid {owner}); "
                "wait for it to finish, or give this run another name with run_name=NAME") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def checkpoint_step(path: Path) -> int:
    """The global step stored in a checkpoint (memory-mapped, so only the small fields are read)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(ckpt["global_step"])


def checkpoints_newest_first(run_dir: Path) -> list[tuple[Path, int]]:
    """``(path, step)`` of the run's readable checkpoints, highest step first (``last.ckpt`` before
    an interval checkpoint of the same step); unreadable files are skipped with a warning."""
    found = []
    for path in (Path(run_dir) / "checkpoints").glob("*.ckpt"):
        try:
            found.append((path, checkpoint_step(path)))
        except Exception as err:  # truncated, foreign or empty files
            log.warning("skipping %s: it cannot be read (%s: %s), so an older checkpoint is used; the file is kept "
                        "for inspection", path, type(err).__name__, str(err).splitlines()[0] if str(err) else "")
    found.sort(key=lambda item: (item[1], item[0].name.startswith("last")), reverse=True)
    return found


def newest_valid_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The readable checkpoint of the run with the highest step, and its contents; unreadable newer
    ones are skipped with a warning (and kept for inspection)."""
    for path, _ in checkpoints_newest_first(run_dir):
        try:
            return path, read_checkpoint(path)
        except CheckpointError as err:
            log.warning("skipping %s: %s", path, err)
    return None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.depth": 4, ...}`` from a nested dict."""
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any],
                       keys: tuple[str, ...] = RESULT_KEYS) -> list[str]:
    """``key: stored -> current`` for every field under ``keys`` on which the two configs differ."""
    a, b = flatten(stored), flatten(current)

    def selected(key: str) -> bool:
        return key.startswith(tuple(f"{k}." for k in keys) + keys) and not key.startswith(_NOT_RESULT_KEYS)

    names = sorted(k for k in set(a) | set(b) if selected(k) and a.get(k) != b.get(k))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in names]


def archive_run(run_dir: Path) -> Path | None:
    """Move the results of a previous attempt (checkpoints, metrics, samples, summary) to
    ``<run dir>/previous/<time>/``, so that a fresh start neither mixes with nor destroys them."""
    names = ("checkpoints", "csv", "samples", "summary.json", STATUS_FILE)
    present = [run_dir / n for n in names if (run_dir / n).exists()]
    if not present:
        return None
    dest = run_dir / "previous" / time.strftime("%Y%m%d-%H%M%S")
    dest.mkdir(parents=True, exist_ok=True)
    for path in present:
        shutil.move(str(path), dest / path.name)
    log.warning("ckpt_path=null: moved the previous attempt's results to %s and started over", dest)
    return dest


def read_status(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_status(run_dir: Path, status: str, **fields: Any) -> None:
    """``status.json``: ``running``, ``completed`` or ``failed`` (with ``error``), and fields."""
    write_atomic(Path(run_dir) / STATUS_FILE, json.dumps({"status": status, **fields}, indent=2))


class SweepReport(Callback):
    """Hydra callback: after a sweep, name the jobs that failed (their ``status.json``) and make
    ``scalelong-train -m`` exit non-zero when any did; the others have run to the end."""

    failed: list[str] = []
    sweep_dir: str = ""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = []
        for status_file in sorted(sweep_dir.glob(f"*/{STATUS_FILE}")):
            status = read_status(status_file.parent) or {}
            if status.get("status") != "completed":
                failed.append(f"{status_file.parent.name} ({status.get('status')}: {status.get('error', '')})")
        SweepReport.failed, SweepReport.sweep_dir = failed, str(sweep_dir)
        if failed:
            log.error("%d job(s) of the sweep in %s did not complete: %s", len(failed), sweep_dir, "; ".join(failed))



class OutputDirCheck(Callback):
    """Hydra callback: before Hydra creates the run (or sweep) directory, check that it can be
    created and written, and end ``scalelong-train`` with one line naming ``paths.output_dir``
    instead of Hydra's traceback from ``mkdir``."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, key: str) -> None:
        HydraConfig.instance().set_config(config)  # run_job sets it too; ${hydra:...} names the run
        try:
            check_writable_dir(Path(OmegaConf.select(config, key)), config.paths.output_dir)
        except OutputError as err:
            sys.exit(f"scalelong-train: {err}")


def check_writable_dir(path: Path, output_dir: str) -> None:
    """Create ``path`` (a run or sweep directory under ``output_dir``) and write a file in it, or
    raise ``OutputError`` naming the directory and ``paths.output_dir``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise OutputError(f"cannot create or write the run directory {path} ({err.strerror or err}); set "
                          f"paths.output_dir to a writable directory (paths.output_dir={output_dir})") from err


def validation_follows(trainer: L.Trainer) -> bool:
    """Whether the fit loop runs validation right after the current training batch."""
    loop = trainer.fit_loop
    return bool(trainer.enable_validation) and loop.epoch_loop._should_check_val_fx(loop._data_fetcher)


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that, when validation follows the step of an interval checkpoint, saves
    after that validation: a run resumed from it has the step's validation row already, instead of
    losing it (Lightning does not repeat the validation of the step it resumes from)."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        due = self._every_n_train_steps >= 1 and trainer.global_step % self._every_n_train_steps == 0
        if due and validation_follows(trainer) and not self._should_skip_saving_checkpoint(trainer):
            self._defer_save_until_validation = True  # Lightning's own deferral, saved in on_validation_end
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
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        pending = int(trainer.training and progress.processed > progress.completed
                      and trainer._logger_connector.should_update_logs and not self._row_logged)
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
            trainer._logger_connector.update_train_step_metrics()
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
