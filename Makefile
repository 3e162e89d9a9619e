# Two commands on a new machine: `make sweep SPACE=cnn_lr` and `make test`.
# Both create .venv and install the project (editable, with its dependencies) when needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

SPACE ?= cnn_lr
TRIALS ?=
TIMEOUT ?=
GPUS ?=
WORKERS_PER_GPU ?=
WORKERS ?=
STORAGE ?=
# The store URL reaches sweeper through its environment, never its command line, where `ps`
# would show a password to every user of the machine.
ifneq ($(STORAGE),)
export SWEEPER_STORAGE := $(STORAGE)
endif
STUDY ?=
NEW ?=
WARM ?=
NO_WAIT ?=
PYTEST_ARGS ?=

SWEEP_ARGS := $(SPACE) \
	$(if $(TRIALS),--trials $(TRIALS)) \
	$(if $(TIMEOUT),--timeout $(TIMEOUT)) \
	$(if $(GPUS),--gpus $(GPUS)) \
	$(if $(WORKERS_PER_GPU),--workers-per-gpu $(WORKERS_PER_GPU)) \
	$(if $(WORKERS),--workers $(WORKERS)) \
	$(if $(STUDY),--study $(STUDY)) \
	$(if $(NEW),--new-study) \
	$(if $(NO_WAIT),--no-wait) \
	$(if $(WARM),--warm-start $(filter-out 1,$(WARM)))

.PHONY: sweep test check install clean-venv bench gpu-check lint

sweep: $(STAMP)
	$(BIN)/sweeper sweep $(SWEEP_ARGS)

check: $(STAMP)
	$(BIN)/sweeper check $(SPACE)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(STAMP)

# Style, unused names, import order (ruff), types (mypy) and the layers of the package
# (import-linter, contracts in pyproject.toml); CI runs it.
LINT_STAMP := $(VENV)/.installed-lint

$(LINT_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,postgres,mysql,lint]'
	touch $(LINT_STAMP)

lint: $(LINT_STAMP)
	$(BIN)/ruff check sweeper tests benchmarks gpu_kit
	$(BIN)/mypy
	$(BIN)/lint-imports

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,postgres,mysql]'
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)

# Empty variables leave the command's own defaults (sweeper/defaults.py) in force.
HOST ?=
PORT ?=
TOP ?=

.PHONY: dashboard report status gpus
dashboard: $(STAMP)
	$(BIN)/sweeper dashboard $(SPACE) $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

report: $(STAMP)
	$(BIN)/sweeper report $(SPACE) $(if $(STUDY),--study $(STUDY)) $(if $(TOP),--top $(TOP))

status: $(STAMP)
	$(BIN)/sweeper status $(SPACE)

gpus: $(STAMP)
	$(BIN)/sweeper gpus

NODES ?=
GPUS_PER_NODE ?=
TIME ?=
PARTITION ?=

.PHONY: slurm
slurm: $(STAMP)
	$(BIN)/sweeper slurm $(SPACE) $(if $(NODES),--nodes $(NODES)) \
		$(if $(GPUS_PER_NODE),--gpus-per-node $(GPUS_PER_NODE)) $(if $(TIME),--time $(TIME)) \
		$(if $(TRIALS),--trials $(TRIALS)) \
		$(if $(STUDY),--study $(STUDY)) $(if $(PARTITION),--partition $(PARTITION)) --submit \
		$(if $(WARM),--warm-start $(filter-out 1,$(WARM)))

# Benchmarks (never part of `make test`): QUICK=1 for a few minutes, ONLY=1,3 for some rows.
BENCH_STAMP := $(VENV)/.installed-bench
QUICK ?=
ONLY ?=

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,postgres,mysql,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks $(if $(QUICK),--quick) $(if $(ONLY),--only $(ONLY))

# On a machine with NVIDIA GPUs: pinning, the backend, packing 1, 2 and 4 workers per GPU
# (GPU_CHECK_SECONDS of sweeping each, 100 by default: about 8 minutes in all).
GPU_CHECK_SECONDS ?=

gpu-check: $(STAMP)
	$(BIN)/python -m benchmarks.gpu_check --space $(SPACE) \
		$(if $(GPU_CHECK_SECONDS),--seconds-per-packing $(GPU_CHECK_SECONDS))

# The offline kit for GPU nodes without internet or TensorFlow: storage/gpu-kit/ (the project and
# the wheels the node's image lacks, for its Python and platform). On the node:
#   bash gpu-kit/run gpu-check
KIT_PYTHON ?= 3.12
KIT_PLATFORM ?= manylinux_2_28_x86_64
KIT_LIMIT_MIB ?= 60
KIT_FROM_IMAGE ?= numpy scipy

.PHONY: gpu-kit
gpu-kit: $(STAMP)
	$(BIN)/python -m gpu_kit.build --python $(KIT_PYTHON) --platform $(KIT_PLATFORM) \
		--limit-mib $(KIT_LIMIT_MIB) --from-image "$(KIT_FROM_IMAGE)"
