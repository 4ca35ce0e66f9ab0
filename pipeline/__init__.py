"""What runs, in what order: configuration, the TFX DAG, run summaries."""
