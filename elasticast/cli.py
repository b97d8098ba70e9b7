"""`elasticast` command line: each sub-command lives in its own module exposing `add_parser(subparsers)`."""

import argparse
import importlib

# Modules providing sub-commands, in `--help` order.
COMMAND_MODULES = [
    "elasticast.convert",
    "elasticast.hub",
    "elasticast.training",
    "elasticast.token_usage",
    "elasticast.evaluation",
    "elasticast.onnx_export",
    "elasticast.classify",
    "elasticast.calibrate",
    "elasticast.event_metrics",
    "elasticast.app",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="elasticast", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
