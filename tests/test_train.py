"""End-to-end training from composed Hydra configs: runs, resume, checkpoints, faults."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from conftest import TINY
from scalelong.errors import CheckpointError, ConfigError, DataError
from scalelong.lit import NonFiniteLossError, load_checkpoint


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def series(rows: list[dict[str, str]], key: str) -> dict[int, float]:
    return {int(r["step"]): float(r[key]) for r in rows if r.get(key)}


@pytest.mark.parametrize("backbone", ["uvit", "unet"])
@pytest.mark.parametrize("scaler", ["none", "cs", "ls"])
def test_end_to_end_run_trains_validates_checkpoints_and_samples(train_run, backbone, scaler):
    metrics, run_dir = train_run([*TINY[backbone], f"scaler={scaler}", "trainer.max_steps=4"])
    assert metrics["step"] == 4
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))
    rows = read_metrics(run_dir)
    assert sorted(series(rows, "val/loss")) == [1, 3]  # validation after steps 2 and 4 (0-based 1, 3)
    assert len(series(rows, "train/loss")) == 4
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "samples" / "step_0000004.png").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())  # the accounting a fine-tune is set against
    assert summary["trainable_params"] == summary["total_params"] == sum(p.numel() for p in load_checkpoint(
        run_dir / "checkpoints" / "last.ckpt").model.parameters())
    assert summary["checkpoint_bytes"] == (run_dir / "checkpoints" / "last.ckpt").stat().st_size

    # The checkpoint rebuilds its model, with the right scaler, from the stored config alone.
    module = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert type(module.model.skip_scales[0]).__name__ == {
        "none": "ConstantScale", "cs": "ConstantScale", "ls": "GatedScale"}[scaler]
    if scaler == "cs":
        assert module.model.kappas()[1] == 0.5
    images = module.sample(2, sampler="ddim", steps=3)
    assert images.shape == (2, 1, 28, 28) and images.abs().max() <= 1


def test_checkpoint_state_dict_holds_the_ema_weights(train_run):
    _, run_dir = train_run([*TINY["uvit"], "trainer.max_steps=4", "callbacks.ema.decay=0.5"])
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    ema, raw = ckpt["state_dict"], ckpt["current_model_state"]
    key = "model.out_blocks.0.skip_linear.weight"
    assert not torch.equal(ema[key], raw[key])
    assert ckpt["scalelong_config"]["scaler"]["_target_"] == "scalelong.scalers.ConstantScaling"


def test_resume_reaches_the_same_loss_as_an_uninterrupted_run(train_run):
    base = [*TINY["unet"], "scaler=ls", "model.dropout=0.1", "trainer.val_check_interval=3",
            "callbacks.checkpoint.every_n_train_steps=3"]
    _, straight = train_run([*base, "trainer.max_steps=6"], run_name="straight")
    train_run([*base, "trainer.max_steps=3"], run_name="resumed")
    _, resumed = train_run([*base, "trainer.max_steps=6"], run_name="resumed")  # ckpt_path=auto
    a, b = series(read_metrics(straight), "train/loss"), series(read_metrics(resumed), "train/loss")
    assert sorted(a) == list(range(6)) and sorted(b) == list(range(6))
    for step in range(6):
        assert a[step] == pytest.approx(b[step], rel=1e-5, abs=1e-6)
    wa = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=False)
    wb = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)
    assert wa["global_step"] == wb["global_step"] == 6
    for key in ("state_dict", "current_model_state"):
        for name, tensor in wa[key].items():
            assert torch.allclose(tensor, wb[key][name], atol=1e-6), (key, name)


def test_explicit_ckpt_path_resumes_and_a_corrupt_one_is_named(train_run, tmp_path):
    _, first = train_run([*TINY["uvit"], "trainer.max_steps=2"], run_name="first")
    ckpt = first / "checkpoints" / "last.ckpt"
    metrics, _ = train_run([*TINY["uvit"], "trainer.max_steps=4", f"ckpt_path={ckpt}"], run_name="other")
    assert metrics["step"] == 4
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="bad.ckpt cannot be read"):
        train_run([*TINY["uvit"], f"ckpt_path={bad}"], run_name="bad")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(train_run):
    _, run_dir = train_run([*TINY["uvit"], "trainer.max_steps=2"], run_name="nan")
    last = run_dir / "checkpoints" / "last.ckpt"
    before = hashlib.sha256(last.read_bytes()).hexdigest()
    with pytest.raises(NonFiniteLossError, match="at step 2"):  # an explicit ckpt_path may change the diffusion
        train_run([*TINY["uvit"], "trainer.max_steps=4", "diffusion.input_noise=1e39", f"ckpt_path={last}"],
                  run_name="nan")
    assert hashlib.sha256(last.read_bytes()).hexdigest() == before
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith("NonFiniteLossError: the training loss is")


def test_model_and_data_geometry_mismatch_is_one_config_error(train_run):
    with pytest.raises(ConfigError, match="model expects 3×32×32 images but data gives 1×28×28"):
        train_run(["model=uvit_s2_cifar10", "model.embed_dim=32", "model.depth=2", "model.num_heads=2"])


def test_a_label_table_smaller_than_the_data_s_classes_is_one_config_error(train_run):
    with pytest.raises(ConfigError) as err:
        train_run([*TINY["uvit"], "model.num_classes=4", "trainer.max_steps=1"])
    assert str(err.value) == "model.num_classes=4 but the data has 10 classes (digits); set model.num_classes=10"


def test_class_conditional_training_and_guided_sampling(train_run):
    _, run_dir = train_run([*TINY["uvit"], "model.num_classes=10", "trainer.max_steps=2",
                            "callbacks.samples.guidance_scale=2.0"])
    module = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert module.model.num_classes == 10
    images = module.sample(3, sampler="dpm_solver", steps=3, y=torch.tensor([0, 1, 2]), guidance_scale=3.0)
    assert images.shape == (3, 1, 28, 28) and torch.isfinite(images).all()


@pytest.mark.slow
def test_short_real_training_lowers_the_validation_loss(train_run):
    """uvit tiny on digits: the EMA validation loss after 300 steps is well below its start."""
    metrics, run_dir = train_run([*TINY["uvit"], "data.batch_size=32", "trainer.max_steps=300",
                                  "trainer.val_check_interval=50", "trainer.limit_val_batches=4",
                                  "callbacks.ema.decay=0.99", "callbacks.checkpoint.every_n_train_steps=100",
                                  "optim.lr=1e-3", "optim.warmup_steps=20"])
    val = series(read_metrics(run_dir), "val/loss")
    first, last = val[min(val)], val[max(val)]
    assert last < 0.6 * first, val


def test_kappa_auto_measures_kappa_on_the_data_and_stores_it(train_run):
    _, run_dir = train_run([*TINY["uvit"], "cs_kappa=auto", "trainer.max_steps=2", "+kappa_tool.num_images=300"])
    stored = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["scalelong_config"]
    kappa = stored["scaler"]["kappa"]
    assert isinstance(kappa, float) and 0.3 < kappa < 0.9  # digits: range about [0.38, 0.67]
    assert series(read_metrics(run_dir), "kappa/auto")[0] == pytest.approx(kappa)
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt").model.kappas()[1] == pytest.approx(kappa)


def assert_each_row_once(run_dir: Path, steps: int, val_every: int) -> None:
    """train/loss at steps 0..steps-1 and val/loss after every ``val_every`` steps, each exactly once."""
    rows = read_metrics(run_dir)
    for key, want in (("train/loss", list(range(steps))), ("val/loss", list(range(val_every - 1, steps, val_every)))):
        got = sorted(int(r["step"]) for r in rows if r.get(key))
        assert got == want, (key, got)


def test_rerun_of_a_finished_run_is_a_no_op_that_keeps_its_results(train_run):
    args = [*TINY["unet"], "trainer.max_steps=2"]
    first, run_dir = train_run(args)
    names = ("summary.json", "csv/metrics.csv", "checkpoints/last.ckpt")
    files = {name: (run_dir / name).read_bytes() for name in names}
    again, _ = train_run(args)
    assert again == first and "val/loss" in again
    assert {name: (run_dir / name).read_bytes() for name in files} == files
    longer, _ = train_run([*TINY["unet"], "trainer.max_steps=4"])  # a longer run continues it
    assert longer["step"] == 4
    assert_each_row_once(run_dir, 4, 2)


def test_a_finished_run_committed_without_its_checkpoints_stays_finished(train_run):
    """A sweep carried to another machine in git keeps status.json, summary.json and metrics but no *.ckpt: a rerun
    keeps its results instead of training again, and one with other settings is refused, naming the key."""
    args = [*TINY["unet"], "trainer.max_steps=2"]
    first, run_dir = train_run(args)
    for ckpt in (run_dir / "checkpoints").iterdir():
        ckpt.unlink()
    metrics_csv = (run_dir / "csv" / "metrics.csv").read_bytes()
    again, _ = train_run(args)
    assert again == first and (run_dir / "csv" / "metrics.csv").read_bytes() == metrics_csv
    assert not list((run_dir / "checkpoints").iterdir())  # nothing was trained
    with pytest.raises(ConfigError, match=r"optim.lr: 0.0\d+ -> 0.001"):
        train_run([*args, "optim.lr=0.001"])


def test_ckpt_path_null_starts_over_and_a_plain_rerun_continues_the_new_attempt(train_run):
    args = [*TINY["unet"], "trainer.max_steps=4"]
    _, run_dir = train_run(args)
    train_run([*TINY["unet"], "trainer.max_steps=2", "ckpt_path=null"])
    (previous,) = (run_dir / "previous").iterdir()  # the first attempt is kept, not mixed in
    assert torch.load(previous / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt", "step0000002.ckpt"]
    metrics, _ = train_run(args)  # resumes the new attempt at step 2, not the old one at step 4
    assert metrics["step"] == 4
    assert_each_row_once(run_dir, 4, 2)
    assert not list((run_dir / "checkpoints").glob("last-v*.ckpt"))


def test_a_results_changing_override_refuses_to_resume_naming_the_key(train_run):
    _, run_dir = train_run([*TINY["unet"], "trainer.max_steps=2"])
    for override in ["trainer.gradient_clip_val=1.0", "trainer.accumulate_grad_batches=2",
                     "callbacks.ema.decay=0.5", "optim.lr=0.001"]:
        key = override.split("=")[0]
        with pytest.raises(ConfigError, match=f"run run was trained with other settings \\({key}: .* -> "):
            train_run([*TINY["unet"], "trainer.max_steps=4", override])
    assert json.loads((run_dir / "summary.json").read_text())["step"] == 2


def test_an_explicit_checkpoint_of_another_model_is_one_config_error(train_run):
    _, run_dir = train_run([*TINY["unet"], "trainer.max_steps=2"], run_name="small")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=f"ckpt_path={ckpt} holds another model \\(model.ch: 16 -> 8"):
        train_run([*TINY["unet"], "model.ch=8", f"ckpt_path={ckpt}"], run_name="other")


def test_after_deleting_a_corrupt_last_ckpt_the_run_resumes_from_the_interval_checkpoint(train_run):
    _, run_dir = train_run([*TINY["unet"], "trainer.max_steps=4"])
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:500])  # corrupt: skipped with a warning
    (run_dir / "checkpoints" / "step0000004.ckpt").unlink()
    metrics, _ = train_run([*TINY["unet"], "trainer.max_steps=6"])
    assert metrics["step"] == 6
    assert_each_row_once(run_dir, 6, 2)
    last.unlink()  # as the error advises
    metrics, _ = train_run([*TINY["unet"], "trainer.max_steps=8"])
    assert metrics["step"] == 8
    assert_each_row_once(run_dir, 8, 2)


def test_a_bad_value_is_refused_before_training_and_writes_no_checkpoint(train_run, tmp_path):
    with pytest.raises(ConfigError, match=r"^callbacks.samples.num_samples=0 draws no sample grid"):
        train_run([*TINY["uvit"], "callbacks.samples.num_samples=0", "trainer.max_steps=2"])
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_data_error_raised_while_hydra_instantiates_the_data_reaches_the_cli_as_itself(train_run, tmp_path):
    """Hydra wraps a constructor's exception in InstantiationException, which the CLI would print
    as a traceback; the class-conditional image folder lists its classes in its constructor."""
    (tmp_path / "data" / "images").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        train_run([*TINY["uvit"], "data=image_folder", "data.class_conditional=true"])
    assert str(err.value).startswith(f"Image folder {tmp_path / 'data' / 'images'} has no 'train/' subfolder")


def test_cosine_decay_follows_warmup_then_half_cosine_to_the_floor(train_run):
    """optim.decay=cosine: the logged lr rises over the warm-up, then follows the half cosine to
    min_lr_ratio·lr at max_steps; min-SNR weighting trains (finite loss) on the same run."""
    steps, warmup, lr, floor = 12, 3, 1e-3, 0.1
    _, run_dir = train_run([*TINY["unet"], f"trainer.max_steps={steps}", f"optim.warmup_steps={warmup}",
                            f"optim.lr={lr}", "optim.decay=cosine", f"optim.min_lr_ratio={floor}",
                            "diffusion.loss_weighting=min_snr"])
    rows = read_metrics(run_dir)
    lr_key = next(k for k in rows[0] if k.startswith("lr-"))
    logged = series(rows, lr_key)
    for step, value in logged.items():  # the lr used at optimiser step `step` (0-based)
        if step + 1 < warmup:
            expected = lr * (step + 1) / warmup
        else:
            progress = (step + 1 - warmup) / (steps - warmup)
            expected = lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
        assert value == pytest.approx(expected, rel=1e-5), (step, value, expected)
    assert len(logged) >= steps - 1
    assert all(math.isfinite(v) for v in series(rows, "train/loss").values())


def test_a_longer_run_under_cosine_decay_is_refused_naming_the_horizon_and_a_fixed_horizon_extends_it(train_run):
    """The cosine's last step (optim.decay_steps, trainer.max_steps unless set) changes every lr after the
    warm-up: a finished 2-step run continued to 4 steps would not be the 2 steps it recorded. It is refused,
    the fix named; with the horizon kept (optim.decay_steps=2) it continues at the floor lr."""
    cosine = [*TINY["unet"], "optim.decay=cosine", "optim.warmup_steps=1", "optim.lr=1e-3", "optim.min_lr_ratio=0.1"]
    _, run_dir = train_run([*cosine, "trainer.max_steps=2"])
    summary = (run_dir / "summary.json").read_bytes()
    with pytest.raises(ConfigError, match=r"run run was trained with other settings \(optim.decay_steps: 2 -> 4\).*"
                                          r"optim.decay_steps=2"):
        train_run([*cosine, "trainer.max_steps=4"])
    assert (run_dir / "summary.json").read_bytes() == summary
    metrics, _ = train_run([*cosine, "trainer.max_steps=4", "optim.decay_steps=2"])
    assert metrics["step"] == 4
    lr = series(read_metrics(run_dir), "lr-AdamW/pg1")
    assert lr[0] == pytest.approx(1e-3) and lr[1] == lr[2] == lr[3] == pytest.approx(1e-4)
    assert_each_row_once(run_dir, 4, 2)
