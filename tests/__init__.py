"""Tests: run with `python -m pytest -q -n 2 tests` from the project root."""
