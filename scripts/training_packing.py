"""Useful-token % of the training batcher (buffered best-fit, per look-ahead) against the paper's sequential fill.

`python scripts/training_packing.py`: 2000 clip lengths drawn log-normally (median about 6 s, clipped to 1-30 s,
VoxCeleb-like), rows of 2048 tokens, 8192 tokens per batch. Useful % = real tokens / (rows × 2048).
"""

import numpy as np
import torch

from elasticast import ElasticASTFeatureExtractor, pack_segments
from elasticast.training.batching import PackedCollator, TokenBudgetBatcher
from elasticast.training.data import Clip, ClipTransform


def main():
    rng = np.random.default_rng(0)
    seconds = np.clip(rng.lognormal(np.log(6), 0.8, 2000), 1, 30)
    collator = PackedCollator(ElasticASTFeatureExtractor(), ClipTransform("native", 16000, 400, 160), 2, 2048)
    clips = [Clip((0, i), 0, torch.zeros(int(s * 16000))) for i, s in enumerate(seconds)]
    lengths = [sum(collator.segments(c)) for c in clips]
    tokens = sum(lengths)
    print(f"{len(clips)} clips, median {np.median(seconds):.1f} s, {tokens} tokens; rows of 2048, 8192 per batch")
    for lookahead in (1, 2, 4, 8):
        batcher = TokenBudgetBatcher(collator.segments, 8192, 2048, lookahead)
        rows = sum(len(pack_segments([n for c in batch for n in collator.segments(c)], 2048))
                   for batch in batcher(iter(clips)))
        print(f"buffered best-fit, look-ahead {lookahead} batches: useful {100 * tokens / (rows * 2048):.2f} %")
    rows, free = 0, 0
    for n in lengths:  # the paper's sequential fill, for reference
        if n > free:
            rows, free = rows + 1, 2048
        free -= n
    print(f"sequential fill (paper): useful {100 * tokens / (rows * 2048):.2f} %")


if __name__ == "__main__":
    main()
