"""Model cards, export and Hub uploads: one card renderer and one push path for ElasticAST and the AST baseline.

A checkpoint folder holds what `save_pretrained` writes (config.json — for ElasticAST with a complete `auto_map` and
the modeling/configuration/feature-extraction .py files —, model.safetensors, preprocessor_config.json) and
optionally:

- `eval_results.json`: `{"dataset_id", "dataset_name", "split", "metric", "value"}` — the headline result;
- `metrics.json`: what `elasticast train` measured (`epochs`, `steps`, history);
- `elasticity_<axis>.json`: `{"axis": "length" | "compression" | "resolution", "metric", "rows": [{"model", "x",
  "value"}, ...]}` and optionally `"description"` (markdown shown before the table; `python -m examples.demo --axis
  resolution` puts its compute table there)
  and `elasticity_<axis>.png` — accuracy/mAP against evaluation length or resolution (`elasticast evaluate`
  writes them; `--write-cards` copies them into the ElasticAST checkpoints).

`render_card` turns these into a card from the model type's template in `elasticast/hub_cards/` (huggingface_hub's
`ModelCard.from_template`): `CHECKPOINT_KINDS` says which template, tags and model fields a model type gets,
`card_sections` the result sections every card shares (add a section there). `export` writes a trained model's
folder, card included; `push` uploads a folder's files, card included, in one commit.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData

from .configuration_elasticast import score_function

CARDS_DIR = Path(__file__).resolve().parent / "hub_cards"  # package data: ships in the wheel
METRIC_IDS = {"accuracy": "accuracy", "mAP": "mean_average_precision"}


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _markdown_table(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def elasticity_table(elasticity: dict) -> str:
    """`{"axis", "metric", "rows": [{"model", "x", "value"}]}` → markdown, one column per model, one row per x."""
    models = list(dict.fromkeys(row["model"] for row in elasticity["rows"]))
    xs = sorted({row["x"] for row in elasticity["rows"]})
    value = {(row["model"], row["x"]): row["value"] for row in elasticity["rows"]}
    return _markdown_table(
        [elasticity["axis"]] + [f"{m} ({elasticity['metric']})" for m in models],
        [[x] + [value.get((m, x), "–") for m in models] for x in xs],
    )


# ------------------------------------------------------------------------------------------------------------ cards
def _elasticast_fields(config: dict) -> dict:
    table_patches = config.get("max_time_patches", 192)
    return {
        "architecture": (
            f"{config.get('num_hidden_layers')} layers, hidden {config.get('hidden_size')}, "
            f"{config.get('num_attention_heads')} heads, attention scale "
            f"{config.get('attention_scale') or '1/√head_dim'}"
        ),
        "max_time_patches": table_patches,
        "table_seconds": round(table_patches * config.get("patch_size", 16) * 0.01, 1),
        "aggregation": config.get("window_aggregation", "auto"),
    }


def _ast_fields(config: dict) -> dict:
    return {
        "architecture": (
            f"{config.get('num_hidden_layers')} layers, hidden {config.get('hidden_size')}, "
            f"{config.get('num_attention_heads')} heads, {config.get('patch_size')}×{config.get('patch_size')} "
            f"patches at stride {config.get('frequency_stride')} (frequency) / {config.get('time_stride')} (time)"
        ),
        "fixed_frames": config.get("max_length"),
    }


@dataclass(frozen=True)
class CheckpointKind:
    """A model type's card (its template in `hub_cards/`, extra tags, its model fields: config → template
    variables) and what a pushed folder of it must hold besides config.json and preprocessor_config.json."""

    name: str
    template: str
    tags: tuple[str, ...]
    fields: Callable[[dict], dict]
    required_files: tuple[str, ...] = ()
    space_app: str | None = None  # a Gradio Space entry point in `hub_cards/` pushed as app.py (README "Web demo")


CHECKPOINT_KINDS = {
    "elasticast": CheckpointKind("ElasticAST", "elasticast.md", ("custom_code",), _elasticast_fields,
                                 ("modeling_elasticast.py",), space_app="app.py"),
    "audio-spectrogram-transformer": CheckpointKind("AST", "ast.md", (), _ast_fields),
}


def checkpoint_kind(folder: Path) -> CheckpointKind:
    """The kind of the checkpoint in `folder`, from its config.json."""
    config = folder / "config.json"
    if not config.exists():
        raise ValueError(f"{folder} holds no config.json: pass a folder written by save_pretrained.")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type not in CHECKPOINT_KINDS:
        raise ValueError(f"{folder}: model type {model_type!r} is neither ElasticAST nor AST "
                         f"({sorted(CHECKPOINT_KINDS)}).")
    return CHECKPOINT_KINDS[model_type]


def card_sections(folder: Path, results: dict | None) -> list[dict]:
    """The result sections of a card, `[{"title", "text"}]`: the headline result, then one per `elasticity_*.json`."""
    sections = []
    if results:
        row = [results["dataset_id"], results.get("split", ""), results["metric"], results["value"]]
        table = _markdown_table(["dataset", "split", "metric", "value"], [row])
        sections.append({"title": "Results", "text": table})
    for path in sorted(folder.glob("elasticity_*.json")):
        elasticity = json.loads(path.read_text())
        axis = elasticity["axis"]
        description = elasticity.get("description") or (  # a file may say how it was measured
            f"{elasticity['metric']} against evaluation {axis} (ElasticAST: clips cut only when longer, never padded; "
            "fixed-length AST: `ast-paper` resizes its position grid to the input, `ast-own` cuts or pads to its own "
            "length)."
        )
        text = f"{description}\n\n{elasticity_table(elasticity)}"
        if path.with_suffix(".png").exists():
            text += f"\n\n![{axis} elasticity]({path.with_suffix('.png').name})"
        sections.append({"title": f"Elasticity: {axis}", "text": text})
    return sections


def render_card(folder: str | Path, repo_id: str | None = None, base_model: str | None = None) -> ModelCard:
    """Card for the ElasticAST or AST checkpoint in `folder` (config, feature extractor and optional result files)."""
    folder = Path(folder)
    kind = checkpoint_kind(folder)
    config = json.loads((folder / "config.json").read_text())
    template = CARDS_DIR / kind.template
    if not template.exists():
        raise FileNotFoundError(f"Card template not found at {template}; reinstall elasticast.")
    preprocessor = _read_json(folder / "preprocessor_config.json") or {}
    results = _read_json(folder / "eval_results.json")
    training = _read_json(folder / "metrics.json")
    repo_id = repo_id or folder.name
    eval_results = None
    if results:
        eval_results = [
            EvalResult(
                task_type="audio-classification",
                dataset_type=results["dataset_id"],
                dataset_name=results.get("dataset_name", results["dataset_id"]),
                dataset_split=results.get("split"),
                metric_type=METRIC_IDS.get(results["metric"], results["metric"]),
                metric_name=results["metric"],
                metric_value=results["value"],
            )
        ]
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        library_name="transformers",
        pipeline_tag="audio-classification",
        license="apache-2.0",
        tags=["audio", "audio-classification", "elasticast", "audio-spectrogram-transformer", *kind.tags],
        datasets=[results["dataset_id"]] if results else None,
        metrics=[METRIC_IDS.get(results["metric"], results["metric"])] if results else None,
        base_model=base_model or config.get("base_model"),
        eval_results=eval_results,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        num_labels=len(config.get("id2label") or {}),
        problem_type=config.get("problem_type"),
        activation=score_function(config.get("problem_type")),
        num_mel_bins=config.get("num_mel_bins", 128),
        mean=preprocessor.get("mean"),
        std=preprocessor.get("std"),
        base_model=base_model,
        dataset_id=results["dataset_id"] if results else None,
        training=(f"{training.get('epochs', 0)} epochs, {training.get('steps', 0)} optimiser steps with "
                  "`elasticast train`" if training else None),
        sections=card_sections(folder, results),
        **kind.fields(config),
    )


def write_card(folder: str | Path, repo_id: str | None = None, base_model: str | None = None) -> Path:
    path = Path(folder) / "README.md"
    render_card(folder, repo_id=repo_id, base_model=base_model).save(path)
    return path


def export(folder: str | Path, model, feature_extractor, metrics: dict, eval_results: dict | None = None) -> Path:
    """Writes a trained model's folder: model + feature extractor + `metrics.json` (+ `eval_results.json`), then its
    card (`README.md`). Each file is replaced atomically; other content such as `checkpoints/` is left alone."""
    folder = Path(folder)
    staging = folder / ".export-staging"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    feature_extractor.save_pretrained(staging)
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if eval_results is not None:
        (staging / "eval_results.json").write_text(json.dumps(eval_results))
    folder.mkdir(parents=True, exist_ok=True)
    for item in staging.iterdir():  # save_pretrained writes files only
        os.replace(item, folder / item.name)
    shutil.rmtree(staging, ignore_errors=True)
    return write_card(folder)


def push(
    source,
    repo_id: str,
    *,
    feature_extractor=None,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    base_model: str | None = None,
):
    """Uploads a checkpoint folder, or a model (+ feature extractor), with its card to `repo_id` in one commit.

    `source` is a folder path (ElasticAST or AST) or an `ElasticAST*` model; a model is saved first (weights, config
    with `auto_map`, code files) with `feature_extractor` — by default the one saved next to the model it was loaded
    from, else one matching its config. Returns the `CommitInfo`.
    """
    with tempfile.TemporaryDirectory() as staging:
        staging = Path(staging)
        if isinstance(source, (str, Path)):
            folder = Path(source)
        else:
            folder = staging
            source.save_pretrained(folder)
            _feature_extractor_for(source, feature_extractor).save_pretrained(folder)
        kind = checkpoint_kind(folder)
        files = {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
        missing = {"config.json", "preprocessor_config.json", *kind.required_files} - set(files)
        if missing:
            raise ValueError(
                f"{folder} lacks {sorted(missing)}: save the model and its feature extractor with save_pretrained "
                "(for ElasticAST after `import elasticast`, so that the code files are written too)."
            )
        if "README.md" not in files:  # a folder's own card (from training or `elasticast card`) is kept
            files["README.md"] = staging / "README.md"
            render_card(folder, repo_id=repo_id, base_model=base_model).save(files["README.md"])
        if kind.space_app and "app.py" not in files:  # MODEL set to this repo
            files["app.py"] = staging / "app.py"
            space_app = (CARDS_DIR / kind.space_app).read_text()
            files["app.py"].write_text(space_app.replace('"REPO_ID"', json.dumps(repo_id)))
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files.items()]
        return api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Upload {kind.name} checkpoint",
            revision=revision,
            create_pr=create_pr,
            repo_type="model",
        )


def _feature_extractor_for(model, feature_extractor):
    from .feature_extraction_elasticast import ElasticASTFeatureExtractor

    if feature_extractor is not None:
        return feature_extractor
    origin = Path(str(getattr(model, "name_or_path", "") or ""))
    if (origin / "preprocessor_config.json").exists():
        return ElasticASTFeatureExtractor.from_pretrained(origin)
    config = model.config
    return ElasticASTFeatureExtractor(
        num_mel_bins=config.num_mel_bins, patch_size=config.patch_size, max_time_patches=config.max_time_patches
    )


def add_parser(subparsers):
    card = subparsers.add_parser("card", help="write README.md (model card) into a checkpoint folder")
    card.add_argument("checkpoint")
    card.add_argument("--repo-id", default=None)
    card.add_argument("--base-model", default=None)
    card.set_defaults(func=lambda a: print(write_card(a.checkpoint, repo_id=a.repo_id, base_model=a.base_model)))
    upload = subparsers.add_parser("push", help="upload a checkpoint folder with its card to the Hub (one commit)")
    upload.add_argument("checkpoint")
    upload.add_argument("repo_id")
    upload.add_argument("--private", action="store_true", default=None)
    upload.add_argument("--token", default=None)
    upload.add_argument("--revision", default=None)
    upload.add_argument("--create-pr", action="store_true")
    upload.add_argument("--base-model", default=None)
    upload.set_defaults(func=_push_command)


def _push_command(args) -> int:
    info = push(args.checkpoint, args.repo_id, private=args.private, token=args.token, revision=args.revision,
                create_pr=args.create_pr, base_model=args.base_model)
    print(getattr(info, "commit_url", info))
    return 0
