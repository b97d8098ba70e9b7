"""Strict checkpoint loading: a model whose weights do not all match its architecture is refused, never run.

transformers' `from_pretrained` initialises missing weights at random and drops unexpected ones with a log line;
for a classifier that silently returns the scores of a partly random model (a folder whose weights belong to
another architecture, an encoder-only checkpoint, a damaged conversion). Every entry point that loads a checkpoint
(`elasticast classify`, `app`, `evaluate`, `export-onnx`, `ElasticASTClassifier.from_pretrained`, the convert
output check) loads through `from_pretrained_strict`.
"""

from __future__ import annotations


class WeightsMismatchError(ValueError):
    """The checkpoint's weights do not match the model's architecture (names the keys and the fix)."""


def check_loading_info(info: dict, source, model_class: str) -> None:
    """Raises WeightsMismatchError when transformers' loading info lists missing, unexpected or mismatched keys."""
    problems = []
    for kind, what in (("missing_keys", "missing (would be random)"), ("unexpected_keys", "unexpected (ignored)"),
                       ("mismatched_keys", "of another shape")):
        keys = sorted(str(k if isinstance(k, str) else k[0]) for k in info.get(kind) or [])
        if keys:
            shown = ", ".join(keys[:6]) + (f", … ({len(keys)} in all)" if len(keys) > 6 else "")
            problems.append(f"{len(keys)} weight(s) {what}: {shown}")
    if problems:
        raise WeightsMismatchError(
            f"{source} does not hold {model_class} weights that match its config — " + "; ".join(problems) + ". "
            "Load the folder the model was saved to (config.json and model.safetensors of the same model), or "
            "convert it first (`elasticast convert`); an encoder-only checkpoint needs a fine-tuned head "
            "(`elasticast train`)."
        )


def from_pretrained_strict(model_class, path_or_repo, **kwargs):
    """`model_class.from_pretrained(path_or_repo, **kwargs)` that raises WeightsMismatchError (naming the keys)
    unless every weight of the model was loaded from the checkpoint and every checkpoint weight was used."""
    model, info = model_class.from_pretrained(path_or_repo, output_loading_info=True, **kwargs)
    check_loading_info(info, path_or_repo, type(model).__name__)
    return model


__all__ = ["WeightsMismatchError", "check_loading_info", "from_pretrained_strict"]
