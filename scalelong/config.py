"""Access to the Hydra config tree in ``conf/`` from Python (tests, notebooks, tools)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from scalelong.models.common import Backbone

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# ``${or_default:${hydra:job.override_dirname},default}`` names a run with no overrides "default".
OmegaConf.register_new_resolver("or_default", lambda value, default: value or default, replace=True)


def compose(
    overrides: Sequence[str] = (), config_name: str | None = "train", return_hydra_config: bool = False
) -> DictConfig:
    """Compose a config like ``scalelong-train`` would, without running anything."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name, list(overrides), return_hydra_config=return_hydra_config)


def build_model(preset: str, scaler: str = "none", overrides: Sequence[str] = ()) -> Backbone:
    """A backbone from a ``conf/model`` preset and a ``conf/scaler`` option, e.g.
    ``build_model("uvit_s2_cifar10", "cs", ["scaler.kappa=0.7"])``."""
    cfg = compose([f"+model={preset}", f"+scaler={scaler}", *overrides], config_name=None)
    return instantiate(cfg.model)
