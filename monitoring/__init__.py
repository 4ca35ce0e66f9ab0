"""Monitoring of the served model: skew of served traffic, live accuracy.

The model server (serving/) writes sampled PredictionLogs when a model's
config has a TF Serving `logging_config`; `python -m monitoring` reads them,
compares the served traffic's TFDV statistics with the training statistics
(training/serving skew) and, given the labels that arrived later, measures
live accuracy against the Evaluator's. `python -m monitoring.replay_traffic`
sends a span's trips to a running server. A package of its own, outside
serving/, because it needs TFDV, TFMA and the pipeline's ML Metadata
helpers, none of which the server process should import.
"""
