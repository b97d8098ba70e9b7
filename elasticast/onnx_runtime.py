"""Classify audio with an exported ElasticAST (`elasticast export-onnx`) using only numpy, onnxruntime and soundfile.

This file has no torch or transformers import, and no import of the `elasticast` package (whose `__init__` loads
transformers): `export-onnx` copies it into the export folder as `elasticast_onnx.py`, and on a machine without
PyTorch one runs

    pip install "onnxruntime>=1.23" numpy soundfile   # (opset 23, the default; 1.14 for --opset 18) + soxr to
                                                      # read files at rates other than the model's
    python OUT/elasticast_onnx.py OUT clip.wav [--compression C] [--top-k 5] [--json] [--precision int8]

or, from Python, `OnnxAudioClassifier(OUT).classify(waveform, sampling_rate)`.

The data path is the PyTorch one, run as exported graphs of the same code:

1. `features-C<C>.onnx`: waveform `[N]` float32 → normalised patches `[L, P*P]` with their `freq_ids [L]` and
   `time_ids [L]` — the feature extractor's own fbank and patching code, exported once per compression C (the
   frame shift is a constant of the graph). Clips shorter than one patch column (fewer than P frames) go through
   `features-C<C>-short.onnx`, the same code on the extractor's short-clip branch.
2. The clip's time patches are split into the extractor's near-equal windows (`window_bounds`, below), and each
   window's features are computed from its own samples only (Kaldi frames are independent of each other, so they
   equal the whole clip's frames; the skipped whole-clip mean changes them by float rounding). Windows of equal
   width are batched, up to `max_tokens` tokens per call, into `model.onnx`
   (`ElasticASTForAudioClassification.window_logits`: `[B, L, P*P]`, `freq_ids [L]`, `time_ids [L]` → logits
   `[B, num_labels]`). Peak memory is thus one batch of windows, whatever the clip's length.
3. Window logits are combined as the model does (`window_aggregation` of the manifest: mean or max), then turned
   into scores (softmax for single-label, sigmoid for multi-label, raw values for regression).

`elasticast_onnx.json` (the manifest) holds every number this needs, computed by the exporter from the model's
config and feature extractor.

Events: `classify` also returns `events`, the windows' scores post-processed by `elasticast.events` (copied into
the export as `elasticast_events.py`) with the model's calibrated thresholds / minimum confidence from the manifest
(`elasticast calibrate`) unless an `EventOptions` is passed.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import soundfile

try:  # inside the package
    from .events import EventOptions, detect_events
except ImportError:  # run from an export folder: its copy `elasticast_events.py` (numpy only) beside this file
    import importlib.util

    _spec = importlib.util.spec_from_file_location("elasticast_events", Path(__file__).with_name("elasticast_events.py"))
    _events = importlib.util.module_from_spec(_spec)
    sys.modules["elasticast_events"] = _events  # dataclasses look their module up while the file runs
    _spec.loader.exec_module(_events)
    EventOptions, detect_events = _events.EventOptions, _events.detect_events

MANIFEST = "elasticast_onnx.json"


def window_bounds(num_time_patches: int, max_window_patches: int) -> list[int]:
    """Start/end time patches of the near-equal windows that split a clip: `[0, ..., num_time_patches]`.

    The same arithmetic as `ElasticASTFeatureExtractor.window_bounds` (which this torch-free file cannot import);
    tests/test_onnx.py checks that both agree on every length up to 20 windows.
    """
    num_windows = math.ceil(num_time_patches / max_window_patches)
    return [round(i * num_time_patches / num_windows) for i in range(num_windows + 1)]


MIN_SAMPLING_RATE = 1000  # as the feature extractor's floor: lower rates are damaged headers or kHz given as Hz


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A sound file as a float32 mono waveform `[N]` (channels averaged; integer PCM scaled to [-1, 1)) and its rate.

    Raises FileNotFoundError for a missing file and ValueError for one that cannot be read, is empty, has a rate
    under 1000 Hz or holds NaN/Inf samples (the message names the file, the problem and the time of the first bad
    sample)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; check the path.")
    try:
        with open(path, "rb") as handle:  # a handle: any name, also one that is not valid UTF-8
            audio, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise ValueError(f"{path}: cannot read audio ({error}); is it a sound file libsndfile reads (wav, flac, ogg, "
                         "mp3)?") from None
    if rate < MIN_SAMPLING_RATE:
        raise ValueError(f"{path}: sampling rate {rate} Hz is below {MIN_SAMPLING_RATE} Hz (a damaged header?).")
    if audio.shape[0] == 0:
        raise ValueError(f"{path}: the file holds no audio samples.")
    mono = audio.mean(axis=1, dtype=np.float32)
    bad = ~np.isfinite(mono)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(f"{path}: sample {first} (at {first / rate:.3f} s) is NaN or Inf; repair or re-encode it.")
    return mono, rate


class OnnxAudioClassifier:
    """An export folder's graphs in ONNX Runtime sessions (CPU unless `providers` says otherwise).

    Args:
        folder: What `elasticast export-onnx` wrote.
        providers: ONNX Runtime execution providers, e.g. `["CUDAExecutionProvider", "CPUExecutionProvider"]`.
        session_options: An `onnxruntime.SessionOptions` (thread counts, graph optimisation level).
        precision: `"fp32"` (`model.onnx`) or `"int8"` (`model.int8.onnx`, written by `export-onnx --quantize int8`).
        max_tokens: Tokens per `model.onnx` call: equal windows are batched up to it (a wider window runs alone).
            The default, 2048, runs one 30-s base-size window per call: batching more measured no faster on a CPU
            and holds one more `[heads, L, L]` attention buffer per window (`benchmarks/precision.py`).
    """

    def __init__(self, folder: str | Path, providers: list[str] | None = None, session_options=None,
                 precision: str = "fp32", max_tokens: int = 2048):
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be ≥ 1, got {max_tokens}.")
        self.max_tokens = max_tokens
        self.folder = Path(folder)
        manifest = self.folder / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(
                f"{manifest} not found: {self.folder} is not an ElasticAST ONNX export. Create one with "
                "`elasticast export-onnx MODEL OUT`."
            )
        self.manifest = json.loads(manifest.read_text())
        self._providers = providers or ["CPUExecutionProvider"]
        self._options = session_options
        self._sessions: dict[str, onnxruntime.InferenceSession] = {}
        self.labels = [self.manifest["id2label"][str(i)] for i in range(len(self.manifest["id2label"]))]
        models = self.manifest.get("models", {"fp32": self.manifest["model"]})
        if precision not in models:
            raise ValueError(
                f"This export has no {precision} graph (it has: {', '.join(models)}). Re-export with "
                f"`elasticast export-onnx MODEL OUT --quantize {precision}`." if precision == "int8" else
                f"Unknown precision {precision!r}: use one of {', '.join(models)}."
            )
        self.precision, self.model_graph = precision, models[precision]

    def _session(self, name: str) -> onnxruntime.InferenceSession:
        if name not in self._sessions:
            self._sessions[name] = onnxruntime.InferenceSession(
                str(self.folder / name), sess_options=self._options, providers=self._providers
            )
        return self._sessions[name]

    @property
    def compressions(self) -> list[float]:
        return sorted(float(c) for c in self.manifest["features"])

    def _features_entry(self, compression: float) -> dict:
        for key, entry in self.manifest["features"].items():
            if math.isclose(float(key), compression):
                return entry
        raise ValueError(
            f"This export has feature graphs for compression {self.compressions}, not {compression}. Re-export with "
            f"`elasticast export-onnx MODEL OUT --compression {' '.join(map(str, self.compressions))} {compression}`."
        )

    def features(self, waveform: np.ndarray, compression: float | None = None):
        """Normalised patches of a whole clip: `[N]` float waveform at the model's rate →
        `(input_values [L, P*P] float32, freq_ids [L] int64, time_ids [L] int64)`, frequency-major."""
        compression = self.manifest["default_compression"] if compression is None else compression
        entry = self._features_entry(compression)
        waveform = _checked(waveform)
        frame_length = self.manifest["frame_length"]
        if waveform.shape[0] < frame_length:
            raise ValueError(
                f"The clip has {waveform.shape[0]} samples, fewer than one {frame_length}-sample analysis frame: it "
                "holds no spectrogram frame to classify (the PyTorch extractor would classify pure padding)."
            )
        graph = entry["graph"] if waveform.shape[0] >= entry["min_samples"] else entry["short_graph"]
        session = self._session(graph)
        return tuple(session.run(None, {session.get_inputs()[0].name: waveform}))

    def window_bounds(self, num_samples: int, compression: float | None = None) -> list[int]:
        """The windows of a clip of `num_samples` as time-patch bounds `[0, ..., num_time_patches]` (the extractor's
        `segment_lengths` in patches); a clip under one patch column gives `[0, 1]` (its padded column)."""
        compression = self.manifest["default_compression"] if compression is None else compression
        shift, frame_length = self._features_entry(compression)["frame_shift"], self.manifest["frame_length"]
        frames = 1 + (num_samples - frame_length) // shift if num_samples >= frame_length else 0  # Kaldi, snip_edges
        return window_bounds(max(frames // self.manifest["patch_size"], 1), self.manifest["max_window_patches"])

    def window_features(self, waveform: np.ndarray, start: int, end: int, compression: float | None = None):
        """Features of the time patches `[start, end)` of a clip from the samples they cover:
        `(input_values [L, P*P], freq_ids [L], time_ids [L])`, time ids starting at 0, tokens frequency-major."""
        compression = self.manifest["default_compression"] if compression is None else compression
        shift, p = self._features_entry(compression)["frame_shift"], self.manifest["patch_size"]
        first, last = start * p, end * p - 1  # frames; frame f covers samples [f * shift, f * shift + frame_length)
        if waveform.shape[0] < self._features_entry(compression)["min_samples"]:
            return self.features(waveform, compression)  # under one patch column: the short-clip graph pads it
        return self.features(waveform[first * shift: last * shift + self.manifest["frame_length"]], compression)

    def windows(self, waveform: np.ndarray, compression: float | None = None) -> list[tuple]:
        """A clip's windows as the feature extractor cuts them (one row of its output, segment by segment):
        `[(start, end, input_values [L, P*P], freq_ids [L], time_ids [L]), ...]`, start/end in time patches, time
        ids restarting at 0 in each window, tokens frequency-major."""
        bounds = self.window_bounds(waveform.shape[0], compression)
        return [(start, end, *self.window_features(waveform, start, end, compression))
                for start, end in zip(bounds[:-1], bounds[1:])]

    def window_logits(self, input_values: np.ndarray, freq_ids: np.ndarray, time_ids: np.ndarray) -> np.ndarray:
        """`model.onnx` on a batch of equal windows: `[B, L, P*P]`, `[L]`, `[L]` → logits `[B, num_labels]`."""
        session = self._session(self.model_graph)
        return session.run(
            None, {"input_values": input_values.astype(np.float32), "freq_ids": freq_ids, "time_ids": time_ids}
        )[0]

    def event_options(self, **overrides) -> EventOptions:
        """`EventOptions` with the export's calibrated thresholds / minimum confidence; non-None keyword arguments
        (`threshold`, `merge_gap`, ...) override them."""
        defaults = {"threshold": self.manifest.get("class_thresholds") or None,
                    "min_confidence": self.manifest.get("min_confidence")}
        return EventOptions(**{**defaults, **{k: v for k, v in overrides.items() if v is not None}})

    def classify(self, waveform: np.ndarray, sampling_rate: int, compression: float | None = None, top_k: int = 5,
                 events: EventOptions | None = None):
        """Scores of one clip (any length): windows as the feature extractor cuts them, combined as the model does.

        Returns a JSON-ready dict: `duration` (s), `compression`, `logits` and `scores` (`[num_labels]` lists),
        `top` (`[[label, score], ...]`, `top_k` best), `windows` (`[{"start", "end", "logits"}]`, seconds) and
        `events` (`[{"start", "end", "label", "score"}]`, from the window scores with `events` or the export's
        calibrated defaults, `event_options()`).
        """
        compression = self.manifest["default_compression"] if compression is None else float(compression)
        waveform = _checked(waveform)  # the whole clip: windows leave up to P - 1 trailing frames unread
        rate = self.manifest["sampling_rate"]
        duration = waveform.shape[0] / sampling_rate
        if sampling_rate != rate:
            try:
                import soxr  # the resampler the PyTorch feature extractor uses
            except ImportError:
                raise ImportError(
                    f"The audio is at {sampling_rate} Hz and the model expects {rate} Hz: `pip install soxr` to "
                    f"resample, or convert the file first (e.g. `ffmpeg -i in.wav -ar {rate} out.wav`)."
                ) from None
            waveform = soxr.resample(waveform, sampling_rate, rate).astype(np.float32)
        frame_shift = self._features_entry(compression)["frame_shift"]
        windows = list(zip((bounds := self.window_bounds(waveform.shape[0], compression))[:-1], bounds[1:]))
        logits = np.zeros((len(windows), len(self.labels)), dtype=np.float32)
        for width in sorted({end - start for start, end in windows}):  # one batch of equal windows held at a time
            batch, values = [], []
            for i in (i for i, (start, end) in enumerate(windows) if end - start == width):
                window_values, freq_ids, time_ids = self.window_features(waveform, *windows[i], compression)
                batch.append(i)
                values.append(window_values)
                if (len(batch) + 1) * len(window_values) > self.max_tokens:  # the next equal window would not fit
                    logits[batch] = self.window_logits(np.stack(values), freq_ids, time_ids)
                    batch, values = [], []
            if batch:
                logits[batch] = self.window_logits(np.stack(values), freq_ids, time_ids)
        aggregated = logits.max(axis=0) if self.manifest["window_aggregation"] == "max" else logits.mean(axis=0)
        scores = _scores(aggregated, self.manifest["scores"])
        seconds_per_patch = self.manifest["patch_size"] * frame_shift / rate
        order = np.argsort(-scores)[:top_k]
        bounds = [(start * seconds_per_patch, min(end * seconds_per_patch, duration)) for start, end in windows]
        window_scores = np.stack([_scores(row, self.manifest["scores"]) for row in logits])
        found = detect_events([b[0] for b in bounds], [b[1] for b in bounds], window_scores, self.labels,
                              self.manifest["scores"] != "softmax", events or self.event_options())
        return {
            "duration": duration,
            "compression": compression,
            "logits": aggregated.tolist(),
            "scores": scores.tolist(),
            "top": [[self.labels[i], float(scores[i])] for i in order],
            "windows": [
                {"start": start * seconds_per_patch, "end": min(end * seconds_per_patch, duration), "logits": row}
                for (start, end), row in zip(windows, logits.tolist())
            ],
            "events": [event.to_dict() for event in found],
        }


def _checked(waveform) -> np.ndarray:
    waveform = np.ascontiguousarray(waveform, dtype=np.float32)
    if waveform.ndim != 1:
        raise ValueError(f"Expected a 1-D mono waveform, got shape {waveform.shape}; down-mix it first.")
    if not np.isfinite(waveform).all():
        raise ValueError("The waveform contains NaN or Inf samples; clean it before classifying.")
    return waveform


def _scores(logits: np.ndarray, kind: str) -> np.ndarray:
    # The numpy form of the function the manifest names (ElasticASTConfig.score_function decides it at export).
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    if kind == "softmax":
        shifted = np.exp(logits - logits.max())
        return shifted / shifted.sum()
    if kind in ("none", "identity"):  # "identity": exports written before the names followed the pipeline's
        return logits
    raise ValueError(f"Unknown score function {kind!r} in the manifest: re-export with this version of elasticast.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Classify sound files with an ElasticAST ONNX export (no PyTorch). A file that cannot be read is "
        "reported and skipped; the others are classified.",
        epilog="exit status: 0 every file classified, 1 a file failed (each reported), 2 usage error",
    )
    parser.add_argument("folder", help="the folder `elasticast export-onnx` wrote")
    parser.add_argument("audio", nargs="+", help="sound files (anything libsndfile reads: wav, flac, ogg, ...)")
    parser.add_argument("--compression", type=float, help="temporal compression C (default: the export's)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    parser.add_argument("--precision", default="fp32", help="fp32, or int8 for an export made with --quantize int8")
    args = parser.parse_args(argv)
    if args.top_k < 1 or (args.compression is not None and not args.compression >= 1):
        parser.error("--top-k must be ≥ 1 and --compression a number ≥ 1")
    try:
        classifier = OnnxAudioClassifier(args.folder, precision=args.precision)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    failed = 0
    for path in args.audio:
        try:
            waveform, rate = read_audio(path)
            result = {"source": str(path), **classifier.classify(waveform, rate, args.compression, args.top_k)}
        except (OSError, ValueError, ImportError) as error:
            failed += 1
            print(f"skipped {path}: {error}", file=sys.stderr, flush=True)
            if args.json:
                print(json.dumps({"source": str(path), "error": str(error)}, ensure_ascii=True), flush=True)
            continue
        if args.json:
            print(json.dumps(result, ensure_ascii=True), flush=True)
        else:
            print(f"{path} ({result['duration']:.2f} s, {len(result['windows'])} window(s)):")
            for label, score in result["top"]:
                print(f"  {score:.4f}  {label}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
