"""The trainer's machinery: checkpoints, data placement, logging, sweeps, CLI.

main.py, train.py, models.py, input_pipeline.py, sweep.py and report.py at
the top level are the application; this package is what they are built on.
"""
