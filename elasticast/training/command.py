"""The `elasticast train` sub-command (`accelerate launch -m elasticast.training` runs the same `train`)."""

from .arguments import add_arguments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train on a 🤗 dataset (run under `accelerate launch` for several processes)",
        description="Train ElasticAST or the AST baseline on a streaming 🤗 dataset.",
    )
    add_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from .loop import train  # Accelerate and the model load only when training runs, not for `elasticast --help`

    train(args)
    return 0
