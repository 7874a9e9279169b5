"""Many runs: sweeps, vmapped groups, Optuna searches, launchers."""
