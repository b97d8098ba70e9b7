"""Item 4: feature extraction, `ElasticASTFeatureExtractor` (all clips' frames in one batched torch FFT) against
`ASTFeatureExtractor`'s numpy path (one clip at a time), on the clips of the mix, with parity.

Both extractors make the whole fbank of every clip: AST's `max_length` is set to the longest clip so that nothing is
cut. Ours is timed through its full `__call__` (fbank, normalisation, 16×16 patches, rows), at its default CPU
precision (float64) and with `fbank_dtype="float32"`. Parity compares the normalised log-mel frames,
`(fbank - mean) / (2 * std)` with AudioSet's statistics in both.
"""

import numpy as np
import torch
from transformers import ASTFeatureExtractor
from transformers.utils import is_speech_available

from elasticast import ElasticASTFeatureExtractor

from .common import SAMPLING_RATE, Size, best_times


def run(size: Size, mix: list) -> dict:
    extractors = {"float64": ElasticASTFeatureExtractor(), "float32": ElasticASTFeatureExtractor(fbank_dtype="float32")}
    longest = max(extractors["float64"].raw_frames(len(wave)) for wave in mix)
    ast_fe = ASTFeatureExtractor(max_length=longest)
    candidates = {
        precision: (lambda fe=fe: fe(mix, sampling_rate=SAMPLING_RATE, return_tensors="pt"))
        for precision, fe in extractors.items()
    }
    times = best_times({**candidates, "ast": lambda: ast_fe(mix, sampling_rate=SAMPLING_RATE, return_tensors="np")},
                       size.repeats)
    theirs = ast_fe(mix, sampling_rate=SAMPLING_RATE, return_tensors="np")["input_values"]
    result = {
        "clips": len(mix),
        "audio_seconds": sum(len(wave) for wave in mix) / SAMPLING_RATE,
        "ast_backend": "torchaudio" if is_speech_available() else "numpy",
        "ast_ms_per_clip": 1e3 * times["ast"] / len(mix),
    }
    for precision, fe in extractors.items():
        ours = fe.fbank([torch.from_numpy(wave) for wave in mix], [1.0] * len(mix))
        result[precision] = {
            "ms_per_clip": 1e3 * times[precision] / len(mix),
            "speedup": times["ast"] / times[precision],
            "max_abs_diff": max(
                float(np.abs(fe.normalize(mel.numpy()) - reference[: len(mel)]).max())
                for mel, reference in zip(ours, theirs)
            ),
        }
    return result


def rows(result: dict) -> list[tuple]:
    r = result
    return [
        (
            f"Feature extraction ({precision}{', default on CPU' if precision == 'float64' else ''}) vs "
            f"ASTFeatureExtractor ({r['ast_backend']}), {r['clips']} clips, {r['audio_seconds']:.0f} s: ms/clip "
            f"{r[precision]['ms_per_clip']:.1f} vs {r['ast_ms_per_clip']:.1f}",
            f"{r[precision]['speedup']:.1f}x, max abs diff {r[precision]['max_abs_diff']:.1e}",
            "≥ 4x at ≤ 2e-4",
            r[precision]["speedup"] >= 4 and r[precision]["max_abs_diff"] <= 2e-4,
        )
        for precision in ("float64", "float32")
    ]
