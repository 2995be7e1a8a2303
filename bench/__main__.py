"""``python -m bench`` from a checkout: the same command as ``guardwire bench``."""

from guardwire_tools.bench.cli import main

raise SystemExit(main())
