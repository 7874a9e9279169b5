"""Training: the state, the pure step, the programs, the loop and its runs."""
