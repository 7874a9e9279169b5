"""Sweep files: a base get_config() and get_sweep(), the members' overrides."""
