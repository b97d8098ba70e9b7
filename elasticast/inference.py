"""Long recordings: stream a recording of any length through ElasticAST and get file-level scores and a timeline.

Data path (the model's own, in pieces): audio decoded in chunks (torchcodec `AudioDecoder`, front to back;
down-mixed by channel mean; resampled to the extractor's rate with soxr's streaming `ResampleStream`) → Kaldi fbank chunk by chunk
(`ElasticASTFeatureExtractor.fbank_frames`, keeping the `frame_length - frame_shift` samples Kaldi framing needs
across chunk boundaries) → windows cut with the extractor's window arithmetic (`num_frames`, `window_bounds`,
`spectrogram`, `window_tokens`) → windows packed into rows under a token budget (`layout`, packed mode, one "clip"
per window) → the model's normal `forward` → per-window logits, yielded window by window.

Only the frames of the windows still open, one decoded chunk and one batch of windows are ever held, so peak memory
does not depend on the recording's length. With the default window (the model's time-position table, no overlap)
the windows are exactly those the feature extractor cuts from the whole clip, so the file-level scores equal the
stock `pipeline("audio-classification")` result (≤ 1e-5 in fp32).

The window layout needs the number of samples up front (the near-equal windows of `window_bounds` depend on it).
Containers whose header gives an exact count (PCM WAV/AIFF/CAF, FLAC: torchcodec's header duration times the rate)
are read once. For the others (MP3, AAC, Ogg, ...; headers hold estimates there) the file is decoded twice: a first
streaming pass counts the samples (bounded memory, a few seconds per hour of audio), the second classifies.
"""

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .feature_extraction_elasticast import ElasticASTFeatureExtractor
from .modeling_elasticast import ElasticASTForAudioClassification
from .precision import apply_precision, autocast, resolve_precision

# Codecs whose container header gives the exact number of samples (duration × rate is exact there).
EXACT_LENGTH_CODECS = ("pcm_", "flac")
CHUNK_SECONDS = 20.0  # default audio per decoded chunk (torchcodec range call)
DEFAULT_MAX_TOKENS = 8192  # tokens per forward call (several base-size windows of 1536 tokens)


# ------------------------------------------------------------------------------------------------------- results
@dataclass
class WindowResult:
    """One window of the timeline: `start`/`end` in seconds and its scores `[num_labels]` (softmax or sigmoid)."""

    start: float
    end: float
    scores: np.ndarray


@dataclass
class Segment:
    """A stretch of the recording with one label: single-label models merge consecutive windows whose top label is
    the same (`score` = mean top score); multi-label models give per-label events above the threshold (`score` =
    peak score)."""

    start: float
    end: float
    label: str
    score: float


@dataclass
class ClassificationResult:
    source: str
    duration: float
    scores: np.ndarray
    top: list[tuple[str, float]]
    windows: list[WindowResult]
    segments: list[Segment]
    num_tokens: int
    compute_seconds: float
    compression: float
    labels: list[str] = field(default_factory=list)

    def to_dict(self, timeline: bool = True) -> dict:
        """JSON-ready dict; `timeline=False` leaves out the windows and segments."""
        out = {
            "source": self.source,
            "duration": round(self.duration, 6),
            "top": [{"label": label, "score": float(score)} for label, score in self.top],
            "scores": {label: float(score) for label, score in zip(self.labels, self.scores)},
            "num_tokens": self.num_tokens,
            "compute_seconds": self.compute_seconds,
            "compression": self.compression,
        }
        if timeline:
            out["windows"] = [
                {"start": round(w.start, 6), "end": round(w.end, 6), "scores": [float(s) for s in w.scores]}
                for w in self.windows
            ]
            out["segments"] = [
                {"start": round(s.start, 6), "end": round(s.end, 6), "label": s.label, "score": float(s.score)}
                for s in self.segments
            ]
        return out


# --------------------------------------------------------------------------------------------------------- audio
@dataclass
class _Audio:
    """A recording ready to stream: its name, exact length at the extractor's rate, and a chunk iterator factory."""

    name: str
    num_samples: int
    chunks: Callable[[], Iterator[torch.Tensor]]  # mono float32 pieces at the extractor's rate, in order


def _resampled_length(num_samples: int, rate: int, target: int) -> int:
    # soxr's output length: num_samples · target / rate rounded half up (checked against soxr.resample).
    return (2 * num_samples * target + rate) // (2 * rate)


def _resampling(pieces: Iterator[np.ndarray], rate: int, target: int) -> Iterator[torch.Tensor]:
    """Mono float32 pieces at `rate` → pieces at `target` (soxr's streaming resampler: the concatenated output equals
    `soxr.resample` of the whole signal exactly)."""
    if rate == target:
        for piece in pieces:
            yield torch.from_numpy(np.ascontiguousarray(piece, dtype=np.float32))
        return
    import soxr

    stream = soxr.ResampleStream(rate, target, 1, dtype="float32")
    for piece in pieces:
        out = stream.resample_chunk(np.ascontiguousarray(piece, dtype=np.float32))
        if len(out):
            yield torch.from_numpy(out)
    yield torch.from_numpy(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))


def _decoded_pieces(open_decoder: Callable, chunk_seconds: float) -> Iterator[np.ndarray]:
    """Mono float32 pieces (channels averaged) of a fresh torchcodec `AudioDecoder` at its native rate, about
    `chunk_seconds` each, decoded front to back.

    Sequential decoding goes through torchcodec's core `get_next_frame` (torchcodec is pinned): the public
    `get_samples_played_in_range` re-decodes from the file's start whenever a range begins before the decoder's
    position — which consecutive ranges always do, since the last packet straddles the boundary — so its cost per
    call grows with the offset (measured: 0.02 s per 20-s range at the start of a 40-min WAV, 0.1-0.3 s at its end),
    quadratic over hours of audio. Concatenated, the pieces equal `get_all_samples()` exactly (checked on WAV, FLAC
    and MP3).
    """
    from torchcodec import _core

    decoder = open_decoder()
    step = max(1, int(chunk_seconds * decoder.metadata.sample_rate))
    pending, size = [], 0
    while True:
        try:
            samples = _core.get_next_frame(decoder._decoder)[0]  # [channels, n] of one packet
        except IndexError:  # torchcodec's end of stream
            break
        pending.append(samples.mean(0))
        size += samples.shape[1]
        if size >= step:
            yield torch.cat(pending).numpy()
            pending, size = [], 0
    if pending:
        yield torch.cat(pending).numpy()


def _decoder_audio(open_decoder: Callable, name: str, target: int, chunk_seconds: float) -> _Audio:
    metadata = open_decoder().metadata
    rate = metadata.sample_rate
    codec = metadata.codec or ""
    duration = metadata.duration_seconds_from_header
    if codec.startswith(EXACT_LENGTH_CODECS) and duration is not None:
        native = round(duration * rate)
    else:
        native = sum(len(piece) for piece in _decoded_pieces(open_decoder, chunk_seconds))  # counting pass
    if native == 0:
        raise ValueError(f"{name}: the file holds no audio samples; drop it or pass audio.")
    return _Audio(name, _resampled_length(native, rate, target),
                  lambda: _resampling(_decoded_pieces(open_decoder, chunk_seconds), rate, target))


def _array_audio(array, sampling_rate, fe: ElasticASTFeatureExtractor, name: str, chunk_seconds: float) -> _Audio:
    # The extractor's own checks (1-D, finite, non-empty, integer PCM scaling) and resampling; the array is in memory
    # already, so it is resampled whole and handed out in chunks.
    wave = fe._to_waveforms(array, sampling_rate, device="cpu")[0].float()
    step = max(1, int(chunk_seconds * fe.sampling_rate))
    return _Audio(name, len(wave), lambda: iter(wave.split(step)))


def open_audio(source, fe: ElasticASTFeatureExtractor, sampling_rate: int | None = None,
               chunk_seconds: float = CHUNK_SECONDS) -> _Audio:
    """A path, a 1-D array (with `sampling_rate`), a torchcodec `AudioDecoder` or a 🤗 datasets example (or its audio
    value: `{"array", "sampling_rate"}`, `{"path", "bytes"}`, or a decoder) → a streamable recording."""
    from torchcodec.decoders import AudioDecoder

    if isinstance(source, dict) and "audio" in source and not {"array", "path", "bytes"} & source.keys():
        source = source["audio"]  # a datasets example
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; check the path.")
        try:
            AudioDecoder(str(path))
        except Exception as error:  # torchcodec raises ValueError/RuntimeError depending on the container
            raise ValueError(f"{path}: cannot decode audio ({error}); is it an audio file (ffmpeg must read it)?") from error
        return _decoder_audio(lambda: AudioDecoder(str(path)), str(path), fe.sampling_rate, chunk_seconds)
    if isinstance(source, AudioDecoder):
        # A decoder handed over (🤗 datasets decodes Audio columns to one) cannot be rewound for a second pass: it is
        # decoded whole here; its encoded bytes are in memory already.
        samples = source.get_all_samples()
        return _array_audio(samples.data.mean(0), samples.sample_rate, fe, "<decoder>", chunk_seconds)
    if isinstance(source, dict):
        if source.get("array") is not None:
            rate = source.get("sampling_rate", sampling_rate)
            return _array_audio(source["array"], rate, fe, source.get("path") or "<array>", chunk_seconds)
        if source.get("bytes") is not None:
            data = source["bytes"]
            return _decoder_audio(lambda: AudioDecoder(data), source.get("path") or "<bytes>", fe.sampling_rate,
                                  chunk_seconds)
        if source.get("path") is not None:
            return open_audio(source["path"], fe, chunk_seconds=chunk_seconds)
        raise ValueError(f"Cannot read audio from a dict with keys {sorted(source)}: pass 'array' + 'sampling_rate', "
                         "'path' or 'bytes' (a datasets Audio value).")
    if isinstance(source, (np.ndarray, torch.Tensor, list)):
        return _array_audio(source, sampling_rate, fe, "<array>", chunk_seconds)
    raise TypeError(f"Cannot classify a {type(source).__name__}: pass a path, a 1-D array with sampling_rate, or a "
                    "datasets example.")


# ------------------------------------------------------------------------------------------------------- timeline
def window_plan(num_time_patches: int, max_patches: int, width: int | None, hop: int | None) -> list[tuple[int, int]]:
    """Windows `(start, end)` in time patches. Without a hop: the near-equal split of `window_bounds` into windows
    of at most `width` (default `max_patches`, the position table) patches, as the feature extractor cuts a whole
    clip. With a hop: windows of `width` patches every `hop` patches, the last one ending at the recording's end
    (possibly shorter)."""
    width = max_patches if width is None else width
    if not 1 <= width <= max_patches:
        raise ValueError(f"A window of {width} time patches does not fit the model's time table ({max_patches} patches); "
                         "pass a shorter window.")
    if hop is None:
        bounds = ElasticASTFeatureExtractor.window_bounds(num_time_patches, width)
        return list(zip(bounds[:-1], bounds[1:]))
    if hop < 1:
        raise ValueError("The hop must be at least one time patch; pass a longer hop.")
    windows, start = [], 0
    while True:
        end = min(start + width, num_time_patches)
        windows.append((start, end))
        if end >= num_time_patches:
            return windows
        start += hop


def _cores(windows: list[WindowResult]) -> list[tuple[float, float]]:
    """The stretch each window speaks for: boundaries halfway between a window's end and the next one's start (the
    shared edge without overlap, the midpoint of the overlap otherwise)."""
    cores = []
    for index, window in enumerate(windows):
        start = window.start if index == 0 else (windows[index - 1].end + window.start) / 2
        end = window.end if index == len(windows) - 1 else (window.end + windows[index + 1].start) / 2
        cores.append((start, end))
    return cores


def segments_of(windows: list[WindowResult], labels: list[str], multi_label: bool, threshold: float) -> list[Segment]:
    """Single-label: runs of windows with the same top label (mean top score). Multi-label: per label, runs of
    windows scoring ≥ threshold (peak score), ordered by onset."""
    if not windows:
        return []
    cores = _cores(windows)
    scores = np.stack([w.scores for w in windows])  # [W, num_labels]
    found = []
    if not multi_label:
        top = scores.argmax(1)
        start = 0
        for index in range(1, len(windows) + 1):
            if index == len(windows) or top[index] != top[start]:
                run = scores[start:index, top[start]]
                found.append(Segment(cores[start][0], cores[index - 1][1], labels[top[start]], float(run.mean())))
                start = index
        return found
    for label_index, label in enumerate(labels):
        active = scores[:, label_index] >= threshold
        index = 0
        while index < len(windows):
            if not active[index]:
                index += 1
                continue
            end = index
            while end + 1 < len(windows) and active[end + 1]:
                end += 1
            peak = float(scores[index : end + 1, label_index].max())
            found.append(Segment(cores[index][0], cores[end][1], label, peak))
            index = end + 1
    return sorted(found, key=lambda s: (s.start, s.label))


# ----------------------------------------------------------------------------------------------------- classifier
class ElasticASTClassifier:
    """Classifies recordings of any length with bounded memory: file-level scores, per-window scores and segments.

    Example:
        classifier = ElasticASTClassifier.from_pretrained("path/or/repo")
        result = classifier.classify("meeting.wav", window=10.0, hop=5.0)
        print(result.top, result.segments)
    """

    def __init__(
        self,
        model: ElasticASTForAudioClassification,
        feature_extractor: ElasticASTFeatureExtractor,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        chunk_seconds: float = CHUNK_SECONDS,
        precision: str = "fp32",
    ):
        """`max_tokens`: tokens per forward call (windows are packed up to it); `chunk_seconds`: audio decoded and
        featurised per step. Both trade memory for per-call overhead; neither changes the results. `precision`:
        `fp32`, `bf16`, `int8` or `auto` (`elasticast.precision`; int8 quantizes the model's encoder in place)."""
        self.precision = resolve_precision(precision, model.device)
        self.model = apply_precision(model.eval(), self.precision, model.device)
        self.fe = feature_extractor
        self.max_tokens = max_tokens
        self.chunk_seconds = chunk_seconds
        config = model.config
        self.labels = [str(config.id2label.get(i, i)) for i in range(config.num_labels)]
        self.multi_label = config.problem_type == "multi_label_classification" or config.num_labels == 1
        self.aggregation = config.resolved_window_aggregation
        if feature_extractor.num_mel_bins != config.num_mel_bins or feature_extractor.patch_size != config.patch_size:
            raise ValueError("The feature extractor's mel bins or patch size differ from the model's config; load both "
                             "from the same folder.")

    @classmethod
    def from_pretrained(cls, path_or_repo, device=None, attn_implementation=None, precision: str = "fp32",
                        **hub_kwargs):
        """Loads model and feature extractor from a folder or Hub repo; `device` defaults to CUDA when present;
        `precision` as in `__init__`."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        resolve_precision(precision, device)  # a precision the hardware lacks fails before the weights load
        model = ElasticASTForAudioClassification.from_pretrained(
            path_or_repo, attn_implementation=attn_implementation, **hub_kwargs
        ).to(device)
        return cls(model, ElasticASTFeatureExtractor.from_pretrained(path_or_repo, **hub_kwargs), precision=precision)

    # ------------------------------------------------------------------------------------------------ internals
    def _activation(self, logits: torch.Tensor) -> torch.Tensor:
        # As the audio-classification pipeline: sigmoid for multi-label (and single-output) heads, softmax otherwise.
        return logits.sigmoid() if self.multi_label else logits.softmax(-1)

    def _patches(self, seconds: float | None, compression: float) -> int | None:
        if seconds is None:
            return None
        if seconds <= 0:
            raise ValueError(f"Window and hop must be positive seconds, got {seconds}.")
        patch_seconds = self.fe.patch_size * self.fe.frame_shift(compression) / self.fe.sampling_rate
        return max(1, math.floor(seconds / patch_seconds + 0.5))  # nearest whole patch, halves up

    def _forward(self, windows: list[tuple]) -> torch.Tensor:
        """Windows `(patches, freq_ids, time_ids)` → logits `[W, num_labels]`, packed under the token budget."""
        row = max(2048, max(len(w[0]) for w in windows))
        inputs = self.fe.layout([[w] for w in windows], packing=True, max_tokens_per_row=row)
        device, dtype = self.model.device, self.model.dtype
        inputs = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in inputs.items()}
        with torch.inference_mode(), autocast(self.precision, device):
            return self.model(**inputs).logits.float().cpu()

    def _stream(self, audio: _Audio, compression: float, window: float | None, hop: float | None, stats: dict):
        """Yields `(WindowResult, logits [num_labels])` in window order; fills `stats` (num_tokens)."""
        fe = self.fe
        if compression < 1:
            raise ValueError(f"Invalid compression {compression}: use C ≥ 1.")
        shift, rate, p = fe.frame_shift(compression), fe.sampling_rate, fe.patch_size
        raw = fe.raw_frames(audio.num_samples, compression)
        kept = fe.num_frames(audio.num_samples, compression, max_length=fe.max_length)  # whole patches, ≥ 1
        needed = min(raw, kept)  # frames to compute (fewer than `kept` only for a clip under one patch)
        plan = window_plan(kept // p, fe.max_window_patches(), self._patches(window, compression),
                           self._patches(hop, compression))
        frames = torch.zeros((0, fe.num_mel_bins))  # computed log-mel frames from `first_frame` on
        first_frame, computed, next_window = 0, 0, 0
        buffer = torch.zeros(0)  # samples from frame `computed` on
        pending: list[tuple[int, tuple]] = []

        def flush():
            logits = self._forward([tokens for _, tokens in pending])
            for (index, _), window_logits in zip(pending, logits):
                start, end = plan[index]  # in seconds: frame starts, so that adjacent windows share their edge
                scores = self._activation(window_logits).numpy()
                yield WindowResult(start * p * shift / rate, end * p * shift / rate, scores), window_logits
            pending.clear()

        def ready_windows():
            nonlocal next_window, frames, first_frame
            while next_window < len(plan) and min(plan[next_window][1] * p, needed) <= computed:
                start, end = plan[next_window]
                piece = frames[start * p - first_frame : min(end * p, needed) - first_frame]
                tokens = fe.window_tokens(fe.spectrogram(piece))
                stats["num_tokens"] += len(tokens[0])
                pending.append((next_window, tokens))
                next_window += 1
            if next_window < len(plan):  # drop frames no open window needs
                drop = plan[next_window][0] * p - first_frame
                if drop > 0:
                    frames, first_frame = frames[drop:], first_frame + drop

        done_samples = 0
        for chunk in audio.chunks():
            room = audio.num_samples - done_samples
            chunk = chunk[:room]  # never read past the planned length
            done_samples += len(chunk)
            buffer = torch.cat([buffer, chunk])
            count = min(fe.raw_frames(len(buffer), compression), needed - computed)
            if count > 0:
                new = fe.fbank_frames(buffer[: (count - 1) * shift + fe.frame_length], compression)
                frames = torch.cat([frames, new])
                computed += count
                buffer = buffer[count * shift :]
            ready_windows()
            if sum(len(tokens[0]) for _, tokens in pending) >= self.max_tokens:
                yield from flush()
            if computed >= needed and next_window == len(plan):
                break
        if computed < needed:
            raise ValueError(f"{audio.name}: the audio ended after {done_samples} of the {audio.num_samples} samples its "
                             "header announced (a truncated or damaged file); repair or re-encode it.")
        ready_windows()
        if pending:
            yield from flush()

    def _compression(self, compression: float | None) -> float:
        """C to use: the caller's, else the feature extractor's default (what the stock pipeline applies)."""
        compression = float(self.fe.compression if compression is None else compression)
        if compression != 1 and self.fe.compression_method != "frame_shift":
            raise ValueError(
                f"The streaming classifier compresses by frame shift only, but the feature extractor is set to "
                f"compression_method={self.fe.compression_method!r}; load it with compression_method='frame_shift' "
                "or classify short clips through the feature extractor directly."
            )
        return compression

    # ---------------------------------------------------------------------------------------------------- public
    def iter_windows(self, source, *, compression: float | None = None, window: float | None = None, hop: float | None = None,
                     sampling_rate: int | None = None) -> Iterator[WindowResult]:
        """Yields the `WindowResult`s of a recording in time order, as they are computed (see `classify`)."""
        audio = open_audio(source, self.fe, sampling_rate, self.chunk_seconds)
        for result, _ in self._stream(audio, self._compression(compression), window, hop, {"num_tokens": 0}):
            yield result

    def classify(
        self,
        source,
        *,
        compression: float | None = None,
        window: float | None = None,
        hop: float | None = None,
        top_k: int = 5,
        threshold: float = 0.5,
        progress: Callable[[float, float], None] | None = None,
        sampling_rate: int | None = None,
    ) -> ClassificationResult:
        """Classifies one recording, streaming it.

        Args:
            source: A path, a 1-D numpy array (pass `sampling_rate`), or a 🤗 datasets example / audio value.
            compression: Temporal compression C (frame shift 10·C ms): fewer tokens, less compute. None: the
                feature extractor's own default (`fe.compression`), the one the audio-classification pipeline uses.
            window, hop: Window length and hop in seconds (rounded to whole patches). Default: windows as wide as
                the model's position table (30.7 s at C = 1), near-equal, no overlap — the file-level scores then
                equal the audio-classification pipeline's. `window` alone: near-equal windows up to that length.
                With `hop` < `window` the windows overlap.
            top_k: How many (label, score) pairs `top` holds.
            threshold: Score a label must reach in a window to make an event (multi-label models).
            progress: Called as `progress(done_seconds, total_seconds)` whenever windows finish.

        File-level scores: the windows' logits combined by the config's `window_aggregation` (mean or max), then
        softmax (single-label) or sigmoid (multi-label), as the model does for a whole clip.
        """
        started = time.perf_counter()
        audio = open_audio(source, self.fe, sampling_rate, self.chunk_seconds)
        duration = audio.num_samples / self.fe.sampling_rate
        stats = {"num_tokens": 0}
        windows, total, count = [], None, 0
        compression = self._compression(compression)
        for result, logits in self._stream(audio, compression, window, hop, stats):
            windows.append(result)
            logits = logits.double()
            if total is None:
                total = logits.clone()
            elif self.aggregation == "max":
                total = torch.maximum(total, logits)
            else:
                total += logits
            count += 1
            if progress is not None:
                progress(min(result.end, duration), duration)
        file_logits = total if self.aggregation == "max" else total / count
        scores = self._activation(file_logits.float()).numpy()
        order = np.argsort(-scores, kind="stable")[: max(0, top_k)]
        return ClassificationResult(
            source=audio.name,
            duration=duration,
            scores=scores,
            top=[(self.labels[i], float(scores[i])) for i in order],
            windows=windows,
            segments=segments_of(windows, self.labels, self.multi_label, threshold),
            num_tokens=stats["num_tokens"],
            compute_seconds=time.perf_counter() - started,
            compression=float(compression),
            labels=self.labels,
        )


# ------------------------------------------------------------------------------------------------------- plotting
def _overview(source, fe: ElasticASTFeatureExtractor, columns: int, sampling_rate: int | None) -> tuple[np.ndarray, float]:
    """A log-mel picture `[num_mel_bins, ≤ columns]` of a whole recording, streamed (frames average-pooled into
    columns), and its duration in seconds."""
    audio = open_audio(source, fe, sampling_rate)
    total_frames = max(fe.raw_frames(audio.num_samples), 1)
    per_column = max(1, math.ceil(total_frames / columns))
    sums = np.zeros((math.ceil(total_frames / per_column), fe.num_mel_bins))
    counts = np.zeros(len(sums))
    buffer, frame = torch.zeros(0), 0
    shift = fe.frame_shift()
    for chunk in audio.chunks():
        buffer = torch.cat([buffer, chunk])
        count = fe.raw_frames(len(buffer))
        if count == 0:
            continue
        log_mel = fe.fbank_frames(buffer[: (count - 1) * shift + fe.frame_length]).numpy()
        buffer = buffer[count * shift :]
        index = np.minimum((frame + np.arange(count)) // per_column, len(sums) - 1)
        np.add.at(sums, index, log_mel)
        np.add.at(counts, index, 1)
        frame += count
    picture = sums[counts > 0] / counts[counts > 0, None]
    return picture.T, audio.num_samples / fe.sampling_rate


def plot_timeline(result: ClassificationResult, path_or_waveform, out_png, *, sampling_rate: int | None = None,
                  feature_extractor: ElasticASTFeatureExtractor | None = None, max_labels: int = 6,
                  threshold: float | None = None) -> Path:
    """Writes a PNG: the recording's log-mel spectrogram on top, the segments as labelled bands under it, and the
    per-window scores of the top labels over time (y from 0 to 1; chance dashed, and `threshold` if given, for
    multi-label models).

    `path_or_waveform`: the recording's path, or its 1-D waveform (pass `sampling_rate`, default 16 kHz).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fe = feature_extractor or ElasticASTFeatureExtractor()
    if not isinstance(path_or_waveform, (str, Path)) and sampling_rate is None:
        sampling_rate = fe.sampling_rate
    picture, duration = _overview(path_or_waveform, fe, 1600, sampling_rate)
    labels = result.labels or [str(i) for i in range(len(result.scores))]
    # score lines: the labels that hold most segment time, then the file's top labels, at most `max_labels`
    held: dict[str, float] = {}
    for segment in result.segments:
        held[segment.label] = held.get(segment.label, 0.0) + segment.end - segment.start
    ranked = sorted(held, key=held.get, reverse=True) + [label for label, _ in result.top]
    shown = [labels.index(label) for label in dict.fromkeys(ranked)][:max_labels]
    colours = {label: plt.cm.tab10(i % 10) for i, label in enumerate(labels)}

    figure, (top, bands, lines) = plt.subplots(
        3, 1, figsize=(13, 6), sharex=True, gridspec_kw={"height_ratios": [3, 0.8, 2.2]}
    )
    top.imshow(picture, origin="lower", aspect="auto", extent=(0, duration, 0, picture.shape[0]), cmap="magma")
    top.set(ylabel="mel bin", title=f"{Path(str(result.source)).name}: {', '.join(f'{l} {s:.2f}' for l, s in result.top[:3])}")
    for segment in result.segments:
        bands.axvspan(segment.start, segment.end, color=colours[segment.label], alpha=0.7)
        if segment.end - segment.start > duration / 60:
            bands.text((segment.start + segment.end) / 2, 0.5, segment.label, ha="center", va="center", fontsize=9,
                       clip_on=True)
    bands.set(yticks=[], ylabel="segments", ylim=(0, 1))
    centres = [(w.start + w.end) / 2 for w in result.windows]
    for index in shown:
        lines.plot(centres, [w.scores[index] for w in result.windows], "o-", ms=3, color=colours[labels[index]],
                   label=labels[index])
    chance = 1 / max(len(labels), 1)
    lines.axhline(chance, ls="--", color="grey", lw=1, label=f"chance ({chance:.2f})")
    if threshold is not None:
        lines.axhline(threshold, ls=":", color="black", lw=1, label=f"threshold ({threshold:.2f})")
    lines.set(ylim=(0, 1), xlim=(0, duration), xlabel="time (s)", ylabel="window score")
    lines.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    figure.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=110)
    plt.close(figure)
    return out_png


__all__ = [
    "ClassificationResult",
    "ElasticASTClassifier",
    "Segment",
    "WindowResult",
    "open_audio",
    "plot_timeline",
    "segments_of",
    "window_plan",
]
