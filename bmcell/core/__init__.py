"""The lowest layer: data, models, checkpoints, configuration, the training loop, inference and metrics."""
