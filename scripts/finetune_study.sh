#!/bin/sh
# The CPU transfer study of docs/results/finetune.md, in one command: the base (experiment=finetune_base, digits
# 0–4; skipped when finished), then its four sweeps of 3 seeds each on the digits 5–9
# (conf/experiment/finetune_digits_*.yaml), then the report. Running it again skips finished runs and resumes
# interrupted ones. Extra arguments are Hydra overrides for the base and every sweep, e.g. hydra/launcher=joblib
# hydra.launcher.n_jobs=2 (two runs at a time).
#   sh scripts/finetune_study.sh
set -e
export OMP_NUM_THREADS=1
OUT=docs/results/finetune/runs
scalelong-train experiment=finetune_base hydra.run.dir=$OUT/base "$@"
for arm in scratch tune few ls; do
  scalelong-train -m experiment=finetune_digits_$arm hydra.sweep.dir=$OUT/$arm "$@"
done
scalelong-finetune-report $OUT
