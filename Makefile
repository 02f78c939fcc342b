# `make train` and `make test` work on a fresh clone: the first call creates .venv with the versions in uv.lock.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
UV ?= $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
ARGS ?=
IMAGES_ARGS ?=  # scripts/benchmark_images.py's, e.g. IMAGES_ARGS="--images 3000"

.DEFAULT_GOAL := help
.PHONY: help install train eval test test-fast test-slurm test-gpu gpu-report bench lint typecheck format rename clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# uv installs exactly what uv.lock pins, compiled to bytecode once so that every later import is fast
# (about 40 s); `--locked` stops when pyproject.toml changed
# without `uv lock`. Without uv (and no way to pip-install it), pip resolves pyproject.toml's ranges.
$(INSTALLED): pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv >/dev/null 2>&1 || true
	@if $(UV) --version >/dev/null 2>&1; then \
		$(UV) sync --locked --compile-bytecode --python $(PYTHON); \
	else \
		echo "uv is not available: installing with pip instead (2-3 minutes, newest versions pyproject.toml allows)"; \
		$(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet -e ".[dev]"; \
	fi
	@touch $@

install: $(INSTALLED)  ## create .venv with the package and its dev tools (uv.lock's versions)

train: $(INSTALLED)  ## train the default config; pass overrides as ARGS="trainer.max_epochs=3 optimizer=sgd"
	$(BIN)/python -m lightning_template.train $(ARGS)

eval: $(INSTALLED)  ## test a checkpoint: make eval ARGS="ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt"
	$(BIN)/python -m lightning_template.eval $(ARGS)

test: $(INSTALLED)  ## the whole test suite, on every core (about 2.5 minutes on 2 CPU cores)
	$(BIN)/python -m pytest -n auto --dist loadgroup $(ARGS)

test-fast: $(INSTALLED)  ## only the fast tests
	$(BIN)/python -m pytest -n auto --dist loadgroup -m "not slow" $(ARGS)

test-slurm: $(INSTALLED)  ## the SLURM tests on a one-node cluster started here (root; apt packages slurmctld slurmd munge)
	scripts/slurm_local.sh up
	$(BIN)/python -m pytest -m slurm tests/test_slurm.py $(ARGS); status=$$?; scripts/slurm_local.sh down; exit $$status

test-gpu: $(INSTALLED)  ## the GPU tests (tests/test_gpu.py): trainer=gpu, bf16-mixed, data on the GPU, DDP on 2 GPUs
	$(BIN)/python -m pytest -m gpu tests/test_gpu.py $(ARGS)

gpu-report: $(INSTALLED)  ## on a GPU: make bench rows and mlp_best's accuracy, appended to docs/performance.md
	$(BIN)/python scripts/gpu_report.py $(ARGS)

bench: $(INSTALLED)  ## the loop against plain PyTorch (5 min), then a 50,000-image folder against torchvision's (5 min)
	$(BIN)/python scripts/benchmark.py $(ARGS)
	$(BIN)/python scripts/benchmark_images.py $(IMAGES_ARGS)

lint: $(INSTALLED)  ## ruff lint and format check, then mypy
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/mypy src

typecheck: $(INSTALLED)  ## mypy on src/ (config: [tool.mypy] in pyproject.toml)
	$(BIN)/mypy src

format: $(INSTALLED)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests scripts
	$(BIN)/ruff format src tests scripts

rename:  ## rename the package and its commands: make rename NAME=my_project (clean git tree)
	@test -n "$(NAME)" || { echo "usage: make rename NAME=my_project" >&2; exit 2; }
	$(PYTHON) scripts/rename_project.py $(NAME)

clean:  ## remove logs, caches and the unpacked data (keeps .venv and the bundled .gz files)
	rm -rf logs .pytest_cache .ruff_cache
	find data/MNIST/raw -type f ! -name '*.gz' -delete
