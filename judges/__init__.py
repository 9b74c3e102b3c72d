"""medharness.judges."""
