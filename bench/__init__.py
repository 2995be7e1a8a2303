"""Checkout shim: ``python -m bench`` runs :mod:`guardwire_tools.bench` (``guardwire bench``).

The benchmark code ships in the server wheel as ``guardwire_tools.bench``; this folder keeps the
recorded results (``bench/results``) and the README.
"""
