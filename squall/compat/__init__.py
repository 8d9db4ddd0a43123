"""Compatibility layers that let DAG files written for other schedulers run on Squall."""
