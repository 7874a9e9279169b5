"""The models a config names."""
