"""Leaderboards: pure functions of run directories -> Markdown tables (render.py)."""
