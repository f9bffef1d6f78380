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
	$(BIN)/pytest -q tests -m "not slurm"

test-slurm: $(STAMP)  ## the SLURM tier: a study through --executor slurm (needs .ci/slurm.sh up)
	$(BIN)/pytest -q tests/slurm -m slurm

clean:  ## remove results and logs of the default study (keeps .venv)
	rm -rf results logs .snakemake

.PHONY: help venv study report forecast lint test test-slurm clean
