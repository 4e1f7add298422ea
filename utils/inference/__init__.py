"""Prediction: the predictor and its modes, sliding windows, reading inputs and writing outputs."""
