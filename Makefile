# Set-up and the two everyday commands. `make demo` and `make test` install everything they need.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := runs/demo

.PHONY: demo test install bench clean-demo

install: $(STAMP)

# torch first, pinned by constraints.txt for every later pip call: an unpinned torchvision would
# otherwise pull a newer CUDA torch (see docs/install.md).
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[hf,data,api,judges,train,dev]"
	touch $(STAMP)

# The main job on the embedded default: the phantom tasks for a majority baseline and a tiny
# random-weight VLM built offline, then a leaderboard. No downloads, no GPU.
demo: $(STAMP) clean-demo
	$(BIN)/medharness make-tiny-model $(DEMO)/tiny-qwen2-vl
	$(BIN)/medharness run --model baseline:majority --tasks phantom --output $(DEMO)/majority
	$(BIN)/medharness run --model $(DEMO)/tiny-qwen2-vl --tasks phantom --output $(DEMO)/tiny-qwen2-vl-run
	$(BIN)/medharness leaderboard $(DEMO)/majority $(DEMO)/tiny-qwen2-vl-run --output $(DEMO)/leaderboard.md
	cat $(DEMO)/leaderboard.md

clean-demo:
	rm -rf $(DEMO)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run_all.py
