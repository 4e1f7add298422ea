"""Losses, metrics, schedulers, config, checkpoints and other helpers."""
