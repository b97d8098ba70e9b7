"""Test accuracy of trained models per inference precision: PyTorch fp32 / bf16 / int8 and ONNX Runtime fp32 / int8.

    python -m benchmarks.precision_accuracy --demo-dir runs/demo --out records/precision_accuracy.json

Models: the demo's (`make demo` and `make demo-resolution` write them into `--demo-dir`): `elasticast/` (the length
run's ElasticAST) and `elasticast-mixed/` (the resolution run's mixed-resolution model), evaluated on the demo's
test split (`data/test`). PyTorch goes through `elasticast evaluate`'s own code (`load_checkpoint(...,
precision)` + `evaluate_checkpoints`: whole clips at compression C); ONNX Runtime through an `export-onnx --quantize
int8` export and `OnnxAudioClassifier.classify` per clip. Besides accuracy, every precision's scores are compared
with PyTorch fp32's on the same clips: the largest score difference and the share of clips whose top label changes.
bf16 is measured only where the CPU has bf16 instructions (otherwise the record says so).
"""

import argparse
import datetime
import json
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import machine_record

# model folder → compressions C evaluated (the mixed model is trained for C = 1-4)
MODELS = {"elasticast": (1.0,), "elasticast-mixed": (1.0, 2.0, 4.0)}
GOAL_POINTS = 1.0  # accuracy within one point of fp32


def _scores_per_precision(folder: Path, data: Path, compression: float, precisions) -> tuple[dict, np.ndarray, list]:
    """Per-clip scores `[N, labels]` of each PyTorch precision at compression C (through `elasticast evaluate`'s
    `Checkpoint.logits`: whole clips, packed), the labels `[N]` and the decoded clips."""
    from elasticast import ElasticASTFeatureExtractor
    from elasticast.data import DataArguments, LabelSpace, decode_audio, load_split
    from elasticast.evaluation import load_checkpoint

    fe = ElasticASTFeatureExtractor.from_pretrained(folder)
    stream = load_split(DataArguments(dataset=str(data)), "test")
    checkpoints = {p: load_checkpoint(str(folder), 4096, "frame_shift", p) for p in precisions}
    config = checkpoints[precisions[0]].model.config
    encode = LabelSpace([config.id2label[i] for i in range(config.num_labels)], False).encoder(stream.features["label"])
    waves, labels = [], []
    for example in stream:
        waves.append(decode_audio(example["audio"], fe.sampling_rate))
        labels.append(encode(example["label"]))
    scores = {}
    for precision, checkpoint in checkpoints.items():
        chunks = [checkpoint.logits(waves[i : i + 32], "elasticast", "compression", compression)
                  for i in range(0, len(waves), 32)]
        scores[precision] = torch.cat(chunks).softmax(-1).numpy()
    return scores, np.asarray(labels), waves


def _onnx_scores(export: Path, waves, compression: float, precision: str) -> np.ndarray:
    from elasticast.onnx_runtime import OnnxAudioClassifier

    runtime = OnnxAudioClassifier(export, precision=precision)
    return np.asarray([runtime.classify(w.numpy(), 16000, compression)["scores"] for w in waves])


def measure(demo_dir: Path, precisions: list[str]) -> list[dict]:
    from elasticast.onnx_export import export_onnx

    data = demo_dir / "data"
    points = []
    for name, compressions in MODELS.items():
        folder = demo_dir / name
        if not (folder / "config.json").is_file():
            print(f"[precision_accuracy] {folder} missing, skipped", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory(prefix="precision-accuracy-") as tmp:
            export = Path(tmp) / "onnx"
            export_onnx(folder, export, compressions=compressions, quantize="int8", progress=None)
            for c in compressions:
                scores, labels, waves = _scores_per_precision(folder, data, c, precisions)
                for precision in ("fp32", "int8"):
                    scores[f"onnxruntime-{precision}"] = _onnx_scores(export, waves, c, precision)
                reference = scores["fp32"]
                for runtime, s in scores.items():
                    point = {
                        "model": name, "compression": c, "runtime": runtime, "clips": len(labels),
                        "accuracy": float((s.argmax(1) == labels).mean()),
                        "max_abs_score_diff_vs_fp32": float(np.abs(s - reference).max()),
                        "top_label_changed_vs_fp32": float((s.argmax(1) != reference.argmax(1)).mean()),
                    }
                    points.append(point)
                    print(f"[precision_accuracy] {name} C={c:g} {runtime}: accuracy {point['accuracy']:.4f}, max "
                          f"|Δscore| {point['max_abs_score_diff_vs_fp32']:.2e}", file=sys.stderr, flush=True)
    return points


def table(points: list[dict]) -> str:
    lines = ["| model | C | runtime / precision | accuracy | Δ vs fp32 (points) | max \\|Δscore\\| | top label changed |",
             "|---|---|---|---|---|---|---|"]
    fp32 = {(p["model"], p["compression"]): p["accuracy"] for p in points if p["runtime"] == "fp32"}
    for p in points:
        delta = 100 * (p["accuracy"] - fp32[(p["model"], p["compression"])])
        runtime = p["runtime"] if p["runtime"].startswith("onnx") else f"pytorch-{p['runtime']}"
        lines.append(f"| {p['model']} | {p['compression']:g} | {runtime} | {p['accuracy']:.3f} | {delta:+.1f} | "
                     f"{p['max_abs_score_diff_vs_fp32']:.1e} | {100 * p['top_label_changed_vs_fp32']:.1f}% |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision_accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", default="runs/demo", help="the demo's output folder (models + data/)")
    parser.add_argument("--out", default=None, help="write the JSON record here (e.g. records/precision_accuracy.json)")
    args = parser.parse_args(argv)
    from elasticast.precision import bf16_supported

    precisions = ["fp32", "int8"] + (["bf16"] if bf16_supported() else [])
    points = measure(Path(args.demo_dir), precisions)
    fp32 = {(p["model"], p["compression"]): p["accuracy"] for p in points if p["runtime"] == "fp32"}
    worst = max((abs(100 * (p["accuracy"] - fp32[(p["model"], p["compression"])])), p["model"], p["runtime"])
                for p in points)
    notes = [f"Largest accuracy change against PyTorch fp32: {worst[0]:.1f} points ({worst[1]}, {worst[2]}); goal: "
             f"within {GOAL_POINTS:g} point — {'met' if worst[0] <= GOAL_POINTS else 'missed'}."]
    if not bf16_supported():
        notes.append("bf16 not measured: this CPU lacks avx512_bf16/amx_bf16.")
    record = {
        "title": "Accuracy per inference precision (demo models)",
        "command": "python -m benchmarks.precision_accuracy " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_record(),
        "models": {name: str(Path(args.demo_dir) / name) for name in MODELS},
        "points": points,
        "table": table(points),
        "notes": notes,
    }
    print(record["table"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    main()
