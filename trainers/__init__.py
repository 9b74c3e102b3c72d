"""Trainers: TRL recipes whose rewards are the tasks' own parsers and metrics (skeleton; see the training issue)."""
