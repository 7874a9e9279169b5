"""A trained workdir used: evaluation, predictions and exports."""
