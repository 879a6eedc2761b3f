"""Workflow formats (UI <-> API), validation and the executor."""
