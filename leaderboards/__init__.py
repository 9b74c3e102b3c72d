"""medharness.leaderboards."""
