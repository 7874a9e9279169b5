"""Checkpoints: the Orbax manager, restores, warm starts."""
