"""The core, imported by every layer above: records (`records.py`: samples to run, train and sweep logs),
errors, the one registry (`registry.py`), paths inside an output folder (`paths.py`), whole-file writes
(`atomic.py`), the strict YAML loader (`yamlio.py`), the one reader of user data files (`datafiles.py`), dtype
names (`dtypes.py`), statistics (`stats.py`: intervals, paired tests) and installed package versions
(`versions.py`)."""
