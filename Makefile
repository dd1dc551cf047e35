# edge-mer developer entry points. Everything installs into .venv on first use.
#   make demo   - the embedded default: synth -> train -> convert --int8 -> report
#   make test   - lint and the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU-only torch, installed before the package: a torch requirement that admits a newer
# release would otherwise pull several GB of CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= convert,cpu,mqtt,plots,dev

.PHONY: install system-deps demo test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/edge-mer demo

system-deps:
	bash scripts/system-deps.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint system-deps
	$(BIN)/python -c "import sys, edge_mer, edge_mer.cli; assert 'torch' not in sys.modules, 'the core imports torch'"
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) edge-mer-demo .pytest_cache .ruff_cache
