"""Checkpoints: the lineage manifest a trained folder carries (`lineage.py`) and the tiny offline models
(`tiny.py`)."""
