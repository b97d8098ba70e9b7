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
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .configuration_elasticast import apply_score_function
from .events import EventOptions, detect_events, model_event_options
from .feature_extraction_elasticast import MIN_SAMPLING_RATE, ElasticASTFeatureExtractor
from .modeling_elasticast import ElasticASTForAudioClassification
from .precision import apply_precision, autocast, resolve_precision

# Codecs whose container header gives the exact number of samples (duration × rate is exact there).
EXACT_LENGTH_CODECS = ("pcm_", "flac")
CHUNK_SECONDS = 20.0  # default audio per decoded chunk (torchcodec range call)
DEFAULT_MAX_TOKENS = 8192  # tokens per forward call (several base-size windows of 1536 tokens)
LIVE_BUFFER_SECONDS = 30.0  # audio a live stream may buffer before computing frames (bounds memory for long windows)


# ------------------------------------------------------------------------------------------------------- results
def top_labels(scores: np.ndarray, labels: list[str], k: int) -> list[tuple[str, float]]:
    """The `k` best `(label, score)` pairs of scores `[num_labels]`, best first (ties in label order)."""
    return [(labels[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")[: max(0, k)]]


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
    header_duration: float | None = None  # set (with `warning`) when the decoded length differs from the header's
    warning: str | None = None

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
        if self.warning:
            out["header_duration"] = None if self.header_duration is None else round(self.header_duration, 6)
            out["warning"] = self.warning
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
    header_seconds: float | None = None  # what the container's header announced (files only)
    warning: str | None = None  # the decoded length differs from the header's
    recount: Callable[[], "_Audio"] | None = None  # the same recording with its length counted by decoding


class _LengthMismatch(Exception):
    """The decoded stream is shorter or longer than the length the windows were planned for."""


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


def _decoded_pieces(open_decoder: Callable, chunk_seconds: float, name: str = "<audio>") -> Iterator[np.ndarray]:
    """Mono float32 pieces (channels averaged) of a fresh torchcodec `AudioDecoder` at its native rate, about
    `chunk_seconds` each, decoded front to back.

    Sequential decoding goes through torchcodec's core `get_next_frame` (torchcodec is pinned): the public
    `get_samples_played_in_range` re-decodes from the file's start whenever a range begins before the decoder's
    position — which consecutive ranges always do, since the last packet straddles the boundary — so its cost per
    call grows with the offset (measured: 0.02 s per 20-s range at the start of a 40-min WAV, 0.1-0.3 s at its end),
    quadratic over hours of audio. Concatenated, the pieces equal `get_all_samples()` exactly (checked on WAV, FLAC
    and MP3).

    Raises ValueError naming the time of the first NaN/Inf sample (a float file holding them, or float64 samples
    beyond float32's range, which become Inf here).
    """
    from torchcodec import _core

    decoder = open_decoder()
    rate = decoder.metadata.sample_rate
    step = max(1, int(chunk_seconds * rate))
    pending, size, offset = [], 0, 0
    while True:
        try:
            samples = _core.get_next_frame(decoder._decoder)[0]  # [channels, n] of one packet
        except IndexError:  # torchcodec's end of stream
            break
        mono = samples.mean(0)
        _check_finite(mono, offset, rate, name)
        offset += len(mono)
        pending.append(mono)
        size += samples.shape[1]
        if size >= step:
            yield torch.cat(pending).numpy()
            pending, size = [], 0
    if pending:
        yield torch.cat(pending).numpy()


def _check_finite(samples: torch.Tensor, offset: int, rate: int, name: str) -> None:
    finite = torch.isfinite(samples)
    if not bool(finite.all()):
        first = offset + int((~finite).nonzero()[0, 0])
        raise ValueError(f"{name}: sample {first} (at {first / rate:.3f} s) is NaN or Inf after decoding; the file is "
                         "damaged or holds float samples out of range — repair or re-encode it.")


def _length_note(header: float | None, decoded: float) -> str | None:
    if header is None:
        return None
    return (f"the header announces {header:.3f} s but {decoded:.3f} s of audio were decoded (a truncated or damaged "
            "file?); classified on the decoded audio")


def _riff_declared_frames(path: Path) -> int | None:
    """The frame count a RIFF/WAVE file's `data` chunk declares (None if not a plain WAV or no size is declared).

    Neither ffmpeg (torchcodec) nor libsndfile reports it: both clip the length to what the file holds, so a
    truncated WAV would be classified on what is left without a word. A few lines of chunk walking (the format is
    fixed) tell the two apart."""
    import struct

    try:
        with open(os.fsencode(path), "rb") as handle:
            if handle.read(12)[8:] != b"WAVE" or handle.seek(0) != 0 or handle.read(4) != b"RIFF":
                return None
            handle.seek(12)
            block_align = None
            while True:
                head = handle.read(8)
                if len(head) < 8:
                    return None
                kind, size = head[:4], struct.unpack("<I", head[4:])[0]
                if kind == b"fmt ":
                    block_align = struct.unpack("<H", handle.read(16)[12:14])[0]
                    handle.seek(size - 16 + (size & 1), 1)
                elif kind == b"data":
                    if not block_align or size in (0, 0xFFFFFFFF):  # a streamed WAV's placeholder sizes
                        return None
                    return size // block_align
                else:
                    handle.seek(size + (size & 1), 1)
    except (OSError, struct.error):
        return None


def _decoder_audio(open_decoder: Callable, name: str, target: int, chunk_seconds: float,
                   declared_frames: int | None = None) -> _Audio:
    metadata = open_decoder().metadata
    rate = metadata.sample_rate
    if not isinstance(rate, int) or rate < MIN_SAMPLING_RATE:
        raise ValueError(f"{name}: sampling rate {rate} Hz is below {MIN_SAMPLING_RATE} Hz (a damaged header?); "
                         "re-encode the file at its real rate.")
    codec = metadata.codec or ""
    duration = metadata.duration_seconds_from_header

    def pieces():
        return _resampling(_decoded_pieces(open_decoder, chunk_seconds, name), rate, target)

    def counted(header: float | None, exact: bool) -> _Audio:
        native = sum(len(piece) for piece in _decoded_pieces(open_decoder, chunk_seconds, name))  # counting pass
        if native == 0:
            raise ValueError(f"{name}: the file holds no audio samples; drop it or pass audio.")
        # Headers of compressed formats hold estimates (encoder delay and padding): only a clear gap is reported.
        gap = abs(native / rate - header) if header is not None else 0.0
        off = native != round(header * rate) if exact else gap > max(0.1, 0.01 * header)
        return _Audio(name, _resampled_length(native, rate, target), pieces, header,
                      _length_note(header, native / rate) if off else None)

    if codec.startswith(EXACT_LENGTH_CODECS) and duration is not None:
        native = round(duration * rate)
        if native == 0:
            return counted(duration, True)
        header, warning = duration, None
        if declared_frames is not None and declared_frames != native:  # a WAV cut short (ffmpeg clips to the file)
            header, warning = declared_frames / rate, _length_note(declared_frames / rate, native / rate)
        return _Audio(name, _resampled_length(native, rate, target), pieces, header, warning,
                      recount=lambda: counted(duration, True))
    return counted(duration, False)


def decoder_source(path: Path):
    """What torchcodec opens for a path: its text, or (a name that is not valid UTF-8, which torchcodec's C++ side
    cannot take) the open file."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return open(os.fsencode(text), "rb")  # noqa: SIM115 (the decoder owns it; closed with it)
    return text


def _array_audio(array, sampling_rate, fe: ElasticASTFeatureExtractor, name: str, chunk_seconds: float) -> _Audio:
    # The extractor's own checks (1-D, finite, non-empty, integer PCM scaling) and resampling; the array is in memory
    # already, so it is resampled whole and handed out in chunks.
    wave = fe._to_waveforms(array, sampling_rate, device="cpu")[0].float()
    _check_finite(wave, 0, fe.sampling_rate, name)  # float64 samples beyond float32's range became Inf
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
            AudioDecoder(decoder_source(path))
        except Exception as error:  # torchcodec raises ValueError/RuntimeError depending on the container
            raise ValueError(f"{path}: cannot decode audio ({error}); is it an audio file (ffmpeg must read it)?") from error
        return _decoder_audio(lambda: AudioDecoder(decoder_source(path)), str(path), fe.sampling_rate, chunk_seconds,
                              _riff_declared_frames(path))
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


def segments_of(windows: list[WindowResult], labels: list[str], multi_label: bool,
                threshold: float | None = None, options: EventOptions | None = None) -> list[Segment]:
    """Single-label: runs of windows with the same top label (mean top score). Multi-label: per label, runs of
    windows scoring ≥ threshold (peak score), ordered by onset. `options` (`elasticast.events.EventOptions`: per-class
    thresholds, hysteresis, merge gap, minimum duration, label lists) replaces `threshold` when given; the events
    come from `elasticast.events.detect_events`, the one post-processing of every entry point."""
    options = options or EventOptions(threshold=threshold)
    events = detect_events([w.start for w in windows], [w.end for w in windows],
                           np.stack([w.scores for w in windows]) if windows else np.zeros((0, len(labels))),
                           labels, multi_label, options)
    return [Segment(e.start, e.end, e.label, e.score) for e in events]


# ------------------------------------------------------------------------------------------------------ windowing
class _Windower:
    """The streaming core shared by `classify` (length known up front) and `stream`/`LiveStream` (length unknown):
    mono float32 pieces at the extractor's rate go in through `push`, `(WindowResult, logits [num_labels])` come out
    in window order.

    Kaldi fbank frames are computed as samples arrive (keeping the `frame_length - frame_shift` samples the next frame
    needs); a window is cut, tokenised and queued as soon as its last frame exists; queued windows go through the
    model when `eager` (after every push: results as early as possible) or once they fill the token budget
    (throughput). Only the frames of windows still open are held.

    Layouts: with `num_samples` the plan is `window_plan` of the whole length (near-equal windows without a hop).
    Without it (a live stream) windows sit on the fixed grid `k·hop … k·hop + window` (hop defaults to the window);
    `finish` then knows the length and emits what `window_plan` with that hop adds at the end: one last window from
    the next grid start to the end of the audio, shorter than the others, unless a full window already ended there.
    Both layouts are `window_plan`'s, so a live stream equals `classify(..., window=w, hop=h)` of the same audio.
    """

    def __init__(self, classifier: "ElasticASTClassifier", compression: float, window: float | None,
                 hop: float | None, num_samples: int | None = None, eager: bool = False):
        fe = self.fe = classifier.fe
        fe.check_compression(compression)
        self.classifier, self.compression, self.eager = classifier, compression, eager
        self.shift, self.p = fe.frame_shift(compression), fe.patch_size
        self.max_patches = fe.max_window_patches()
        self.width = classifier._patches(window, compression)
        self.hop = classifier._patches(hop, compression)
        self.num_samples = num_samples
        if self.hop is not None and self.hop > (self.max_patches if self.width is None else self.width):
            raise ValueError(f"The hop ({hop} s) is longer than the window ({window or 'the time table'} s): audio "
                             "between windows would go unheard; pass a hop no longer than the window.")
        if num_samples is None:  # live: fixed grid, the plan's length is known only at the end
            self.width = self.max_patches if self.width is None else self.width
            self.hop = self.width if self.hop is None else self.hop
            if not 1 <= self.width <= self.max_patches:
                raise ValueError(f"A window of {self.width} time patches does not fit the model's time table "
                                 f"({self.max_patches} patches); pass a shorter window.")
            self.plan = None
            # frames to compute: all of them, or up to the extractor's `max_length` cap (the stream then ends there)
            self.needed = math.inf if fe.max_length is None else fe.max_length
        else:
            self._set_plan(num_samples)
        self.frames = torch.zeros((0, fe.num_mel_bins))  # computed log-mel frames from `first_frame` on
        self.first_frame = self.computed = self.next_window = self.done_samples = self.num_tokens = 0
        self.buffer = torch.zeros(0)  # samples from frame `computed` on
        self.pending: list[tuple[tuple[int, int], tuple]] = []  # ((start, end) in patches, tokens)

    def _set_plan(self, num_samples: int) -> None:
        """The window plan and the frames to compute for audio of `num_samples` samples."""
        fe = self.fe
        raw = fe.raw_frames(num_samples, self.compression)
        kept = fe.num_frames(num_samples, self.compression, max_length=fe.max_length)  # whole patches, ≥ 1
        self.needed = min(raw, kept)  # fewer than `kept` only for a clip under one patch
        self.plan = window_plan(kept // self.p, self.max_patches, self.width, self.hop)

    def _window(self, index: int) -> tuple[int, int] | None:
        if self.plan is not None:
            return self.plan[index] if index < len(self.plan) else None
        return index * self.hop, index * self.hop + self.width

    @property
    def done(self) -> bool:
        """All the frames any window needs are computed (and, with a plan, every window is queued)."""
        return self.computed >= self.needed and (self.plan is None or self.next_window == len(self.plan))

    def push(self, chunk: torch.Tensor) -> Iterator[tuple[WindowResult, torch.Tensor]]:
        """Adds mono float32 samples `[n]` at the extractor's rate; yields the windows they complete (see `eager`)."""
        if self.num_samples is not None:  # a file: its header's length is checked, never trusted silently
            if len(chunk) > self.num_samples - self.done_samples:
                raise _LengthMismatch()  # more audio than the header announced
            self.done_samples += len(chunk)
            if self.computed >= self.needed:
                return  # every frame a window needs is computed (or the `max_length` cap is reached)
        elif self.computed >= self.needed:
            return  # live: the `max_length` cap is reached, the rest is not used
        else:
            self.done_samples += len(chunk)
        self.buffer = torch.cat([self.buffer, chunk])
        self._compute_frames(defer=self.eager)
        self._queue_ready()
        if self.pending and (self.eager or sum(len(t[0]) for _, t in self.pending) >= self.classifier.max_tokens):
            yield from self._flush()

    def _compute_frames(self, defer: bool):
        """Fbank of every whole frame in the buffer (up to `needed`). With `defer` (live input, which comes in small
        chunks of 10-100 ms), only once the next window can complete: the same frames in one call instead of a
        few per chunk — far fewer small calls, no later result — unless the buffer grows past
        `LIVE_BUFFER_SECONDS`."""
        fe = self.fe
        count = min(fe.raw_frames(len(self.buffer), self.compression), self.needed - self.computed)
        if (defer and (bounds := self._window(self.next_window)) is not None
                and len(self.buffer) < LIVE_BUFFER_SECONDS * fe.sampling_rate):
            if self.computed + count < min(bounds[1] * self.p, self.needed):
                return
        if count > 0:
            count = int(count)
            new = fe.fbank_frames(self.buffer[: (count - 1) * self.shift + fe.frame_length], self.compression)
            self.frames = torch.cat([self.frames, new])
            self.computed += count
            self.buffer = self.buffer[count * self.shift :]

    def finish(self) -> Iterator[tuple[WindowResult, torch.Tensor]]:
        """The end of the audio: yields the windows still open (the last one possibly shorter)."""
        if self.plan is None:
            if self.done_samples == 0:
                return  # nothing arrived: no window
            self.num_samples = self.done_samples
            self._set_plan(self.done_samples)
        if self.done_samples < self.num_samples:
            raise _LengthMismatch()  # fewer samples than the header announced (the caller decodes again)
        self._compute_frames(defer=False)
        self._queue_ready()
        if self.pending:
            yield from self._flush()

    def _queue_ready(self):
        fe, p = self.fe, self.p
        while (bounds := self._window(self.next_window)) is not None:
            if min(bounds[1] * p, self.needed) > self.computed:
                break  # the next window's last frame is not there yet
            start, end = bounds
            piece = self.frames[start * p - self.first_frame : min(end * p, self.needed) - self.first_frame]
            tokens = fe.window_tokens(fe.spectrogram(piece))
            self.num_tokens += len(tokens[0])
            self.pending.append((bounds, tokens))
            self.next_window += 1
        if (bounds := self._window(self.next_window)) is not None:  # drop frames no open window needs
            drop = bounds[0] * p - self.first_frame
            if drop > 0:
                self.frames, self.first_frame = self.frames[drop:], self.first_frame + drop

    def _flush(self) -> Iterator[tuple[WindowResult, torch.Tensor]]:
        pending, self.pending = self.pending, []
        logits = self.classifier._forward([tokens for _, tokens in pending])
        patch_seconds = self.fe.seconds_per_patch(self.compression)
        for ((start, end), _), window_logits in zip(pending, logits):
            scores = self.classifier._activation(window_logits).numpy()
            # in seconds: frame starts, so that adjacent windows share their edge
            yield WindowResult(start * patch_seconds, end * patch_seconds, scores), window_logits


# ------------------------------------------------------------------------------------------------------ live audio
class LiveStream:
    """Audio pushed as it arrives → window results as soon as each window's last sample is in (the push side of
    `ElasticASTClassifier.stream`; what a callback-driven source such as a Gradio microphone stream uses).

    Made by `ElasticASTClassifier.live(sampling_rate, window=..., hop=...)`. Windows lie on the fixed grid
    `k·hop … k·hop + window` from the first sample on; `close` emits the last, shorter window that covers the audio
    after the last full one (as `classify` with the same window and hop ends a file). Memory: the frames of the open
    windows, the samples of one fbank frame and the resampler's state — constant however long the stream runs.

    Latency: a window's result comes out of the `push` that delivers its last sample (its last fbank frame), after
    one forward pass. Audio at another rate goes through soxr's streaming resampler (the one `classify` uses), whose
    filter holds back a few milliseconds of output until more input arrives (flushed by `close`).
    """

    def __init__(self, classifier: "ElasticASTClassifier", sampling_rate: int, *, window: float | None = None,
                 hop: float | None = None, compression: float | None = None):
        if not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
            raise ValueError(f"sampling_rate must be a positive integer number of samples per second, got "
                             f"{sampling_rate!r}.")
        self.classifier = classifier
        self.sampling_rate = int(sampling_rate)
        self.compression = classifier._compression(compression)
        self._windower = _Windower(classifier, self.compression, window, hop, eager=True)
        target = classifier.fe.sampling_rate
        self._resampler = None
        if self.sampling_rate != target:
            import soxr

            self._resampler = soxr.ResampleStream(self.sampling_rate, target, 1, dtype="float32")
        self._channels: int | None = None
        self.samples_in = 0  # samples received, at `sampling_rate`
        self.closed = False

    @property
    def seconds_in(self) -> float:
        """Seconds of audio received so far."""
        return self.samples_in / self.sampling_rate

    @property
    def full(self) -> bool:
        """True once the feature extractor's `max_length` cap (frames) is reached: later audio is not used."""
        return self._windower.done

    def _mono(self, chunk) -> np.ndarray:
        """A chunk `[n]` or `[n, channels]` (numpy or torch, float or integer PCM) → float32 mono `[n]`."""
        if isinstance(chunk, torch.Tensor):
            chunk = chunk.detach().cpu().numpy()
        array = ElasticASTFeatureExtractor._as_float_array(chunk, self.samples_in)
        if array.ndim == 2:
            # (samples, channels): the layout of sounddevice, soundfile and Gradio's microphone stream
            if self._channels is None:
                self._channels = array.shape[1]
            if array.shape[1] != self._channels:
                raise ValueError(f"A chunk of shape {array.shape} after chunks of {self._channels} channel(s): pass "
                                 "chunks as [samples] or [samples, channels] with a fixed number of channels "
                                 "(transpose channel-first audio: `chunk.T`).")
            array = array.mean(axis=1)
        elif array.ndim != 1:
            raise ValueError(f"A chunk of shape {array.shape}: pass [samples] (mono) or [samples, channels].")
        if not np.isfinite(array).all():
            raise ValueError(f"The chunk after {self.samples_in} samples holds NaN or Inf; clean the source.")
        return np.ascontiguousarray(array, dtype=np.float32)

    def push(self, chunk) -> list[WindowResult]:
        """Adds a chunk of audio (any size, even empty); returns the windows it completes, in time order."""
        if self.closed:
            raise RuntimeError("This live stream is closed; start a new one with `classifier.live(...)`.")
        mono = self._mono(chunk)
        self.samples_in += len(mono)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono)
        return [result for result, _ in self._windower.push(torch.from_numpy(mono))]

    def close(self) -> list[WindowResult]:
        """Ends the stream: returns the windows still open (the last one possibly shorter). Idempotent."""
        if self.closed:
            return []
        self.closed = True
        results = []
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            results += [result for result, _ in self._windower.push(torch.from_numpy(tail))]
        return results + [result for result, _ in self._windower.finish()]


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
        compile: bool | str = False,
        precision: str = "fp32",
    ):
        """`max_tokens`: tokens per forward call (windows are packed up to it); `chunk_seconds`: audio decoded and
        featurised per step. Both trade memory for per-call overhead; neither changes the results.

        `compile`: run the packed forward through `torch.compile(model, fullgraph=True)` (True: inductor; a string
        names another backend), with each call's layout built outside the compiled region (`model.packed_layout`).
        Every new packed layout compiles once (minutes on CPU for ElasticAST-base); a long recording repeats one
        layout for all its full chunks, so it pays off there. Measured: benchmark record `compile_base`
        (`python -m benchmarks.compile_speed`).

        `precision`: `fp32`, `bf16`, `int8` or `auto` (`elasticast.precision`; int8 quantizes the model's encoder in
        place)."""
        self.precision = resolve_precision(precision, model.device)
        self.model = apply_precision(model.eval(), self.precision, model.device)
        self._compiled = None
        if compile:
            self._compiled = torch.compile(self.model, fullgraph=True,
                                           backend="inductor" if compile is True else compile)
        self.fe = feature_extractor
        self.max_tokens = max_tokens
        self.chunk_seconds = chunk_seconds
        config = model.config
        self.labels = [str(config.id2label.get(i, i)) for i in range(config.num_labels)]
        self.multi_label = config.problem_type == "multi_label_classification"
        self.score_function = config.score_function
        self.aggregation = config.resolved_window_aggregation
        if feature_extractor.num_mel_bins != config.num_mel_bins or feature_extractor.patch_size != config.patch_size:
            raise ValueError("The feature extractor's mel bins or patch size differ from the model's config; load both "
                             "from the same folder.")

    @classmethod
    def from_pretrained(cls, path_or_repo, device=None, attn_implementation=None, compile: bool | str = False,
                        precision: str = "fp32", max_tokens: int = DEFAULT_MAX_TOKENS,
                        chunk_seconds: float = CHUNK_SECONDS, **hub_kwargs):
        """Loads model and feature extractor from a folder or Hub repo; `device` defaults to CUDA when present;
        `compile`, `precision`, `max_tokens` and `chunk_seconds` as in the constructor."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        resolve_precision(precision, device)  # a precision the hardware lacks fails before the weights load
        from .loading import from_pretrained_strict  # weights that do not match the architecture are refused

        model = from_pretrained_strict(
            ElasticASTForAudioClassification, path_or_repo, attn_implementation=attn_implementation, **hub_kwargs
        ).to(device)
        return cls(model, ElasticASTFeatureExtractor.from_pretrained(path_or_repo, **hub_kwargs), max_tokens=max_tokens,
                   chunk_seconds=chunk_seconds, compile=compile, precision=precision)

    # ------------------------------------------------------------------------------------------------ internals
    def _activation(self, logits: torch.Tensor) -> torch.Tensor:
        return apply_score_function(logits, self.score_function)

    def _patches(self, seconds: float | None, compression: float) -> int | None:
        if seconds is None:
            return None
        if seconds <= 0:
            raise ValueError(f"Window and hop must be positive seconds, got {seconds}.")
        patch_seconds = self.fe.seconds_per_patch(compression)
        return max(1, math.floor(seconds / patch_seconds + 0.5))  # nearest whole patch, halves up

    def _forward(self, windows: list[tuple]) -> torch.Tensor:
        """Windows `(patches, freq_ids, time_ids)` → logits `[W, num_labels]`, packed under the token budget."""
        row = max(2048, max(len(w[0]) for w in windows))
        inputs = self.fe.layout([[w] for w in windows], packing=True, max_tokens_per_row=row)
        device, dtype = self.model.device, self.model.dtype
        inputs = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in inputs.items()}
        with torch.inference_mode(), autocast(self.precision, device):
            if self._compiled is None:
                return self.model(**inputs).logits.float().cpu()
            layout = self.model.packed_layout(inputs["segment_ids"], inputs["freq_ids"], inputs["time_ids"],
                                              inputs["clip_ids"])
            return self._compiled(**inputs, layout=layout).logits.float().cpu()

    def _stream(self, audio: _Audio, compression: float, window: float | None, hop: float | None, stats: dict):
        """Yields `(WindowResult, logits [num_labels])` in window order; fills `stats` (num_tokens)."""
        windower = _Windower(self, compression, window, hop, num_samples=audio.num_samples, eager=False)
        for chunk in audio.chunks():  # read to the end even when every window is out: a longer stream than the
            yield from windower.push(chunk)  # header announced raises _LengthMismatch (the caller decodes again)
        yield from windower.finish()
        stats["num_tokens"] += windower.num_tokens

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
        try:
            for result, _ in self._stream(audio, self._compression(compression), window, hop, {"num_tokens": 0}):
                yield result
        except _LengthMismatch:
            # Windows already handed out cannot be taken back: say so instead of planning them again.
            counted = audio.recount()
            raise ValueError(f"{audio.name}: {_length_note(audio.header_seconds, counted.num_samples / self.fe.sampling_rate)}"
                             " — the windows above follow the header; use `classify`, which decodes to the real "
                             "end.") from None

    def live(self, sampling_rate: int, *, window: float | None = None, hop: float | None = None,
             compression: float | None = None) -> LiveStream:
        """A `LiveStream` to push audio into as it arrives (callbacks); see `stream` for the arguments."""
        return LiveStream(self, sampling_rate, window=window, hop=hop, compression=compression)

    def stream(self, chunks, sampling_rate: int, *, window: float | None = None, hop: float | None = None,
               compression: float | None = None) -> Iterator[WindowResult]:
        """Classifies live audio: yields each window's result as soon as its last sample has arrived.

        Args:
            chunks: Any iterable of audio chunks in time order — numpy arrays or torch tensors, `[n]` (mono) or
                `[n, channels]` (averaged), float or integer PCM (scaled as the feature extractor does), any size.
                It is read lazily: a chunk is pulled only after the windows of the previous one are yielded.
            sampling_rate: The chunks' rate; other rates than the extractor's go through soxr's streaming
                resampler, as in `classify`.
            window: Window length in seconds (rounded to whole patches). Default: the model's time table
                (30.7 s at C = 1).
            hop: Seconds from one window's start to the next (≤ `window`). Default: `window` (no overlap).
            compression: Temporal compression C; default the feature extractor's.

        Yields:
            `WindowResult(start, end, scores [num_labels])`, `start`/`end` in seconds of audio from the first
            sample. Windows lie on the grid `k·hop … k·hop + window`; when the chunks end, one last window covers
            the audio after the last full one (shorter, unless a full window ended there). Only the open windows'
            frames are held, however long the stream.

        A recording fed as chunks gives exactly `classify(recording, window=window, hop=hop or window)`'s windows
        and scores. What differs from `classify(recording, window=window)` without a hop: that one splits the
        known length into near-equal windows, which a stream of unknown length cannot do.
        """
        live = self.live(sampling_rate, window=window, hop=hop, compression=compression)
        for chunk in chunks:
            yield from live.push(chunk)
            if live.full:
                break
        yield from live.close()

    def classify(
        self,
        source,
        *,
        compression: float | None = None,
        window: float | None = None,
        hop: float | None = None,
        top_k: int = 5,
        threshold: float | None = None,
        progress: Callable[[float, float], None] | None = None,
        sampling_rate: int | None = None,
        min_confidence: float | None = None,
        events: EventOptions | None = None,
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
            threshold: Score a label must reach in a window to make an event (multi-label models). None: the
                model's calibrated per-class thresholds (`config.class_thresholds`, `elasticast calibrate`), else 0.5.
            min_confidence: Single-label models: windows whose top score is below it are "unknown" in the segments.
                None: the model's calibrated `config.min_confidence`, else none.
            events: Full event post-processing (`elasticast.events.EventOptions`: thresholds, hysteresis, merge gap,
                minimum duration, label lists); replaces `threshold` and `min_confidence` when given.
            progress: Called as `progress(done_seconds, total_seconds)` whenever windows finish.

        File-level scores: the windows' logits combined by the config's `window_aggregation` (mean or max), then
        scored by the head's `config.score_function` (softmax, sigmoid, or none for regression), as the pipeline does.
        """
        started = time.perf_counter()
        audio = open_audio(source, self.fe, sampling_rate, self.chunk_seconds)
        compression = self._compression(compression)
        try:
            windows, total, count, stats = self._collect(audio, compression, window, hop, progress)
        except _LengthMismatch:  # the header's length was wrong: decode to the real end and plan again
            audio = audio.recount()
            windows, total, count, stats = self._collect(audio, compression, window, hop, progress)
        duration = audio.num_samples / self.fe.sampling_rate
        if audio.warning:
            warnings.warn(f"{audio.name}: {audio.warning}", stacklevel=2)
        file_logits = total if self.aggregation == "max" else total / count
        scores = self._activation(file_logits.float()).numpy()
        return ClassificationResult(
            source=audio.name,
            duration=duration,
            scores=scores,
            top=top_labels(scores, self.labels, top_k),
            windows=windows,
            segments=segments_of(windows, self.labels, self.multi_label, options=events or model_event_options(
                self.model.config, threshold=threshold, min_confidence=min_confidence)),
            num_tokens=stats["num_tokens"],
            compute_seconds=time.perf_counter() - started,
            compression=float(compression),
            labels=self.labels,
            header_duration=audio.header_seconds,
            warning=audio.warning,
        )

    def _collect(self, audio: _Audio, compression: float, window, hop, progress):
        """Streams `audio`: its windows, the logits aggregated over them `[num_labels]`, their count and stats."""
        duration = audio.num_samples / self.fe.sampling_rate
        stats = {"num_tokens": 0}
        windows, total, count = [], None, 0
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
        return windows, total, count, stats


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
    "LiveStream",
    "Segment",
    "WindowResult",
    "open_audio",
    "plot_timeline",
    "segments_of",
    "window_plan",
]
