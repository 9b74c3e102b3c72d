"""placeholder"""
from __future__ import annotations
import argparse
def add_sweep_command(sub: argparse._SubParsersAction) -> None:
    pass
def cmd_sweep(args: argparse.Namespace) -> int:
    return 0
