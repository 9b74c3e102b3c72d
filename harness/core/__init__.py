"""The core, imported by every layer above: records, errors, the one registry, paths inside an output folder,
the strict YAML loader and the one reader of user data files, and statistics (intervals, paired tests)."""
