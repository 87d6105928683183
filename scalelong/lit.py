"""The LightningModule: ε-prediction training of a backbone (paper App. A), and checkpoint loading.

Training is AdamW with linear warm-up then a constant learning rate; EMA of the weights is
Lightning's ``EMAWeightAveraging`` callback, which swaps the EMA weights in for validation and
stores them as the checkpoint's ``state_dict`` (the raw weights go to ``current_model_state``).
Validation is the loss on fixed held-out (x_0, t, ε, δ), so curves compare across runs.

Randomness: every training step reseeds the global RNG from (seed, step, rank), so t, ε, δ,
dropout and label dropout are a function of the step, and a resumed run repeats an
uninterrupted one exactly (the data order is resumable too, see ``ResumableBatchSampler``).
"""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from scalelong.compiling import CompiledBackbone, compiles
from scalelong.config import with_stored_defaults
from scalelong.diffusion import Diffusion
from scalelong.errors import CheckpointError, ConfigError, ScaleLongError
from scalelong.finetune import FineTuned, check_finetune_config, fine_tune
from scalelong.models.common import Backbone
from scalelong.seeds import VALIDATION_STRIDE, derived_seed

log = logging.getLogger(__name__)

CONFIG_KEY = "scalelong_config"
LR_DECAYS = ("constant", "cosine")


class NonFiniteLossError(ScaleLongError, FloatingPointError):
    """The training loss became NaN or infinite."""


class DiffusionModule(L.LightningModule):
    """Trains ``model`` to predict ε under ``diffusion``.

    Args:
        model: the backbone (its LSC scaler is part of it).
        diffusion: noise schedule, objective and samplers.
        lr, betas, weight_decay, warmup_steps: AdamW with linear warm-up, then constant LR.
        decay: after warm-up, "constant" (U-ViT's) or "cosine": lr follows a half cosine down to
            ``min_lr_ratio``·lr at step ``decay_steps`` and stays there (short runs end on a settled model).
        decay_steps: the step the cosine ends at (``conf/optim``: ``trainer.max_steps`` unless set).
        min_lr_ratio: the final fraction of lr under "cosine".
        exclude_from_decay: put norms, biases, scalars (κ, α), label-embedding tables and the
            positional embedding in a group without weight decay (see ``no_decay_names``);
            ``False`` decays every parameter, as the official U-ViT/ScaleLong optimiser does.
        seed: base of the per-step seeds and of the fixed validation draws.
        config: the resolved run config, stored in every checkpoint so it rebuilds the model.
        finetune: what a fine-tune run trains (``scalelong.finetune``): its checkpoints keep only those
            tensors, and its γ and skip-scaler parameters learn at lr × ``finetune.lr_scale``.
        compile_backbone: the training forward runs ``torch.compile(model)`` (``trainer.compile``,
            :mod:`scalelong.compiling`); the state dict, validation, callbacks and sampling use ``model`` itself.
    """

    def __init__(
        self,
        model: Backbone,
        diffusion: Diffusion,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.99, 0.999),
        weight_decay: float = 0.03,
        warmup_steps: int = 0,
        exclude_from_decay: bool = True,
        decay: str = "constant",
        decay_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        seed: int = 0,
        config: dict[str, Any] | None = None,
        finetune: FineTuned | None = None,
        compile_backbone: bool = False,
    ) -> None:
        super().__init__()
        self.model, self.diffusion = model, diffusion
        self.lr, self.betas, self.weight_decay = lr, tuple(betas), weight_decay
        self.warmup_steps, self.exclude_from_decay = warmup_steps, exclude_from_decay
        if decay not in LR_DECAYS:
            raise ConfigError(f"optim.decay={decay!r} is unknown; use one of {', '.join(LR_DECAYS)}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio={min_lr_ratio} must be in [0, 1]")
        if decay == "cosine" and not (isinstance(decay_steps, int) and decay_steps > 0):
            raise ConfigError(f"optim.decay=cosine needs optim.decay_steps > 0 (the step the decay ends at), got "
                              f"{decay_steps!r}; set trainer.max_steps > 0 or optim.decay_steps")
        self.decay, self.decay_steps, self.min_lr_ratio = decay, decay_steps, min_lr_ratio
        self.seed, self.config, self.finetune = seed, config, finetune
        self.checkpoint_step: int | None = None  # the training step of the weights load_checkpoint read
        self.compiled = CompiledBackbone(model) if compile_backbone else None  # not a submodule: no state-dict keys

    def labels(self, y: torch.Tensor) -> torch.Tensor | None:
        """Labels for a class-conditional backbone, ``None`` for an unconditional one."""
        return y if self.model.num_classes else None

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x0, y = batch
        seed_draws(self._step_seed(), x0.device)
        t = torch.randint(0, self.diffusion.num_timesteps, (len(x0),), device=x0.device)
        forward = self.model if self.compiled is None else self.compiled
        per_sample = self.diffusion.loss(forward, x0, self.labels(y), t=t)
        loss = (per_sample * self.diffusion.loss_weights(t)).mean()
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss is {loss.item()} at step {self.global_step}; the run stopped and "
                "the last good checkpoint is kept. Lower optim.lr, set trainer.gradient_clip_val, or "
                "try a smaller cs_kappa"
            )
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x0, y = batch
        t, noise, delta = self.fixed_draws(x0, batch_idx)
        loss = self.diffusion.loss(self.model, x0, self.labels(y), t=t, noise=noise, delta=delta)
        self.log("val/loss", loss.mean(), prog_bar=True, sync_dist=True, batch_size=len(x0))

    def fixed_draws(self, x0: torch.Tensor, key: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(t, ε, δ) for held-out batch ``key``: the same in every validation of every run."""
        g = torch.Generator().manual_seed(derived_seed(self.seed, key, VALIDATION_STRIDE))
        t = torch.randint(0, self.diffusion.num_timesteps, (len(x0),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        delta = torch.randn(x0.shape, generator=g)
        return t.to(x0.device), noise.to(x0.device), delta.to(x0.device)

    def configure_optimizers(self) -> dict[str, Any]:
        spared = no_decay_names(self.model) if self.exclude_from_decay else set()
        fast = self.finetune.fast if self.finetune is not None else frozenset()
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {(True, False): []}  # (decayed, fast)
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                groups.setdefault((name not in spared, name in fast), []).append(p)
        opt = torch.optim.AdamW([
            {"params": groups[key], "weight_decay": self.weight_decay if key[0] else 0.0,
             "lr": self.lr * (self.finetune.lr_scale if key[1] else 1.0)}
            for key in ((True, False), (False, False), (True, True), (False, True)) if key in groups
        ], lr=self.lr, betas=self.betas)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def lr_factor(self, step: int) -> float:
        """lr multiplier after ``step`` optimiser steps: linear warm-up, then constant or cosine decay."""
        warmup = max(1, self.warmup_steps)
        if step + 1 < warmup:
            return (step + 1) / warmup
        if self.decay == "constant":
            return 1.0
        progress = min(1.0, (step + 1 - warmup) / max(1, self.decay_steps - warmup))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    @torch.no_grad()
    def sample(self, n: int, **kwargs: Any) -> torch.Tensor:
        """n images in [-1, 1] from the current weights (EMA weights after loading a checkpoint)."""
        m = self.model
        shape = (n, m.in_chans, m.img_size, m.img_size)
        was_training = m.training
        m.eval()
        try:
            return self.diffusion.sample(m, shape, num_classes=m.num_classes, device=self.device, **kwargs)
        finally:
            m.train(was_training)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.config
        if self.finetune is not None:
            self.finetune.keep_trained(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.finetune is not None:  # a resumed fine-tune: the frozen tensors come from the base again
            self.finetune.complete(checkpoint, self.state_dict(), "the checkpoint resumed")

    def _step_seed(self) -> int:
        return derived_seed(self.seed, self.global_step) * max(1, self.trainer.world_size) + self.global_rank


def seed_draws(seed: int, device: torch.device) -> None:
    """Seed the generators a training step draws from (t, ε, δ, dropout, label dropout), as ``torch.manual_seed``.

    On a CPU, only the CPU generator is seeded (the same draws): ``torch.manual_seed`` also queues a lazy seed for
    every accelerator that is not initialised (CUDA, XPU, MTIA) and records the Python stack with each, a cost the
    framework-overhead benchmark sees (``docs/benchmarks/README.md``). On an accelerator, ``torch.manual_seed`` itself.
    """
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def no_decay_names(model: torch.nn.Module) -> set[str]:
    """Parameters ``exclude_from_decay`` spares: tensors of < 2 dims (norm weights, biases, κ, α),
    ``nn.Embedding`` tables (labels) and learned positional embeddings (``pos_embed``).

    Linear and conv weights are decayed even inside an embedding stage (the conv UNet's time MLP
    ``time_embed.*.weight``, U-ViT's ``patch_embed``): they are ordinary layers.
    """
    tables = {f"{m}.weight" for m, mod in model.named_modules() if isinstance(mod, torch.nn.Embedding)}
    return {
        name for name, p in model.named_parameters()
        if p.ndim < 2 or name in tables or name.rsplit(".", 1)[-1] == "pos_embed"
    }


def build_module(cfg: DictConfig | dict[str, Any]) -> DiffusionModule:
    """Model, diffusion and optimiser settings from a run config; the resolved config is kept.

    With a ``finetune`` method other than ``none``, the model is the base checkpoint ``finetune.from``
    (read with :func:`read_checkpoint`) turned into what the method trains (:func:`scalelong.finetune.fine_tune`).
    """
    cfg = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
    resolved = OmegaConf.to_container(cfg, resolve=True)
    model = instantiate(cfg.model)
    ft = resolved.get("finetune") or {}
    check_finetune_config(ft)
    tuned = None
    if ft and ft.get("method", "none") != "none":
        base_path = ft["from"]
        base = read_checkpoint(base_path)
        if ((base[CONFIG_KEY].get("finetune") or {}).get("method") or "none") != "none":
            raise CheckpointError(f"finetune.from={base_path} is itself a fine-tune checkpoint; fine-tune from a "
                                  "checkpoint of a full training run (e.g. the base it was fine-tuned from)")
        base_module = _module_from(base, base_path)
        tuned = fine_tune(model, base_module.model, base[CONFIG_KEY], resolved, base_path)
    return DiffusionModule(
        model=model,
        diffusion=instantiate(cfg.diffusion),
        seed=cfg.seed,
        config=resolved,
        finetune=tuned,
        compile_backbone=compiles(resolved.get("trainer")),
        **cfg.optim,
    )


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict of a scalelong run; CheckpointError naming the file if it is unusable.

    Loads with ``weights_only=True``: a checkpoint is data (tensors, numbers, strings), and a file
    whose pickle would build any other object (and so could run code) is refused. The stored
    config may only name scalelong's own model, scaler, diffusion and data classes
    (``check_stored_targets``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of a .ckpt file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses a pickle that would build objects as "Unsupported global"; other messages
        # ("Unsupported operand", truncated data) mean the file is not a readable checkpoint at all.
        if "unsupported global" not in str(err).lower():
            detail = next((line.strip() for line in str(err).splitlines() if "Unsupported" in line),
                          str(err).splitlines()[0] if str(err) else "")
            raise CheckpointError(f"checkpoint {path} cannot be read (UnpicklingError: {detail}); "
                                  "it is corrupt or not a PyTorch checkpoint: delete it or pick another") from err
        refused = str(err).split("\n\n")[1].strip() if "\n\n" in str(err) else str(err).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} holds Python objects that are not plain data and was not loaded, "
                              f"because unpickling them can run code ({refused.splitlines()[0]}); "
                              "use a .ckpt written by scalelong-train from a source you trust") from None
    except RuntimeError as err:
        if "device" in str(err).lower() and ("cuda" in str(err).lower() or "deserialize" in str(err).lower()):
            first_line = str(err).splitlines()[0]
            raise CheckpointError(f"checkpoint {path} cannot be loaded onto {map_location} ({first_line}); "
                                  "the file is fine: pick an available device, e.g. device=cpu") from err
        raise CheckpointError(f"checkpoint {path} cannot be read (RuntimeError: {str(err).splitlines()[0]}); "
                              "it is corrupt or not a PyTorch checkpoint: delete it or pick another") from err
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); "
                              "it is corrupt or not a PyTorch checkpoint: delete it or pick another") from err
    if not isinstance(ckpt, dict) or CONFIG_KEY not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a scalelong checkpoint (no stored run config); "
                              "use a .ckpt written by scalelong-train")
    check_stored_targets(ckpt[CONFIG_KEY], path)
    ckpt[CONFIG_KEY] = with_stored_defaults(ckpt[CONFIG_KEY])
    return ckpt


# The parts of a stored config that scalelong instantiates, and the classes they may name.
_INSTANTIATED = ("model", "scaler", "diffusion", "data")


def check_stored_targets(config: Any, path: str | Path) -> None:
    """Every ``_target_`` under the model, scaler, diffusion and data of a stored config must be
    one of scalelong's own backbone, scaler, diffusion or data-module classes; anything else
    (``os.system``, ``subprocess.Popen``, any importable callable) is refused before it is imported."""
    from hydra.utils import get_class

    from scalelong.data.base import ImageDataModule
    from scalelong.scalers import Scaler

    allowed = (Backbone, Scaler, Diffusion, ImageDataModule)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is not a scalelong checkpoint (its stored run config is not a mapping); "
                              "use a .ckpt written by scalelong-train")

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_target_":
                    check(value, where)
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    def check(target: Any, where: str) -> None:
        cls = None
        if isinstance(target, str) and target.startswith("scalelong."):
            try:
                cls = get_class(target)
            except Exception:  # not a class, or not importable
                cls = None
        if not (isinstance(cls, type) and cls.__module__.startswith("scalelong.") and issubclass(cls, allowed)):
            raise CheckpointError(
                f"checkpoint {path} names {where}._target_={target!r}, which is not a scalelong model, scaler, "
                "diffusion or data class; it was not loaded (a shared checkpoint must not run code). "
                "Use a .ckpt written by scalelong-train from a source you trust")

    for part in _INSTANTIATED:
        walk(config.get(part), part)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> DiffusionModule:
    """Rebuild the module of a scalelong checkpoint from its stored config and load its weights.

    The checkpoint's ``state_dict`` holds the EMA weights when EMA was on (Lightning's
    ``EMAWeightAveraging``), so the returned module samples with EMA weights; its ``checkpoint_step`` is the
    training step the checkpoint was written at.
    """
    return _module_from(read_checkpoint(path, map_location), path).eval()


def _module_from(ckpt: dict[str, Any], path: str | Path) -> DiffusionModule:
    """The module of a checkpoint read by :func:`read_checkpoint`, its weights loaded (a fine-tune checkpoint's
    frozen tensors from its base, which must be the one it was trained from)."""
    module = build_module(ckpt[CONFIG_KEY])
    if module.finetune is not None:
        module.finetune.complete(ckpt, module.state_dict(), path)
    own, stored = module.state_dict(), ckpt["state_dict"]
    missing, unexpected = [k for k in own if k not in stored], [k for k in stored if k not in own]
    mismatched = [k for k in stored if k in own and own[k].shape != stored[k].shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"weights in {path} do not fit the model of its stored config ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(mismatched)} of another shape, e.g. "
            f"{(missing + unexpected + mismatched)[0]}); the file was edited or written by another version: "
            "use a .ckpt written by this scalelong-train")
    module.load_state_dict(stored)
    module.checkpoint_step = int(ckpt.get("global_step", 0))
    log.info("loaded %s (step %s)", path, module.checkpoint_step)
    return module
