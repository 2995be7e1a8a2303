"""Guardwire's benchmark suite: the server against the model card's loop and the compute floor.

Run ``python -m bench --help``; ``bench/README.md`` explains the figures.
"""
