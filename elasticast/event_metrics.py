"""`elasticast evaluate-events`: score a detector against reference events with the field's metric libraries.

    elasticast evaluate-events MODEL AUDIO... --reference ref.tsv [--window S --hop S] [--compression C]
                               [--threshold T | calibrated] [--merge-gap S] [--min-duration S] [--output-dir DIR]

The reference is a DCASE TSV (`filename onset offset event_label`; `filename` is matched to each AUDIO's file name).
The model's window scores (the ones `elasticast classify --timeline` writes) feed:

- **PSDS** (over the classes with reference events) scenarios 1 and 2 of DCASE 2021-2023 (scenario 1: DTC = GTC = 0.7, no cross-trigger term, α_ST = 1;
  scenario 2: DTC = GTC = 0.1, CTTC = 0.3, α_CT = 0.5, α_ST = 1; eFPR up to 100 per hour) through
  `sed_scores_eval.intersection_based.psds`, threshold-independent: the score of each window stretch
  (`elasticast.events.window_cores`) is the model's score there; no merge or minimum duration applies.
- **Event-based F1** (collar 200 ms on onsets, offsets within max(200 ms, 20 % of the event's length)) and
  **segment-based F1** (1-s segments) through `sed_eval.sound_event`, on the events after the thresholds and
  post-processing of `elasticast.events` (calibrated thresholds by default) — the events `classify` writes.

Why these two libraries: `psds_eval` 0.5.3 (the newest on PyPI) calls `DataFrame.fillna(method=...)`, which pandas 3
removed, so it cannot run here; `sed_scores_eval` 0.0.4 and `sed_eval` 0.2.1 do, with the two adjustments
documented at `_WritableScores` and in the `events` extra (setuptools < 81 for `dcase_util`'s `pkg_resources`).

Output in `--output-dir`: `metrics.json` (overall and per-class numbers, settings), `metrics.md` (per-class table),
`per_class.png` (per-class event and segment F1) and, with `--plot-scene FILE`, `scene.png` (spectrogram, reference
events, detected events and window scores of that recording).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from .events import Event, EventOptions, window_cores

PSDS_SCENARIOS = {
    "psds1": {"dtc_threshold": 0.7, "gtc_threshold": 0.7, "cttc_threshold": None, "alpha_ct": 0.0, "alpha_st": 1.0},
    "psds2": {"dtc_threshold": 0.1, "gtc_threshold": 0.1, "cttc_threshold": 0.3, "alpha_ct": 0.5, "alpha_st": 1.0},
}
MAX_EFPR = 100.0
EVENT_COLLAR = 0.2
EVENT_OFFSET_RATE = 0.2
SEGMENT_SECONDS = 1.0


def _libraries():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pkg_resources' deprecation warning from dcase_util
            import pandas as pd
            import sed_eval
            import sed_scores_eval
            from dcase_util.containers import MetaDataContainer
    except ImportError as error:
        raise ImportError(f"Event metrics need sed_eval and sed_scores_eval ({error}): pip install 'elasticast[events]'."
                          ) from error
    return pd, sed_eval, sed_scores_eval, MetaDataContainer


def _writable_frame_class(pd):
    class _WritableScores(pd.DataFrame):
        """A score DataFrame whose `to_numpy()` returns a writable copy. sed_scores_eval 0.0.4 (the newest on PyPI)
        hands `DataFrame.to_numpy()` to a Cython memoryview that needs a writable buffer; pandas 3 (copy-on-write)
        returns read-only views, which makes the library raise "buffer source array is read-only". Copying here
        changes no number and patches neither library."""

        @property
        def _constructor(self):
            return _WritableScores

        def to_numpy(self, *args, **kwargs):
            return np.array(super().to_numpy(*args, **kwargs))

    return _WritableScores


def score_frame(starts, ends, scores, labels):
    """Window starts/ends `[W]` (s) and scores `[W, num_labels]` → a sed_scores_eval score DataFrame over the windows'
    stretches (`window_cores`)."""
    pd, _, sed_scores_eval, _ = _libraries()
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    cores = window_cores(starts, ends)
    timestamps = np.concatenate([cores[:, 0], cores[-1:, 1]])
    frame = create_score_dataframe(np.asarray(scores, dtype=float), timestamps, list(labels))
    return _writable_frame_class(pd)(frame)


def psds(score_frames: dict, reference: dict[str, list[Event]], durations: dict[str, float]) -> dict:
    """PSDS scenarios 1 and 2 (`PSDS_SCENARIOS`) from sed_scores_eval: score frames and reference events per audio
    id, durations in seconds. PSDS averages per-class ROC curves, and sed_scores_eval requires reference events for
    every class it scores: classes without any are left out of it and listed under `psds_classes_without_reference`.
    """
    _, _, sed_scores_eval, _ = _libraries()
    ground_truth = {key: [(e.start, e.end, e.label) for e in events] for key, events in reference.items()}
    present = {e.label for events in reference.values() for e in events}
    columns = [c for c in next(iter(score_frames.values())).columns[2:] if c in present]
    missing = [c for c in next(iter(score_frames.values())).columns[2:] if c not in present]
    out = {"psds_classes_without_reference": missing}
    if not columns:
        return {**out, **{name: float("nan") for name in PSDS_SCENARIOS}}
    frames = {key: frame[["onset", "offset", *columns]] for key, frame in score_frames.items()}
    for name, scenario in PSDS_SCENARIOS.items():
        if len(columns) < 2 and scenario["cttc_threshold"] is not None:
            # Cross-triggers need another class; with one, their rate is zero, and sed_scores_eval fails on the
            # empty cross-trigger statistics, so the term is dropped (said in the output).
            scenario = {**scenario, "cttc_threshold": None, "alpha_ct": 0.0}
            out[f"{name}_without_cross_triggers"] = True
        value, *_ = sed_scores_eval.intersection_based.psds(
            scores=frames, ground_truth=ground_truth, audio_durations=durations, unit_of_time="hour",
            max_efpr=MAX_EFPR, **scenario)
        out[name] = float(value)
    return out


def f1_scores(reference: dict[str, list[Event]], estimated: dict[str, list[Event]], labels) -> dict:
    """Event-based and segment-based metrics from sed_eval, accumulated over the audio ids of `reference`:
    `{"event": {overall, class_wise}, "segment": {...}}` with F1, precision and recall."""
    _, sed_eval, _, MetaDataContainer = _libraries()
    event_metric = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=list(labels), t_collar=EVENT_COLLAR, percentage_of_length=EVENT_OFFSET_RATE)
    segment_metric = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=list(labels),
                                                              time_resolution=SEGMENT_SECONDS)

    def container(key, events):
        return MetaDataContainer([{"filename": key, "onset": e.start, "offset": e.end, "event_label": e.label}
                                  for e in events])

    for key, events in reference.items():
        ref, est = container(key, events), container(key, estimated.get(key, []))
        event_metric.evaluate(reference_event_list=ref, estimated_event_list=est)
        segment_metric.evaluate(reference_event_list=ref, estimated_event_list=est)
    out = {}
    for name, metric in (("event", event_metric), ("segment", segment_metric)):
        overall = _zero_f1_without_recall(metric.results_overall_metrics()["f_measure"])
        class_wise = {label: _zero_f1_without_recall(metric.results_class_wise_metrics()[label]["f_measure"])
                      for label in labels}
        # sed_eval's class-wise average, over the classes after the same rule
        macro = [c["f_measure"] for c in class_wise.values() if not np.isnan(c["f_measure"])]
        out[name] = {"micro": overall, "macro_f_measure": float(np.mean(macro)) if macro else float("nan"),
                     "class_wise": class_wise}
    return out


def _zero_f1_without_recall(values: dict) -> dict:
    """sed_eval's F-measure dict as floats. sed_eval gives F1 = NaN when nothing was detected (precision 0/0); with
    reference events present recall is 0 then, and F1 = 2PR/(P+R) tends to 0 for any precision, so it is reported as
    0 (as sed_scores_eval's collar-based F1 does). Without reference events and detections it stays NaN."""
    out = {k: float(values[k]) for k in ("f_measure", "precision", "recall")}
    if np.isnan(out["f_measure"]) and out["recall"] == 0:
        out["f_measure"] = 0.0
    return out


def match_reference(audio: list[str], reference: list[tuple[str, list[Event]]]) -> dict[str, list[Event]]:
    """Reference events keyed by each AUDIO path, matched by file name (or the reference's path as given); audio
    without reference rows has no events. Raises a ValueError naming reference files that match no AUDIO."""
    by_name = {}
    for name, events in reference:
        by_name.setdefault(Path(name).name, []).extend(events)
    out = {path: sorted(by_name.get(Path(path).name, []), key=lambda e: e.start) for path in audio}
    unmatched = sorted(set(by_name) - {Path(p).name for p in audio})
    if unmatched:
        raise ValueError(f"The reference names files not among the audio: {unmatched[:5]}"
                         f"{' ...' if len(unmatched) > 5 else ''}; pass every reference recording (or trim the TSV).")
    return out


# ------------------------------------------------------------------------------------------------------ command
def add_parser(subparsers) -> None:
    from .events import add_event_arguments

    parser = subparsers.add_parser("evaluate-events", help="PSDS, event- and segment-based F1 against a reference",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model folder or Hub repo id")
    parser.add_argument("audio", nargs="+", help="recordings (files, folders or globs)")
    parser.add_argument("--reference", required=True, help="DCASE TSV: filename, onset, offset, event_label")
    parser.add_argument("--window", type=float, default=None, help="window length in seconds")
    parser.add_argument("--hop", type=float, default=None, help="hop between windows in seconds")
    parser.add_argument("--compression", type=float, default=None, help="temporal compression C")
    parser.add_argument("--output-dir", default="event_metrics", help="where metrics.json, tables and plots go")
    parser.add_argument("--plot-scene", default=None, help="also draw this recording: reference vs detected events")
    parser.add_argument("--device", default=None)
    add_event_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from .classify import find_inputs
    from .event_formats import read_dcase
    from .events import event_options_from_args
    from .inference import ElasticASTClassifier

    _libraries()  # a missing library is reported before any audio is classified
    files = [str(f) for f in find_inputs(args.audio)]
    try:
        reference = match_reference(files, read_dcase(args.reference))
    except (ValueError, KeyError, OSError) as error:
        raise SystemExit(f"error: --reference {args.reference}: {error}") from None
    classifier = ElasticASTClassifier.from_pretrained(args.model, device=args.device)
    if not classifier.multi_label:
        raise SystemExit("error: evaluate-events scores multi-label (sigmoid) detectors; this model is single-label.")
    try:
        options = event_options_from_args(args, classifier.model.config)
        options.check_labels(classifier.labels)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    labels = classifier.labels
    unknown = sorted({e.label for events in reference.values() for e in events} - set(labels))
    if unknown:
        raise SystemExit(f"error: the reference holds labels the model does not know: {unknown}; the model's labels "
                         f"are {labels}.")
    frames, estimated, durations, results = {}, {}, {}, {}
    for path in files:
        result = classifier.classify(path, compression=args.compression, window=args.window, hop=args.hop, top_k=0,
                                     events=options)
        starts, ends = [w.start for w in result.windows], [w.end for w in result.windows]
        frames[path] = score_frame(starts, ends, np.stack([w.scores for w in result.windows]), labels)
        estimated[path] = [Event(s.start, s.end, s.label, s.score) for s in result.segments]
        durations[path] = result.duration
        results[path] = result
        print(f"{path}: {len(result.windows)} windows, {len(result.segments)} events "
              f"({len(reference[path])} in the reference)", file=sys.stderr)
    report = evaluate(frames, reference, estimated, durations, labels)
    report["settings"] = {"model": str(args.model), "window": args.window, "hop": args.hop,
                          "compression": float(classifier.fe.compression if args.compression is None
                                               else args.compression),
                          "events": options.describe(labels, True), "reference": str(args.reference),
                          "audio": files}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "metrics.md").write_text(markdown_table(report) + "\n")
    plot_per_class(report, out / "per_class.png")
    if args.plot_scene:
        matches = [p for p in files if Path(p).name == Path(args.plot_scene).name]
        if not matches:
            raise SystemExit(f"error: --plot-scene {args.plot_scene} is not among the audio.")
        plot_scene(results[matches[0]], matches[0], reference[matches[0]], out / "scene.png", classifier.fe, options)
    print(markdown_table(report))
    print(f"wrote {out / 'metrics.json'}", file=sys.stderr)
    return 0


def evaluate(frames: dict, reference: dict[str, list[Event]], estimated: dict[str, list[Event]],
             durations: dict[str, float], labels) -> dict:
    """All metrics for window score frames (PSDS) and post-processed events (F1): `{"overall", "class_wise"}`."""
    scores = psds(frames, reference, durations)
    f1 = f1_scores(reference, estimated, labels)
    overall = {**scores, "event_f1_micro": f1["event"]["micro"]["f_measure"],
               "event_f1_macro": f1["event"]["macro_f_measure"],
               "segment_f1_micro": f1["segment"]["micro"]["f_measure"],
               "segment_f1_macro": f1["segment"]["macro_f_measure"],
               "reference_events": sum(len(v) for v in reference.values()),
               "detected_events": sum(len(v) for v in estimated.values()),
               "hours": sum(durations.values()) / 3600}
    class_wise = {label: {"reference": sum(e.label == label for v in reference.values() for e in v),
                          "detected": sum(e.label == label for v in estimated.values() for e in v),
                          "event": f1["event"]["class_wise"][label], "segment": f1["segment"]["class_wise"][label]}
                  for label in labels}
    return {"overall": overall, "class_wise": class_wise}


def _number(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def markdown_table(report: dict) -> str:
    o = report["overall"]
    lines = [f"PSDS 1 {o['psds1']:.3f} · PSDS 2 {o['psds2']:.3f} · event F1 {o['event_f1_micro']:.3f} (micro), "
             f"{o['event_f1_macro']:.3f} (macro) · segment F1 {o['segment_f1_micro']:.3f} (micro)", "",
             "| class | reference | detected | event F1 | event P | event R | segment F1 |", "|---|---|---|---|---|---|---|"]
    for label, c in report["class_wise"].items():
        lines.append(f"| {label} | {c['reference']} | {c['detected']} | {_number(c['event']['f_measure'])} | "
                     f"{_number(c['event']['precision'])} | {_number(c['event']['recall'])} | "
                     f"{_number(c['segment']['f_measure'])} |")
    return "\n".join(lines)


def plot_per_class(report: dict, path: Path) -> Path:
    """Bars of event-based and segment-based F1 per class (y from 0 to 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(report["class_wise"])
    x = np.arange(len(labels))
    figure, axis = plt.subplots(figsize=(1.2 * len(labels) + 3, 3.5))
    for offset, kind in ((-0.2, "event"), (0.2, "segment")):
        values = [np.nan_to_num(report["class_wise"][l][kind]["f_measure"]) for l in labels]
        axis.bar(x + offset, values, 0.4, label=f"{kind}-based F1")
    o = report["overall"]
    axis.set(xticks=x, xticklabels=labels, ylim=(0, 1), ylabel="F1",
             title=f"PSDS1 {o['psds1']:.2f} · PSDS2 {o['psds2']:.2f}")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_scene(result, audio_path: str, reference: list[Event], path: Path, fe, options: EventOptions) -> Path:
    """Spectrogram of one recording, its reference events, the detected events and the window scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .inference import _overview

    picture, duration = _overview(audio_path, fe, 1600, None)
    labels = result.labels
    colours = {label: plt.cm.tab10(i % 10) for i, label in enumerate(labels)}
    figure, (top, ref_axis, det_axis, lines) = plt.subplots(
        4, 1, figsize=(14, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1.1, 1.1, 2]})
    top.imshow(picture, origin="lower", aspect="auto", extent=(0, duration, 0, picture.shape[0]), cmap="magma")
    top.set(ylabel="mel bin", title=f"{Path(audio_path).name}: reference and detected events")
    for axis, events, name in ((ref_axis, reference, "reference"), (det_axis, result.segments, "detected")):
        for e in events:
            row = labels.index(e.label)
            axis.broken_barh([(e.start, e.end - e.start)], (row + 0.1, 0.8), color=colours[e.label])
        axis.set(ylim=(0, len(labels)), yticks=np.arange(len(labels)) + 0.5, yticklabels=labels, ylabel=name)
        axis.tick_params(axis="y", labelsize=7)
    centres = [(w.start + w.end) / 2 for w in result.windows]
    thresholds = options.thresholds(labels)
    for k, label in enumerate(labels):
        lines.plot(centres, [w.scores[k] for w in result.windows], color=colours[label], lw=1, label=label)
        lines.axhline(thresholds[k], color=colours[label], lw=0.8, ls=":")
    lines.set(ylim=(0, 1), xlim=(0, duration), xlabel="time (s)", ylabel="window score (dotted: thresholds)")
    lines.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


__all__ = ["PSDS_SCENARIOS", "evaluate", "f1_scores", "match_reference", "psds", "score_frame"]
