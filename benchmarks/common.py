"""Shared pieces: run sizes, the VoxCeleb-like mix, synthetic speech, side-by-side timing, FLOP counts."""

import math
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from elasticast import ElasticASTConfig
from elasticast.speech import synthesize


# Kaldi's 128 filters over a 512-point FFT leave the lowest ones empty, as in Kaldi itself; ASTFeatureExtractor warns.
warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")

SAMPLING_RATE = 16000
AST_WINDOW_SECONDS = 10.0  # what AST-base sees per call (1024 frames)
ROW_TOKENS = 2048  # tokens per packed row (the paper's L')


@dataclass(frozen=True)
class Size:
    """How big one run is. `model` sets both ElasticAST's and AST's width and depth."""

    name: str
    model: dict
    clips: int  # clips in the mix timed by items 1, 3 and 4
    repeats: int  # timings per candidate, interleaved; the best one counts
    gemm: int  # side of the square fp32 GEMM
    attention_rows: int  # packed rows × tokens per row in the attention benchmark
    attention_row_tokens: int
    attention_repeats: int  # the attention timings are short and noisy: more repeats
    packing_clips: int  # clips whose lengths the packers share out (item 5)
    packing_batches: tuple[int, ...]  # clips per packing call
    scaling_seconds: tuple[float, ...]
    ast_batch: int = 8  # AST chunks per forward in item 3
    labels: int = 1251  # VoxCeleb1 speakers


SIZES = {
    "tiny": Size(
        name="tiny",
        model=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
        clips=4,
        repeats=2,
        gemm=256,
        attention_rows=2,
        attention_row_tokens=512,
        attention_repeats=3,
        packing_clips=256,
        packing_batches=(12, 64),
        scaling_seconds=(1.0, 40.0),
    ),
    "base": Size(
        name="base",
        model=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
        clips=12,
        repeats=2,
        gemm=2048,
        attention_rows=4,
        attention_row_tokens=2048,
        attention_repeats=5,
        packing_clips=4096,
        packing_batches=(12, 48, 192, 768),
        scaling_seconds=(1.0, 5.0, 30.0, 120.0, 600.0),
    ),
}


def elasticast_config(size: Size, **overrides) -> ElasticASTConfig:
    return ElasticASTConfig(**{**size.model, "num_labels": size.labels, **overrides})


# ------------------------------------------------------------------------------------------------------- the mix
def voxceleb_like_durations(n: int, seed: int = 0) -> np.ndarray:
    """`[n]` clip durations in seconds: lognormal (median 7 s, σ 0.6, long right tail) clipped to [1, 30] s,
    close to VoxCeleb1 (mean 8.2 s) under the paper's 30-s cap."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(mean=math.log(7.0), sigma=0.6, size=n), 1.0, 30.0)


@cache
def speech_source() -> np.ndarray:
    """About 9 s of espeak-ng speech at 16 kHz (float32), the material every benchmark clip is cut from."""
    text = (
        "Audio spectrogram transformers read a clip as a grid of patches. Packing clips of many lengths into rows "
        "keeps every token useful, and attention stays inside each clip."
    )
    import soundfile  # here, not at the top: the attention benchmark runs where these are missing (GPU machine)
    import soxr

    with tempfile.TemporaryDirectory() as folder:
        audio, rate = soundfile.read(synthesize(text, Path(folder) / "speech.wav"), dtype="float32")
    return soxr.resample(audio, rate, SAMPLING_RATE).astype(np.float32)


def speech_clip(seconds: float, seed: int, source: np.ndarray | None = None) -> np.ndarray:
    """A clip of `seconds` cut from the tiled speech at a random offset, random gain, plus faint noise."""
    source = speech_source() if source is None else source
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * SAMPLING_RATE)))
    offset = int(rng.integers(len(source)))
    wave = np.resize(np.roll(source, -offset), n) * rng.uniform(0.3, 1.0) + 0.003 * rng.standard_normal(n)
    return wave.astype(np.float32)


def speech_mix(n: int, seed: int = 0) -> list[np.ndarray]:
    """`n` clips with `voxceleb_like_durations`."""
    return [speech_clip(d, seed + i) for i, d in enumerate(voxceleb_like_durations(n, seed))]


def ast_chunks(wave: np.ndarray) -> list[np.ndarray]:
    """Consecutive 10-s pieces of a clip (the last one shorter), so that a fixed-length AST sees all the audio."""
    step = int(AST_WINDOW_SECONDS * SAMPLING_RATE)
    return [wave[start : start + step] for start in range(0, len(wave), step)]


# ------------------------------------------------------------------------------------------------------- timing
def best_times(candidates: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Wall seconds of each candidate, best of `repeats` runs taken interleaved (a b c a b c ...), so that load
    from other jobs on the machine hits every candidate alike. The first round doubles as warm-up."""
    times = {name: math.inf for name in candidates}
    for _ in range(max(repeats, 1)):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name] = min(times[name], time.perf_counter() - start)
    return times


# -------------------------------------------------------------------------------------------------------- FLOPs
def elasticast_flops(config: ElasticASTConfig, segment_lengths: list[int], attention_lengths=None) -> float:
    """Multiply-add FLOPs (×2) of one ElasticAST forward: patch embedding, encoder, attention pooling and head.

    Attention is counted per segment (block-diagonal: `l²` per segment of `l` tokens); pass `attention_lengths`
    (e.g. whole packed rows) to count what a dense masked row attention would compute instead. LayerNorm,
    softmax, GELU and biases are left out, as in the usual model-FLOP counts.
    """
    d, hidden, p = config.hidden_size, config.intermediate_size, config.patch_size
    tokens, segments = sum(segment_lengths), len(segment_lengths)
    squares = sum(n * n for n in (attention_lengths or segment_lengths))
    layer = tokens * (8 * d * d + 4 * d * hidden) + 4 * d * squares  # q, k, v, o; mlp; q·kᵀ and a·v
    pooling = tokens * 4 * d * d + segments * 4 * d * d + tokens * 4 * d  # k, v; q, o; one query per segment
    return 2 * p * p * d * tokens + config.num_hidden_layers * layer + pooling + segments * 2 * d * config.num_labels
