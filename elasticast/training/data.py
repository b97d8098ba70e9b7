"""Training clips: a split's stream → labelled, decoded, mode-transformed clips, in an order that can be replayed.

Pipeline per data slot (see `slot_stream`): `elasticast.data.load_split` (streaming, audio column undecoded) →
`shuffle(seed, buffer_size)` + `set_epoch` → `split_dataset_by_node(slot, num_slots)` → `ClipSource` (own torchcodec
decode at the feature extractor's rate in a try/except, so a broken file becomes a counted skip instead of ending
the stream; label encoding; the mode's crop / pad / compression draw) → optional DataLoader workers →
`ordered_clips` (one deterministic order whatever the number of workers).

Every random draw of a clip comes from a generator seeded by (seed, epoch, slot, worker, position), so a replayed
stream gives the same clips: exact resume needs no RNG state for the data side.
"""

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..data import decode_audio
from ..feature_extraction_elasticast import ElasticASTFeatureExtractor

# `datasets` is imported where streams are made, so that batching and collation work without it.


MODES = ("native", "mixed", "avgpool", "fixed")


def slot_stream(stream, slot: int, num_slots: int, epoch: int, seed: int, shuffle_buffer: int | None):
    """The examples of data slot `slot` of `num_slots` (rank × accumulation micro-step) for `epoch`."""
    from datasets.distributed import split_dataset_by_node

    if shuffle_buffer:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
    stream = split_dataset_by_node(stream, rank=slot, world_size=num_slots)
    stream.set_epoch(epoch)
    return stream


@dataclass
class ClipTransform:
    """What a mode does to a decoded clip before feature extraction.

    mode: "native" (cut to `max_seconds` only when longer), "mixed" (frame-shift compression C drawn per clip from
        `compressions`), "avgpool" (integer C drawn from `compressions`, average pooling), "fixed" (cut to exactly
        `fixed_frames` frames; shorter clips are zero-padded when `pad` is set, else left for the collator).
    train: random crop offsets and C draws; otherwise crops start at 0 and C = `eval_compression`.
    """

    mode: str
    fe: ElasticASTFeatureExtractor  # its frame arithmetic (`raw_frames`, `num_samples`) and sampling rate
    max_seconds: float | None = 30.0
    fixed_frames: int = 1024
    compressions: tuple[float, ...] = (1.0,)
    eval_compression: float = 1.0
    pad: bool = True
    train: bool = True

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}.")
        if self.mode == "avgpool" and any(c != int(c) or c < 1 for c in self.compressions):
            raise ValueError(f"avgpool compressions must be integers ≥ 1, got {self.compressions}.")

    @property
    def sampling_rate(self) -> int:
        return self.fe.sampling_rate

    @property
    def compression_method(self) -> str:
        return "avg_pool" if self.mode == "avgpool" else "frame_shift"

    def frames(self, num_samples: int, compression: float) -> int:
        """Kaldi frame count (snip_edges) of `num_samples` at compression C (after pooling for avgpool)."""
        return self.fe.raw_frames(num_samples, compression, self.compression_method)

    def native_samples(self, num_samples: int) -> int:
        """Samples a clip of `num_samples` keeps in native mode (cut to `max_seconds` only), in every mode."""
        if self.max_seconds is None:
            return num_samples
        return min(num_samples, int(round(self.max_seconds * self.sampling_rate)))

    def __call__(self, wave: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, float, int, int]:
        """`wave [n]` → (transformed wave, C, frames of the whole clip at C, frames of real audio kept at C)."""
        n = wave.numel()
        if not self.train:
            compression = self.eval_compression
        elif self.mode in ("mixed", "avgpool"):
            choices = self.compressions
            if self.mode == "avgpool":  # pooling needs at least C frames
                choices = [c for c in choices if c <= max(1, self.frames(n, 1))]
            compression = float(choices[rng.integers(len(choices))])
        else:
            compression = 1.0
        full = self.frames(n, compression)
        if self.mode == "fixed":
            keep = self.fe.num_samples(self.fixed_frames)
        elif self.max_seconds is not None:
            keep = int(round(self.max_seconds * self.sampling_rate))
        else:
            keep = n
        if n > keep:
            start = int(rng.integers(n - keep + 1)) if self.train else 0
            wave = wave[start : start + keep]
        audio = self.frames(wave.numel(), compression)
        if self.mode == "fixed" and self.pad and wave.numel() < keep:
            wave = torch.nn.functional.pad(wave, (0, keep - wave.numel()))
        return wave, compression, full, audio


# ------------------------------------------------------------------------------------------------------------ clips
@dataclass
class Clip:
    """One example of a slot stream, decoded or not.

    key: `(worker, position)` — position counts the examples a DataLoader worker read from its shards.
    wave `[n]`: transformed waveform at the feature extractor's rate (None when decoding failed; `error` says why).
    label: class index, or sorted list of indices (multi-label).
    full_frames / audio_frames: frames of the whole clip / of the real audio in `wave`, at `compression`.
    native_samples: samples the clip keeps at native resolution (cut to `max_seconds` only), whatever the mode: what
        the batch budget counts by default (`--batch-budget native`), so that every mode groups clips alike.
    """

    key: tuple[int, int]
    label: int | list[int] | None = None
    wave: torch.Tensor | None = None
    compression: float = 1.0
    full_frames: int = 0
    audio_frames: int = 0
    native_samples: int = 0
    error: str | None = None
    replay: bool = False


@dataclass
class WorkerEnd:
    worker: int


@dataclass
class SourceState:
    """Where a slot stream resumes: per worker, examples already read (`start`) and the earlier positions that must
    be decoded again because they sat in the packer's buffer (`replay`)."""

    start: dict[int, int] = field(default_factory=dict)
    replay: dict[int, list[int]] = field(default_factory=dict)


class ClipSource(IterableDataset):
    """Decodes and transforms the examples of one slot stream; yields `Clip`s then a `WorkerEnd`.

    Inside DataLoader workers the datasets stream splits its shards between workers itself; each worker numbers the
    examples it reads. On resume, positions before `state.start[worker]` are skipped before decoding, except those
    in `state.replay[worker]`, which come first (flagged `replay`).
    """

    def __init__(self, stream, audio_column, label_column, encode_label, transform: ClipTransform, seed, epoch,
                 slot, state: SourceState | None = None):
        super().__init__()
        self.stream = stream
        self.audio_column = audio_column
        self.label_column = label_column
        self.encode_label = encode_label
        self.transform = transform
        self.seed, self.epoch, self.slot = seed, epoch, slot
        self.state = state or SourceState()

    def __iter__(self) -> Iterator[Clip | WorkerEnd]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        start = self.state.start.get(worker, 0)
        replay = set(self.state.replay.get(worker, ()))
        for position, example in enumerate(self.stream):
            if position < start and position not in replay:
                continue
            yield self._clip(worker, position, example, replay=position < start)
        yield WorkerEnd(worker)

    def _clip(self, worker: int, position: int, example: dict, replay: bool) -> Clip:
        clip = Clip(key=(worker, position), replay=replay)
        clip.label = self.encode_label(example[self.label_column])
        try:
            wave = decode_audio(example[self.audio_column], self.transform.sampling_rate)
        except Exception as error:  # any decoder failure: skip and count, never end the run
            audio = example[self.audio_column] or {}
            clip.error = f"{audio.get('path') or '<bytes>'}: {type(error).__name__}: {str(error)[:200]}"
            return clip
        rng = np.random.default_rng([self.seed, self.epoch, self.slot, worker, position])
        clip.native_samples = self.transform.native_samples(wave.numel())
        clip.wave, clip.compression, clip.full_frames, clip.audio_frames = self.transform(wave, rng)
        return clip


def _identity(item):
    return item


def ordered_clips(source: ClipSource, num_workers: int) -> Iterator[Clip]:
    """The clips of `source` in one canonical order — by (position, worker) — whatever the number of workers.

    Replayed clips (resume) come first, in the order they arrive; the caller puts them back where they were.
    """
    if num_workers == 0:
        items = iter(source)
        num_workers = 1
    else:
        items = iter(DataLoader(source, batch_size=None, num_workers=num_workers, collate_fn=_identity))
    queues = {w: deque() for w in range(num_workers)}
    live = set(queues)
    while True:
        while live and any(not queues[w] for w in live):
            item = next(items)
            if isinstance(item, WorkerEnd):
                live.discard(item.worker)
            elif item.replay:
                yield item
            else:
                queues[item.key[0]].append(item)
        ready = [w for w in queues if queues[w]]
        if not ready:
            return
        yield queues[min(ready, key=lambda w: (queues[w][0].key[1], w))].popleft()


__all__ = ["Clip", "ClipSource", "ClipTransform", "MODES", "SourceState", "ordered_clips", "slot_stream"]
