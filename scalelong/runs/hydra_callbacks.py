"""Hydra callbacks of ``scalelong-train`` (``hydra.callbacks`` in ``conf/train.yaml``): an unwritable
output directory is one line before Hydra creates it, a sweep names the jobs that did not complete, and the
worker processes of a sweep end with it."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from scalelong.atomic import write_atomic
from scalelong.errors import OutputError
from scalelong.runs.status import STATUS_FILE, read_status

log = logging.getLogger(__name__)


class SweepReport(Callback):
    """Hydra callback: after a sweep, name the jobs that did not complete (their ``status.json``, or the record of
    a job this sweep's command refused) and make ``scalelong-train -m`` exit non-zero when any did; the others
    have run to the end.

    A refused job (its run directory in use, a stored run of other settings) writes nothing into its run, whose
    ``status.json`` may well say ``completed``; :meth:`record_refusal` keeps why under ``<sweep dir>/.refused/``,
    which each sweep's command empties when it starts."""

    REFUSALS = ".refused"
    failed: list[str] = []
    sweep_dir: str = ""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        shutil.rmtree(Path(config.hydra.sweep.dir) / self.REFUSALS, ignore_errors=True)

    @classmethod
    def record_refusal(cls, sweep_dir: Path, run_dir: Path, err: BaseException) -> None:
        """Record that this sweep's command refused the job of ``run_dir`` (in a worker process too)."""
        write_atomic(Path(sweep_dir) / cls.REFUSALS / Path(run_dir).name, str(err))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        refused = {p.name: p.read_text() for p in (sweep_dir / self.REFUSALS).glob("*") if p.is_file()}
        failed = [f"{name} (refused: {why})" for name, why in sorted(refused.items())]
        for status_file in sorted(sweep_dir.glob(f"*/{STATUS_FILE}")):
            status = read_status(status_file.parent) or {}
            if status.get("status") != "completed" and status_file.parent.name not in refused:
                failed.append(f"{status_file.parent.name} ({status.get('status')}: {status.get('error', '')})")
        SweepReport.failed, SweepReport.sweep_dir = failed, str(sweep_dir)
        if failed:
            log.error("%d job(s) of the sweep in %s did not complete: %s", len(failed), sweep_dir, "; ".join(failed))


class EndWithSweep(Callback):
    """Hydra callback: a job that a launcher runs in a worker process of the sweep (joblib's loky workers,
    started with ``multiprocessing``) ends with the sweep's process. When that process dies (SIGTERM, SIGKILL),
    the worker is sent SIGTERM: the job saves its checkpoint and records ``interrupted`` as a pre-empted run
    does, and the worker then exits (:func:`exit_if_orphaned`) instead of training on, orphaned, holding the run
    directory's lock. Jobs run in the sweep's own process (the basic launcher) or on other machines (SLURM) have
    no such parent and are left alone."""

    POLL_SECONDS = 1.0
    _watching = False

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        parent = multiprocessing.parent_process()
        if parent is not None and not EndWithSweep._watching:
            EndWithSweep._watching = True
            threading.Thread(target=self._watch, args=(parent.pid,), daemon=True, name="end-with-sweep").start()

    def _watch(self, sweep_pid: int) -> None:
        while os.getppid() == sweep_pid:
            time.sleep(self.POLL_SECONDS)
        log.warning("the sweep's process %d has ended; stopping this job (pid %d) as a pre-empted one", sweep_pid,
                    os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)


def exit_if_orphaned() -> None:
    """End this process, once its job has saved and recorded its status, if it is a worker of a sweep whose
    process has died (:class:`EndWithSweep`); a live sweep hands it the next job."""
    parent = multiprocessing.parent_process()
    if EndWithSweep._watching and parent is not None and os.getppid() != parent.pid:
        logging.shutdown()
        os._exit(128 + signal.SIGTERM)


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
