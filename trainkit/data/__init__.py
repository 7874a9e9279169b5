"""The input: sources, their placement on devices, streaming, statistics."""
