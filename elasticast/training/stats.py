"""Dataset statistics for the feature extractor's normalisation `(log_mel - mean) / (2 * std)`.

The AST recipes (and the official ElasticAST's `egs/*` scripts) normalise each dataset's Kaldi log-mel spectrogram with
that dataset's own mean and standard deviation, computed once over the training set (AST's `get_norm_stats.py`).
`--compute-stats` does the same over a bounded sample of the training stream: the first `max_clips` examples, at
native resolution (C = 1), each cut to `--max-seconds`, over every time-frequency bin of the real audio (padding is
not counted). The result becomes the `mean` and `std` of the feature extractor that the run trains with and exports
in `preprocessor_config.json`, so evaluation, the pipeline, the classifier and the ONNX export use it.
"""

import math
from collections.abc import Iterable

import torch

from ..data import decode_audio
from ..feature_extraction_elasticast import ElasticASTFeatureExtractor


def compute_feature_stats(examples: Iterable[dict], audio_column: str, fe: ElasticASTFeatureExtractor,
                          max_clips: int, max_seconds: float | None = None) -> dict:
    """Mean and standard deviation of the un-normalised log-mel (`fe.fbank` at C = 1) over the first `max_clips`
    decodable examples.

    Args:
        examples: the training stream (undecoded audio in `audio_column`), read in its stored order.
        audio_column: the audio column's name.
        fe: the feature extractor whose fbank is measured (its own normalisation is not applied).
        max_clips: how many decodable clips to read at most.
        max_seconds: cut each clip to this many seconds first (None: whole clips).

    Returns:
        `{"mean", "std", "clips", "frames", "skipped"}`; sums are accumulated in float64.

    Raises:
        ValueError: when no example of the sample could be decoded.
    """
    total = squares = 0.0
    count = clips = frames = skipped = 0
    keep = None if max_seconds is None else int(round(max_seconds * fe.sampling_rate))
    for example in examples:
        if clips >= max_clips:
            break
        try:
            wave = decode_audio(example[audio_column], fe.sampling_rate)
        except Exception:  # as in training: an undecodable file is skipped and counted
            skipped += 1
            continue
        log_mel = fe.fbank([wave[:keep] if keep else wave], [1.0])[0].to(torch.float64)  # [T, F]
        total += float(log_mel.sum())
        squares += float((log_mel * log_mel).sum())
        count += log_mel.numel()
        frames += log_mel.shape[0]
        clips += 1
    if count == 0:
        raise ValueError("--compute-stats found no decodable clip in the training split; check --dataset and "
                         "--audio-column, or leave --compute-stats off to keep the default statistics.")
    mean = total / count
    std = math.sqrt(max(squares / count - mean * mean, 0.0))
    return {"mean": mean, "std": std, "clips": clips, "frames": frames, "skipped": skipped}


__all__ = ["compute_feature_stats"]
