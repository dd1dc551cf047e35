# edge-mer developer entry points. Everything installs into .venv on first use.
#   make demo   - the embedded default: synth -> train -> convert --int8 -> report
#   make test   - lint, the test suite and the installed-wheel smoke (what CI runs)
#   make native - recompile the frame loop in place after editing it (edge_mer.native)
#   make trt-signatures - the TensorRT calls against the real bindings (downloads)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU-only torch, installed before the package: a torch requirement that admits a newer
# release would otherwise pull several GB of CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= convert,cpu,mqtt,plots,ray,dev

.PHONY: install native system-deps demo test lint smoke trt-signatures clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(BIN)/.installed

# The editable install compiles the frame loop in place (setup.py, mypyc); after an edit to
# one of its modules import edge_mer runs them all from source until this rebuilds them.
native: install
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .

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
	# The frame loop again as Python (the fallback where nothing could compile it).
	EDGE_MER_PURE=1 $(BIN)/python -m pytest -q tests/edge/pipeline tests/edge/bench/test_spotting.py tests/edge/test_native.py
	$(MAKE) smoke

# The installed package, as users get it: sdist -> wheel -> fresh venvs per extra.
smoke:
	PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" bash scripts/installed-smoke.sh

# edge-mer's TensorRT calls against the real Python bindings of 8.6 / 10.3 / 10.13 / 11.4:
# downloads the bindings wheels (~5 MB, into .cache/), needs gcc and binutils and a Python
# <= 3.11 (tensorrt-bindings 8.6.1 has no newer wheel). Rewrites scripts/trt-api/ and the
# table in docs/engines.md; `make test` checks against those offline.
trt-signatures: install
	$(BIN)/python scripts/trt_signatures.py

clean:
	rm -rf $(VENV) edge-mer-demo .pytest_cache .ruff_cache .smoke .cache build dist edge/_native_sources.txt
	find edge -name '*.so' -delete
