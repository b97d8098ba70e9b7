"""🤗 datasets splits as the package reads them, shared by training and `elasticast evaluate`: where the data comes
from (`DataArguments`), one split as a stream of undecoded audio + label (`load_split`), class names and label
encoding (`LabelSpace`, `infer_labels`), and decoding one example's audio with torchcodec (`decode_audio`).

Audio stays undecoded (`Audio(decode=False)`) in the streams: a decode error inside the datasets iterator would end
it, so callers decode each example themselves in a try/except and count what fails.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

# `datasets` is imported where streams are made, so that modules using only labels or decoding work without it.


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


__all__ = [
    "DataArguments",
    "LabelEncoder",
    "LabelSpace",
    "available_splits",
    "decode_audio",
    "infer_labels",
    "load_split",
    "resolve_eval_split",
]
