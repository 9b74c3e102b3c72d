"""Leaderboards: board specs (`spec.py`, shipped ones in `boards/`) and run directories -> boards with
intervals, significance marks and deltas (`board.py`, `compare.py`) -> Markdown, CSV, JSON (`render.py`) and
PNGs (`plots.py`); one run's report (`report.py`). The commands: `cli.py`. See docs/leaderboards.md."""
