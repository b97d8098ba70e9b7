"""Token-budget batches: a buffered best-fit batcher over a clip stream, and the collators that turn a batch of
clips into model inputs (packed ElasticAST rows, or fixed-length spectrograms for the AST baseline).

The paper fills rows sequentially: clips in arrival order, a new row whenever the next clip does not fit. Here the
batcher keeps a look-ahead buffer of a few batches' worth of clips, packs the whole buffer with the core best-fit-
decreasing packer (`pack_segments`) and emits the rows it filled best (plus, always, the row holding the oldest
clip, so that no clip waits forever); the collator then packs the chosen clips with the feature extractor itself.
"""

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..ast_baseline import ast_input
from ..data_collator import ElasticASTDataCollator
from ..feature_extraction_elasticast import ElasticASTFeatureExtractor, pack_segments
from .augment import drop_tokens, mask_patches, mask_spectrograms, mixup
from .data import Clip, ClipTransform


STAT_KEYS = ("clips", "slots", "tokens", "native_tokens", "useful", "full_frames", "audio_frames")


def summarize_stats(stats: dict) -> dict:
    """Sums of `STAT_KEYS` → useful-token %, padding %, cut % (of the audio's frames)."""
    slots = max(stats["slots"], 1)
    return {
        "useful_pct": 100.0 * stats["useful"] / slots,
        "padding_pct": 100.0 * (1 - stats["useful"] / slots),
        "cut_pct": 100.0 * (1 - stats["audio_frames"] / max(stats["full_frames"], 1)) if stats["full_frames"] else 0.0,
    }


@dataclass
class Batch:
    """inputs: model keyword arguments; targets `[N, C]` float (one-/multi-hot, mixed under mixup); labels: the
    clips' class indices (lists for multi-label); keys: clip keys; stats: sums of `STAT_KEYS`."""

    inputs: dict
    targets: torch.Tensor
    labels: list
    keys: list
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Augmentation:
    freq_mask: int = 0
    time_mask: float = 0.0
    mixup: float = 0.0
    mixup_alpha: float = 10.0
    token_dropout: float = 0.0


class PackedCollator:
    """Clips → packed ElasticAST rows of ≤ `max_tokens_per_row` tokens through `ElasticASTDataCollator.pack_waveforms`
    (the feature extractor's packer, the same as a `Trainer` gets)."""

    def __init__(self, fe: ElasticASTFeatureExtractor, transform: ClipTransform, num_labels: int,
                 max_tokens_per_row: int, augment: Augmentation | None = None):
        self.fe, self.transform, self.num_labels = fe, transform, num_labels
        self.max_tokens_per_row = max_tokens_per_row
        self.augment = augment or Augmentation()
        self.num_freq = fe.num_mel_bins // fe.patch_size
        self.packer = ElasticASTDataCollator(fe, max_tokens_per_row)  # the one packer (also Trainer's collator)
        self.budget_row_tokens = max_tokens_per_row
        fe.max_window_patches(max_tokens_per_row)  # raises if a row cannot hold one patch column

    def time_patches(self, clip: Clip) -> int:
        frames = self.fe.num_frames(clip.wave.numel(), clip.compression, self.transform.compression_method,
                                    self.fe.max_length)
        return frames // self.fe.patch_size

    def segments(self, clip: Clip) -> list[int]:
        """Token counts of the clip's windows, as the feature extractor will lay them out."""
        return self.fe.segment_lengths(clip.wave.numel(), clip.compression, self.transform.compression_method,
                                       self.fe.max_length, self.max_tokens_per_row)

    def native_segments(self, clip: Clip) -> list[int]:
        """Token counts of the clip's windows at native resolution (C = 1, cut to `--max-seconds` only) in rows of
        `budget_row_tokens`: the same in every mode, so a batch budget counted in them groups the clips of a stream
        alike in native, mixed, avg-pool and fixed mode (the same clips per step, the same steps per epoch)."""
        return self.fe.segment_lengths(clip.native_samples, 1.0, "frame_shift", self.fe.max_length,
                                       self.budget_row_tokens)

    def _kept_frames(self, clip: Clip) -> int:
        """Frames of real audio that reach the model (after the cut to whole patches)."""
        return min(clip.audio_frames, self.time_patches(clip) * self.fe.patch_size)

    def featurize(self, clips: list[Clip], waves: list[torch.Tensor], rng, train: bool) -> tuple[dict, int]:
        """Model inputs of the (possibly mixed) waves, augmented in training; and the token slots of the layout."""
        inputs = self.packer.pack_waveforms(waves, [c.compression for c in clips], self.transform.compression_method)
        planned = sum(sum(self.segments(c)) for c in clips)
        if int((inputs["segment_ids"] > 0).sum()) != planned:
            raise RuntimeError(
                f"The feature extractor produced {int((inputs['segment_ids'] > 0).sum())} tokens where the batcher "
                f"planned {planned}: elasticast.training's token count is out of step with the feature extractor."
            )
        if train and (self.augment.freq_mask or self.augment.time_mask):
            mask_patches(inputs, rng, self.augment.freq_mask, self.augment.time_mask, self.fe.patch_size)
        slots = inputs["segment_ids"].numel()
        if train and self.augment.token_dropout:
            inputs = drop_tokens(inputs, rng, self.augment.token_dropout)
        return inputs, slots

    def __call__(self, clips: list[Clip], rng: np.random.Generator, train: bool) -> Batch:
        targets = torch.zeros(len(clips), self.num_labels)
        for i, clip in enumerate(clips):
            targets[i, clip.label] = 1.0
        waves = [c.wave for c in clips]
        if train and self.augment.mixup:
            waves, targets = mixup(waves, targets, rng, self.augment.mixup, self.augment.mixup_alpha)
        inputs, slots = self.featurize(clips, waves, rng, train)
        stats = {
            "clips": len(clips),
            "slots": slots,
            "tokens": int((inputs["segment_ids"] > 0).sum()),
            "native_tokens": sum(sum(self.native_segments(c)) for c in clips),
            "useful": sum(self._kept_frames(c) for c in clips) * self.num_freq / self.fe.patch_size,
            "full_frames": sum(c.full_frames for c in clips),
            "audio_frames": sum(self._kept_frames(c) for c in clips),
        }
        return Batch(inputs, targets, [c.label for c in clips], [c.key for c in clips], stats)


class FixedCollator(PackedCollator):
    """Clips → `input_values [B, T, F]` for transformers' AST (`elasticast.ast_baseline.ast_input`): our Kaldi
    fbank cut or padded (with the log-mel value 0, as AST) to `fixed_frames`, normalised as `ASTFeatureExtractor`."""

    def __init__(self, fe, transform: ClipTransform, num_labels: int, fixed_frames: int,
                 augment: Augmentation | None = None, budget_row_tokens: int = 2048):
        tokens = fe.num_mel_bins // fe.patch_size * (fixed_frames // fe.patch_size)
        super().__init__(fe, transform, num_labels, max_tokens_per_row=tokens, augment=augment)
        self.budget_row_tokens = budget_row_tokens  # the ElasticAST row size its native budget is planned in
        if augment is not None and augment.token_dropout:
            raise ValueError("--token-dropout applies to ElasticAST's packed rows only, not to the AST baseline.")
        self.fixed_frames = fixed_frames
        self.tokens = tokens

    def time_patches(self, clip: Clip) -> int:
        return self.fixed_frames // self.fe.patch_size

    def segments(self, clip: Clip) -> list[int]:
        return [self.tokens]

    def featurize(self, clips, waves, rng, train: bool) -> tuple[dict, int]:
        values = ast_input(self.fe, waves, self.fixed_frames)
        if train and (self.augment.freq_mask or self.augment.time_mask):
            audio = [min(c.audio_frames, self.fixed_frames) for c in clips]
            mask_spectrograms(values, audio, rng, self.augment.freq_mask, self.augment.time_mask)
        segment_ids = torch.ones(len(waves), self.tokens, dtype=torch.long)  # every patch goes through AST
        return {"input_values": values, "segment_ids": segment_ids}, segment_ids.numel()


class TokenBudgetBatcher:
    """Groups a clip stream into batches of ≤ `tokens_per_batch` tokens laid out in rows of ≤ `max_tokens_per_row`.

    Args:
        segments: clip → token counts of its segments (windows).
        lookahead: buffer size in batches; 1 gives no look-ahead beyond one batch.

    State (`state_dict`) is what an exact resume needs: the keys of the buffered clips, how far each worker's
    stream was read, how many batches were emitted, and the decode failures so far.
    """

    def __init__(self, segments: Callable[[Clip], list[int]], tokens_per_batch: int, max_tokens_per_row: int,
                 lookahead: int = 4):
        if tokens_per_batch < max_tokens_per_row:
            raise ValueError(
                f"--tokens-per-batch ({tokens_per_batch}) must be ≥ --max-tokens-per-row ({max_tokens_per_row})."
            )
        self.segments = segments
        self.tokens_per_batch = tokens_per_batch
        self.max_tokens_per_row = max_tokens_per_row
        self.rows_per_batch = tokens_per_batch // max_tokens_per_row
        self.lookahead = max(1, lookahead)
        self.buffer: list[Clip] = []
        self.buffer_keys: list[tuple[int, int]] = []
        self.pulled: dict[int, int] = {}
        self.emitted = 0
        self.skipped = 0
        self.errors: list[str] = []

    def state_dict(self) -> dict:
        return {
            "buffer": [list(c.key) for c in self.buffer],
            "pulled": {str(w): n for w, n in self.pulled.items()},
            "emitted": self.emitted,
            "skipped": self.skipped,
            "errors": self.errors,
        }

    def load_state_dict(self, state: dict) -> None:
        self.buffer_keys = [tuple(k) for k in state["buffer"]]
        self.pulled = {int(w): n for w, n in state["pulled"].items()}
        self.emitted, self.skipped, self.errors = state["emitted"], state["skipped"], list(state["errors"])

    def replay(self) -> dict[int, list[int]]:
        """Per worker, the positions to decode again to rebuild the buffer."""
        out = defaultdict(list)
        for worker, position in self.buffer_keys:
            out[worker].append(position)
        return dict(out)

    def __call__(self, clips: Iterator[Clip]) -> Iterator[list[Clip]]:
        restored = {}
        budget = self.lookahead * self.tokens_per_batch
        buffered = 0
        for clip in clips:
            if clip.replay:
                restored[clip.key] = clip
                continue
            if self.buffer_keys:
                buffered = self._restore(restored)
            self.pulled[clip.key[0]] = clip.key[1] + 1
            if clip.wave is None:
                self.skipped += 1
                if len(self.errors) < 20:
                    self.errors.append(clip.error)
                continue
            self.buffer.append(clip)
            buffered += sum(self.segments(clip))
            while buffered >= budget:
                batch = self._select()
                buffered -= sum(sum(self.segments(c)) for c in batch)
                yield batch
        if self.buffer_keys:
            self._restore(restored)
        while self.buffer:
            yield self._select()

    def _restore(self, restored: dict) -> int:
        """Puts the replayed clips back in their buffer order; returns the buffered token count."""
        missing = [k for k in self.buffer_keys if k not in restored]
        if missing:
            raise RuntimeError(f"Resume could not rebuild the packer buffer: clips {missing[:5]} did not come back; "
                               "the replayed stream differs from the interrupted run's (same data and --seed?).")
        self.buffer = [restored[k] for k in self.buffer_keys] + self.buffer
        self.buffer_keys = []
        return sum(sum(self.segments(c)) for c in self.buffer)

    def _select(self) -> list[Clip]:
        """Packs the buffer, takes the row of the oldest clip plus the fullest rows, removes and returns their clips
        (in buffer order)."""
        owner, lengths = [], []
        for index, clip in enumerate(self.buffer):
            for n in self.segments(clip):
                owner.append(index)
                lengths.append(n)
        rows = pack_segments(lengths, self.max_tokens_per_row)
        fill = [sum(lengths[s] for s in row) for row in rows]
        row_of = {s: r for r, row in enumerate(rows) for s in row}
        oldest = row_of[0]
        order = [oldest] + sorted((r for r in range(len(rows)) if r != oldest), key=lambda r: -fill[r])
        taken = set(order[: self.rows_per_batch])
        segment_rows = defaultdict(set)
        for s, index in enumerate(owner):
            segment_rows[index].add(row_of[s])
        chosen = [i for i in range(len(self.buffer)) if segment_rows[i] <= taken] or [0]
        batch = [self.buffer[i] for i in chosen]
        chosen_set = set(chosen)
        self.buffer = [c for i, c in enumerate(self.buffer) if i not in chosen_set]
        self.emitted += 1
        return batch


__all__ = [
    "Augmentation",
    "Batch",
    "FixedCollator",
    "PackedCollator",
    "STAT_KEYS",
    "TokenBudgetBatcher",
    "summarize_stats",
]
