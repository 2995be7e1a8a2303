"""Checkout shim: ``python bench/logsumexp.py`` runs the module in guardwire_tools.bench."""

from guardwire_tools.bench.logsumexp import main

if __name__ == "__main__":
    raise SystemExit(main())
