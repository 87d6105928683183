"""Which config keys change the result of a run: the one table that both names a run directory
(``scalelong.config.names_the_run``, the filter on Hydra's ``override_dirname``) and refuses a
resume whose stored config differs (``scalelong.runs.resume.config_differences``).

The rule: a key changes the result when two runs that differ only in it may train different weights,
that is when it changes the model and its skip scaler, the images and the order they are drawn in,
the diffusion, the optimiser, the update (clipping, gradient accumulation, numeric precision), the seed,
or the EMA average that is saved and sampled. Such a key names the run (``scaler-ls__seed-1``) and a
run resumes only from a checkpoint that agrees on every one of them. A key that says where or how fast
data is read (``data.root``, ``data.num_workers``), how long or on which devices a run trains (the
global batch stays ``data.batch_size``; under ``optim.decay=cosine`` the decay's horizon is its own key,
``optim.decay_steps``, which follows ``trainer.max_steps`` unless set), or how it is observed, logged,
checkpointed, evaluated afterwards or named, does neither: the same command with it changed resumes the same run.

In a sweep, a key that takes several values names the jobs as well (:func:`names_a_run`), whatever its entry:
each job is a run of its own, and jobs that differ only in ``trainer.max_steps`` must not share a directory.

An entry covers its key and every key under it (``data`` covers ``data.batch_size``); the longest
entry wins, so ``data.num_workers`` overrides ``data``. A group choice (``model=uvit_deep``,
``trainer=gpu``) reads the entry of its group. A choice of a group that does not name the run may
still set a field that does (``trainer=gpu`` sets ``trainer.precision=16-mixed``): a resume with it is
refused with that field named. A key in no entry changes the result (``tests/test_result_keys.py``
checks that every key of the config tree has an entry).
"""

from __future__ import annotations

import re
from collections.abc import Collection

RESULT_KEYS: dict[str, bool] = {
    # What is trained, on which data, with which noise, optimiser and seed: the choice and every field.
    "model": True, "scaler": True, "cs_kappa": True, "data": True, "diffusion": True, "optim": True,
    "seed": True, "experiment": True, "debug": True, "finetune": True,
    # ... except where the data is read from and how fast: the same images in the same order.
    "data.root": False, "data.download": False, "data.debian_dir": False, "data.num_workers": False,
    # How a run is executed, observed, logged, checkpointed, stored, evaluated afterwards and named.
    "trainer": False, "callbacks": False, "logger": False, "paths": False, "hydra": False,
    "ckpt_path": False, "run_name": False, "final_eval": False,
    # ... except the update and the averaged weights: clipping, accumulation, precision, EMA.
    "trainer.gradient_clip_val": True, "trainer.gradient_clip_algorithm": True,
    "trainer.accumulate_grad_batches": True, "trainer.precision": True, "callbacks.ema": True,
}


def classifying_entry(key: str) -> str | None:
    """The entry of :data:`RESULT_KEYS` that decides ``key`` (``data.num_workers`` for
    ``data.num_workers``, ``model`` for ``model.depth``, ``hydra`` for ``hydra/launcher``), or None."""
    parts = re.split(r"[./]", key)
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in RESULT_KEYS:
            return prefix
    return None


def changes_result(key: str) -> bool:
    """Whether a config key (``model.depth``) or group (``trainer``, ``hydra/launcher``) changes what a
    run computes (:data:`RESULT_KEYS`); a key in no entry does."""
    entry = classifying_entry(key)
    return entry is None or RESULT_KEYS[entry]


def names_a_run(key: str, swept: Collection[str] = ()) -> bool:
    """Whether an override of ``key`` names the run directory: it changes the result, or it is one of the keys
    to which the sweep running it gives several values (``swept``)."""
    return changes_result(key) or key in swept


def is_under(key: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``key`` is one of ``prefixes`` or a key under one (``model.depth`` is under ``model``)."""
    return any(key == p or key.startswith((f"{p}.", f"{p}/")) for p in prefixes)
