"""LLM judges: versioned judge prompts, panels and agreement statistics (skeleton; see the judge-panel issue)."""
