"""`medharness train-then-eval`: a sweep file (the *.yaml here) expands into cells, each trained and scored.

    schema.py  the sweep file's schema and its expansion into cells
    stages.py  the stage commands (train, merge, split, run), built once, and running them
    worker.py  the stage worker: heavy imports once, a forked child per stage
    check.py   the dry run's checks;  cli.py: the command
    board.py   the sweep's boards as leaderboards board specs: every row, and the paper's table beside the
               published rows of the board spec `reference:` names (leaderboards/boards/)
"""

from pathlib import Path

DEMO = Path(__file__).resolve().parent / "demo.yaml"  # the sweep `train-then-eval` runs by default
