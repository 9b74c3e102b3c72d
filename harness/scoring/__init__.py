"""Scoring: answer parsers (`parsers/`), metrics (`metrics/`), normalisers, boxes, knowledge files, the named
scoring conventions, and the scoring recipe that parses, scores and summarises rows (`recipe.py`). Reads
records only: a run is re-scored without the model or the images."""
