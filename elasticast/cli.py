"""`python -m elasticast.cli`: the same as the `elasticast` console script (`elasticast_cli`, which holds the table
of commands)."""

from elasticast_cli import COMMANDS, main

__all__ = ["COMMANDS", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
