"""A local, read-only web UI over ML Metadata (python -m ui)."""
