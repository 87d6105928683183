"""scalelong-bench: ratios of interleaved rounds, rows and their verdicts, the reference networks, every section of the
suite on tiny settings, and the command's table. Rows and numbers are asserted, never a time."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from scalelong.bench import framework, training
from scalelong.bench.measure import Precision, interleaved, ratio
from scalelong.bench.references import UVIT_S2_CIFAR10, ReferenceMissing, diffusers_ddpm_unet, uvit_reference
from scalelong.bench.suite import BenchOptions, run_suite
from scalelong.bench.table import SECTIONS, Row, csv_text, markdown
from scalelong.config import build_model

CPU = Precision.for_device("cpu")


def test_arms_run_in_turn_in_abba_order_and_a_ratio_is_the_median_of_per_round_ratios() -> None:
    calls: list[str] = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, precision=CPU)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"] and [len(v) for v in times.values()] == [3, 3]
    assert ratio([2.0, 3.0, 30.0], [1.0, 1.0, 1.0]) == 3.0


def test_a_row_passes_or_misses_its_target_and_says_when_it_has_no_ratio() -> None:
    assert Row("framework", "x", ratio=1.02, target=("<=", 1.03)).verdict == "pass"
    assert Row("framework", "x", ratio=1.04, target=("<=", 1.03)).verdict == "miss"
    assert Row("backbone", "x", ratio=0.99, target=(">=", 1.0)).verdict == "miss"
    assert Row("scaler", "x", ratio=1.2).verdict == "—"
    assert Row("backbone", "x", note="reference not given").verdict == "not measured"
    rows = [Row("backbone", "unet", "1 ms/step", "2 ms/step", 2.0, (">=", 1.0)), Row("memory", "m", ratio=3.0)]
    header = {"date": "2026-01-01", "machine": "a CPU", "torch": "2.x", "device": "cpu", "precision": "fp32"}
    page = markdown(rows, header)
    assert "- machine: a CPU" in page and "| unet | 1 ms/step | 2 ms/step | 2.000 | ≥ 1.00 | pass |" in page
    assert csv_text(rows, header).splitlines()[1].startswith("backbone,unet,1 ms/step,2 ms/step,2.000,≥ 1.00,pass")


def test_the_reference_unet_is_diffusers_ddpm_unet_with_as_many_parameters_as_ours() -> None:
    ours, theirs = build_model("unet_ddpm_cifar10"), diffusers_ddpm_unet()()
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters()) == 35_746_307


def reference_file(root: Path, scalelong: bool = True) -> Path:
    """A U-ViT model file in a package of its own, importing a sibling module as U-ViT's file imports ``.timm``."""
    (root / "libs").mkdir(parents=True)
    (root / "libs" / "__init__.py").write_text("")
    (root / "libs" / "layers.py").write_text("from torch import nn\nLayer = nn.Conv2d\n")
    extra = ", scalelong=0, kappa=0.5" if scalelong else ""
    (root / "libs" / "uvit.py").write_text(textwrap.dedent(f"""\
        from torch import nn
        from .layers import Layer
        print("a model file that prints at import")
        class UViT(nn.Module):
            built = []
            def __init__(self, img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, qkv_bias,
                         mlp_time_embed, num_classes{extra}):
                super().__init__()
                UViT.built.append(dict(locals()))
                self.layer = Layer(in_chans, in_chans, 3, padding=1)
            def forward(self, x, timesteps, y=None):
                return self.layer(x)
        """))
    return root / "libs" / "uvit.py"


def test_a_uvit_file_is_imported_in_its_package_and_built_as_uvit_s2_with_the_scaler(tmp_path) -> None:
    path = reference_file(tmp_path / "scalelong_repo")
    net = uvit_reference(path, "cs")()
    built = type(net.model).built[-1]
    assert {k: built[k] for k in UVIT_S2_CIFAR10} == UVIT_S2_CIFAR10
    assert (built["scalelong"], built["kappa"], net.img_size, net.in_chans) == (2, 0.5, 32, 3)
    plain = reference_file(tmp_path / "uvit_repo", scalelong=False)
    assert uvit_reference(plain, "none")() is not None
    with pytest.raises(ReferenceMissing, match="has no ls"):
        uvit_reference(plain, "ls")
    with pytest.raises(ReferenceMissing, match="reference not given"):
        uvit_reference(None, "none")
    with pytest.raises(ReferenceMissing, match="is not a file"):
        uvit_reference(tmp_path / "missing.py", "none")
    with pytest.raises(ReferenceMissing, match="is not a file"):
        uvit_reference(tmp_path / "uvit_repo", "none")  # a directory, not its model file
    other = tmp_path / "other" / "uvit_t2i.py"  # a UViT of other options: refused before anything is measured
    other.parent.mkdir()
    other.write_text("class UViT:\n    def __init__(self, img_size, patch_size, embed_dim, clip_dim):\n        pass\n")
    with pytest.raises(ReferenceMissing, match=r"takes no .*num_classes"):
        uvit_reference(other, "none")


def test_each_ratio_points_the_way_its_section_documents_and_the_verdict_reads_its_side_of_the_target(
        monkeypatch) -> None:
    """Fake times, no network timed: ours 1 s against a reference's 2 s is 2.0 (faster: pass), eager 2 s against
    compiled 1 s is 2.0 (pass), scalelong-train 4% over the bare loop misses 3% and passes 5%."""
    times = {"ours": [1.0] * 3, "reference": [2.0] * 3, "eager": [2.0] * 3, "compiled": [1.0] * 3}
    monkeypatch.setattr(training, "timed", lambda arms, rounds, precision: {a: times[a] for a in arms})
    monkeypatch.setattr(training, "step_arm", lambda build, batch, precision, compiled=False: lambda: None)
    monkeypatch.setattr(training, "diffusers_ddpm_unet", lambda: None)
    monkeypatch.setattr(framework, "paired_round", lambda cfg, steps, skip, run_dir, precision: (1.04, 1.0, 0.0))
    unet = training.backbone_rows([4], 3, CPU, None, training.Timings())[0]
    assert (unet.measurement, unet.ratio, unet.verdict) == ("unet_ddpm_cifar10 (none), batch 4", 2.0, "pass")
    compiled = training.compile_rows([("uvit_tiny", 2)], 3, CPU, training.Timings())[0]
    assert (compiled.ratio, compiled.verdict) == (2.0, "pass")
    rows = framework.framework_rows(["debug=tiny"], steps=4, skip=1, rounds=1, precision=CPU)
    assert [(r.ratio, r.verdict) for r in rows] == [(pytest.approx(1.04), "miss"), (pytest.approx(1.04), "pass")]


def test_a_bad_option_of_scalelong_bench_is_one_line_before_anything_is_measured(cli, tmp_path) -> None:
    for args, expected in [
        (["--sample", "experiment=typo"], "scalelong-bench: --sample experiment=typo: In 'train': Could not find"),
        (["--train", "trainer.compile=maybe"], "scalelong-bench: --train trainer.compile=maybe: trainer.compile="),
        (["--compile-cases", "uvit_s2_cifar10"], "'uvit_s2_cifar10' is not PRESET:BATCH"),
    ]:
        done = cli("bench.cli", [*args, "--out", str(tmp_path / "out")])
        last = done.stderr.strip().splitlines()[-1]  # argparse's usage may come before its one-line error
        assert done.returncode != 0 and expected in last and "Traceback" not in done.stderr, (args, done.stderr)
    assert not (tmp_path / "out").exists()


TINY = BenchOptions(
    sections=tuple(s for s in SECTIONS if s != "compile"), rounds=1, batches=(1,), scaler_preset="uvit_tiny",
    scaler_batch=2, train_overrides=("debug=tiny",), framework_steps=4, framework_skip=1, framework_rounds=1,
    sample_overrides=("debug=tiny", "model.num_classes=10"), sample_batch=2, sample_steps=2,
    eval_overrides=("n_samples=16", "batch_size=8", "sampler=ddim", "steps=2", "guidance_scale=2"),
    inception_batch=2, memory_experiments=("fmnist_demo",), memory_batch=2,
)


@pytest.mark.slow
def test_the_suite_measures_every_section_and_each_row_has_a_positive_ratio_or_says_why_not() -> None:
    rows, header = run_suite(TINY)
    assert {r.section for r in rows} == set(SECTIONS) - {"compile"}
    assert {"date", "machine", "torch", "threads", "precision"} <= set(header)
    measured = [r for r in rows if r.ratio is not None]
    assert all(math.isfinite(r.ratio) and r.ratio > 0 for r in measured)
    assert all(r.note for r in rows if r.ratio is None)
    backbone = {r.measurement: r for r in rows if r.section == "backbone"}
    assert backbone["unet_ddpm_cifar10 (none), batch 1"].verdict in ("pass", "miss")
    assert all(backbone[f"uvit_s2_cifar10 ({s}), batch 1"].note.startswith("reference not given")
               for s in ("none", "cs", "ls"))
    efficiency = {r.measurement for r in rows if r.section == "efficiency"}
    assert efficiency == {"unet_ddpm_cifar10, batch 1", "uvit_s2_cifar10, batch 1"}  # U-ViT timed without a reference
    assert len([r for r in rows if r.section == "scaler"]) == 8  # every scaler but none
    assert {r.measurement for r in rows if r.section == "framework"} == {
        "scalelong-train, callbacks=default", "scalelong-train, callbacks=stability"}
    sampling = [r.measurement for r in rows if r.section == "sampling"]
    assert len(sampling) == 5 + 2 + 1  # every sampler, the evaluation cached and on first use, Inception


def test_scalelong_bench_prints_the_table_and_writes_it_as_markdown_and_csv(cli, tmp_path) -> None:
    done = cli("bench.cli", ["--sections", "memory", "--memory", "fmnist_demo", "--out", str(tmp_path / "out")])
    assert done.returncode == 0, done.stderr
    assert "5. Peak memory of a training step" in done.stdout and "UNet of fmnist_demo, batch 8" in done.stdout
    page = (tmp_path / "out" / "cpu-fp32.md").read_text()
    assert "- command: scalelong-bench --sections memory" in page and "- torch: " in page
    assert len((tmp_path / "out" / "cpu-fp32.csv").read_text().splitlines()) == 2
