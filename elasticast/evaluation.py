"""`elasticast evaluate`: accuracy / mAP of several checkpoints against evaluation length and temporal resolution.

Protocols (paper §3.3–3.4):
- ElasticAST at length x: each clip cut to x frames only when longer, never padded; at compression C: frames every
  10·C ms (or C-frame average pooling), native length. Clips are packed into rows of ≤ `max_tokens_per_row`.
- Fixed-length AST (transformers' `ASTForAudioClassification`, any stride), two curves:
  `ast-paper`: the input becomes x frames (cut or padded) — at compression C, the checkpoint's length / C — and
  the position table is resized to that grid as the original AST code does for another input length (centre crop
  when shorter, bilinear interpolation when longer); `ast-own`: the same x frames of audio (at compression C the
  whole clip), cut or padded to the checkpoint's own length.

The data are decoded once, in chunks of `--batch-size` clips, and every checkpoint and point sees each chunk, so
memory stays bounded by a chunk. Writes `results.csv`, `results.json`, one `elasticity_<axis>.json` per axis (the
format model cards embed) and `elasticity_<axis>.png` plots with all checkpoints on one figure.
"""

import csv
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import ASTForAudioClassification, AutoConfig, AutoModelForAudioClassification

from .ast_baseline import ast_grid, ast_input, feature_extractor_from_pretrained, resize_ast_positions
from .loading import from_pretrained_strict
from .data import DataArguments, LabelSpace, decode_audio, load_split
from .feature_extraction_elasticast import ElasticASTFeatureExtractor
from .configuration_elasticast import apply_score_function, score_function
from .metrics import load_metric, task_metric
from .precision import apply_precision, autocast, resolve_precision

DEFAULT_LENGTHS = [256 + 128 * i for i in range(23)]  # 256, 384, ..., 3072
DEFAULT_COMPRESSIONS = [round(1.0 + 0.2 * i, 1) for i in range(16)]  # 1.0, 1.2, ..., 4.0


@dataclass
class Checkpoint:
    """A loaded checkpoint and how to feed it at an evaluation point."""

    path: str
    name: str
    model: torch.nn.Module
    fe: ElasticASTFeatureExtractor
    max_tokens_per_row: int
    compression_method: str
    precision: str = "fp32"  # resolved (`elasticast.precision`); int8 checkpoints are quantized at load
    _resized: dict = field(default_factory=dict)

    @property
    def is_ast(self) -> bool:
        return isinstance(self.model, ASTForAudioClassification)

    @property
    def curves(self) -> list[str]:
        return ["ast-paper", "ast-own"] if self.is_ast else ["elasticast"]

    @torch.no_grad()
    def logits(self, waves: list[torch.Tensor], curve: str, axis: str, x: float) -> torch.Tensor:
        with autocast(self.precision, next(self.model.parameters()).device):
            return self._logits(waves, curve, axis, x).float()

    def _logits(self, waves: list[torch.Tensor], curve: str, axis: str, x: float) -> torch.Tensor:
        compression = x if axis == "compression" else 1.0
        if not self.is_ast:
            features = self.fe(waves, sampling_rate=self.fe.sampling_rate, packing=True,
                               max_tokens_per_row=self.max_tokens_per_row, return_tensors="pt",
                               max_length=int(x) if axis == "length" else None, compression=compression,
                               compression_method=self.compression_method)
            return self.model(**features).logits
        own = self.model.config.max_length
        available = int(x) if axis == "length" else None  # the evaluation clip: at most x frames of audio
        if curve == "ast-own":
            frames, model = own, self.model
        else:
            p = self.fe.patch_size
            frames = int(x) if axis == "length" else int(own / compression) // p * p
            if frames not in self._resized:
                self._resized[frames] = resize_ast_positions(self.model, frames) if frames != own else self.model
            model = self._resized[frames]
        inputs = ast_input(self.fe, waves, frames, compression, self.compression_method, available)
        return model(input_values=inputs).logits


def load_checkpoint(path: str, max_tokens_per_row: int, compression_method: str, precision: str = "fp32") -> Checkpoint:
    """A checkpoint at `precision` (`fp32`/`bf16`/`int8`/`auto`, see `elasticast.precision`); its name gets
    ` [precision]` unless fp32."""
    config = AutoConfig.from_pretrained(path)
    if config.model_type not in ("elasticast", "audio-spectrogram-transformer"):
        raise ValueError(f"{path}: model type {config.model_type!r} is neither ElasticAST nor AST.")
    precision = resolve_precision(precision, "cpu")
    model = apply_precision(from_pretrained_strict(AutoModelForAudioClassification, path).eval(), precision)
    name = Path(path).name or path
    return Checkpoint(path=path, name=name if precision == "fp32" else f"{name} [{precision}]", model=model,
                      fe=feature_extractor_from_pretrained(path, model), max_tokens_per_row=max_tokens_per_row,
                      compression_method=compression_method, precision=precision)


def evaluate_checkpoints(
    checkpoints: list[Checkpoint], data: DataArguments, split: str, points: list[tuple[str, float]],
    batch_size: int = 24, limit: int | None = None,
) -> list[dict]:
    """One row per (checkpoint, curve, axis, x): `{"checkpoint", "curve", "axis", "x", "metric", "value", "clips"}`."""
    from tqdm.auto import tqdm

    reference = checkpoints[0].model.config
    multi_label = reference.problem_type == "multi_label_classification"
    names = [reference.id2label[i] for i in range(reference.num_labels)]
    for checkpoint in checkpoints[1:]:
        other = checkpoint.model.config
        if [other.id2label[i] for i in range(other.num_labels)] != names:
            raise ValueError(f"{checkpoint.path} has other labels than {checkpoints[0].path}; evaluate them apart.")
    stream = load_split(data, split)
    encode = LabelSpace(names, multi_label).encoder(stream.features[data.label_column] if stream.features else None)
    if limit:
        stream = stream.take(limit)
    keys = [(c, curve, axis, x) for c in range(len(checkpoints)) for curve in checkpoints[c].curves for axis, x in points]
    predictions = {key: [] for key in keys}
    labels, skipped = [], 0
    sampling_rate = checkpoints[0].fe.sampling_rate

    def flush(waves, chunk_labels):
        for c, curve, axis, x in keys:
            predictions[(c, curve, axis, x)].append(checkpoints[c].logits(waves, curve, axis, x).float())
        labels.extend(chunk_labels)

    waves, chunk_labels = [], []
    for example in tqdm(stream, desc="evaluating", unit="clip"):
        try:
            waves.append(decode_audio(example[data.audio_column], sampling_rate))
            chunk_labels.append(encode(example[data.label_column]))
        except Exception as error:  # noqa: BLE001 - a broken file is counted and reported, not fatal
            skipped += 1
            tqdm.write(f"skipped a clip that failed to decode or label: {type(error).__name__}: {error}")
            continue
        if len(waves) == batch_size:
            flush(waves, chunk_labels)
            waves, chunk_labels = [], []
    if waves:
        flush(waves, chunk_labels)
    if not labels:
        raise ValueError(f"No clip of split {split!r} could be decoded.")
    if skipped:
        print(f"{skipped} clip(s) skipped")
    metric_name = task_metric(multi_label)
    metric = load_metric(metric_name)
    if multi_label:
        references = np.zeros((len(labels), len(names)), dtype=np.int64)
        for i, positives in enumerate(labels):
            references[i, positives] = 1
    else:
        references = np.asarray(labels)
    rows = []
    for (c, curve, axis, x), chunks in predictions.items():
        logits = torch.cat(chunks)
        scores = metric_predictions(logits, reference.problem_type)
        value = metric.compute(predictions=scores, references=references)
        rows.append({"checkpoint": checkpoints[c].name, "curve": curve, "axis": axis, "x": x,
                     "metric": metric_name, "value": float(next(iter(value.values()))), "clips": len(labels),
                     "precision": checkpoints[c].precision})
    return rows


def metric_predictions(logits: torch.Tensor, problem_type: str | None) -> np.ndarray:
    """What the metric gets from logits `[clips, num_labels]`: the scores (`score_function`) for mAP, their argmax
    for accuracy. Regression heads have no metric here."""
    if problem_type == "regression":
        raise ValueError("`elasticast evaluate` measures classifiers (accuracy or mAP); this checkpoint is a regression "
                         "head: compare its outputs with your targets instead.")
    scores = apply_score_function(logits, score_function(problem_type))
    return scores.numpy() if problem_type == "multi_label_classification" else scores.argmax(-1).numpy()


def measure_cost(checkpoint: Checkpoint, waves: list[torch.Tensor], compressions, repeats: int = 3,
                 batch_size: int = 32) -> list[dict]:
    """Compute against compression C on `waves`: per C, `{"checkpoint", "method", "compression", "tokens_per_audio_s",
    "features_ms_per_audio_s", "forward_ms_per_audio_s", "audio_seconds"}` — tokens the encoder sees and the best of
    `repeats` wall times (interleaved over C, fp32, no grad) of feature extraction and of the model's forward pass,
    per second of audio. A fixed-length AST gives one row (C = 1): every clip becomes its own length of input (cut or
    padded), so its cost per clip is fixed whatever the clip's length."""
    import time

    audio_seconds = sum(w.numel() for w in waves) / checkpoint.fe.sampling_rate
    chunks = [waves[i : i + batch_size] for i in range(0, len(waves), batch_size)]
    points = [1.0] if checkpoint.is_ast else list(compressions)
    best = {c: {"features": float("inf"), "forward": float("inf")} for c in points}
    tokens = {}
    with torch.no_grad():
        for _ in range(repeats):
            for c in points:
                began = time.perf_counter()
                if checkpoint.is_ast:
                    own = checkpoint.model.config.max_length
                    features = [{"input_values": ast_input(checkpoint.fe, chunk, own)} for chunk in chunks]
                    f, t = ast_grid(checkpoint.model)
                    tokens[c] = (f * t + 2) * len(waves)  # + cls and distillation tokens
                else:
                    features = [checkpoint.fe(chunk, sampling_rate=checkpoint.fe.sampling_rate, packing=True,
                                              max_tokens_per_row=checkpoint.max_tokens_per_row, return_tensors="pt",
                                              compression=c, compression_method=checkpoint.compression_method)
                                for chunk in chunks]
                    tokens[c] = int(sum((x["segment_ids"] > 0).sum() for x in features))
                best[c]["features"] = min(best[c]["features"], time.perf_counter() - began)
                began = time.perf_counter()
                for x in features:
                    checkpoint.model(**x)
                best[c]["forward"] = min(best[c]["forward"], time.perf_counter() - began)
    return [{"checkpoint": checkpoint.name, "method": "fixed length" if checkpoint.is_ast else checkpoint.compression_method,
             "compression": c, "tokens_per_audio_s": tokens[c] / audio_seconds,
             "features_ms_per_audio_s": 1000 * best[c]["features"] / audio_seconds,
             "forward_ms_per_audio_s": 1000 * best[c]["forward"] / audio_seconds, "audio_seconds": audio_seconds}
            for c in points]


def write_outputs(rows: list[dict], output_dir: Path, chance: float | None = None) -> None:
    """results.csv/json and, per axis, `elasticity_<axis>.json` and a plot (y from 0 to 1, `chance` drawn if given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (output_dir / "results.json").write_text(json.dumps(rows, indent=2))
    for axis in sorted({r["axis"] for r in rows}):
        selected = [r for r in rows if r["axis"] == axis]
        metric = selected[0]["metric"]
        label = lambda r: r["checkpoint"] if r["curve"] == "elasticast" else f"{r['checkpoint']} ({r['curve']})"  # noqa: E731
        (output_dir / f"elasticity_{axis}.json").write_text(json.dumps({
            "axis": axis, "metric": metric,
            "rows": [{"model": label(r), "x": r["x"], "value": r["value"]} for r in selected],
        }, indent=2))
        figure, ax = plt.subplots(figsize=(7, 4.2))
        for name in dict.fromkeys(label(r) for r in selected):
            points = sorted((r["x"], r["value"]) for r in selected if label(r) == name)
            ax.plot(*zip(*points), marker="o", markersize=3, label=name)
        ax.set_xlabel("evaluation length (frames)" if axis == "length" else "temporal compression C")
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label=f"chance ({chance:.3f})")
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1)  # a zoomed axis makes a small change look like a collapse
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(output_dir / f"elasticity_{axis}.png", dpi=120)
        plt.close(figure)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def add_parser(subparsers):
    parser = subparsers.add_parser("evaluate", help="accuracy/mAP against evaluation length and resolution")
    parser.add_argument("checkpoints", nargs="+", help="ElasticAST or transformers AST folders")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--dataset-config", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--split", default="test")
    parser.add_argument("--audio-column", default="audio")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--lengths", default=None, help="frames, e.g. 256,384,...,3072 (default when neither is given)")
    parser.add_argument("--compressions", default=None, help="e.g. 1.0,1.2,...,4.0")
    parser.add_argument("--compression-method", choices=["frame_shift", "avg_pool"], default="frame_shift")
    parser.add_argument("--batch-size", type=int, default=24, help="clips decoded and evaluated together")
    parser.add_argument("--max-tokens-per-row", type=int, default=2048)
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N clips")
    parser.add_argument("--output-dir", default="elasticity")
    parser.add_argument("--precision", nargs="+", choices=["fp32", "bf16", "int8", "auto"], default=["fp32"],
                        help="evaluate each checkpoint at each of these inference precisions (CPU; bf16 only where "
                        "the hardware has it)")
    parser.add_argument("--write-cards", action="store_true",
                        help="copy the elasticity tables and plots into each ElasticAST checkpoint and re-render its card")
    parser.set_defaults(func=run)


def run(args) -> int:
    lengths = _floats(args.lengths) if args.lengths else ([] if args.compressions else DEFAULT_LENGTHS)
    points = [("length", int(x)) for x in lengths]
    points += [("compression", c) for c in (_floats(args.compressions) if args.compressions else [])]
    try:
        checkpoints = [load_checkpoint(p, args.max_tokens_per_row, args.compression_method, precision)
                       for p in args.checkpoints for precision in dict.fromkeys(args.precision)]
    except ValueError as error:  # e.g. bf16 on a CPU without bf16 instructions
        raise SystemExit(f"error: {error}") from None
    data = DataArguments(dataset=args.dataset, dataset_config=args.dataset_config, data_dir=args.data_dir,
                         audio_column=args.audio_column, label_column=args.label_column)
    rows = evaluate_checkpoints(checkpoints, data, args.split, points, batch_size=args.batch_size, limit=args.limit)
    config = checkpoints[0].model.config
    chance = None if config.problem_type == "multi_label_classification" else 1 / config.num_labels
    write_outputs(rows, Path(args.output_dir), chance=chance)
    if args.write_cards:
        from .hub import write_card

        for checkpoint in checkpoints:
            if not checkpoint.is_ast:
                for produced in Path(args.output_dir).glob("elasticity_*"):
                    shutil.copy(produced, Path(checkpoint.path) / produced.name)
                print(f"card: {write_card(checkpoint.path)}")
    for axis, x in points:
        cells = [f"{r['checkpoint']}/{r['curve']}={r['value']:.4f}" for r in rows if (r["axis"], r["x"]) == (axis, x)]
        print(f"{axis} {x}: " + "  ".join(cells))
    print(f"wrote {args.output_dir}/results.csv, results.json, elasticity_*.json/png")
    return 0
