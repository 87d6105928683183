"""The one table of result-changing keys: every key of the config tree is in it, and the run name and
the resume check, which both read it, agree on every key."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from omegaconf import OmegaConf

from scalelong.config import CONF_DIR, compose, names_the_run, run_name, sweep_overrides
from scalelong.result_keys import RESULT_KEYS, changes_result, classifying_entry
from scalelong.runs.resume import config_differences, flatten

# A choice of a group that does not name the run, and the result-changing fields it sets all the same:
# the GPU presets train in fp16 as the paper does, so a CPU run continued with trainer=gpu is refused
# with trainer.precision named.
FIELDS_SET_BY_UNNAMED_CHOICES = {
    "trainer=gpu": ["trainer.precision: '32-true' -> '16-mixed'"],
    "trainer=ddp": ["trainer.precision: '32-true' -> '16-mixed'"],
}


def group_choices() -> list[str]:
    """One override per option of every group of ``conf/train.yaml`` (``model=uvit_deep``, ...); a
    callbacks option is added to the default callbacks, as its file says to use it."""
    groups = compose([], return_hydra_config=True).hydra.runtime.choices
    choices = []
    for group in sorted(g for g in groups if not g.startswith("hydra")):
        for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
            choices.append(f"callbacks=[default,{option}]" if group == "callbacks" else f"{group}={option}")
    return choices


@cache
def composed() -> dict[str, dict[str, Any]]:
    """The default config and the config of each group choice, as plain (unresolved) dicts."""
    configs = {"": OmegaConf.to_container(compose([]), resolve=False)}
    for choice in group_choices():
        configs[choice] = OmegaConf.to_container(compose([choice]), resolve=False)
    return configs


@cache
def every_key() -> dict[str, tuple[str, dict[str, Any]]]:
    """Each key of the config tree, with the first choice (``""`` for the default) and config that hold it."""
    keys: dict[str, tuple[str, dict[str, Any]]] = {}
    for choice, config in composed().items():
        for key in flatten(config):
            keys.setdefault(key, (choice, config))
    return keys


def with_value(config: dict[str, Any], key: str, value: object) -> dict[str, Any]:
    flat = flatten(config)
    flat[key] = value
    nested: dict[str, Any] = {}
    for dotted, leaf in flat.items():
        *parents, last = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = leaf
    return nested


def test_the_walk_sees_every_group_and_the_keys_options_add():
    assert len(composed()) == 1 + len(group_choices()) > 60
    keys = every_key()
    assert {"model.depth", "data.num_workers", "data.folder", "trainer.sync_batchnorm", "callbacks.fid.num_samples",
            "final_eval", "cs_kappa", "callbacks.ema.decay"} <= set(keys)
    assert len(keys) > 150


def test_every_key_of_the_config_tree_and_every_group_is_in_the_table():
    groups = {choice.split("=")[0] for choice in group_choices()} | {"hydra/launcher", "hydra/job_logging"}
    unclassified = sorted(k for k in [*every_key(), *groups] if classifying_entry(k) is None)
    assert unclassified == []
    assert {classifying_entry(k) for k in [*every_key(), *groups]} == set(RESULT_KEYS) - {
        "trainer.gradient_clip_algorithm"}  # a Trainer argument no preset sets: +trainer.gradient_clip_algorithm=value


def test_the_run_name_and_the_resume_check_agree_on_every_key():
    """For each key: the override ``key=...`` names the run exactly when a stored config that differs
    from this one in that key alone refuses the resume (naming the key)."""
    disagree = []
    for key, (choice, config) in every_key().items():
        names = run_name(f"{key}-changed") != "default"
        assert names == names_the_run(f"{key}=changed")
        refused = config_differences(config, with_value(config, key, "changed"))
        if names != bool(refused) or (refused and not refused[0].startswith(f"{key}: ")):
            disagree.append(f"{key} (in {choice or 'the default'}): names the run {names}, refuses {refused}")
    assert disagree == []


def test_a_group_choice_that_does_not_name_the_run_keeps_the_result_changing_fields():
    default = composed()[""]
    for choice in group_choices():
        if names_the_run(choice.replace("[default,", "").rstrip("]")):
            continue
        assert config_differences(default, composed()[choice]) == FIELDS_SET_BY_UNNAMED_CHOICES.get(choice, []), choice


@pytest.mark.parametrize("key", ["data.num_workers", "data.root", "data.download", "trainer.max_steps",
                                 "callbacks.checkpoint.every_n_train_steps", "final_eval"])
def test_where_how_fast_and_how_long_neither_name_the_run_nor_refuse_a_resume(key):
    default = composed()[""]
    assert not changes_result(key)
    assert run_name(f"{key}-97__scaler-ls") == "scaler-ls"
    assert config_differences(default, with_value(default, key, 97)) == []


@pytest.mark.parametrize("key", ["data.batch_size", "data.folder", "cs_kappa", "seed", "trainer.precision",
                                 "callbacks.ema.decay", "model.depth"])
def test_what_is_trained_names_the_run_and_refuses_a_resume(key):
    default = composed()[""]
    assert changes_result(key)
    assert run_name(f"{key}-97__scaler-ls") == f"{key}-97__scaler-ls"
    assert [d.split(":")[0] for d in config_differences(default, with_value(default, key, 97))] == [key]


def test_a_key_a_sweep_gives_several_values_names_its_jobs(tmp_path):
    """Jobs of one sweep are runs of their own: a swept key names them even when it does not change the result."""
    overrides = "debug-tiny__seed-0__trainer.max_steps-2"
    assert run_name(overrides) == "debug-tiny__seed-0"
    assert run_name(overrides, swept={"seed", "trainer.max_steps"}) == overrides
    multirun = tmp_path / "multirun.yaml"
    multirun.write_text("hydra:\n  overrides:\n    task: [debug=tiny, 'trainer.max_steps=2,4']\n"
                        "  sweeper:\n    params:\n      seed: 0,1\n")
    assert {o.key_or_group for o in sweep_overrides(multirun) if o.is_sweep_override()} == {"trainer.max_steps",
                                                                                           "seed"}
