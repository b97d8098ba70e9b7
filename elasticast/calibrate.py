"""`elasticast calibrate`: decision thresholds chosen on a labelled split and shipped inside the checkpoint.

    elasticast calibrate MODEL --dataset D [--split validation] [--target f1|precision=P|recall=R] [--min-examples N]
                         [--output DIR]

Multi-label models get one threshold per class (`config.class_thresholds`); single-label models a minimum
confidence (`config.min_confidence`) below which a window is "unknown". The model's clip scores on the split come
from `ElasticASTClassifier` (the same scores `elasticast classify` gives); precision and recall at every candidate
threshold come from scikit-learn's `precision_recall_curve`.

Targets (per class, or for the single-label model's top prediction):
    - `f1`: the threshold of highest F1;
    - `precision=P`: the lowest threshold whose precision is ≥ P (the most recall at that precision);
    - `recall=R`: the highest threshold whose recall is ≥ R (the most precision at that recall).
The threshold is set halfway between the chosen score and the next lower score in the split, so the split's
decisions are those the curve counted, with a margin on both sides. A target no threshold meets keeps the default.

Single-label: a clip counts as a positive when the model's top label is right; its score is the top softmax score.
Precision is then the accuracy of the clips kept, recall the share of all clips kept and right.

Classes with fewer than `--min-examples` positives (or no negatives) in the split keep the default (0.5 / none)
and are listed. The thresholds go into `config.json` of MODEL (or of a copy in `--output`), the record of the
calibration into `calibration.json` beside it (per-class precision, recall, F1 and threshold, the split, counts).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .events import DEFAULT_THRESHOLD

CALIBRATION_FILE = "calibration.json"


def parse_target(text: str) -> tuple[str, float | None]:
    """`"f1"`, `"precision=0.9"` or `"recall=0.8"` → `(kind, value)`; a ValueError names the accepted forms."""
    text = text.strip().lower()
    if text == "f1":
        return "f1", None
    kind, _, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if kind not in ("precision", "recall") or number is None or not 0 < number <= 1:
        raise ValueError(f"--target {text!r}: use f1, precision=P or recall=R with P, R in (0, 1].")
    return kind, number


def choose_threshold(positive, scores, target: tuple[str, float | None] = ("f1", None)) -> dict | None:
    """The threshold meeting `target` for binary labels `positive [N]` and scores `[N]`, with precision, recall and
    F1 at it; None when no threshold meets the target (or the labels hold no positive)."""
    from sklearn.metrics import precision_recall_curve

    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    if not positive.any():
        return None
    precision, recall, thresholds = precision_recall_curve(positive, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)
    kind, value = target
    if kind == "f1":
        index = int(np.argmax(f1))  # thresholds rise with the index: ties keep the lowest threshold
    else:
        meets = np.flatnonzero((precision if kind == "precision" else recall) >= value - 1e-12)
        if not len(meets):
            return None
        index = int(meets[0] if kind == "precision" else meets[-1])
    chosen = float(thresholds[index])
    below = scores[scores < chosen]
    threshold = (chosen + float(below.max())) / 2 if len(below) else chosen
    return {"threshold": threshold, "precision": float(precision[index]), "recall": float(recall[index]),
            "f1": float(f1[index])}


def calibrate_scores(scores, targets, labels: list[str], multi_label: bool, target=("f1", None),
                     min_examples: int = 5) -> dict:
    """Clip scores `[N, num_labels]` and targets (`[N, num_labels]` 0/1 for multi-label, `[N]` class indices
    otherwise) → the calibration record: `thresholds` (multi-label, calibrated classes only) or `min_confidence`,
    `classes` (per class: threshold, precision, recall, f1, positives, negatives, status) and `defaulted`."""
    scores = np.asarray(scores, dtype=float)
    targets = np.asarray(targets)
    record = {"target": target[0] if target[1] is None else f"{target[0]}={target[1]:g}", "examples": len(scores),
              "min_examples": min_examples, "classes": {}, "defaulted": []}
    if multi_label:
        record["thresholds"] = {}
        for k, label in enumerate(labels):
            positives = int(targets[:, k].sum())
            entry = {"positives": positives, "negatives": len(scores) - positives}
            chosen = None
            if positives >= min_examples and entry["negatives"] > 0:
                chosen = choose_threshold(targets[:, k] > 0, scores[:, k], target)
            if chosen is None:
                reason = "target not reachable" if positives >= min_examples and entry["negatives"] else \
                    f"too few examples (need {min_examples} positives and some negatives)"
                entry.update(status=f"default {DEFAULT_THRESHOLD}: {reason}")
                record["defaulted"].append(label)
            else:
                entry.update(chosen, status="calibrated")
                record["thresholds"][label] = round(chosen["threshold"], 6)
            record["classes"][label] = entry
        return record
    top = scores.argmax(1)
    right = top == targets
    for k, label in enumerate(labels):
        record["classes"][label] = {"examples": int((targets == k).sum())}
    chosen = choose_threshold(right, scores.max(1), target) if len(scores) >= min_examples and (~right).any() else None
    if chosen is None:
        record["min_confidence"] = None
        record["defaulted"] = ["min_confidence"]
        record["status"] = "no minimum confidence: too few examples, no wrong prediction, or target not reachable"
    else:
        record["min_confidence"] = round(chosen["threshold"], 6)
        record.update({k: chosen[k] for k in ("precision", "recall", "f1")}, status="calibrated")
    return record


# ---------------------------------------------------------------------------------------------------------- CLI
def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("calibrate", help="choose per-class thresholds on a labelled split, ship them "
                                   "with the model", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model folder (its config.json gets the thresholds) or Hub repo with --output")
    parser.add_argument("--dataset", required=True, help="Hub dataset id, local folder (audiofolder) or builder name")
    parser.add_argument("--dataset-config", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--split", default="validation", help="the labelled split to calibrate on")
    parser.add_argument("--audio-column", default="audio")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--target", default="f1", help="f1, precision=P or recall=R")
    parser.add_argument("--min-examples", type=int, default=5,
                        help="classes with fewer positives keep the default threshold (and are listed)")
    parser.add_argument("--compression", type=float, default=None, help="C used to score the clips")
    parser.add_argument("--output", default=None, help="write the calibrated model here instead of into MODEL")
    parser.add_argument("--device", default=None)
    parser.set_defaults(func=run)


def run(args) -> int:
    try:
        target = parse_target(args.target)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    from tqdm.auto import tqdm

    from .data import DataArguments, decode_audio, load_split
    from .inference import ElasticASTClassifier

    model_dir = Path(args.model)
    if args.output is None and not model_dir.is_dir():
        raise SystemExit(f"error: {args.model} is not a local folder: pass --output DIR to write the calibrated copy.")
    classifier = ElasticASTClassifier.from_pretrained(args.model, device=args.device)
    data = DataArguments(dataset=args.dataset, dataset_config=args.dataset_config, data_dir=args.data_dir,
                         audio_column=args.audio_column, label_column=args.label_column)
    try:
        stream = load_split(data, args.split)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    index = {name: i for i, name in enumerate(classifier.labels)}
    scores, targets, skipped = [], [], 0
    started = time.perf_counter()
    for example in tqdm(stream, desc=f"scoring {args.split}", unit="clip"):
        value = example[args.label_column]
        names = value if isinstance(value, (list, tuple)) else [value]
        names = [classifier.labels[n] if isinstance(n, (int, np.integer)) and not isinstance(n, bool) else str(n)
                 for n in names]
        unknown = [n for n in names if n not in index]
        if unknown:
            raise SystemExit(f"error: label(s) {unknown} of split {args.split!r} are not among the model's labels "
                             f"{classifier.labels}; calibrate on data labelled with the model's classes.")
        try:
            wave = decode_audio(example[args.audio_column], classifier.fe.sampling_rate)
        except Exception as error:  # an undecodable clip is skipped and counted, as in training
            skipped += 1
            print(f"skipped a clip: {error}", file=sys.stderr)
            continue
        result = classifier.classify(wave.numpy(), sampling_rate=classifier.fe.sampling_rate,
                                     compression=args.compression, top_k=0)
        scores.append(result.scores)
        if classifier.multi_label:
            row = np.zeros(len(classifier.labels))
            row[[index[n] for n in names]] = 1
            targets.append(row)
        else:
            if len(names) != 1:
                raise SystemExit(f"error: a clip of split {args.split!r} has labels {names}; a single-label model "
                                 "calibrates on one label per clip.")
            targets.append(index[names[0]])
    if not scores:
        raise SystemExit(f"error: no decodable clip in split {args.split!r} of {args.dataset}.")
    record = calibrate_scores(np.stack(scores), np.array(targets), classifier.labels, classifier.multi_label, target,
                              args.min_examples)
    record.update(dataset=args.dataset, split=args.split, skipped=skipped, model=str(args.model),
                  compression=float(classifier.fe.compression if args.compression is None else args.compression),
                  seconds=round(time.perf_counter() - started, 1))
    destination = Path(args.output) if args.output else model_dir
    model = classifier.model
    if classifier.multi_label:
        model.config.class_thresholds = record["thresholds"] or None
    else:
        model.config.min_confidence = record["min_confidence"]
    if args.output:
        model.save_pretrained(destination)
        classifier.fe.save_pretrained(destination)
    else:
        model.config.save_pretrained(destination)
    (destination / CALIBRATION_FILE).write_text(json.dumps(record, indent=2) + "\n")
    _print(record, classifier.multi_label)
    if record["defaulted"]:
        print(f"kept the default for: {', '.join(record['defaulted'])}", file=sys.stderr)
    print(f"wrote the calibration into {destination / 'config.json'} and {destination / CALIBRATION_FILE}",
          file=sys.stderr)
    return 0


def _print(record: dict, multi_label: bool) -> None:
    if multi_label:
        print("| class | positives | threshold | precision | recall | F1 |\n|---|---|---|---|---|---|")
        for label, entry in record["classes"].items():
            if entry["status"] == "calibrated":
                print(f"| {label} | {entry['positives']} | {entry['threshold']:.3f} | {entry['precision']:.3f} | "
                      f"{entry['recall']:.3f} | {entry['f1']:.3f} |")
            else:
                print(f"| {label} | {entry['positives']} | {entry['status']} | | | |")
    elif record["min_confidence"] is not None:
        print(f"min confidence {record['min_confidence']:.3f}: precision {record['precision']:.3f}, recall "
              f"{record['recall']:.3f}, F1 {record['f1']:.3f} on {record['examples']} clips")
    else:
        print(record["status"])


__all__ = ["calibrate_scores", "choose_threshold", "parse_target"]
