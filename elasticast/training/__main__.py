"""`accelerate launch -m elasticast.training ...` (or `python -m elasticast.training ...`)."""

from .loop import main


raise SystemExit(main())
