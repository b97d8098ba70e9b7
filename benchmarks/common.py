"""Shared pieces: run sizes, the VoxCeleb-like mix, synthetic speech, side-by-side timing, precision, FLOP counts."""

import dataclasses
import math
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch

from elasticast import ElasticASTConfig, ElasticASTForAudioClassification, modeling_elasticast
from examples.speech import synthesize


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
    gemm: int  # side of the square GEMM (fp32; bf16 on a GPU)
    attention_repeats: int  # the attention timings are short and noisy: more repeats
    packing_clips: int  # clips whose lengths the packers share out (item 5)
    packing_batches: tuple[int, ...]  # clips per packing call
    scaling_seconds: tuple[float, ...]
    ast_batch: int = 8  # AST chunks per forward in item 3
    labels: int = 1251  # VoxCeleb1 speakers
    attention_clips: tuple[int, ...] = ()  # clip counts of the attention sweep (item 2)
    cuda: dict = field(default_factory=dict)  # what changes on a GPU (more clips: the GPU is far faster)

    def on(self, device: str) -> "Size":
        """This size as run on `device`."""
        return dataclasses.replace(self, **self.cuda) if torch.device(device).type == "cuda" else self


SIZES = {
    "tiny": Size(
        name="tiny",
        model=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
        clips=4,
        repeats=2,
        gemm=256,
        attention_repeats=3,
        packing_clips=256,
        packing_batches=(12, 64),
        scaling_seconds=(1.0, 40.0),
        attention_clips=(2, 4),
    ),
    "base": Size(
        name="base",
        model=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
        clips=12,
        repeats=2,
        gemm=2048,
        attention_repeats=5,
        packing_clips=4096,
        packing_batches=(12, 48, 192, 768),
        scaling_seconds=(1.0, 5.0, 30.0, 120.0, 600.0),
        attention_clips=(8, 16),
        cuda=dict(clips=64, repeats=5, gemm=8192, attention_clips=(8, 16, 32, 64), attention_repeats=10,
                  ast_batch=32),
    ),
}


def elasticast_config(size: Size, **overrides) -> ElasticASTConfig:
    return ElasticASTConfig(**{**size.model, "num_labels": size.labels, **overrides})


def elasticast_model(size: Size, device: str) -> ElasticASTForAudioClassification:
    """ElasticAST of `size` on `device`; on CUDA with the one-call `torch_varlen` attention where the model has it
    (set explicitly, so that the record names the path that was timed)."""
    model = ElasticASTForAudioClassification(elasticast_config(size)).to(device)
    varlen = "torch_varlen" in getattr(modeling_elasticast, "VARLEN_IMPLEMENTATIONS", ())
    if varlen and torch.device(device).type == "cuda":
        model.set_attn_implementation("torch_varlen")
    return model


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


def speech_mix(n: int, seed: int = 0, source: np.ndarray | None = None) -> list[np.ndarray]:
    """`n` clips with `voxceleb_like_durations`, cut from `source` (default: `speech_source()`)."""
    return [speech_clip(d, seed + i, source) for i, d in enumerate(voxceleb_like_durations(n, seed))]


def ast_chunks(wave: np.ndarray) -> list[np.ndarray]:
    """Consecutive 10-s pieces of a clip (the last one shorter), so that a fixed-length AST sees all the audio."""
    step = int(AST_WINDOW_SECONDS * SAMPLING_RATE)
    return [wave[start : start + step] for start in range(0, len(wave), step)]


# ------------------------------------------------------------------------------------------ timing and precision
def precision(device: str) -> str:
    """bf16 autocast on GPUs; fp32 on CPU, whose cores here lack AVX512-BF16 (bf16 would be several times slower)."""
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def autocast(device: str):
    """The context every timed model call runs in (see `precision`)."""
    if precision(device) == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def best_times(
    candidates: dict[str, Callable[[], object]], repeats: int, peaks: dict | None = None
) -> dict[str, float]:
    """Wall seconds of each candidate, best of `repeats` runs taken interleaved (a b c a b c ...), so that load
    from other jobs on the machine hits every candidate alike. The first round doubles as warm-up.

    On CUDA each run ends with a synchronize, and with `peaks` given, `peaks[name]` gets the candidate's peak GPU
    memory in MiB: the most torch allocated during one of its runs on top of what was held before it (model weights
    are held; an optimizer's state is allocated by the first step, so it counts).
    """
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    times = {name: math.inf for name in candidates}
    for _ in range(max(repeats, 1)):
        for name, run in candidates.items():
            if cuda:
                torch.cuda.synchronize()
                held = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize()
            times[name] = min(times[name], time.perf_counter() - start)
            if cuda and peaks is not None:
                peak = (torch.cuda.max_memory_allocated() - held) / 2**20
                peaks[name] = max(peaks.get(name, 0.0), peak)
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
