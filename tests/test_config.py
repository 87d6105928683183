"""The config tree: every experiment composes, paper settings match the paper (Table 6), run names."""

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from scalelong.config import CONF_DIR, check_train_config, compose, names_the_run, run_dir_name, run_name
from scalelong.errors import ConfigError

ROOT = CONF_DIR.parent
# Names as experiment=<name> takes them: fmnist_demo, presets/uvit_deep (a trial of docs/results/presets/).
EXPERIMENTS = sorted(p.relative_to(CONF_DIR / "experiment").with_suffix("").as_posix()
                     for p in (CONF_DIR / "experiment").rglob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds_its_model(experiment):
    cfg = compose([f"experiment={experiment}"], return_hydra_config=True)
    with torch.device("meta"):
        model = instantiate(cfg.model, scaler=instantiate(cfg.scaler))
    assert model.num_skips >= 4
    assert cfg.optim.lr > 0 and cfg.trainer.max_steps > 0


@pytest.mark.parametrize(
    "experiment,batch,steps,warmup,lr,betas",
    [
        ("cifar10_uvit_s2", 128, 500_000, 2500, 2e-4, [0.99, 0.999]),
        ("celeba64_uvit_s4", 128, 500_000, 4000, 2e-4, [0.99, 0.99]),
        ("imagenet64_uvit_m4", 1024, 300_000, 5000, 3e-4, [0.99, 0.99]),  # global batch
    ],
)
def test_paper_settings_match_spec_table(experiment, batch, steps, warmup, lr, betas):
    cfg = compose([f"experiment={experiment}"], return_hydra_config=True)
    assert cfg.data.batch_size == batch
    assert cfg.trainer.max_steps == steps
    assert cfg.optim.warmup_steps == warmup and cfg.optim.lr == lr and list(cfg.optim.betas) == betas
    assert cfg.optim.weight_decay == 0.03 and cfg.callbacks.ema.decay == 0.9999
    assert cfg.diffusion.schedule == "linear" and cfg.diffusion.num_timesteps == 1000


def test_paper_kappas():
    assert compose(["experiment=cifar10_uvit_s2"]).scaler.kappa == 0.5
    assert compose(["experiment=celeba64_uvit_s4"]).scaler.kappa == 0.5
    assert compose(["experiment=imagenet64_uvit_l4"]).scaler.kappa == 0.7
    assert "kappa" not in compose(["experiment=imagenet64_uvit_l4", "scaler=ls"]).scaler
    assert compose(["experiment=imagenet64_uvit_l4"]).model.embed_dim == 1024


def test_table_experiments_sweep_the_paper_axes():
    sweeps = {e: compose([f"experiment={e}"], return_hydra_config=True).hydra.sweeper.params
              for e in ("table1_cifar10", "table3_baselines", "table4_order", "fig13_kappa")}
    assert sweeps["table1_cifar10"]["scaler"] == "none,uniform,cs,ls"
    assert sweeps["table4_order"]["scaler"] == "cs,cs_reversed"
    assert "rezero" in sweeps["table3_baselines"]["scaler"]
    assert "1.2" in sweeps["fig13_kappa"]["scaler.kappa"]


def test_run_name_keeps_what_changes_the_result():
    assert run_name("") == "default"
    assert run_name("scaler-ls__seed-1__trainer.max_steps-99__trainer-gpu") == "scaler-ls__seed-1"
    assert run_name("callbacks-stability__logger-wandb__model-uvit_deep__hydra/launcher-joblib") == "model-uvit_deep"
    kept = "callbacks.ema.decay-0.9__trainer.precision-bf16-mixed__trainer.gradient_clip_val-1.0"
    assert run_name(f"{kept}__ckpt_path-a=b-c.ckpt") == kept
    assert [names_the_run(o) for o in ("seed=2", "logger=wandb", "~callbacks.ema", "callbacks.emax=1")] == \
        [True, False, True, False]
    long = run_name("__".join(f"model.f{i}-{i}" for i in range(40)))
    assert len(long) == 120 and long != run_name("__".join(f"model.f{i}-{i + 1}" for i in range(40)))



@pytest.mark.parametrize("override", ["trainer.gradient_clip_val-1.0", "trainer.accumulate_grad_batches-2",
                                      "trainer.precision-bf16-mixed", "callbacks.ema.decay-0.9"])
def test_results_changing_trainer_and_ema_overrides_name_the_run(override):
    assert run_name(f"scaler-cs__{override}__trainer.max_steps-10") == f"scaler-cs__{override}"


def test_run_names_stay_one_directory_under_outputs_runs():
    assert run_name("data.folder-../../etc__scaler-cs") == "data.folder-..%..%etc__scaler-cs"
    for bad in ["../../elsewhere", "..", "a/b"]:
        with pytest.raises(ConfigError, match="is not a single directory name"):
            run_dir_name(bad)


def test_sweep_directory_resolves_before_hydra_sets_its_runtime(tmp_path, monkeypatch):
    """The README's `scalelong-train -m ...` resolves hydra.sweep.dir before HydraConfig exists."""
    monkeypatch.chdir(tmp_path)
    cfg = compose(["seed=0"], return_hydra_config=True)
    HydraConfig.instance().cfg = None  # as in Hydra's launcher, before the first job
    assert cfg.hydra.sweep.dir.startswith(f"{tmp_path}/outputs/multirun/")

def run_dir(overrides: list[str]) -> str:
    """The run directory Hydra would create for these command-line overrides."""
    cfg = compose(overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg.hydra.run.dir


def test_the_same_command_with_logger_wandb_resumes_the_same_run():
    command = ["scaler=ls", "seed=1", "trainer.max_steps=50"]
    same = {run_dir(command), run_dir([*command, "logger=wandb"]),
            run_dir([*command, "callbacks=stability", "trainer=gpu", "trainer.max_steps=99"])}
    assert len(same) == 1 and same.pop().endswith("/runs/scaler-ls__seed-1")
    assert run_dir([*command, "callbacks.ema.decay=0.9"]).endswith("/runs/callbacks.ema.decay-0.9__scaler-ls__seed-1")


@pytest.mark.parametrize("overrides,message", [
    (["cs_kappa=abc"], "cs_kappa='abc' is not a number; set the constant-scaling κ, e.g. cs_kappa=0.5 "
                       "(paper: CIFAR-10 and CelebA 0.5, ImageNet 64 0.7), or cs_kappa=auto to measure it"),
    (["scaler=cs_reversed", "scaler.kappa=abc"],
     "scaler.kappa='abc' is not a number; set the constant-scaling κ, e.g. scaler.kappa=0.5 "
     "(paper: CIFAR-10 and CelebA 0.5, ImageNet 64 0.7), or scaler.kappa=auto to measure it"),
    (["optim.lr=-1"], "optim.lr=-1 is not a learning rate; set a positive number, e.g. optim.lr=2e-4 (the default)"),
    (["callbacks.samples.num_samples=0"],
     "callbacks.samples.num_samples=0 draws no sample grid; set it to at least 1, e.g. "
     "callbacks.samples.num_samples=16, or turn the grids off with callbacks.samples=null"),
    (["callbacks.samples.sampler=euler"],
     "callbacks.samples.sampler=euler is unknown; use one of ddpm, ddim, dpm_solver, dpm_solver_fast, euler_maruyama"),
    (["trainer.max_steps=-5"], "trainer.max_steps=-5 must be a whole number of at least 1 (training steps); "
                               "set it, e.g. trainer.max_steps=1200"),
    (["seed=-1"], "seed=-1 must be a whole number of at least 0 (the run's seed); set it, e.g. seed=0"),
    (["model.patch_size=0"], "model.patch_size=0 must be a whole number of at least 1 (U-ViT's patch side in "
                             "pixels); set it, e.g. model.patch_size=4"),
    (["model.depth=0"], "model.depth=0 must be a whole number of at least 1 (U-ViT's transformer blocks); "
                        "set it, e.g. model.depth=8"),
    (["diffusion.num_timesteps=0"], "diffusion.num_timesteps=0 must be a whole number of at least 1 (the diffusion "
                                    "steps T); set it, e.g. diffusion.num_timesteps=1000"),
    (["optim.warmup_steps=-3"], "optim.warmup_steps=-3 must be a whole number of at least 0 (linear warm-up "
                                "steps); set it, e.g. optim.warmup_steps=100"),
    (["callbacks.ema.decay=1.5"], "callbacks.ema.decay=1.5 must be a number in [0, 1] (the EMA's weight on the "
                                  "old average); set it, e.g. callbacks.ema.decay=0.999, or callbacks.ema=null "
                                  "for no EMA"),
])
def test_a_bad_train_value_is_one_config_error_naming_the_key_value_and_fix(overrides, message):
    with pytest.raises(ConfigError) as err:
        check_train_config(compose(["data=digits", *overrides], return_hydra_config=True))
    assert str(err.value) == message


@pytest.mark.parametrize("overrides", [[], ["scaler=none", "cs_kappa=abc"], ["cs_kappa=auto"], ["optim.lr=0"],
                                       ["callbacks.samples=null"], ["callbacks.ema=null"], ["model=unet_tiny"],
                                       ["optim.warmup_steps=0", "callbacks.ema.decay=1"]])
def test_valid_train_values_and_ignored_ones_pass_the_check(overrides):
    check_train_config(compose(["data=digits", *overrides], return_hydra_config=True))


def test_debug_tiny_is_a_seconds_long_run_and_keeps_other_choices():
    cfg = compose(["debug=tiny"])
    with torch.device("meta"):
        model = instantiate(cfg.model, scaler=instantiate(cfg.scaler))
    assert (cfg.data._target_.rsplit(".", 1)[-1], cfg.trainer.max_steps, model.num_skips) == ("DigitsDataModule", 4, 2)
    assert compose(["debug=tiny", "model=unet_tiny"]).model.ch == 16


def test_debug_overfit_trains_on_one_batch_of_sixteen_images():
    cfg = compose(["debug=overfit"])
    data = instantiate(cfg.data)
    data.setup("fit")
    assert len(data.train_set) == cfg.data.batch_size == 16


def test_the_slurm_launcher_requests_the_trainers_gpus():
    cfg = compose(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
                  return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    launcher = cfg.hydra.launcher
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 2)
    all_gpus = compose(["hydra/launcher=slurm", "trainer=ddp"], return_hydra_config=True)  # devices: -1
    with pytest.raises(Exception, match="set the count, e.g. trainer.devices=8"):
        OmegaConf.to_container(all_gpus.hydra.launcher, resolve=True)


def tabled_experiments() -> list[str]:
    """The experiments named in the first column of each FID-curves table of docs/results/ (scripts/fid_curves.py)."""
    tables = sorted((ROOT / "docs" / "results").glob("*/README.md"))
    rows = [line.split("|")[1].strip() for t in tables if t.read_text().startswith("# FID against training")
            for line in t.read_text().splitlines() if line.startswith("| ") and not line.startswith("| experiment ")]
    return sorted({row.split()[0] for row in rows})


def test_the_fid_curves_tables_name_experiments():
    assert {"fmnist_unet_small", "fmnist_uvit_small", "fmnist_uvit_deep", "demo/unet16_msnr_cos_cond"} \
        <= set(tabled_experiments())


@pytest.mark.parametrize("experiment", tabled_experiments())
def test_each_experiment_a_results_table_names_is_a_config_that_composes(experiment):
    assert experiment in EXPERIMENTS
    cfg = compose([f"experiment={experiment}"])
    assert cfg.data._target_.endswith("FashionMNISTDataModule") and cfg.trainer.max_steps > 0
