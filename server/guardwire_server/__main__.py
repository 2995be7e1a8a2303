"""``python -m guardwire_server`` is the ``guardwire`` command."""

from guardwire_server.cli import main

raise SystemExit(main())
