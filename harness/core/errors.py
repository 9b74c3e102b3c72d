"""One error base class with a few children. Per-sample failures are data, not exceptions."""

from __future__ import annotations


class MedHarnessError(Exception):
    """Base of every error medharness raises on purpose; the CLI prints it without a traceback."""


class ConfigError(MedHarnessError):
    """A task file, CLI option, registry name or other configuration is wrong."""


class DataError(MedHarnessError):
    """A dataset, predictions file or run directory cannot be read as expected."""


class BackendError(MedHarnessError):
    """A model backend cannot be loaded or fails as a whole (not a single sample)."""


class JudgeError(MedHarnessError):
    """A judge cannot be configured or reached at all."""


class RunInUseError(MedHarnessError):
    """Another process holds the run directory's lock (it is running, resuming or judging that run)."""
