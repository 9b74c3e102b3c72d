"""Rewards the training tests share: the task's metrics plus a length reward that varies between the
completions of a random model, so GRPO advantages are not all zero (registered by
tests/trainers/conftest.py)."""

from __future__ import annotations

LENGTH = "test_text_length"
REWARDS = ("rewards=[{metric: yes_no_accuracy, weight: 0.9}, {metric: format_compliance, args: {format: r1}, "
           f"weight: 0.1}}, {{metric: {LENGTH}, weight: 0.1}}]")
LABELS = {"yes_no_accuracy", "format_compliance", LENGTH}
