"""LLM judges: versioned judge specs (specs.py, prompts/), panels (panel.py), judging a run (judging.py),
judge and panel columns (summary.py), agreement statistics (agreement.py) and audits (audit.py).

Heavy modules (statistics, backends) are imported where used; `medharness ls judges` lists the specs.
"""
