"""Bigger engines on one machine: a local Apache Flink cluster for the
pipeline's Beam jobs (`python -m cluster up|down|status|fetch|flags`)."""
