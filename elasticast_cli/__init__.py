"""The `elasticast` console script: a table of sub-commands, each built only when it is asked for.

Design (why this lives outside the `elasticast` package): `import elasticast` registers the model with transformers'
Auto classes, which imports torch and transformers (several seconds). `elasticast --help` needs none of that, so the
console script's entry point is this small top-level package: it lists the commands from `COMMANDS` (name and help
text) without importing any of them, and imports only the module of the command that was asked for. For
`elasticast <cmd> --help` the command's module is imported without running `elasticast/__init__.py` (the process
prints help and exits), so a command module whose top level imports only light modules answers `--help` at once;
heavy imports (torch, transformers, gradio) belong inside the functions that run the command.

To add a command: write `add_parser(subparsers)` in its own module (it calls `subparsers.add_parser(name, ...)` and
`set_defaults(func=...)`) and add one `Command` line below. `benchmarks/cli_startup.py` measures the start-up time.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from typing import NamedTuple


class Command(NamedTuple):
    """One line of the command table."""

    name: str
    module: str  # defines add_parser(subparsers), which adds the sub-parser `name`
    help: str


# In `elasticast --help` order. One module may define several commands (hub: card and push).
COMMANDS = [
    Command("convert", "elasticast.convert",
            "import official ElasticAST, transformers AST, ViT/DeiT or SSAST weights into an ElasticAST folder"),
    Command("card", "elasticast.hub", "write README.md (model card) into a checkpoint folder"),
    Command("push", "elasticast.hub", "upload a checkpoint folder with its card to the Hub (one commit)"),
    Command("train", "elasticast.training", "train on a 🤗 dataset (run under `accelerate launch` for several processes)"),
    Command("token-usage", "elasticast.token_usage", "padding and cut % of fixed-length AST vs ElasticAST packing"),
    Command("evaluate", "elasticast.evaluation", "accuracy/mAP against evaluation length and resolution"),
    Command("export-onnx", "elasticast.onnx_export",
            "export an ElasticAST classifier to ONNX (+ a torch-free runtime script)"),
    Command("classify", "elasticast.classify", "label audio files of any length (timeline, plots, resume)"),
    Command("calibrate", "elasticast.calibrate",
            "choose per-class thresholds on a labelled split, ship them with the model"),
    Command("evaluate-events", "elasticast.event_metrics", "PSDS, event- and segment-based F1 against a reference"),
    Command("listen", "elasticast.listen", "classify live audio (microphone, stream, stdin) window by window as it arrives"),
    Command("app", "elasticast.app", "web demo (Gradio): record or upload audio, labels, timeline, compression slider"),
]

DESCRIPTION = ("ElasticAST: one Audio Spectrogram Transformer for every audio length and resolution. "
               "`elasticast <command> --help` describes a command.")


def _asked_command(argv: list[str]) -> Command | None:
    names = {c.name: c for c in COMMANDS}
    first = next((a for a in argv if not a.startswith("-")), None)
    return names.get(first)


# Third-party packages that a command module may import at its top level and that take long to import (torch alone
# takes seconds). While printing help, they are replaced by placeholders: `add_parser` only declares arguments.
# Written by hand: importlib's LazyLoader defers `import torch` but not `from transformers import X`, which runs
# the module at once. If building a command's parser fails under placeholders, the command is imported for real
# (slow, but correct); tests/test_cli.py checks that every command's help equals the fully imported one.
HEAVY_PACKAGES = frozenset({
    "accelerate", "datasets", "evaluate", "gradio", "huggingface_hub", "matplotlib", "numpy", "onnx", "onnxruntime",
    "onnxscript", "PIL", "safetensors", "scipy", "sklearn", "soundfile", "soxr", "tensorboard", "torch", "torchao",
    "torchcodec", "tqdm", "transformers",
})


class _Placeholder:
    """Stands for anything taken from a package not imported while printing help."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Placeholder()

    def __call__(self, *args, **kwargs):
        return _Placeholder()

    def __mro_entries__(self, bases):  # `class Model(nn.Module)` subclasses the placeholder class
        return (_Placeholder,)

    def __iter__(self):
        return iter(())

    def _same(self, *args):
        return _Placeholder()

    __getitem__ = __or__ = __ror__ = __and__ = __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _same
    __truediv__ = __rtruediv__ = __floordiv__ = __pow__ = __neg__ = __matmul__ = _same
    __lt__ = __le__ = __gt__ = __ge__ = _same

    def __float__(self):
        return 1.0

    def __int__(self):
        return 1

    __index__ = __int__


class _PlaceholderModule(type(sys)):
    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Placeholder()


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HEAVY_PACKAGES:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _PlaceholderModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def _import_for_help(module: str):
    """Import `module` (inside `elasticast`) only to build its parser: without running `elasticast/__init__.py`
    (Auto-class registration) and with `HEAVY_PACKAGES` replaced by placeholders."""
    finder = _PlaceholderFinder()
    sys.meta_path.insert(0, finder)
    try:
        spec = importlib.util.find_spec("elasticast")
        package = importlib.util.module_from_spec(spec)  # its __path__ is set; its code is not run
        sys.modules["elasticast"] = package
        return importlib.import_module(module)
    finally:
        sys.meta_path.remove(finder)


def _forget_help_imports() -> None:
    """Drop every module imported for help (ours and the placeholders), so that a real import starts clean."""
    for name in list(sys.modules):
        if name == "elasticast" or name.startswith("elasticast.") or isinstance(sys.modules[name], _PlaceholderModule):
            del sys.modules[name]


def build_parser(argv: list[str], help_only: bool = False) -> argparse.ArgumentParser:
    """The parser with every command listed and the asked command (if any) built in full."""
    parser = argparse.ArgumentParser(prog="elasticast", description=DESCRIPTION)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    asked = _asked_command(argv)
    built = False
    for command in COMMANDS:
        if asked is not None and command.module == asked.module:
            if not built:
                load = _import_for_help if help_only else importlib.import_module
                load(command.module).add_parser(subparsers)
                built = True
        else:
            subparsers.add_parser(command.name, help=command.help.replace("%", "%%"), add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `elasticast <command> ...`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if ("-h" in argv or "--help" in argv) and "elasticast" not in sys.modules:
        try:
            parser = build_parser(argv, help_only=True)
        except Exception:  # a module needs a real value from a heavy package at import: import it for real
            parser = None
        try:
            if parser is not None:
                parser.parse_args(argv)  # prints help and exits, unless "-h" was the value of an argument
        finally:  # also on that exit: a caller in the same process must get the real packages afterwards
            _forget_help_imports()
    args = build_parser(argv).parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
