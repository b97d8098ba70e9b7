"""Training-only augmentations, all driven by an explicit `numpy.random.Generator` (replayable on resume).

- SpecAugment-style masking: one frequency band (width uniform in [0, `freq_mask`) mel bins) and one time span (width
  uniform in [0, `time_mask` × the clip's frames), so the mask scales with clip length) per clip or window, set to 0
  (the normalised mean), on ElasticAST patches or on a fixed-length spectrogram.
- Mixup in the waveform domain (clips of different lengths can be mixed before feature extraction): with
  probability `p` a clip is mixed with another clip of the batch, weight λ ~ Beta(α, α), targets mixed alike.
- Token dropout for packed ElasticAST rows: each token is dropped with probability `p` (every segment keeps at least
  its first token) and rows are compacted so that segments stay contiguous.
"""

import numpy as np
import torch


def draw_masks(rng: np.random.Generator, frames, num_bins: int, freq_mask: int, time_mask: float):
    """Per item: `(f0, fw, t0, tw)` int arrays `[n]` for items of `frames[i]` frames and `num_bins` mel bins."""
    frames = np.asarray(frames, dtype=np.int64)
    fw = np.floor(rng.random(len(frames)) * min(freq_mask, num_bins)).astype(np.int64)
    f0 = np.floor(rng.random(len(frames)) * (num_bins - fw + 1)).astype(np.int64)
    tw = np.floor(rng.random(len(frames)) * time_mask * frames).astype(np.int64)
    t0 = np.floor(rng.random(len(frames)) * (frames - tw + 1)).astype(np.int64)
    return tuple(torch.from_numpy(a) for a in (f0, fw, t0, tw))


def _band(index: torch.Tensor, start: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    return (index >= start[..., None]) & (index < (start + width)[..., None])


def mask_patches(inputs: dict, rng: np.random.Generator, freq_mask: int, time_mask: float, patch_size: int) -> None:
    """SpecAugment on packed patches, in place: `input_values [R, L, P*P]`, one mask pair per segment (window)."""
    segment_ids, values = inputs["segment_ids"], inputs["input_values"]
    real = segment_ids > 0
    rows = torch.arange(segment_ids.shape[0])[:, None].expand_as(segment_ids)
    key = (rows * (segment_ids.shape[1] + 1) + segment_ids)[real]
    _, segment = torch.unique(key, return_inverse=True)  # [Σ] segment number of each real token
    freq_ids, time_ids = inputs["freq_ids"][real], inputs["time_ids"][real]
    num_segments = int(segment.max()) + 1 if segment.numel() else 0
    time_patches = torch.zeros(num_segments, dtype=torch.long).scatter_reduce(0, segment, time_ids + 1, "amax")
    num_bins = (int(freq_ids.max()) + 1) * patch_size if freq_ids.numel() else patch_size
    f0, fw, t0, tw = draw_masks(rng, (time_patches * patch_size).numpy(), num_bins, freq_mask, time_mask)
    offsets = torch.arange(patch_size)
    freq_hit = _band(freq_ids[:, None] * patch_size + offsets, f0[segment], fw[segment])  # [Σ, P]
    time_hit = _band(time_ids[:, None] * patch_size + offsets, t0[segment], tw[segment])
    hit = (freq_hit[:, :, None] | time_hit[:, None, :]).reshape(len(segment), -1)  # (freq, time) inside a patch
    patches = values[real]
    values[real] = patches.masked_fill(hit, 0.0)


def mask_spectrograms(values: torch.Tensor, audio_frames, rng: np.random.Generator, freq_mask: int,
                      time_mask: float) -> None:
    """SpecAugment on `[B, T, F]` spectrograms in place; time masks fall inside each clip's `audio_frames`."""
    batch, frames, bins = values.shape
    f0, fw, t0, tw = draw_masks(rng, np.minimum(audio_frames, frames), bins, freq_mask, time_mask)
    hit = _band(torch.arange(bins).expand(batch, bins), f0, fw)[:, None, :] | _band(
        torch.arange(frames).expand(batch, frames), t0, tw
    )[:, :, None]
    values.masked_fill_(hit, 0.0)


def mixup(waves: list[torch.Tensor], targets: torch.Tensor, rng: np.random.Generator, p: float, alpha: float):
    """Mixes clips of a batch in the waveform domain; returns new waves and targets `[N, C]`."""
    n = len(waves)
    if n < 2 or p <= 0:
        return waves, targets
    mixed, new_targets = list(waves), targets.clone()
    for i in np.flatnonzero(rng.random(n) < p):
        j = int(rng.integers(n - 1))
        j += j >= i  # another clip
        lam = float(rng.beta(alpha, alpha))
        other = waves[j].repeat(-(-waves[i].numel() // waves[j].numel()))[: waves[i].numel()]
        mixed[i] = lam * waves[i] + (1 - lam) * other
        new_targets[i] = lam * targets[i] + (1 - lam) * targets[j]
    return mixed, new_targets


def drop_tokens(inputs: dict, rng: np.random.Generator, p: float) -> dict:
    """Drops each real token with probability `p` (keeping every segment's first token) and compacts the rows."""
    segment_ids = inputs["segment_ids"]
    real = segment_ids > 0
    first = real.clone()
    first[:, 1:] &= segment_ids[:, 1:] != segment_ids[:, :-1]
    keep = real & (torch.from_numpy(rng.random(tuple(segment_ids.shape))) >= p) | first
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    length = int(keep.sum(1).max())
    kept = torch.gather(keep, 1, order)[:, :length]
    out = {}
    for name, value in inputs.items():
        index = order[:, :length]
        if value.dim() == 3:
            index = index[..., None].expand(-1, -1, value.shape[-1])
        gathered = torch.gather(value, 1, index)
        out[name] = gathered if value.dim() == 3 else gathered.masked_fill(~kept, 0)
    return out
