"""medharness.trainers."""
