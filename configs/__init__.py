"""Config files: get_config() functions (and sweep files with get_sweep())."""
