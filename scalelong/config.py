"""Access to the Hydra config tree in ``conf/`` from Python (tests, notebooks, tools)."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Collection, Mapping, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from scalelong.compiling import check_compile_setting
from scalelong.errors import ConfigError, ScaleLongError
from scalelong.finetune import check_finetune_config
from scalelong.models.common import Backbone
from scalelong.result_keys import names_a_run
from scalelong.samplers import get_sampler

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def override_key(override: str) -> str:
    """The key of a command-line override: ``trainer.max_steps`` of ``trainer.max_steps=5`` or of
    ``trainer.max_steps-5`` (the ``key-value`` form of Hydra's ``override_dirname``), ``logger`` of
    ``logger=wandb``, ``callbacks.ema`` of ``~callbacks.ema``."""
    return re.split(r"[=-]", override.lstrip("+~"), maxsplit=1)[0]  # keys hold neither "=" nor "-"


def names_the_run(override: str, swept: Collection[str] = ()) -> bool:
    """Whether a command-line override (``key=value`` or ``key-value``) names the run directory: whether
    its key changes the result (the one table, :data:`scalelong.result_keys.RESULT_KEYS`, which also
    decides which stored settings refuse a resume), or is one of the keys a sweep gives several values."""
    return names_a_run(override_key(override), swept)


def run_name(override_dirname: str, max_len: int = 120, swept: Collection[str] = ()) -> str:
    """A run directory name from the command-line overrides (``scaler-ls__seed-1``).

    The overrides whose key changes the result, or that the sweep gives several values (``swept``), name the
    run (:func:`names_the_run`); a ``/`` in a value becomes ``%``; names longer than ``max_len`` end in a hash
    of the full name.
    """
    items = [it for it in override_dirname.split("__") if it and names_the_run(it, swept)]
    name = "__".join(items).replace("/", "%") or "default"
    if len(name) > max_len:
        name = f"{name[: max_len - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def sweep_overrides(multirun_yaml: Path) -> list[Override]:
    """The overrides of a sweep, from the ``multirun.yaml`` Hydra saves in the sweep directory before it
    launches the jobs: the command line's and the experiment's ``hydra.sweeper.params``."""
    config = yaml.safe_load(Path(multirun_yaml).read_text()) or {}
    hydra_cfg = config.get("hydra") or {}
    overrides = list((hydra_cfg.get("overrides") or {}).get("task") or [])
    params = (hydra_cfg.get("sweeper") or {}).get("params") or {}
    overrides += [f"{key}={value}" for key, value in params.items()]
    return OverridesParser.create().parse_overrides(overrides)


def swept_keys() -> set[str]:
    """The keys to which the sweep running this job gives several values (none outside a sweep)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return set()
    multirun_yaml = Path(HydraConfig.get().sweep.dir) / "multirun.yaml"
    if not multirun_yaml.is_file():
        return set()
    return {o.key_or_group for o in sweep_overrides(multirun_yaml) if o.is_sweep_override()}


def job_run_name(override_dirname: str) -> str:
    """``run_name`` unless set: :func:`run_name` of the job's overrides, with the keys its sweep gives several
    values."""
    return run_name(override_dirname, swept=swept_keys())


def run_dir_name(name: str) -> str:
    """``run_name`` checked to be one directory name, so the run stays under ``outputs/runs/``."""
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ConfigError(f"run_name={name!r} is not a single directory name; pick a name without '/' "
                          "and other than '..', e.g. run_name=my_run")
    return name


def slurm_gpus(devices: object) -> int:
    """GPUs (and tasks) per node of the SLURM launcher: ``trainer.devices``, which must be a count there
    (``trainer=ddp`` alone means "all GPUs of the node", a number SLURM has to be told)."""
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ConfigError(f"hydra/launcher=slurm requests trainer.devices GPUs per node, but "
                          f"trainer.devices={devices!r}; set the count, e.g. trainer.devices=8")
    return devices


def runtime_cwd() -> str:
    """Hydra's ``runtime.cwd`` in a job; the current directory before Hydra sets it (a sweep's
    directory is resolved then)."""
    return HydraConfig.get().runtime.cwd if HydraConfig.initialized() else os.getcwd()


def decay_horizon(decay: str, max_steps: int) -> int | None:
    """``optim.decay_steps`` unless set: the cosine decays to its floor at ``trainer.max_steps``; a constant lr
    has no horizon (so a longer run continues it)."""
    return max_steps if decay == "cosine" else None


def with_stored_defaults(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A run config stored before a key existed, completed with the value that run used: ``optim.decay_steps``
    (the cosine's horizon, a key since the cosine runs could be extended) is :func:`decay_horizon` of the stored
    decay and ``trainer.max_steps``. Every reader of a stored config (checkpoints, run status) goes through this."""
    optim = stored.get("optim")
    if not isinstance(optim, Mapping) or "decay" not in optim or "decay_steps" in optim:
        return dict(stored)
    horizon = decay_horizon(optim["decay"], (stored.get("trainer") or {}).get("max_steps"))
    return {**stored, "optim": {**optim, "decay_steps": horizon}}


OmegaConf.register_new_resolver("decay_horizon", decay_horizon, replace=True)
OmegaConf.register_new_resolver("run_name", job_run_name, replace=True)
OmegaConf.register_new_resolver("run_dir_name", run_dir_name, replace=True)
OmegaConf.register_new_resolver("runtime_cwd", runtime_cwd, replace=True)
OmegaConf.register_new_resolver("slurm_gpus", slurm_gpus, replace=True)


# Whole-number settings: (key, least value, what it counts, an example). A key the composed config does not hold
# (a conv UNet has no ``model.depth``) is not checked.
WHOLE_NUMBERS = (
    ("trainer.max_steps", 1, "training steps", 1200),
    ("seed", 0, "the run's seed", 0),
    ("model.patch_size", 1, "U-ViT's patch side in pixels", 4),
    ("model.depth", 1, "U-ViT's transformer blocks", 8),
    ("diffusion.num_timesteps", 1, "the diffusion steps T", 1000),
    ("optim.warmup_steps", 0, "linear warm-up steps", 100),
)


def check_whole_number(value: object, key: str, least: int, what: str, example: int) -> None:
    """``ConfigError`` naming ``key`` unless ``value`` is a whole number of at least ``least``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{key}={value!r} must be a whole number of at least {least} ({what}); "
                          f"set it, e.g. {key}={example}")


def check_train_config(cfg: DictConfig) -> None:
    """Refuse values that would otherwise fail deep inside a run (a traceback from the optimiser,
    Hydra's ``instantiate`` or the last sample grid) or be accepted silently (``model.depth=0``) with one
    ``ConfigError`` naming the key."""
    for key, least, what, example in WHOLE_NUMBERS:
        value = OmegaConf.select(cfg, key)
        if value is not None:
            check_whole_number(value, key, least, what, example)
    check_compile_setting((cfg.get("trainer") or {}).get("compile", False))
    ema = (cfg.get("callbacks") or {}).get("ema")
    decay = ema.get("decay") if ema is not None else None
    if decay is not None and not (_is_number(decay) and 0 <= float(decay) <= 1):
        raise ConfigError(f"callbacks.ema.decay={decay!r} must be a number in [0, 1] (the EMA's weight on the old "
                          "average); set it, e.g. callbacks.ema.decay=0.999, or callbacks.ema=null for no EMA")
    kappa_key = "cs_kappa" if OmegaConf.to_container(cfg.scaler).get("kappa") == "${cs_kappa}" else "scaler.kappa"
    kappa = cfg.scaler.get("kappa")
    if kappa is not None and kappa != "auto" and not _is_number(kappa):
        raise ConfigError(f"{kappa_key}={kappa!r} is not a number; set the constant-scaling κ, e.g. {kappa_key}=0.5 "
                          f"(paper: CIFAR-10 and CelebA 0.5, ImageNet 64 0.7), or {kappa_key}=auto to measure it")
    if kappa is not None and kappa != "auto" and not float(kappa) > 0:
        raise ConfigError(f"{kappa_key}={kappa} must be > 0; set the constant-scaling κ in (0, 1], e.g. "
                          f"{kappa_key}=0.5, or {kappa_key}=auto to measure it")
    if kappa != "auto":
        try:
            instantiate(cfg.scaler)  # the scaler's own checks (ratio, activation, c, τ), before any file is written
        except InstantiationException as err:
            if isinstance(err.__cause__, ScaleLongError):
                raise err.__cause__ from None
            raise
    check_finetune_config(OmegaConf.to_container(cfg.finetune, resolve=True) if "finetune" in cfg else None)
    lr = cfg.optim.get("lr")
    if not _is_number(lr) or float(lr) < 0:
        raise ConfigError(f"optim.lr={lr!r} is not a learning rate; set a positive number, e.g. optim.lr=2e-4 "
                          "(the default)")
    loggers = [c for c in (cfg.get("logger") or {}).values() if c is not None]
    if any(str(c.get("_target_", "")).endswith("WandbLogger") for c in loggers) and not find_spec("wandb"):
        raise ConfigError("logger=wandb needs the wandb package, an optional dependency: "
                          "pip install -e '.[wandb]' (or pip install wandb), or log to CSV only with logger=csv")
    samples = cfg.get("callbacks", {}).get("samples")
    num_samples = samples.get("num_samples") if samples is not None else 1
    if not (_is_number(num_samples) and float(num_samples) >= 1):
        raise ConfigError(f"callbacks.samples.num_samples={num_samples!r} draws no sample grid; set "
                          "it to at least 1, e.g. callbacks.samples.num_samples=16, or turn the grids off with "
                          "callbacks.samples=null")
    if samples is not None and "sampler" in samples:
        get_sampler(samples.sampler, key="callbacks.samples.sampler")  # else the last grid fails after training


class ConfigCheck(Callback):
    """Hydra callback: :func:`check_train_config` before Hydra creates the run directory, so a bad value
    ends the command with one line and leaves no directory behind. (A sweep's jobs are checked in the
    job, where a failure is recorded in the job's ``status.json``.)"""

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        HydraConfig.instance().set_config(config)
        try:
            check_train_config(config)
        except ConfigError as err:
            sys.exit(f"scalelong-{config.hydra.job.name}: {err}")


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def compose(
    overrides: Sequence[str] = (), config_name: str | None = "train", return_hydra_config: bool = False
) -> DictConfig:
    """Compose a config like ``scalelong-train`` would, without running anything."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name, list(overrides), return_hydra_config=return_hydra_config)


def build_model(preset: str, scaler: str = "none", overrides: Sequence[str] = ()) -> Backbone:
    """A backbone from a ``conf/model`` preset and a ``conf/scaler`` option, e.g.
    ``build_model("uvit_s2_cifar10", "cs", ["cs_kappa=0.7"])``."""
    cfg = compose([f"model={preset}", f"scaler={scaler}", *overrides])
    return instantiate(cfg.model)
