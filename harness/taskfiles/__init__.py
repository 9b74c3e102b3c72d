"""Task files: the strict schema (`schema.py`), the whole-file checks (`checks.py`), loading and the `Task`
object (`task.py`), data sources (`sources/`), the phantom family, k-shot splits, image ablations and the
answers a task expects (`answers.py`)."""
