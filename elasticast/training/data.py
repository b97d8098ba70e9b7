"""Training data: 🤗 datasets streams → labelled, decoded, mode-transformed clips, in an order that can be replayed.

Pipeline per data slot (see `slot_stream`): `load_dataset(..., streaming=True)` with the audio column cast to
`Audio(decode=False)` → `shuffle(seed, buffer_size)` + `set_epoch` → `split_dataset_by_node(slot, num_slots)` →
`ClipSource` (own torchcodec decode at the feature extractor's rate in a try/except, so a broken file becomes a
counted skip instead of ending the stream; label encoding; the mode's crop / pad / compression draw) → optional
DataLoader workers → `ordered_clips` (one deterministic order whatever the number of workers).

Every random draw of a clip comes from a generator seeded by (seed, epoch, slot, worker, position), so a replayed
stream gives the same clips: exact resume needs no RNG state for the data side.
"""

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

# `datasets` is imported where streams are made, so that batching and collation work without it.


MODES = ("native", "mixed", "avgpool", "fixed")


# ----------------------------------------------------------------------------------------------------------- labels
@dataclass
class LabelSpace:
    """The class names (index = position) and whether a clip carries a list of them (multi-label)."""

    names: list[str]
    multi_label: bool = False

    @property
    def num_labels(self) -> int:
        return len(self.names)

    def encoder(self, feature) -> "LabelEncoder":
        """A picklable function raw label value → class index (or list of indices) for a split with `feature`."""
        from datasets import ClassLabel

        inner = _inner_feature(feature)
        source_names = inner.names if isinstance(inner, ClassLabel) else None
        return LabelEncoder({n: i for i, n in enumerate(self.names)}, source_names, self.multi_label)


@dataclass
class LabelEncoder:
    index: dict[str, int]
    source_names: list[str] | None  # the split's ClassLabel names (ints are looked up there), else None
    multi_label: bool

    def one(self, value) -> int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            name = self.source_names[value] if self.source_names is not None else str(int(value))
        elif isinstance(value, str):
            name = value
        else:
            raise ValueError(f"Label value {value!r} is neither a string nor an integer class index.")
        if name not in self.index:
            raise ValueError(
                f"Label {name!r} is not among the {len(self.index)} training classes; pass --labels with every "
                "class name, or drop examples of unseen classes from the evaluation split."
            )
        return self.index[name]

    def __call__(self, value) -> int | list[int]:
        if self.multi_label:
            values = [value] if isinstance(value, (str, int, np.integer)) else list(value)
            return sorted({self.one(v) for v in values})
        if isinstance(value, (list, tuple)):
            raise ValueError(
                f"Got a list label {value!r} in a single-label run; pass --multi-label or use one label per clip."
            )
        return self.one(value)


def _is_list_feature(feature) -> bool:
    from datasets import List, Sequence

    return isinstance(feature, (Sequence, List))


def _inner_feature(feature):
    return feature.feature if _is_list_feature(feature) else feature


def infer_labels(dataset, label_column: str, names: Sequence[str] | None = None, multi_label: bool | None = None):
    """Class names of a (streaming) dataset: from `ClassLabel` (or a list of it), from `names`, or by one pass over
    the label column (strings sorted; integers 0..max). Returns `(LabelSpace, number of examples or None)`.
    """
    from datasets import ClassLabel, Value

    features = dataset.features
    if features is not None and label_column not in features:
        raise ValueError(
            f"Label column {label_column!r} not found; the dataset has columns {sorted(features)}. Pass --label-column."
        )
    feature = features[label_column] if features is not None else None
    is_list = _is_list_feature(feature) if feature is not None else None
    inner = _inner_feature(feature)
    num_examples = None
    if names is None and isinstance(inner, ClassLabel):
        names = list(inner.names)
    elif names is None:
        if feature is not None and not isinstance(inner, Value):
            raise ValueError(f"Label column {label_column!r} has type {feature}; expected ClassLabel, strings, "
                             "integers or lists of them.")
        seen, num_examples = set(), 0
        for example in dataset.select_columns([label_column]):
            value = example[label_column]
            values = value if isinstance(value, (list, tuple)) else [value]
            if is_list is None:
                is_list = isinstance(value, (list, tuple))
            seen.update(values)
            num_examples += 1
        if not seen:
            raise ValueError(f"The label column {label_column!r} of the training split is empty.")
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in seen):
            if min(seen) < 0:
                raise ValueError(f"Integer labels must be ≥ 0 class indices; got {min(seen)}.")
            names = [str(i) for i in range(max(seen) + 1)]
        elif all(isinstance(v, str) for v in seen):
            names = sorted(seen)
        else:
            raise ValueError(f"Label column {label_column!r} mixes types ({sorted({type(v).__name__ for v in seen})}); "
                             "use strings or integer class indices.")
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        raise ValueError(f"Duplicate class names in {names}.")
    multi = bool(is_list) if multi_label is None else multi_label
    return LabelSpace(names, multi), num_examples


# ----------------------------------------------------------------------------------------------------------- loading
@dataclass
class DataArguments:
    """Where the data comes from (the `load_dataset` arguments) and which columns hold audio and label."""

    dataset: str
    dataset_config: str | None = None
    data_dir: str | None = None
    data_files: list[str] | None = None
    eval_data_files: list[str] | None = None
    train_split: str = "train"
    eval_split: str | None = "auto"
    audio_column: str = "audio"
    label_column: str = "label"


def load_split(data: DataArguments, split: str, files: list[str] | None = None):
    """One split as a streaming `IterableDataset` with only the audio (undecoded) and label columns."""
    from datasets import load_dataset

    kwargs = {"data_dir": data.data_dir} if data.data_dir else {}
    if files:
        kwargs["data_files"] = {split: files}
    streams = load_dataset(data.dataset, data.dataset_config, streaming=True, **kwargs)
    if split not in streams:
        raise ValueError(f"Split {split!r} not found in {data.dataset!r}; available: {sorted(streams)}.")
    stream = streams[split]
    return _prepare(stream, data, split)


def available_splits(data: DataArguments) -> list[str]:
    from datasets import load_dataset

    kwargs = {"data_dir": data.data_dir} if data.data_dir else {}
    if data.data_files:
        kwargs["data_files"] = {data.train_split: data.data_files}
        if data.eval_data_files:
            kwargs["data_files"]["eval"] = data.eval_data_files
    return sorted(load_dataset(data.dataset, data.dataset_config, streaming=True, **kwargs))


def _prepare(stream, data: DataArguments, split: str):
    from datasets import Audio

    features = stream.features
    if features is not None:
        missing = [c for c in (data.audio_column, data.label_column) if c not in features]
        if missing:
            raise ValueError(
                f"Column(s) {missing} not found in split {split!r}; it has {sorted(features)}. Pass --audio-column "
                "and --label-column."
            )
    stream = stream.select_columns([data.audio_column, data.label_column])
    # Decoding ourselves keeps one broken file from ending the iterator (datasets raises inside it).
    return stream.cast_column(data.audio_column, Audio(decode=False))


def resolve_eval_split(data: DataArguments) -> str | None:
    """`--eval-split auto` → "validation", "valid", "dev" or "test" when present (or "eval" for --eval-data-files)."""
    if data.eval_split in (None, "none", ""):
        return None
    splits = available_splits(data)
    if data.eval_split != "auto":
        if data.eval_split not in splits:
            raise ValueError(f"--eval-split {data.eval_split!r} not found; available: {splits}.")
        return data.eval_split
    for name in ("eval", "validation", "valid", "dev", "test"):
        if name in splits and name != data.train_split:
            return name
    return None


def slot_stream(stream, slot: int, num_slots: int, epoch: int, seed: int, shuffle_buffer: int | None):
    """The examples of data slot `slot` of `num_slots` (rank × accumulation micro-step) for `epoch`."""
    from datasets.distributed import split_dataset_by_node

    if shuffle_buffer:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
    stream = split_dataset_by_node(stream, rank=slot, world_size=num_slots)
    stream.set_epoch(epoch)
    return stream


# -------------------------------------------------------------------------------------------------------- decoding
def decode_audio(value, sampling_rate: int) -> torch.Tensor:
    """Undecoded datasets audio (`{"bytes", "path"}`) → mono float32 waveform `[n]` at `sampling_rate` (torchcodec)."""
    from torchcodec.decoders import AudioDecoder

    source = value.get("bytes") or value.get("path")
    if source is None:
        raise ValueError("audio value has neither bytes nor path")
    wave = AudioDecoder(source, sample_rate=sampling_rate, num_channels=1).get_all_samples().data[0]
    if wave.numel() == 0:
        raise ValueError("decoded to 0 samples")
    if not bool(torch.isfinite(wave).all()):
        raise ValueError("decoded samples contain NaN or Inf")
    return wave.to(torch.float32)


@dataclass
class ClipTransform:
    """What a mode does to a decoded clip before feature extraction.

    mode: "native" (cut to `max_seconds` only when longer), "mixed" (frame-shift compression C drawn per clip from
        `compressions`), "avgpool" (integer C drawn from `compressions`, average pooling), "fixed" (cut to exactly
        `fixed_frames` frames; shorter clips are zero-padded when `pad` is set, else left for the collator).
    train: random crop offsets and C draws; otherwise crops start at 0 and C = `eval_compression`.
    """

    mode: str
    sampling_rate: int
    frame_length: int
    frame_shift: int  # samples at C = 1
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
    def compression_method(self) -> str:
        return "avg_pool" if self.mode == "avgpool" else "frame_shift"

    def frames(self, num_samples: int, compression: float) -> int:
        """Kaldi frame count (snip_edges) of `num_samples` at compression C (after pooling for avgpool)."""
        pooled = self.compression_method == "avg_pool"
        shift = self.frame_shift if pooled else int(round(self.frame_shift * compression))
        frames = 0 if num_samples < self.frame_length else 1 + (num_samples - self.frame_length) // shift
        return frames // int(compression) if pooled else frames

    def samples_for(self, frames: int, compression: float = 1.0) -> int:
        """Fewest samples that give `frames` frames at C (frame-shift)."""
        return self.frame_length + (frames - 1) * int(round(self.frame_shift * compression))

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
            keep = self.samples_for(self.fixed_frames)
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
    """

    key: tuple[int, int]
    label: int | list[int] | None = None
    wave: torch.Tensor | None = None
    compression: float = 1.0
    full_frames: int = 0
    audio_frames: int = 0
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


__all__ = [
    "Clip",
    "ClipSource",
    "ClipTransform",
    "DataArguments",
    "LabelSpace",
    "MODES",
    "SourceState",
    "decode_audio",
    "infer_labels",
    "load_split",
    "ordered_clips",
    "resolve_eval_split",
    "slot_stream",
]
