"""``python -m server`` is the ``guardwire`` command."""

from server.cli import main

raise SystemExit(main())
