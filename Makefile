# herdtrace: two commands for a new Linux machine (as root):
#   make demo   set up, then run the default bench on the built-in lab
#   make test   set up, then run the whole test suite (unit, integration, ruff, mypy)
VENV := .venv
PY := $(VENV)/bin/python
HT := $(VENV)/bin/herdtrace
DEMO_DIR ?= herdtrace-demo

.PHONY: setup demo test test-kernels unit lint bench-perf bench-exporter schema notebook clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(HT) bench --repeats 2 -o $(DEMO_DIR) --force

test: setup
	$(PY) -m pytest tests

# The core of the suite inside other kernels (virtme-ng, this machine's file system):
# KERNELS="6.1 6.12" by default; CI runs 6.1.
KERNELS ?= 6.1 6.12
test-kernels: setup
	$(PY) scripts/test_kernels.py $(KERNELS)

unit: setup
	$(PY) -m pytest tests/unit

lint: setup
	$(PY) -m ruff check herdtrace tests benchmarks scripts
	$(PY) -m mypy

bench-perf: setup
	$(PY) -m benchmarks.perf

# What leaving the exporter running costs (BPF ns and user CPU per connection);
# SOAK=60 adds an hour of servers coming and going, memory printed each minute.
bench-exporter: setup
	$(PY) -m benchmarks.exporter_cost $(if $(SOAK),--soak-minutes $(SOAK))

schema:
	$(PY) -m herdtrace.schema

# Execute the notebook on its bundled recordings and keep the outputs, so that it
# reads on a web page without running.
notebook: setup
	$(PY) -c "import nbformat; from nbclient import NotebookClient; \
	p = 'notebooks/herd_analysis.ipynb'; nb = nbformat.read(p, as_version=4); \
	NotebookClient(nb, timeout=300, kernel_name='python3', \
	resources={'metadata': {'path': 'notebooks'}}).execute(); nbformat.write(nb, p)"

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
