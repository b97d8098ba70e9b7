"""`ElasticASTDataCollator`: examples of raw audio (or one-clip extractor outputs) → packed ElasticAST rows + labels.

The collator a 🤗 `Trainer` (or any DataLoader) needs to train without padding:

    Trainer(model, args, train_dataset=dataset, data_collator=ElasticASTDataCollator(fe, max_tokens_per_row=2048))

`datasets.map(fe)` followed by transformers' default collator pads every clip to its map batch's longest one; this
collator instead packs the clips of each batch into rows of at most `max_tokens_per_row` tokens with the feature
extractor's own best-fit packer (`ElasticASTFeatureExtractor(..., packing=True)`), so each row holds padding only
after its last segment. `elasticast.training` packs its batches through the same `pack_waveforms`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .feature_extraction_elasticast import ElasticASTFeatureExtractor


_FEATURE_KEYS = ("input_values", "segment_ids", "freq_ids", "time_ids")


@dataclass
class ElasticASTDataCollator:
    """Packs a batch of examples into ElasticAST model inputs with `labels`.

    Args:
        feature_extractor: The model's `ElasticASTFeatureExtractor`.
        max_tokens_per_row: Token budget of one row (a window of a long clip never exceeds it).
        audio_column: Key of the audio in dict examples ("audio", as 🤗 datasets names it).
        label_column: Key of the label in dict examples; "labels" is read too when this key is absent.
        compression: Temporal compression C of the clips (default: the extractor's).

    Examples (one batch may not mix the two kinds):
        - raw audio: a 1-D array/tensor/list of floats at the extractor's rate, a `{"array", "sampling_rate"}` dict
          (resampled with soxr when the rate differs), `{"path"}`/`{"bytes"}` (decoded with torchcodec) or a
          torchcodec `AudioDecoder` (what 🤗 datasets' `Audio` column gives), either alone or under `audio_column`
          of a dict example holding the label;
        - one-clip extractor outputs: dicts with `input_values [1, L, P*P]` (or `[L, P*P]`), `segment_ids`,
          `freq_ids`, `time_ids` of one clip (e.g. from `dataset.map(fe)` one example at a time); its windows are
          repacked as they are.

    Returns:
        dict of tensors: `input_values [R, L, P*P]`, `segment_ids`, `freq_ids`, `time_ids`, `clip_ids [R, L]`
        (clip k = example k) and, when the examples carry labels, `labels`: `[N]` int64 class indices, or `[N, C]`
        float multi-hot vectors when the labels are sequences.
    """

    feature_extractor: ElasticASTFeatureExtractor
    max_tokens_per_row: int = 2048
    audio_column: str = "audio"
    label_column: str = "label"
    compression: float | None = None

    def __post_init__(self):
        self.feature_extractor.max_window_patches(self.max_tokens_per_row)  # raises if a row cannot hold a column

    def pack_waveforms(self, waveforms: Sequence, compression: float | Sequence[float] | None = None,
                       compression_method: str | None = None) -> dict[str, torch.Tensor]:
        """Mono waveforms at the extractor's rate → packed rows (the feature extractor's packer)."""
        return self.feature_extractor(
            list(waveforms),
            sampling_rate=self.feature_extractor.sampling_rate,
            compression=self.compression if compression is None else compression,
            compression_method=compression_method,
            packing=True,
            max_tokens_per_row=self.max_tokens_per_row,
            return_tensors="pt",
        ).data

    def __call__(self, examples: Sequence) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("ElasticASTDataCollator got an empty batch.")
        labels = [self._label(e) for e in examples]
        if all(isinstance(e, Mapping) and "input_values" in e for e in examples):
            batch = self._repack(examples)
        elif any(isinstance(e, Mapping) and "input_values" in e for e in examples):
            raise ValueError("A batch mixes extractor outputs (input_values) with raw audio; give one kind per batch.")
        else:
            batch = self.pack_waveforms([self._waveform(e, i) for i, e in enumerate(examples)])
        if any(label is not None for label in labels):
            if any(label is None for label in labels):
                raise ValueError(f"Some examples have no {self.label_column!r} (or 'labels'); label all or none.")
            batch["labels"] = self._labels(labels)
        return batch

    # ---------------------------------------------------------------------------------------------------- helpers
    def _label(self, example):
        if not isinstance(example, Mapping):
            return None
        return example[self.label_column] if self.label_column in example else example.get("labels")

    @staticmethod
    def _labels(labels: list) -> torch.Tensor:
        if isinstance(labels[0], (Sequence, np.ndarray, torch.Tensor)) and not isinstance(labels[0], str):
            return torch.stack([torch.as_tensor(np.asarray(label), dtype=torch.float32) for label in labels])
        if isinstance(labels[0], str):
            raise ValueError(
                f"Labels must be class indices, got the name {labels[0]!r}; encode them first, e.g. "
                "dataset.cast_column('label', ClassLabel(names=[config.id2label[i] for i in range(num_labels)]))."
            )
        return torch.as_tensor([int(label) for label in labels], dtype=torch.long)

    def _waveform(self, example, index: int) -> torch.Tensor:
        """One example's audio → mono float32 `[n]` at the extractor's rate."""
        from torchcodec.decoders import AudioDecoder

        rate = self.feature_extractor.sampling_rate
        audio = example
        if isinstance(example, Mapping) and not {"array", "path", "bytes"} & example.keys():
            if self.audio_column not in example:
                raise ValueError(
                    f"Example {index} has keys {sorted(example)} but no audio column {self.audio_column!r}. Under "
                    "Trainer, the audio column is removed unless TrainingArguments(remove_unused_columns=False) is "
                    "set (ElasticAST's forward has no argument of that name); else pass audio_column=<its name>."
                )
            audio = example[self.audio_column]
        if isinstance(audio, AudioDecoder):
            samples = audio.get_all_samples()
            audio = {"array": samples.data.mean(0), "sampling_rate": samples.sample_rate}
        if isinstance(audio, Mapping):
            if audio.get("array") is not None:
                wave = torch.as_tensor(np.asarray(audio["array"], dtype=np.float32))
                source_rate = int(audio.get("sampling_rate") or rate)
                if wave.dim() == 2:  # (channels, samples)
                    wave = wave.mean(0)
                if source_rate != rate:
                    import soxr  # only here: `import elasticast` needs no soxr (GPU machines lack it)

                    wave = torch.from_numpy(soxr.resample(wave.numpy(), source_rate, rate).astype(np.float32))
                return wave
            source = audio.get("bytes") or audio.get("path")
            if source is None:
                raise ValueError(f"Example {index}: an audio dict needs 'array' + 'sampling_rate', 'path' or 'bytes'.")
            return AudioDecoder(source, sample_rate=rate, num_channels=1).get_all_samples().data[0]
        wave = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        if wave.dim() != 1:
            raise ValueError(f"Example {index}: audio of shape {tuple(wave.shape)}; pass a 1-D mono waveform.")
        return wave

    def _repack(self, examples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        """One-clip extractor outputs → their windows → the extractor's packed layout."""
        clips = []
        for index, example in enumerate(examples):
            values, segment_ids, freq_ids, time_ids = (torch.as_tensor(np.asarray(example[k])) for k in _FEATURE_KEYS)
            if values.dim() == 3:
                if values.shape[0] != 1:
                    raise ValueError(f"Example {index} holds {values.shape[0]} rows; pass extractor outputs of one "
                                     "clip each (unpacked), or raw audio.")
                values, segment_ids, freq_ids, time_ids = values[0], segment_ids[0], freq_ids[0], time_ids[0]
            windows = []
            for segment in segment_ids.unique(sorted=True).tolist():
                if segment > 0:
                    where = segment_ids == segment
                    windows.append((values[where].float(), freq_ids[where].long(), time_ids[where].long()))
            if not windows:
                raise ValueError(f"Example {index} has no tokens (segment_ids all 0).")
            clips.append(windows)
        return self.feature_extractor.layout(clips, packing=True, max_tokens_per_row=self.max_tokens_per_row)


__all__ = ["ElasticASTDataCollator"]
