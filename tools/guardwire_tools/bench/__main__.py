"""``python -m bench``: see ``guardwire_tools.bench.cli``."""

from guardwire_tools.bench.cli import main

raise SystemExit(main())
