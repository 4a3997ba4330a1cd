# Two commands: `make demo` (the main job) and `make test` (the whole suite). Both create the venv first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out
DEMO_ENCODER ?= effnet_gem

.PHONY: demo test venv bench clean

venv: $(STAMP)

$(STAMP): setup.py
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	# torch first and pinned: it must take the CPU build, never a CUDA one.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[ros,onnx,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vpr-ros demo --out $(DEMO_OUT) --encoder $(DEMO_ENCODER)

test: $(STAMP)
	$(BIN)/python -m pytest -q test

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_encoders.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) build install log *.egg-info
