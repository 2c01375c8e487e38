"""The benchmarks of issue 25 behind one command (see __main__.py)."""
