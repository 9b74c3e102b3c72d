"""Fixtures of the training tests."""

from __future__ import annotations

import pytest
from train_rewards import LENGTH  # tests/support

from medharness.scoring.metrics import METRICS, Metric


@pytest.fixture(scope="module", autouse=True)
def length_metric() -> None:
    """A reward that varies between completions of a random model, so GRPO advantages are not all zero."""
    if LENGTH not in METRICS:
        METRICS.register(LENGTH, Metric(name=LENGTH, fn=lambda answer, sample, text: len(text) / 10.0,
                                        percent=False))
