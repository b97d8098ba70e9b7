"""Models the training loop builds (ElasticAST, or transformers' AST as the paper's fixed-length baseline), the
offline `evaluate` metrics shipped with the package, and the exported folder (model, feature extractor, metrics,
card) that `from_pretrained` and `pipeline("audio-classification")` load."""

import json
import os
import shutil
from pathlib import Path

import torch
from transformers import ASTConfig, ASTForAudioClassification, AutoModelForAudioClassification

from ..ast_baseline import feature_extractor_from_pretrained
from ..configuration_elasticast import ElasticASTConfig
from ..feature_extraction_elasticast import ElasticASTFeatureExtractor
from ..modeling_elasticast import ElasticASTForAudioClassification
from ..data import LabelSpace


def build_model(args, labels: LabelSpace):
    """`(model, ElasticAST feature extractor)`: from `--model-name-or-path`, or a fresh model of the given size.

    The feature extractor always computes our Kaldi fbank; for the AST baseline it only supplies the log-mel
    spectrogram, cut or padded to `--fixed-frames` by the collator (as `ASTFeatureExtractor` does).
    """
    label_kwargs = {
        "num_labels": labels.num_labels,
        "id2label": dict(enumerate(labels.names)),
        "label2id": {name: i for i, name in enumerate(labels.names)},
        "problem_type": "multi_label_classification" if labels.multi_label else "single_label_classification",
    }
    attention = {"attn_implementation": args.attn_implementation} if args.attn_implementation else {}
    if args.model_name_or_path:
        model = AutoModelForAudioClassification.from_pretrained(
            args.model_name_or_path, ignore_mismatched_sizes=True, **label_kwargs, **attention
        )
        is_ast = isinstance(model, ASTForAudioClassification)
        if is_ast != (args.model == "ast"):
            raise ValueError(f"{args.model_name_or_path} holds a {type(model).__name__}: pass --model "
                             f"{'ast --mode fixed' if is_ast else 'elasticast'}.")
        if is_ast and model.config.max_length != args.fixed_frames:
            raise ValueError(f"This AST checkpoint takes {model.config.max_length} frames: pass --fixed-frames "
                             f"{model.config.max_length}.")
        return model, feature_extractor_from_pretrained(args.model_name_or_path, model)
    size = {
        "hidden_size": args.hidden_size,
        "num_hidden_layers": args.num_layers,
        "num_attention_heads": args.num_heads,
        "intermediate_size": args.intermediate_size or 4 * args.hidden_size,
    }
    fe = ElasticASTFeatureExtractor()
    if args.model == "ast":
        # The paper's AST: 16×16 patches at stride 16 (a 8 × T/16 grid), as the official egs/*/AST.sh.
        config = ASTConfig(
            **size, **label_kwargs, patch_size=16, frequency_stride=16, time_stride=16,
            max_length=args.fixed_frames, num_mel_bins=fe.num_mel_bins,
        )
        model = ASTForAudioClassification._from_config(config, **attention)
    else:
        config = ElasticASTConfig(**size, **label_kwargs)
        model = ElasticASTForAudioClassification._from_config(config, **attention)
    return model, fe


def export(folder: Path, model, feature_extractor, metrics: dict, card: str | None) -> None:
    """Writes model + feature extractor + `metrics.json` (+ `README.md` when `card` is given) into `folder` (each file
    replaced atomically; other content such as `checkpoints/` is left alone)."""
    folder = Path(folder)
    staging = folder / ".export-staging"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    feature_extractor.save_pretrained(staging)
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if card is not None:
        (staging / "README.md").write_text(card)
    folder.mkdir(parents=True, exist_ok=True)
    for item in staging.iterdir():  # save_pretrained writes files only
        os.replace(item, folder / item.name)
    shutil.rmtree(staging, ignore_errors=True)


def model_card(args, model, labels: LabelSpace, metrics: dict) -> str:
    """A short README card for the AST baseline (ElasticAST checkpoints get `elasticast.hub`'s card): what was
    trained on what, how, with which result, and how to load it."""
    kind = "ElasticAST" if not isinstance(model, ASTForAudioClassification) else "AST (fixed-length baseline)"
    evaluation = metrics.get("best_eval") or {}
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: audio-classification",
        "tags:\n- audio-classification\n- elasticast",
        *(["datasets:", f"- {args.dataset}"] if not os.path.exists(args.dataset) else []),
        "---",
        "",
        f"# {kind} trained with `elasticast train`",
        "",
        f"- Data: `{args.dataset}` (train split `{args.train_split}`), audio column `{args.audio_column}`, "
        f"label column `{args.label_column}`; {labels.num_labels} classes"
        f"{' (multi-label)' if labels.multi_label else ''}.",
        f"- Mode: `{args.mode}`" + (f", {args.fixed_frames} frames" if args.mode == "fixed" else
                                    f", cap {args.max_seconds} s") + f"; {metrics.get('epochs', 0)} epochs, "
        f"{metrics.get('steps', 0)} optimiser steps.",
        f"- Model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, hidden "
        f"{model.config.hidden_size}, {model.config.num_hidden_layers} layers.",
        "",
        "## Evaluation",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in evaluation.items() if isinstance(v, float)],
        "" if evaluation else "No evaluation split was used.",
        "",
        "## Use",
        "",
        "```python",
        "import elasticast  # registers the model type (or pass trust_remote_code=True)" if kind == "ElasticAST" else "",
        "from transformers import pipeline",
        "",
        'classifier = pipeline("audio-classification", model="<this folder or repo>")',
        'classifier("clip.wav")',
        "```",
        "",
    ]
    return "\n".join(line for line in lines if line is not None)


def push_export(folder, repo_id: str, private: bool = False):
    """Uploads an exported folder (not its checkpoints or logs) in one commit: ElasticAST through the package's
    push (`elasticast.hub.push`, code files and our card included), the AST baseline with `HfApi.upload_folder`."""
    folder = Path(folder)
    if (folder / "modeling_elasticast.py").is_file():
        from ..hub import push

        return push(folder, repo_id, private=private)
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    files = [p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), allow_patterns=files,
                             commit_message="Upload AST baseline trained with elasticast")


def load_weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


__all__ = ["build_model", "export", "load_weights", "model_card", "push_export"]
