"""Launched by `accelerate launch -m accelerate_probe OUT.json ...` in tests/trainers/test_launch.py: records
what the launched process sees (the accelerate environment, its argv) so the test can check a real launch on
CPU."""

from __future__ import annotations

import json
import os
import sys

from accelerate import PartialState

from medharness.trainers.launch import under_launcher

if __name__ == "__main__":
    state = PartialState()
    out = {"num_processes": state.num_processes, "process_index": state.process_index,
           "device": str(state.device), "distributed_type": str(state.distributed_type),
           "under_launcher": under_launcher(), "argv": sys.argv[1:],
           "env": {k: v for k, v in os.environ.items() if k.startswith("ACCELERATE_")}}
    with open(sys.argv[1], "w", encoding="utf-8") as fh:
        json.dump(out, fh)
