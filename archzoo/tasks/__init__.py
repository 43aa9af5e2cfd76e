"""Prompted tasks for evaluation: task files, built-in synthetic tasks, prompts and metrics (DESIGN.md §7)."""
