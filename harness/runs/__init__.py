"""Runs: the run directory and its log (`runlog.py`), the run loop (`pipeline.py`), re-scoring (`rescore.py`),
the regression gate (`gate.py`) and API prices (`prices.py`)."""
