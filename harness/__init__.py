"""medharness: score medical vision-language models on medical benchmarks."""

__version__ = "0.1.0"
