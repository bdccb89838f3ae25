"""``python -m igd``: run the command line."""

from igd.cli import main

raise SystemExit(main())
