"""Shared helpers: the tiny runs of ``conf/debug/``, trained in-process once per session where tests only read
them; the commands called in-process; the metrics-row check; disks that fill; one torch thread per xdist worker."""

from __future__ import annotations

import csv
import errno
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from scalelong.config import compose

ROOT = Path(__file__).resolve().parents[1]
# The tiny run of conf/debug/tiny.yaml (digits, a few seconds) with the tiny U-ViT or conv UNet.
TINY = {"uvit": ["model=uvit_tiny"], "unet": ["model=unet_tiny"]}
FAST = ["debug=tiny"]
# conf/debug/stability.yaml: debug=tiny with every stability measurement due within its 8 steps.
STABILITY = ["debug=stability"]
# conf/debug/resume.yaml: 16 steps of the tiny conv UNet, checkpointed every 2, validated every 3.
RESUME = ["debug=resume"]
# Under pytest-xdist each worker gets one of the machine's cores (make test runs two workers).
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
THREADS = int(os.environ.get("SCALELONG_TEST_THREADS", "1" if WORKER else "2"))
if WORKER:  # the commands a test starts inherit it: a worker and its children share one core
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))


def run_config(tmp_path: Path, overrides: list[str], run_name: str = "run"):
    """Compose like the command line would, with debug=tiny unless ``overrides`` choose another conf/debug
    option, and point the run directory into tmp_path."""
    debug = [] if any(o.startswith("debug=") for o in overrides) else FAST
    cfg = compose([*debug, *overrides], config_name="train", return_hydra_config=True)
    run_dir = tmp_path / run_name
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.job.override_dirname = run_name
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    cfg.paths.data_dir = str(tmp_path / "data")
    run_dir.mkdir(parents=True, exist_ok=True)
    return cfg, run_dir


def train_in(tmp_path: Path, overrides: list[str], run_name: str = "run"):
    """``(metrics, run_dir)`` of one in-process training run under ``tmp_path``."""
    from scalelong.train import train

    cfg, run_dir = run_config(tmp_path, overrides, run_name)
    return train(cfg, run_dir), run_dir


@pytest.fixture
def train_run(tmp_path: Path):
    """``train_run(overrides, run_name) -> (metrics, run_dir)``: one in-process training run."""
    return lambda overrides, run_name="run": train_in(tmp_path, overrides, run_name)


def read_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def assert_each_row_once(run_dir: Path, steps: int, val_every: int, every_step: tuple[str, ...] = ()) -> None:
    """metrics.csv has train/loss (and each of ``every_step``) at steps 0..steps-1 and val/loss after every
    ``val_every`` steps, each exactly once: a resumed run neither lost nor repeated a row."""
    rows = read_rows(run_dir)
    wanted = {"train/loss": list(range(steps)), "val/loss": list(range(val_every - 1, steps, val_every))}
    wanted |= {key: list(range(steps)) for key in every_step}
    for key, want in wanted.items():
        got = sorted(int(r["step"]) for r in rows if r.get(key))
        assert got == want, (key, got)


# ---------------------------------------------------------------- trained once, read by several tests


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The directory ``name`` that ``build(directory)`` filled, once per test run: under pytest-xdist the workers
    share it (the first to need it builds it while the others wait on its lock), so a session fixture trained
    here costs its training once, whichever workers its tests land on."""
    root = tmp_path_factory.getbasetemp()
    root = root.parent if WORKER else root  # the workers' base directories share their parent
    directory = root / f"built-{name}"
    with FileLock(f"{directory}.lock"):
        if not (directory / ".built").exists():
            shutil.rmtree(directory, ignore_errors=True)  # a build that failed part-way
            directory.mkdir()
            build(directory)
            (directory / ".built").touch()
    return directory


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of 2 steps of debug=tiny (tiny U-ViT, EMA): a checkpoint for the sample and eval
    commands. Tests may add files under its ``eval/``; nothing else in it changes."""
    def build(directory: Path) -> None:
        train_in(directory, [*TINY["uvit"], "trainer.max_steps=2"])

    return built_once(tmp_path_factory, "tiny", build) / "run"


@dataclass
class StabilityRun:
    run_dir: Path
    overrides: list[str]
    wandb_summary: dict | None = None  # the offline wandb run's summary (as JSON), for the run logged to wandb


# The runs the stability-callback and dashboard tests read (conf/debug/stability.yaml). Clipping to 1e-4 must
# not show in the ls run's logged norms (they are read before clipping); the none run also logs to wandb.
STABILITY_RUNS = {
    "ls": ["scaler=ls", "trainer.gradient_clip_val=1e-4"],
    "cs": ["scaler=cs", "cs_kappa=0.5"],
    "none": ["scaler=none", "logger=wandb"],
}


@pytest.fixture(scope="session")
def stability_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, StabilityRun]:
    """Three 8-step debug=stability runs of the tiny U-ViT, by scaler, each with its composed config saved
    as Hydra does (``.hydra/config.yaml``); the ``none`` run logs to an offline wandb run as well."""
    def build(directory: Path) -> None:
        import wandb

        for scaler, extra in STABILITY_RUNS.items():
            overrides = [*TINY["uvit"], *STABILITY, *extra]
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("WANDB_MODE", "offline")
                mp.setenv("WANDB_SILENT", "true")
                _, run_dir = train_in(directory, overrides, run_name=scaler)
                if "logger=wandb" in extra:
                    try:  # the run's last logged value of every key
                        summary = json.dumps(dict(wandb.run.summary), default=dict)
                    finally:
                        wandb.finish()
                    (run_dir / "wandb_summary.json").write_text(summary)
            (run_dir / ".hydra").mkdir(exist_ok=True)
            OmegaConf.save(compose(overrides), run_dir / ".hydra" / "config.yaml")

    directory = built_once(tmp_path_factory, "stability", build)
    runs = {}
    for scaler, extra in STABILITY_RUNS.items():
        summary = directory / scaler / "wandb_summary.json"
        runs[scaler] = StabilityRun(directory / scaler, [*TINY["uvit"], *STABILITY, *extra],
                                    json.loads(summary.read_text()) if summary.exists() else None)
    return runs


MINIATURE = ["scaler=none,ls", "seed=0,1", "model.depth=12", "optim.lr=2e-3", "trainer.max_steps=100",
             "trainer.val_check_interval=100", "optim.warmup_steps=10", "callbacks.fid.every_n_steps=25",
             "callbacks.fid.num_samples=128", "callbacks.checkpoint.every_n_train_steps=100",
             "callbacks.kappa.every_n_steps=50", "callbacks.samples.num_samples=16"]
"""2 settings (none, ls) × 2 seeds of the U-ViT reproduction's frontier sweep at one lr, the shallow U-ViT (N = 6),
batch 16, 100 steps. The conv UNet study shares every line of the pipeline but its sweeps; its report is checked
against its committed CSVs (tests/test_reproduction.py)."""


@pytest.fixture(scope="session")
def miniature(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sweep root, report) of ``scripts/cpu_reproduction.py`` on the miniature sweep, as a user runs it."""
    def build(directory: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "cpu_reproduction.py"), "--out", "sweeps",
                               "--report", str(directory / "docs" / "cpu_reproduction_uvit.md"), "--study", "uvit",
                               "--sweeps", "frontier",
                               "--jobs", "1", "--", *MINIATURE],
                              cwd=directory, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]

    directory = built_once(tmp_path_factory, "miniature", build)
    return directory / "sweeps", directory / "docs" / "cpu_reproduction_uvit.md"


# ---------------------------------------------------------------- the commands, in-process


@dataclass
class Finished:
    """What a command left, as ``subprocess.CompletedProcess`` has it."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Iterator:
    """``cli(module, args) -> Finished``: ``python -m scalelong.<module> *args`` run in this process from
    ``tmp_path``. A ``sys.exit("message")`` ends it as the interpreter would: exit code 1 and the message as
    the last line of stderr. Use a subprocess where the process itself is the subject (signals, exit codes
    of a real interpreter, locks between processes, DDP)."""
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def call(module: str, args: list[str]) -> Finished:
        from scalelong.runs.hydra_callbacks import SweepReport

        main = importlib.import_module(f"scalelong.{module}").main
        monkeypatch.setattr(sys, "argv", [f"scalelong-{module}", *args])
        monkeypatch.setattr(SweepReport, "failed", [])  # a process runs one command: no earlier sweep's failures
        capsys.readouterr()
        code: int | str | None = 0
        try:
            main()
        except SystemExit as stop:
            code = stop.code
        finally:
            for handler in root.handlers[:]:  # Hydra's job logging: its handlers hold this test's streams
                if handler not in handlers:
                    root.removeHandler(handler)
                    handler.close()
            root.setLevel(level)
            GlobalHydra.instance().clear()
        out, err = capsys.readouterr()
        if isinstance(code, str):
            return Finished(1, out, f"{err}{code}\n")
        return Finished(code or 0, out, err)

    yield call


# ---------------------------------------------------------------- data (tests/test_data_*.py)


def check_batch(x: torch.Tensor, y: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert x.shape == shape and x.dtype == torch.float32
    assert -1.0 <= x.min().item() and x.max().item() <= 1.0
    assert y.shape == shape[:1] and y.dtype == torch.int64


def all_batches(loader: torch.utils.data.DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


# ---------------------------------------------------------------- disks


def fill_filesystem(directory: Path) -> None:
    """Write a ballast file into ``directory`` until its filesystem reports ENOSPC."""
    fd = os.open(directory / "ballast", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while os.write(fd, b"\0" * chunk):
                    pass
            except OSError as err:
                assert err.errno == errno.ENOSPC, err
    finally:
        os.close(fd)


@contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[bool]:
    """Mount a tmpfs of ``size`` (``4m``) at ``directory`` if this process may (as root in the development
    container and CI) and yield True; else yield False and leave ``directory`` a plain directory."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                                 capture_output=True, check=False).returncode == 0
    except OSError:  # no mount command
        mounted = False
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(directory)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, bool]]:
    """``(directory, mounted)``: a 4 MiB tmpfs at ``tmp_path/disk``, or a plain directory (see ``tmpfs``)."""
    with tmpfs(tmp_path / "disk", "4m") as mounted:
        yield tmp_path / "disk", mounted


@pytest.fixture
def full_disk(small_disk, monkeypatch):
    """``(directory, fill)``: after ``fill()`` writes into ``directory`` fail as on a full disk.

    Where a tmpfs can be mounted, the disk is real: ``fill`` writes a ballast file until the kernel
    says ENOSPC, and every later write that needs a new page fails in ``write``/``flush``. Elsewhere it
    is simulated: ``fill`` makes ``os.fsync`` raise ENOSPC, which is where a full disk shows on a
    filesystem that allocates at write-back (NFS, thin-provisioned volumes).
    """
    disk, mounted = small_disk

    def enospc(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fill() -> None:
        if mounted:
            fill_filesystem(disk)
        else:
            monkeypatch.setattr(os, "fsync", enospc)

    return disk, fill


# ---------------------------------------------------------------- the session


@pytest.fixture(autouse=True)
def _quiet_and_few_threads():
    torch.set_num_threads(THREADS)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    yield


LONGEST_FILES = ("test_generation.py", "test_generation_fashion_mnist.py")  # about 5 and 4 minutes of one worker
LAST_FILES = ("test_notebooks.py",)  # read the miniature that test_reproduction.py's worker builds (80 s)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The two longest files first, then the other files with slow tests, so that two workers (``--dist loadfile``:
    whole files, so that a module-scoped fixture is set up once) start on the long files and share out the short
    ones, rather than ending on one long file each. The Makefile passes ``--no-loadscope-reorder``: pytest-xdist
    would otherwise queue files by their number of tests, which puts these three-test files last. The files of
    LAST_FILES come after all others: they need a session build another early file makes (conftest ``miniature``),
    and queued with the slow files they sat on its lock for most of its build, a worker idle."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> int:
        if item.path.name in LONGEST_FILES:
            return LONGEST_FILES.index(item.path.name)
        if item.path.name in LAST_FILES:
            return len(LONGEST_FILES) + 2
        return len(LONGEST_FILES) + (item.path not in slow_files)

    items.sort(key=rank)

