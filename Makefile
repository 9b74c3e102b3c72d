# Set-up and the two everyday commands. `make demo` and `make test` install everything they need; `make test-slow`
# runs the slow end-to-end tests that `make test` leaves out (CI runs both).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := runs/demo

.PHONY: demo test test-slow test-all install bench clean-demo

install: $(STAMP)

# torch first, pinned by constraints.txt for every later pip call: an unpinned torchvision would
# otherwise pull a newer CUDA torch (see docs/install.md).
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[hf,data,api,judges,train,plots,peers,ray,dev]"
	touch $(STAMP)

# The main job on the embedded default: train-then-eval with the shipped demo sweep (trainers/sweeps/demo.yaml):
# a small tiny VLM built offline, SFT on phantom_presence, then GRPO from the SFT checkpoint, and one leaderboard
# with the majority baseline, the base model, after SFT and after GRPO (runs/demo/leaderboard.md). No downloads,
# no GPU.
demo: $(STAMP) clean-demo
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/medharness train-then-eval --output $(DEMO)

clean-demo:
	rm -rf $(DEMO)

# The everyday suite (a few minutes on 2 cores): everything but the tests marked `slow` (real models trained and
# run end to end, the paper sweeps' tiny profiles, subprocess round trips), which `make test-slow` runs; CI
# (.ci/run) runs both.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run_all.py
