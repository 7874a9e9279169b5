"""Sweep files: a base get_config() and get_sweep() or get_search() (from the package)."""
