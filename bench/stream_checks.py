"""Checkout shim: ``python bench/stream_checks.py`` runs the module in guardwire_tools.bench."""

from guardwire_tools.bench.stream_checks import main

if __name__ == "__main__":
    raise SystemExit(main())
