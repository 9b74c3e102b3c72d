"""medharness.tasks."""
