"""Runs: the run directory and its log (`runlog.py`), the training and sweep folders' layout and readers
(`folders.py`), a run's numbers as boards and sweeps show them (`results.py`), the run loop (`pipeline.py`),
re-scoring (`rescore.py`), the regression gate (`gate.py`) and API prices (`prices.py`)."""
