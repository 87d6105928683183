"""The commands as a user runs them: multirun sweeps, sampling, clean errors, and what only a real process
shows (signals, kills, two processes on one run, exit codes). A real process is started where the process is
the subject, and once per command as a smoke; the rest run the same ``main`` in-process (conftest ``cli``).
Two-process DDP is tests/test_callbacks_fid.py's."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FAST, RESUME, assert_each_row_once, read_rows
from scalelong.runs.lock import RunLock


def scalelong(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"scalelong.{module}", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.slow
def test_readme_joblib_sweep_runs_as_written(tmp_path):
    """The documented command, without hydra.sweep.dir: the sweep directory resolves under outputs/."""
    documented = "scalelong-train -m hydra/launcher=joblib scaler=none,cs"
    assert documented in README.read_text()
    proc = scalelong("train", [*documented.split()[1:], *FAST], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert [r.rsplit("__", 1)[-1] for r in runs] == ["scaler-cs", "scaler-none"]
    for run in runs:
        assert json.loads((sweep / run / "status.json").read_text())["status"] == "completed"
        assert (sweep / run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_a_diverging_job_is_recorded_the_others_finish_and_a_rerun_keeps_finished_results(tmp_path, cli):
    proc = cli("train", ["-m", "diffusion.input_noise=1e39,0.0", *FAST])  # the basic launcher: jobs in-process
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "scalelong-train: 1 job(s) of the sweep did not complete: ")
    status = {p.name.split("input_noise-")[1].split("__")[0]: json.loads((p / "status.json").read_text())
              for p in sweep.iterdir() if p.is_dir()}
    assert status["1e+39"]["status"] == "failed" and "NonFiniteLossError" in status["1e+39"]["error"]
    assert status["0.0"]["status"] == "completed"
    (finished,) = [p for p in sweep.iterdir() if "input_noise-0.0" in p.name]
    summary = (finished / "summary.json").read_bytes()

    table = cli("aggregate", [str(sweep)])
    assert "diffusion.input_noise=0.0" in table.stdout
    assert "Not in the table (did not complete)" in table.stdout and "failed: NonFiniteLossError" in table.stdout

    again = cli("train", ["-m", "diffusion.input_noise=1e39,0.0", *FAST, f"hydra.sweep.dir={sweep}"])
    assert again.returncode == 1
    assert (finished / "summary.json").read_bytes() == summary  # the finished job was not redone or blanked


@pytest.mark.slow
def test_sample_command_writes_png_and_npz_and_errors_are_one_line(tmp_path, tiny_run, cli):
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "grid"
    proc = scalelong("sample", [f"ckpt={ckpt}", "num_samples=5", "batch_size=2", "sampler=ddim",
                                "steps=3", f"out={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = np.load(out.with_suffix(".npz"))
    assert data["images"].shape == (5, 28, 28, 1) and data["images"].dtype == np.uint8
    assert out.with_suffix(".png").is_file()

    bad = cli("sample", [f"ckpt={tmp_path / 'nope.ckpt'}"])
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("scalelong-sample: checkpoint")
    assert "Traceback" not in bad.stderr
    bad = cli("train", ["model=uvit_s2_cifar10", *FAST])
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "model expects 3×32×32 images but data gives 1×28×28" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command,args,message", [
    ("train", ["optim.lr=-1"], "optim.lr=-1 is not a learning rate; set a positive number, e.g. optim.lr=2e-4 "
                               "(the default)"),
    ("train", ["cs_kappa=abc"], "cs_kappa='abc' is not a number; set the constant-scaling κ, e.g. cs_kappa=0.5 "
                                "(paper: CIFAR-10 and CelebA 0.5, ImageNet 64 0.7), or cs_kappa=auto to measure it"),
    ("train", ["cs_kappa=-1"], "cs_kappa=-1 must be > 0; set the constant-scaling κ in (0, 1], e.g. cs_kappa=0.5, "
                               "or cs_kappa=auto to measure it"),
    ("train", ["callbacks.samples.num_samples=0"],
     "callbacks.samples.num_samples=0 draws no sample grid; set it to at least 1, e.g. "
     "callbacks.samples.num_samples=16, or turn the grids off with callbacks.samples=null"),
    ("train", ["paths.output_dir={tmp}/a_file/outputs"],
     "cannot create or write the run directory {tmp}/a_file/outputs/runs/{run} (Not a directory); set "
     "paths.output_dir to a writable directory (paths.output_dir={tmp}/a_file/outputs)"),
    ("train", ["run_name=a/b"], "run_name='a/b' is not a single directory name; pick a name without '/' and "
                                "other than '..', e.g. run_name=my_run"),
    ("train", ["-m", "run_name=fine,.."], "run_name='..' is not a single directory name; pick a name without '/' and "
                                          "other than '..', e.g. run_name=my_run"),
    ("sample", [], "ckpt is not set; pass the checkpoint to sample from, e.g. "
                   "scalelong-sample ckpt=outputs/runs/default/checkpoints/last.ckpt"),
    ("sample", ["ckpt=x.ckpt", "num_samples=0"],
     "num_samples=0 must be a whole number of at least 1, e.g. num_samples=64"),
])
def test_user_errors_are_one_line_naming_key_value_and_fix(tmp_path, cli, command, args, message):
    (tmp_path / "a_file").write_text("")
    args = [a.format(tmp=tmp_path) for a in args]
    proc = cli(command, [*(FAST if command == "train" else []), *args])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    run = "debug-tiny"
    assert proc.stderr.strip().splitlines()[-1] == f"scalelong-{command}: " + message.format(tmp=tmp_path, run=run)
    assert not list(tmp_path.glob("outputs/runs/*"))  # a refused command leaves no run directory


def start_train(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scalelong.train", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < end
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_and_kills_at_random_moments_resume_bit_exact_with_each_metrics_row_once(tmp_path):
    straight = scalelong("train", [*RESUME, "run_name=straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    run = tmp_path / "outputs" / "runs" / "killed"
    args = [*RESUME, "run_name=killed"]

    # SIGTERM (pre-emption): the step in progress ends, its state is saved, the exit code is not 0.
    proc = start_train(args, tmp_path)
    wait_for(run / "checkpoints" / "step0000002.ckpt", proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    message = err.strip().splitlines()[-1]
    assert message.startswith("scalelong-train: stopped by SIGTERM ") and "Run the same command" in message
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] >= 2
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"

    # SIGKILL at random moments of successive attempts.
    for seed in range(3):
        proc = start_train(args, tmp_path)
        time.sleep(random.Random(seed).uniform(0.5, 6.0))
        proc.kill()
        proc.communicate()
    done = scalelong("train", args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    a = torch.load(tmp_path / "outputs" / "runs" / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 16
    for key in ("state_dict", "current_model_state"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name)
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert_each_row_once(run, 16, 3)


# `scalelong-train` that SIGKILLs itself when Lightning hands the CSV logger the training row of
# one step: after the step's interval checkpoint was taken, before the row reaches metrics.csv.
KILLED_AT_A_ROW = """
import os, signal, sys
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from scalelong.train import main

log_metrics = ExperimentWriter.log_metrics

def log_metrics_or_die(self, metrics, step=None):
    if step == {step} and "train/loss" in metrics:
        os.kill(os.getpid(), signal.SIGKILL)
    log_metrics(self, metrics, step)

ExperimentWriter.log_metrics = log_metrics_or_die
main()
"""


@pytest.mark.slow
@pytest.mark.parametrize("row", [1, 7])
def test_a_kill_as_a_training_row_is_logged_loses_no_row_and_repeats_none(tmp_path, cli, row):
    """Row 1: before the first checkpoint, so the rerun starts over. Row 7: step 8's checkpoint is
    saved in on_train_batch_end, before Lightning logs the step's training row (CSV step 7); a kill
    in between must not leave a checkpoint that counts a row never written."""
    script = tmp_path / "killed_at_a_row.py"
    script.write_text(KILLED_AT_A_ROW.format(step=row))
    args = [*RESUME, "run_name=window"]
    killed = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run = tmp_path / "outputs" / "runs" / "window"
    done = cli("train", args)  # the rerun needs no process of its own
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(run.glob("**/.*.tmp-*"))  # the killed attempt's temporary files are gone
    assert_each_row_once(run, 16, 3, every_step=("lr-AdamW/pg1",))


@pytest.mark.slow
def test_a_second_process_on_a_running_run_directory_is_refused_in_one_line_and_the_first_finishes_intact(tmp_path):
    """Two identical commands at once: the second meets the first's flock on <run dir>/.lock."""
    run = tmp_path / "outputs" / "runs" / "shared"
    args = [*RESUME, "run_name=shared"]
    first = start_train(args, tmp_path)
    wait_for(run / "checkpoints" / "step0000002.ckpt", first)
    first.send_signal(signal.SIGSTOP)  # still holding the lock, whatever the load on the machine
    try:
        second = scalelong("train", args, tmp_path)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert second.stderr.strip().splitlines()[-1] == (
        f"scalelong-train: run directory {run} is in use by another scalelong-train (pid {first.pid}); "
        "wait for it to finish, or give this run another name with run_name=NAME")
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert (status["status"], status["step"], status["config"]["seed"]) == ("completed", 16, 0)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "last.ckpt", *(f"step{s:07d}.ckpt" for s in range(2, 17, 2))]
    assert_each_row_once(run, 16, 3)


@pytest.mark.slow
def test_sigterm_to_a_sweep_saves_the_running_job_stops_the_sweep_non_zero_and_a_rerun_completes_it(tmp_path, cli):
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1", *RESUME, f"hydra.sweep.dir={sweep}"]
    proc = start_train(args, tmp_path)
    end = time.monotonic() + 300
    while not list(sweep.glob("*/checkpoints/step0000002.ckpt")):  # job 0 (the names are hashed: too long)
        assert proc.poll() is None and time.monotonic() < end, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("scalelong-train: stopped by SIGTERM ")
    (job0,) = (p for p in sweep.iterdir() if p.is_dir())  # pre-empted: the next job does not start
    assert json.loads((job0 / "status.json").read_text())["status"] == "interrupted"

    again = cli("train", args)  # the rerun needs no process of its own
    assert again.returncode == 0, again.stderr[-3000:]
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        status = json.loads((job / "status.json").read_text())
        assert (status["status"], status["step"]) == ("completed", 16), job
    assert len([p for p in sweep.iterdir() if p.is_dir()]) == 2


@pytest.mark.slow
def test_a_run_that_fills_the_disk_stops_in_one_line_keeping_checkpoints_and_rows_and_resumes_when_freed(
        tmp_path, cli):
    """A real full disk: the run writes into a 32 MiB tmpfs that holds about six of its checkpoints.
    Skipped where this process may not mount one (tests/test_runs.py covers the writes there)."""
    from conftest import tmpfs

    disk = tmp_path / "disk"
    with tmpfs(disk, "32m") as mounted:
        if not mounted:
            pytest.skip("mounting a tmpfs needs root")
        run = disk / "outputs" / "runs" / "full"
        args = [*RESUME, "run_name=full", f"paths.output_dir={disk / 'outputs'}"]
        full = cli("train", args)
        assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
        message = full.stderr.strip().splitlines()[-1]
        written = rf"{re.escape(str(run))}/checkpoints/(step\d{{7}}|last)\.ckpt"
        assert re.fullmatch(rf"scalelong-train: cannot write {written}: the disk is full; the previous version of "
                            r"the file is kept\. Free space .*", message), message
        steps = [torch.load(p, weights_only=True)["global_step"] for p in (run / "checkpoints").glob("*.ckpt")]
        assert steps and min(steps) == 2 and not list(run.glob("**/.*.tmp-*"))  # every checkpoint is whole
        logged = [int(r["step"]) for r in read_rows(run) if r.get("train/loss")]
        assert logged == sorted(set(logged)) and set(range(max(steps))) <= set(logged)

        subprocess.run(["mount", "-o", "remount,size=128m", str(disk)], check=True)  # space freed
        done = cli("train", args)
        assert done.returncode == 0, done.stderr[-3000:]
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 16
        assert_each_row_once(run, 16, 3)


def run_record(run: Path) -> dict[str, bytes]:
    """Every file of a run directory but its lock, by path: what a refused command must leave as it was."""
    files = sorted(p for p in run.rglob("*") if p.is_file() and p.name != ".lock")
    return {str(p.relative_to(run)): p.read_bytes() for p in files}


def test_a_refused_rerun_writes_nothing_and_the_correct_rerun_finds_the_run_finished(tmp_path, cli):
    args = [*FAST, "trainer.max_steps=2", "run_name=fin"]
    assert cli("train", args).returncode == 0
    run = tmp_path / "outputs" / "runs" / "fin"
    record = run_record(run)
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", "train.log", "status.json"} <= set(record)
    refused = cli("train", [*args, "scaler=none"])
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith(
        "scalelong-train: run fin was trained with other settings (model.scaler._target_: ")
    assert run_record(run) == record
    again = cli("train", args)
    assert again.returncode == 0 and "already finished at step 2" in again.stderr
    assert run_record(run) == record
    assert json.loads((run / "status.json").read_text())["status"] == "completed"


def test_a_second_command_on_a_run_in_use_is_refused_without_relabelling_it(tmp_path, cli):
    args = [*FAST, "trainer.max_steps=2", "run_name=lk2"]
    assert cli("train", args).returncode == 0
    run = tmp_path / "outputs" / "runs" / "lk2"
    record = run_record(run)
    with RunLock(run):  # as a running scalelong-train holds it
        refused = cli("train", [*args, "trainer.max_steps=4", "scaler=none"])
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith(f"scalelong-train: run directory {run} is in use by ")
    assert run_record(run) == record


def test_a_sweep_job_refused_by_the_lock_counts_as_not_completed_and_its_run_is_left_as_it_was(tmp_path, cli):
    """A refused job writes nothing into its run (its status may say completed), so the sweep itself must name
    it: the command exits 1 naming the job and why, and the next sweep into the same directory forgets it."""
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, "trainer.max_steps=1", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    assert cli("train", args).returncode == 0
    held = sweep / "debug-tiny__seed-0"
    record = run_record(held)
    with RunLock(held):  # as a second scalelong-train running this job would hold it
        refused = cli("train", args)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("scalelong-train: 1 job(s) of the sweep did not complete: debug-tiny__seed-0 (refused: "
                           f"run directory {held} is in use by "), last
    assert run_record(held) == record
    assert cli("train", args).returncode == 0  # the lock released: both jobs are found finished


@pytest.mark.slow
def test_a_sweep_over_max_steps_gives_each_job_its_own_run(tmp_path, cli):
    """A key a sweep gives several values names its jobs, result-changing or not: two lengths are two runs."""
    sweep = tmp_path / "sweep"
    proc = cli("train", ["-m", *FAST, "trainer.max_steps=1,2", "seed=0,1", f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = {p.name: json.loads((p / "status.json").read_text())["step"] for p in sweep.iterdir() if p.is_dir()}
    assert steps == {f"debug-tiny__seed-{s}__trainer.max_steps-{n}": n for s in (0, 1) for n in (1, 2)}
    table = cli("aggregate", [str(sweep)])
    assert "missing" not in table.stdout
    assert "| debug=tiny trainer.max_steps=1 | 2 |" in table.stdout
    assert "| debug=tiny trainer.max_steps=2 | 2 |" in table.stdout


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie no one reaps, as in a container without init, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
def test_sigterm_to_a_joblib_sweep_ends_its_workers_and_a_rerun_completes_it(tmp_path, cli):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", *RESUME, f"hydra.sweep.dir={sweep}"]
    with open(tmp_path / "stderr", "w") as stderr:  # a pipe would stay open as long as an orphaned worker
        proc = subprocess.Popen([sys.executable, "-m", "scalelong.train", *args], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    end = time.monotonic() + 300
    while not list(sweep.glob("*/checkpoints/step0000002.ckpt")):
        assert proc.poll() is None and time.monotonic() < end, (tmp_path / "stderr").read_text()[-3000:]
        time.sleep(0.05)
    workers = {int(lock.read_text()) for lock in sweep.glob("*/.lock")}  # the pid that holds each job's run
    assert workers and proc.pid not in workers
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) in (-signal.SIGTERM, 128 + signal.SIGTERM)  # the shell says 143 for both
    end = time.monotonic() + 60
    while any(alive(pid) for pid in workers):
        if time.monotonic() > end:
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            pytest.fail(f"workers {[p for p in workers if alive(p)]} outlived their sweep by 60 s")
        time.sleep(0.2)
    statuses = [json.loads(p.read_text())["status"] for p in sweep.glob("*/status.json")]
    assert "interrupted" in statuses  # the training job saved as a pre-empted one (one still setting up just ends)

    again = cli("train", args)
    assert again.returncode == 0, again.stderr[-3000:]
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        status = json.loads((job / "status.json").read_text())
        assert (status["status"], status["step"]) == ("completed", 16), job
