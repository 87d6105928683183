"""A reproduction study: which backbone, which recipe and sweeps, and which written prose its report includes.

Studies are data (``conf/reproduction/<name>.yaml``), so a new backbone's reproduction is a config, not code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from scalelong.config import CONF_DIR
from scalelong.errors import ConfigError

STUDY_DIR = CONF_DIR / "reproduction"
REPO_ROOT = CONF_DIR.parent
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w.]*)\}")


@dataclass(frozen=True)
class Study:
    """One reproduction: ``conf/reproduction/<name>.yaml`` and the recipe experiment it names."""

    name: str
    title: str
    backbone: str
    recipe_name: str
    sweeps: tuple[str, ...]
    out: Path
    report: Path
    command: str
    setup: Path
    notes: tuple[tuple[str, Path], ...]
    recipe: DictConfig

    @property
    def lr(self) -> float:
        """The recipe's learning rate: the runs at this lr (and κ) are the main cells of every claim."""
        return float(self.recipe.optim.lr)

    @property
    def kappa(self) -> float:
        """κ of cs and cs_reversed in the main cells (the recipe's ``cs_kappa``, else conf/train.yaml's)."""
        value = self.recipe.get("cs_kappa")
        return float(value if value is not None else OmegaConf.load(CONF_DIR / "train.yaml").cs_kappa)

    def is_recipe_lr(self, lr: float) -> bool:
        return math.isclose(lr, self.lr)

    def sweep_experiment(self, sweep: str) -> str:
        return f"{self.recipe_name}_{sweep}"

    def prose(self, path: Path) -> str:
        """A written prose file with each ``{key.path}`` replaced by the recipe's value."""
        text = (REPO_ROOT / path).read_text().strip()

        def value(match: re.Match) -> str:
            found = OmegaConf.select(self.recipe, match.group(1))
            if found is None:
                raise ConfigError(f"{path}: {{{match.group(1)}}} is not a key of "
                                  f"conf/experiment/{self.recipe_name}.yaml")
            return f"{found:g}" if isinstance(found, float) else str(found)

        return _PLACEHOLDER.sub(value, text)


def studies() -> list[str]:
    return sorted(p.stem for p in STUDY_DIR.glob("*.yaml"))


def load_study(name: str) -> Study:
    """The study ``conf/reproduction/<name>.yaml``; an unknown name is one error listing the known ones."""
    path = STUDY_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no reproduction study '{name}'; choose one of {', '.join(studies())} (conf/reproduction/)")
    cfg = OmegaConf.load(path)
    recipe = OmegaConf.load(CONF_DIR / "experiment" / f"{cfg.recipe}.yaml")
    return Study(name, cfg.title, cfg.backbone, cfg.recipe, tuple(cfg.sweeps), Path(cfg.out), Path(cfg.report),
                 cfg.command, Path(cfg.setup), tuple((n.title, Path(n.path)) for n in cfg.get("notes", [])), recipe)


def study_of_runs(model_targets: set[str]) -> str:
    """The study of a sweep directory from its runs' model classes: U-ViT runs are the ``uvit`` study."""
    return "uvit" if any(t.endswith(".UViT") for t in model_targets) else "conv_unet"
