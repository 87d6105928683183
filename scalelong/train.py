"""``scalelong-train``: train a diffusion backbone with an LSC scaler from the Hydra config tree.

    scalelong-train                                   # CPU U-ViT with cs on Fashion-MNIST
    scalelong-train model=uvit_deep scaler=ls seed=1  # any group option, any field
    scalelong-train -m scaler=none,uniform,cs,ls seed=0,1,2   # a sweep, one run directory each
    scalelong-train experiment=cifar10_uvit_s2 trainer=ddp    # a paper setting on GPUs

A run directory holds ``.hydra/`` (the composed config), ``train.log``, ``csv/metrics.csv``,
``checkpoints/`` (``last.ckpt`` and one per interval), ``samples/``, ``summary.json`` and
``status.json``. Running the same command again resumes from the newest valid checkpoint
(``ckpt_path=auto``), or does nothing if the run has finished. A command that is refused (the run
directory in use, a stored run of other settings) writes nothing into the run it refused. In a sweep, a
job that fails with a user error is recorded in its ``status.json``, one that is refused in the sweep
directory's ``.refused/``; the other jobs still run, and the sweep exits 1 naming both kinds. SIGTERM
saves the running job and ends the sweep (exit code 143), and the same command fills in the rest.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from scalelong.atomic import write_atomic
from scalelong.config import CONF_DIR, check_train_config, run_dir_name
from scalelong.errors import ConfigError, OutputError, ScaleLongError
from scalelong.finetune import parameter_counts
from scalelong.kappa_range import resolve_auto_kappa
from scalelong.lit import DiffusionModule, build_module
from scalelong.runs.callbacks import CSV_ROWS_KEY, RunInterrupted
from scalelong.runs.hydra_callbacks import SweepReport, exit_if_orphaned
from scalelong.runs.lock import RunLock
from scalelong.runs.record import run_log, save_hydra_record
from scalelong.runs.resume import completed_step, resume_checkpoint
from scalelong.runs.status import holds_an_attempt, read_status, write_status
from scalelong.runs.trainer import build_trainer

log = logging.getLogger("scalelong.train")

# Lightning warns when resuming mid-epoch with a loader it cannot restore; ours needs no state:
# ResumableBatchSampler derives its position from the restored global step.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


@dataclass
class Attempt:
    """What an accepted attempt starts from: the module, the data, and the checkpoint it resumes (or None)."""

    module: DiffusionModule
    datamodule: L.LightningDataModule
    ckpt: str | None
    stored: dict | None
    auto_kappa: float | None


def train(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Build everything from ``cfg``, fit, and return the final metrics (also in summary.json).

    Holds the run directory's lock for the whole run (rank 0). Every check that may refuse the command (the
    directory in use, a bad value, a stored run of other settings, a finished run) comes before anything is
    written: a refused command leaves the run it refused as it was. An accepted attempt records its
    ``.hydra/``, ``train.log`` and ``status.json``: ``running``, then ``completed``, or ``failed`` with the error.
    """
    run_dir = Path(run_dir)
    if rank_zero_only.rank != 0:
        with _user_errors_as_themselves():
            attempt = _accepted(cfg, run_dir)
            return attempt if isinstance(attempt, dict) else _fit(cfg, run_dir, attempt)
    with RunLock(run_dir):
        owned = not holds_an_attempt(run_dir)  # a new directory: recording this command's failure harms nothing
        try:
            with _user_errors_as_themselves():
                attempt = _accepted(cfg, run_dir)
                if isinstance(attempt, dict):  # the run has finished
                    return attempt
                owned = True
                save_hydra_record(run_dir, cfg)
                with run_log(run_dir):
                    return _fit(cfg, run_dir, attempt)
        except BaseException as err:
            if owned:
                try:
                    write_status(run_dir, "interrupted" if isinstance(err, RunInterrupted) else "failed",
                                 error=f"{type(err).__name__}: {err}")
                except OutputError as status_err:  # a full disk: report the error that ended the run
                    log.warning("%s", status_err)
            raise


@contextmanager
def _user_errors_as_themselves() -> Iterator[None]:
    """A user error raised in a constructor (a data module's missing folder) passed on as itself: Hydra's
    ``instantiate`` wraps it in an ``InstantiationException``."""
    try:
        yield
    except InstantiationException as err:
        if isinstance(err.__cause__, ScaleLongError):
            raise err.__cause__ from None
        raise


def _accepted(cfg: DictConfig, run_dir: Path) -> Attempt | dict[str, float]:
    """The attempt this command may start, or the summary of a run it finds finished; a ``ScaleLongError`` that
    names the fix when it may not. Writes nothing but the archive that ``ckpt_path=null`` asks for, last."""
    check_train_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    auto = resolve_auto_kappa(cfg)
    module = build_module(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.shuffle_seed = cfg.seed
    check_geometry(module, datamodule)
    ckpt, stored = resume_checkpoint(cfg.ckpt_path, run_dir, module.config)
    summary_file = run_dir / "summary.json"
    step = stored["global_step"] if stored is not None else None
    if step is None and cfg.ckpt_path == "auto":
        step = completed_step(run_dir, module.config)  # a finished run kept without its checkpoints
    if step is not None and step >= cfg.trainer.max_steps > 0 and summary_file.is_file():
        keep = (f" with optim.decay_steps={module.decay_steps} run_name={run_dir.name} (its cosine ends there)"
                if module.decay == "cosine" else "")
        log.info("run %s already finished at step %d (trainer.max_steps=%d); its results are kept. Raise "
                 "trainer.max_steps%s to continue it, or pass ckpt_path=null to start over",
                 run_dir, step, cfg.trainer.max_steps, keep)
        return json.loads(summary_file.read_text())
    return Attempt(module, datamodule, ckpt, stored, auto)


def _fit(cfg: DictConfig, run_dir: Path, attempt: Attempt) -> dict[str, float]:
    module, datamodule, ckpt, stored, auto = (attempt.module, attempt.datamodule, attempt.ckpt, attempt.stored,
                                              attempt.auto_kappa)
    if rank_zero_only.rank == 0:
        write_status(run_dir, "running")
    # Rows after the checkpoint come again; without one (a first attempt killed before its first
    # checkpoint), all of them do.
    kept_rows = 0 if stored is None else stored.get(CSV_ROWS_KEY)
    trainer = build_trainer(cfg, run_dir, kept_rows)
    trainable, total = parameter_counts(module.model)
    log.info("run %s: %s with %s, %d LSCs, %.2fM parameters, %d trainable%s%s%s", run_dir,
             type(module.model).__name__, cfg.scaler._target_.rsplit(".", 1)[-1], module.model.num_skips, total / 1e6,
             trainable, f" (finetune={module.finetune.method} of {module.finetune.base}: {trainable / total:.2%})"
             if module.finetune else "", ", compiled (trainer.compile)" if module.compiled else "",
             f", resuming {ckpt}" if ckpt else "")
    if auto is not None:
        log.info("scaler.kappa=auto chose kappa = %.4f (paper Sec. 4.1)", auto)
        for logger in trainer.loggers:
            logger.log_metrics({"kappa/auto": auto}, step=0)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    except SIGTERMException:  # Lightning's own stop, when SIGTERM came after RunFiles' last look
        raise RunInterrupted(f"stopped by SIGTERM at step {trainer.global_step}; the last checkpoint in "
                             f"{run_dir / 'checkpoints'} is kept. Run the same command again to resume") from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    metrics["step"] = trainer.global_step
    # honest accounting (every run, so that a fine-tune's checkpoint can be set against its base's): what
    # trained, and what the checkpoint weighs
    last = run_dir / "checkpoints" / "last.ckpt"
    metrics.update(trainable_params=trainable, total_params=total,
                   checkpoint_bytes=last.stat().st_size if last.is_file() else 0)
    if trainer.is_global_zero:
        write_atomic(run_dir / "summary.json", json.dumps(metrics, indent=2))
        write_status(run_dir, "completed", step=trainer.global_step, config=module.config)
    return metrics


def check_geometry(module: DiffusionModule, datamodule: L.LightningDataModule) -> None:
    """The model's input geometry must match the data's (one clear error, not a shape mismatch)."""
    m = module.model
    want = (datamodule.channels, datamodule.image_size)
    have = (m.in_chans, m.img_size)
    if want != have:
        raise ConfigError(
            f"model expects {have[0]}×{have[1]}×{have[1]} images but data gives "
            f"{want[0]}×{want[1]}×{want[1]}; pick a model preset for this data or set "
            f"model.in_chans={want[0]} model.img_size={want[1]}"
        )
    if m.num_classes and not datamodule.num_classes:
        raise ConfigError(f"model.num_classes={m.num_classes} but the data has no labels; set model.num_classes=0")
    if 0 < m.num_classes < datamodule.num_classes:
        raise ConfigError(f"model.num_classes={m.num_classes} but the data has {datamodule.num_classes} classes "
                          f"({datamodule.name}); set model.num_classes={datamodule.num_classes}")


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    status_before = read_status(run_dir)
    try:
        return train(cfg, run_dir).get("val/loss")
    except ScaleLongError as err:
        log.error("%s", err)
        if isinstance(err, RunInterrupted):  # pre-emption ends a sweep too; its rerun resumes this job
            print(f"scalelong-train: {err}", file=sys.stderr)
            sys.exit(128 + signal.SIGTERM)
        if hydra_cfg.mode == RunMode.MULTIRUN:  # the sweep goes on; its report names this job
            if read_status(run_dir) == status_before:  # refused: the run does not record this attempt
                SweepReport.record_refusal(hydra_cfg.sweep.dir, run_dir, err)
            return None
        sys.exit(f"scalelong-train: {err}")
    finally:
        exit_if_orphaned()  # a joblib worker whose sweep has died ends here, its job saved


def check_run_name_overrides(argv: list[str]) -> None:
    """Refuse a bad ``run_name=...`` on the command line before Hydra resolves the run directory from it
    (Hydra would report the ConfigError of ``run_dir_name`` inside a long interpolation traceback).
    A sweep's comma-separated values are checked one by one."""
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key == "run_name" and value not in ("null", ""):
            for name in value.split(","):
                run_dir_name(name.strip().strip("'\""))


def main() -> None:
    """Console entry point (``scalelong-train``)."""
    try:
        check_run_name_overrides(sys.argv[1:])
    except ConfigError as err:
        sys.exit(f"scalelong-train: {err}")
    _hydra_main()
    if SweepReport.failed:
        sys.exit(f"scalelong-train: {len(SweepReport.failed)} job(s) of the sweep did not complete: "
                 f"{'; '.join(SweepReport.failed)}; the other jobs finished. Fix the cause and rerun the same "
                 f"command with hydra.sweep.dir={SweepReport.sweep_dir} to fill them in")


if __name__ == "__main__":
    main()
