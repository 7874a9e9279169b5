"""What a run reports: metric logs, progress, plots, MLflow."""
