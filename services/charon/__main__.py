"""``python -m charon``: the command-line interface."""

from charon.cli import main

raise SystemExit(main())
