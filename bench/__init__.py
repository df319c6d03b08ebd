"""eraselab's benchmark harness: every stage timed against a plain baseline (``python -m bench``)."""
