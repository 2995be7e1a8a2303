"""Evaluation and calibration of a running guard sidecar on labelled data.

Modules: ``metrics`` (AUPRC, ROC AUC, thresholds; numpy only), ``datasets`` (readers),
``runner`` (streams examples through the sidecar), ``report`` (JSON/markdown/PNG),
``calibrate`` (per-category thresholds for a target FPR), ``cli`` (``guardwire eval`` and
``guardwire calibrate``). Nothing here is imported by the server at start-up.
"""
