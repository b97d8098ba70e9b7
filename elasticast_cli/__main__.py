"""`python -m elasticast_cli`: the console script."""

from . import main

raise SystemExit(main())
