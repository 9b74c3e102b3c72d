"""Scoring: answer parsers (`parsers/`, a new one: a module there with `@parser`), metrics (`metrics/`, a
new one: `@metric`), normalisers, boxes, knowledge files, the named scoring conventions (`conventions.py`),
and the scoring recipe that parses, scores and summarises rows and names the primary metric (`recipe.py`).
Reads records only: a run is re-scored without the model or the images."""
