"""Preloaded by a stage worker in a test: the worker then finds forking unusable (as where CUDA is
initialised), so the sweep runs its stages as subprocesses."""

from medharness.trainers.sweeps import worker

worker.fork_problem = lambda: "simulated: CUDA is initialised"  # type: ignore[assignment]
