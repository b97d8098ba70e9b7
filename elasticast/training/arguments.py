"""Command-line arguments of `elasticast train` / `accelerate launch -m elasticast.training`."""

import argparse
import importlib.util
import shutil
from pathlib import Path

from .data import MODES


MIXED_COMPRESSIONS = "1.0,1.2,1.4,1.6,1.8,2.0,2.2,2.4,2.6,2.8,3.0,3.2,3.4,3.6,3.8,4.0"
AVGPOOL_COMPRESSIONS = "1,2,3,4"
BATCH_BUDGETS = ("native", "input")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value} (a run needs at least one epoch/step)")
    return value


# What a finished or interrupted run leaves in --output-dir (hub.export's files, trainer checkpoints, logs).
RUN_FILES = ("model.safetensors", "config.json", "preprocessor_config.json", "metrics.json", "eval_results.json",
             "README.md", "checkpoints", "configuration_elasticast.py", "modeling_elasticast.py",
             "feature_extraction_elasticast.py", "logs", ".export-staging")
RUN_MARKERS = ("model.safetensors", "metrics.json", "eval_results.json", "checkpoints")


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True,
                      help="Hub dataset id, local folder (audiofolder) or builder name (audiofolder, parquet, ...)")
    data.add_argument("--dataset-config", default=None, help="dataset configuration name")
    data.add_argument("--data-dir", default=None, help="data_dir for load_dataset")
    data.add_argument("--data-files", nargs="+", default=None, help="training data files (patterns allowed)")
    data.add_argument("--eval-data-files", nargs="+", default=None, help="evaluation data files")
    data.add_argument("--train-split", default="train")
    data.add_argument("--eval-split", default="auto",
                      help="evaluation split; 'auto' picks validation/valid/dev/test if present, 'none' skips")
    data.add_argument("--audio-column", default="audio")
    data.add_argument("--label-column", default="label")
    data.add_argument("--labels", type=_names, default=None,
                      help="comma-separated class names (fixes order; skips the scan of string labels)")
    data.add_argument("--multi-label", action="store_true", default=None,
                      help="treat labels as sets (automatic for list-valued label columns)")
    data.add_argument("--shuffle-buffer", type=int, default=1000, help="streaming shuffle buffer (0: no shuffle)")
    data.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding audio, per data slot")
    data.add_argument("--compute-stats", action="store_true",
                      help="normalise with the training split's own log-mel mean and std (as the AST recipes do), "
                           "measured on the first --stats-clips clips; stored in the exported preprocessor_config.json")
    data.add_argument("--stats-clips", type=int, default=1000, help="--compute-stats: clips read at most")

    mode = parser.add_argument_group("input mode (paper §3.3-3.5)")
    mode.add_argument("--mode", choices=MODES, default="native",
                      help="native length, mixed resolution, average-pool compression, or fixed length (cut/pad)")
    mode.add_argument("--max-seconds", type=float, default=30.0, help="native/mixed/avgpool: cut clips longer than this")
    mode.add_argument("--fixed-frames", type=int, default=1024, help="fixed mode (and the AST baseline): frames")
    mode.add_argument("--compressions", type=_floats, default=None,
                      help=f"C values drawn per clip (mixed: {MIXED_COMPRESSIONS}; avgpool: {AVGPOOL_COMPRESSIONS})")
    mode.add_argument("--eval-compression", type=float, default=1.0, help="C used for evaluation")
    mode.add_argument("--max-tokens-per-row", type=int, default=2048, help="L': tokens per packed row")
    mode.add_argument("--tokens-per-batch", type=int, default=8192,
                      help="token budget per micro-batch and process, counted as --batch-budget says")
    mode.add_argument("--batch-budget", choices=BATCH_BUDGETS, default="native",
                      help="native: each clip counts its tokens at native resolution (C = 1, cut to --max-seconds) "
                           "whatever the mode, so mixed, avgpool and fixed (AST) runs get the same clips per step and "
                           "the same steps per epoch as --mode native; input: each clip counts the tokens the mode "
                           "feeds the model (compressed or fixed-length clips make fuller batches and fewer steps)")
    mode.add_argument("--packing-lookahead", type=int, default=4, help="best-fit buffer, in batches")

    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=("elasticast", "ast"), default="elasticast",
                       help="'ast': transformers' ASTForAudioClassification, 16x16 patches at stride 16, fixed length")
    model.add_argument("--model-name-or-path", default=None, help="start from these weights (else from scratch)")
    model.add_argument("--hidden-size", type=int, default=768)
    model.add_argument("--num-layers", type=int, default=12)
    model.add_argument("--num-heads", type=int, default=12)
    model.add_argument("--intermediate-size", type=int, default=None, help="default: 4 x hidden size")
    model.add_argument("--attn-implementation", default=None, help="sdpa (default), eager, flex_attention, ...")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=_at_least_one, default=10)
    optim.add_argument("--max-steps", type=_at_least_one, default=None, help="stop after this many optimiser steps")
    optim.add_argument("--learning-rate", type=float, default=1e-4)
    optim.add_argument("--weight-decay", type=float, default=0.01)
    optim.add_argument("--adam-betas", type=_floats, default=(0.9, 0.999))
    optim.add_argument("--lr-schedule", choices=("cosine", "step", "constant"), default="cosine")
    optim.add_argument("--warmup-epochs", type=float, default=1.0)
    optim.add_argument("--lr-step-epochs", type=float, default=5.0, help="step schedule: decay every N epochs")
    optim.add_argument("--lr-step-gamma", type=float, default=0.5, help="step schedule: decay factor")
    optim.add_argument("--gradient-accumulation-steps", type=int, default=1)
    optim.add_argument("--max-grad-norm", type=float, default=1.0, help="0 disables clipping")
    optim.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default="auto",
                       help="auto: bf16 where the device supports it")
    optim.add_argument("--freq-mask", type=int, default=24, help="SpecAugment: max mel bins masked (0: off)")
    optim.add_argument("--time-mask", type=float, default=0.2,
                       help="SpecAugment: max masked fraction of each clip's frames (0: off)")
    optim.add_argument("--mixup", type=float, default=0.0, help="probability of mixing a clip with another")
    optim.add_argument("--mixup-alpha", type=float, default=10.0)
    optim.add_argument("--token-dropout", type=float, default=0.0, help="ElasticAST: drop this fraction of tokens")
    optim.add_argument("--seed", type=int, default=0)

    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", required=True,
                     help="folder of the run; one that holds a run already needs --resume or --overwrite-output-dir")
    run.add_argument("--overwrite-output-dir", action="store_true",
                     help="remove the run already in --output-dir (model, metrics, checkpoints, card) and start anew")
    run.add_argument("--save-steps", type=int, default=500, help="checkpoint every N steps (and every epoch end)")
    run.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept")
    run.add_argument("--resume", nargs="?", const="latest", default=None,
                     help="continue from the latest checkpoint in --output-dir, or from the given checkpoint folder")
    run.add_argument("--logging-steps", type=int, default=10)
    run.add_argument("--report-to", choices=("tensorboard", "trackio", "none"), default="tensorboard")
    run.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    run.add_argument("--push-to-hub", action="store_true", help="upload the exported folder at the end")
    run.add_argument("--hub-model-id", default=None, help="repo id for --push-to-hub")
    run.add_argument("--hub-private", action="store_true")
    return parser


def validate(args: argparse.Namespace) -> argparse.Namespace:
    """Checks combinations and fills mode-dependent defaults; raises ValueError naming the problem and the fix."""
    if args.model == "ast" and args.mode != "fixed":
        raise ValueError("--model ast trains at a fixed length: add --mode fixed (and --fixed-frames, default 1024).")
    if args.compressions is None:
        args.compressions = _floats({"mixed": MIXED_COMPRESSIONS, "avgpool": AVGPOOL_COMPRESSIONS}.get(args.mode, "1"))
    if any(c < 1 for c in args.compressions):
        raise ValueError(f"--compressions must all be ≥ 1, got {args.compressions}.")
    if args.fixed_frames < 16 or args.fixed_frames % 16:
        raise ValueError(f"--fixed-frames must be a positive multiple of 16, got {args.fixed_frames}.")
    if args.stats_clips < 1:
        raise ValueError(f"--stats-clips must be ≥ 1, got {args.stats_clips}.")
    if args.gradient_accumulation_steps < 1:
        raise ValueError("--gradient-accumulation-steps must be ≥ 1.")
    if len(args.adam_betas) != 2:
        raise ValueError(f"--adam-betas takes two numbers, e.g. 0.9,0.999; got {args.adam_betas}.")
    if not 0 <= args.token_dropout < 1 or not 0 <= args.mixup <= 1:
        raise ValueError("--token-dropout must lie in [0, 1) and --mixup in [0, 1].")
    if args.report_to == "trackio" and importlib.util.find_spec("trackio") is None:
        raise ValueError("--report-to trackio needs the trackio package: `pip install trackio` (or use tensorboard).")
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push-to-hub needs --hub-model-id <user/name>.")
    _check_output_dir(args)
    return args


def _check_output_dir(args: argparse.Namespace) -> None:
    output = Path(args.output_dir)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output-dir {output} is a file; name a folder.")
    held = [name for name in RUN_MARKERS if (output / name).exists()]
    overwrite = getattr(args, "overwrite_output_dir", False)
    if args.resume and overwrite:
        raise ValueError("--resume continues the run in --output-dir and --overwrite-output-dir removes it: pass one.")
    if args.resume not in (None, "latest"):
        checkpoint = Path(args.resume).resolve()
        if checkpoint.parent != (output / "checkpoints").resolve():
            raise ValueError(
                f"--resume {args.resume} is not a checkpoint of --output-dir {output} (its checkpoints are in "
                f"{output / 'checkpoints'}). A run continues in its own folder: pass --output-dir "
                f"{checkpoint.parent.parent}, or copy that folder to {output} first and resume there.")
    if held and not args.resume and not overwrite:
        raise ValueError(
            f"--output-dir {output} holds a run already ({', '.join(held)}). Pass --resume to continue it, "
            "--overwrite-output-dir to remove it and start anew, or choose another --output-dir.")


def clear_run(output_dir: str | Path) -> list[str]:
    """Removes what a run left in `output_dir` (`RUN_FILES`; other files are kept); returns the names removed."""
    output = Path(output_dir)
    removed = []
    for name in RUN_FILES:
        path = output / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def build_parser(prog: str = "elasticast train") -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog=prog, description="Train ElasticAST (or the AST baseline)."))
