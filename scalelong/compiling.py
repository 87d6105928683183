"""``trainer.compile``: ``torch.compile`` of the backbone for the training forward, where it pays.

The compiled callable is kept beside the backbone, never registered as a submodule: the module's state dict, its
checkpoints and Lightning's EMA copy hold the backbone's own parameter names (no ``_orig_mod.``), and everything
else that calls the backbone (validation, the stability callbacks' hooks, sampling, ``scalelong-sample``) calls it
eagerly. Inductor draws random numbers with eager's generators (``fallback_random``), so a compiled run draws the
same dropout and label-dropout masks as an eager one: the two train the same weights up to float rounding, and
``trainer.compile`` is no result key (``scalelong.result_keys``): it names no run and refuses no resume.

``auto`` compiles on a GPU for runs of at least :data:`AUTO_MIN_STEPS` steps, where inductor fuses the elementwise
work into a few kernels and a compile of a minute or two is paid back many times; on a CPU it does not compile: the
training step there is bound by matmuls that compiling leaves as they are, the compile takes minutes, and the
compiled U-ViT step measured no faster than eager (``docs/benchmarks/``, ``scalelong-bench``), so the demo (1,200
steps, minutes) would only lose time. ``true`` compiles anywhere, ``false`` never.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from scalelong.errors import ConfigError

AUTO_MIN_STEPS = 20_000
"""The shortest run ``trainer.compile=auto`` compiles on a GPU."""
INDUCTOR_OPTIONS = {"fallback_random": True}
"""Random draws inside the compiled graph come from eager's generator: the same masks as an eager run."""


def check_compile_setting(setting: object) -> None:
    """``ConfigError`` naming ``trainer.compile`` unless it is true, false or auto."""
    if not (isinstance(setting, bool) or setting == "auto"):
        raise ConfigError(f"trainer.compile={setting!r} is not a setting; use true (torch.compile the backbone), "
                          "false (eager), or auto (compile on a GPU for runs of at least "
                          f"{AUTO_MIN_STEPS:,} steps)")


def compiles(trainer: Mapping[str, Any] | None) -> bool:
    """Whether a run with these ``trainer`` settings compiles its backbone (see the module doc). A config stored
    before ``trainer.compile`` existed did not."""
    trainer = trainer or {}
    setting = trainer.get("compile", False)
    check_compile_setting(setting)
    if setting != "auto":
        return bool(setting)
    accelerator = str(trainer.get("accelerator", "cpu"))
    gpu = accelerator in ("gpu", "cuda") or accelerator == "auto" and torch.cuda.is_available()
    max_steps = trainer.get("max_steps") or 0
    return gpu and max_steps >= AUTO_MIN_STEPS


class CompiledBackbone:
    """``torch.compile(model)``, built on the first call (when the module trains), called like the model.

    Deliberately not an ``nn.Module``: stored on a module it adds no parameters or state-dict keys. A deep copy
    (the EMA average Lightning makes of the module) copies the backbone and starts uncompiled.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._compiled: nn.Module | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled is None:
            self._compiled = torch.compile(self.model, options=INDUCTOR_OPTIONS)
        return self._compiled(*args, **kwargs)

    def __deepcopy__(self, memo: dict[int, Any]) -> CompiledBackbone:
        return CompiledBackbone(copy.deepcopy(self.model, memo))

    def __getstate__(self) -> dict[str, Any]:
        return {"model": self.model, "_compiled": None}
