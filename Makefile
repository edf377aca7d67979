# Two commands on a fresh machine with Python 3.11:
#   make demo   - set up .venv and run the whole workflow on the bundled demo data
#   make test   - set up .venv and run the test suite (lint and format checks included)
VENV ?= .venv
CORES ?= 2
PYTHON ?= $(shell command -v python3.11 || command -v python3)
BIN := $(VENV)/bin
# torch is pinned to the CPU build for development and CI (see requirements/cpu.txt).
export PIP_CONSTRAINT := $(CURDIR)/requirements/cpu.txt
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv demo demo-accessibility test lint format benchmark clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[workflow,cluster,dev]"
	touch $@

demo: venv
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --cores $(CORES) --report results/report.html
	@echo
	@echo "Done. Metrics:     results/evaluate/*/metrics.json (+ metrics_per_feature.tsv, plots/)"
	@echo "      Imputations: results/impute/*/*.parquet (+ .h5ad for scanpy/anndata)"
	@echo "      Tracks:      results/tracks/*/*.bw (IGV, UCSC), locus views results/tracks/*/loci/"
	@echo "      Report:      results/report.html"

# The accessibility task with genomic positions (config/accessibility.yaml), into
# results/accessibility/.
demo-accessibility: venv
	$(BIN)/snakemake --cores $(CORES) --configfile config/accessibility.yaml
	@echo
	@echo "Done. Metrics per cell type: results/accessibility/evaluate/all/metrics.json"

test: venv
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check getdiff tests benchmarks
	$(BIN)/ruff format --check getdiff tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint

format: venv
	$(BIN)/ruff check --fix getdiff tests benchmarks
	$(BIN)/ruff format getdiff tests benchmarks
	$(BIN)/snakefmt Snakefile workflow

benchmark: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf results demo .snakemake
