# Two commands on a fresh machine: `make sync` (real portal) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SPP := $(BIN)/spp
DB ?= data/spp.duckdb
DEMO_PORT ?= 0

.PHONY: venv sync demo test models status bench clean

$(BIN)/spp: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $(BIN)/spp

venv: $(BIN)/spp

## Sync from the real portal into $(DB) and build the models.
sync: venv
	$(SPP) sync --db $(DB)

## The same against the bundled local replica, offline.
demo: venv
	$(BIN)/python -m pipelines.demo --db $(DB) --port $(DEMO_PORT)

test: venv
	$(BIN)/pytest -q

models: venv
	$(SPP) models --db $(DB)

status: venv
	$(SPP) status --db $(DB)

## Benchmark: limit vs ours vs the usual dlt way, N = 10k, 100k, 1M (takes a while).
bench: venv
	$(BIN)/python -m pipelines.bench --sizes $(or $(SIZES),10000,100000,1000000) --out bench/results.json

clean:
	rm -rf $(VENV) .pytest_cache data/spp.duckdb data/spp.duckdb.wal data/spp.duckdb.lock data/.spp.duckdb.dlt data/serving data/report.html
