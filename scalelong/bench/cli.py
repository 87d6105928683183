"""``scalelong-bench``: how fast scalelong is against reference implementations and bare loops, as ratios.

    scalelong-bench                                        # every section; docs/benchmarks/<device>-<precision>.*
    scalelong-bench --uvit-reference ~/U-ViT/libs/uvit.py  # also U-ViT-S/2 against the official model file
    scalelong-bench --sections framework sampling --rounds 3 --out /tmp/bench

Prints one table per section (ratio, target, pass/miss) and writes it as Markdown and CSV with the date, the
machine and the torch version. What each row measures: docs/benchmarks/README.md; the suite: scalelong.bench.suite.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from hydra.errors import HydraException

from scalelong.bench.suite import COMPILE_PARTS, BenchOptions, run_suite
from scalelong.bench.table import SECTIONS, text_table, write_tables
from scalelong.config import check_train_config, compose
from scalelong.errors import ConfigError, exit_on_user_error


def compile_case(text: str) -> tuple[str, int]:
    """``PRESET:BATCH`` of ``--compile-cases`` (``uvit_s2_cifar10:8``)."""
    preset, _, batch = text.rpartition(":")
    if not preset or not batch.isdigit() or int(batch) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not PRESET:BATCH, e.g. uvit_s2_cifar10:8")
    return preset, int(batch)


def check_overrides(opts: BenchOptions) -> None:
    """Compose every config the suite will build before anything is measured: a bad override is one
    ``ConfigError`` naming its option, not a traceback after minutes of measuring."""
    configs = [("--train", opts.train_overrides, "train"), ("--sample", opts.sample_overrides, "train"),
               ("--eval", (*opts.eval_overrides, "ckpt=unused"), "eval"),
               *(("--memory", (f"experiment={e}",), "train") for e in opts.memory_experiments)]
    for flag, overrides, name in configs:
        try:
            cfg = compose(overrides, config_name=name)
            if name == "train":
                check_train_config(cfg)
        except (HydraException, ConfigError) as err:
            first = str(err).strip().splitlines()[0]  # Hydra goes on to list every option of the group
            raise ConfigError(f"{flag} {' '.join(overrides)}: {first}; fix the override and rerun") from None


def options(argv: list[str]) -> tuple[BenchOptions, argparse.Namespace]:
    d = BenchOptions()
    p = argparse.ArgumentParser(prog="scalelong-bench", description=__doc__.splitlines()[0])
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--sections", nargs="+", default=list(d.sections), choices=list(SECTIONS))
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled rows (each compiles minutes)")
    p.add_argument("--compile-parts", nargs="+", default=list(d.compile_parts), choices=list(COMPILE_PARTS))
    p.add_argument("--compile-cases", nargs="+", type=compile_case, default=list(d.compile_cases),
                   help="PRESET:BATCH of the compiled training-step rows")
    p.add_argument("--rounds", type=int, default=d.rounds, help="interleaved rounds per comparison")
    p.add_argument("--batches", type=int, nargs="+", default=list(d.batches), help="batches of the backbone rows")
    p.add_argument("--uvit-reference", default=None, help="U-ViT model file (libs/uvit.py of U-ViT or ScaleLong)")
    p.add_argument("--framework-steps", type=int, default=d.framework_steps, help="training steps per round")
    p.add_argument("--framework-rounds", type=int, default=d.framework_rounds)
    p.add_argument("--train", nargs="*", default=list(d.train_overrides), help="scalelong-train overrides (framework)")
    p.add_argument("--sample", nargs="*", default=list(d.sample_overrides), help="training config whose model samples")
    p.add_argument("--eval", nargs="*", default=list(d.eval_overrides), help="scalelong-eval overrides (evaluation)")
    p.add_argument("--memory", nargs="*", default=list(d.memory_experiments), help="experiments of the memory rows")
    p.add_argument("--note", action="append", default=[], help="a line for the table's header")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="where the .md and .csv go")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    a = p.parse_args(argv)
    sections = tuple(s for s in a.sections if not (a.no_compile and s == "compile"))
    return BenchOptions(device=a.device, sections=sections, rounds=a.rounds, batches=tuple(a.batches),
                        uvit_reference=a.uvit_reference, train_overrides=tuple(a.train),
                        framework_steps=a.framework_steps, framework_rounds=a.framework_rounds,
                        sample_overrides=tuple(a.sample), eval_overrides=tuple(a.eval),
                        memory_experiments=tuple(a.memory), compile_parts=tuple(a.compile_parts),
                        compile_cases=tuple(a.compile_cases),
                        extra_notes=a.note), a


def main() -> None:
    """Console entry point (``scalelong-bench``)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    opts, args = options(sys.argv[1:])
    exit_on_user_error("scalelong-bench", run, opts, args)


def run(opts: BenchOptions, args: argparse.Namespace) -> None:
    """Check the configs, measure, print and write the tables."""
    check_overrides(opts)
    rows, header = run_suite(opts, progress=lambda new: print(text_table(new), flush=True))
    header["command"] = "scalelong-bench " + shlex.join(sys.argv[1:])
    print(f"\n{text_table(rows)}")
    if not args.no_write:
        for path in write_tables(rows, header, args.out, opts.extra_notes):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
