"""Benchmarks: speed, fidelity and quality targets, measured with the project's own code.

Run one with ``.venv/bin/python -m benchmarks.NAME``; each prints a markdown table and the
command that produced it, to be copied into BENCHMARKS.md.
"""
