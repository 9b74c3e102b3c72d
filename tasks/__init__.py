"""Task files (YAML), shipped as package data; see docs/tasks.md."""
