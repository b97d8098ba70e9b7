"""Checks that need a CUDA machine (and torchaudio where it loads); prints one JSON line per check.

Run on a GPU machine from the repository root: `python scripts/gpu_check.py [speech.npy]`. The speech file is a
1-D float32 waveform at 16 kHz (tests make one with espeak-ng); without it a synthetic chirp is used.
"""

import json
import sys

import numpy as np
import torch

sys.path.insert(0, ".")
from elasticast import ElasticASTConfig, ElasticASTFeatureExtractor, ElasticASTForAudioClassification  # noqa: E402


def report(check, **values):
    print(json.dumps({"check": check, **values}), flush=True)


def main():
    device = torch.device("cuda")
    if len(sys.argv) > 1:
        speech = np.load(sys.argv[1]).astype(np.float32)
    else:
        t = np.arange(16000 * 4) / 16000
        speech = (0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t)).astype(np.float32)
    fe = ElasticASTFeatureExtractor()
    wave = torch.from_numpy(speech)
    ours = (fe.fbank([wave], [1.0])[0] - fe.mean) / (2 * fe.std)
    try:
        import torchaudio.compliance.kaldi as kaldi

        reference = kaldi.fbank((wave - wave.mean())[None], htk_compat=True, sample_frequency=16000, use_energy=False,
                                window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
        reference = (reference - fe.mean) / (2 * fe.std)
        report("torchaudio_kaldi_parity", max_abs_diff=float((ours - reference).abs().max()), tolerance=1e-3)
    except ImportError as error:
        report("torchaudio_kaldi_parity", skipped=str(error))

    gpu = fe(wave.to(device), sampling_rate=16000, return_tensors="pt")
    cpu = fe(wave, sampling_rate=16000, return_tensors="pt")
    report("fbank_gpu_vs_cpu", device=str(gpu["input_values"].device),
           max_abs_diff=float((gpu["input_values"].cpu() - cpu["input_values"]).abs().max()))

    rng = np.random.default_rng(0)
    waves = [np.resize(speech, int(16000 * s)) + 0.003 * rng.standard_normal(int(16000 * s)).astype(np.float32)
             for s in (0.3, 2.0, 7.5, 27.0, 45.0)]
    config = ElasticASTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                              num_labels=5)
    model = ElasticASTForAudioClassification(config).to(device).eval()
    packed = fe(waves, sampling_rate=16000, packing=True, return_tensors="pt").to(device)
    rows = fe(waves, sampling_rate=16000, return_tensors="pt").to(device)
    labels = torch.tensor([0, 1, 2, 3, 4], device=device)
    results = {}
    for implementation in ("eager", "sdpa", "flex_attention"):
        try:
            model.set_attn_implementation(implementation)
            model.zero_grad()
            out = model(**packed, labels=labels)
            out.loss.backward()
            grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
            with torch.no_grad():
                unpacked = model(**rows).logits
            results[implementation] = (out.logits.detach(), grad)
            report("backend", implementation=implementation,
                   packed_vs_rows=float((out.logits.detach() - unpacked).abs().max()),
                   grads_finite=bool(torch.isfinite(grad).all()))
        except Exception as error:  # report and go on: one backend failing must not hide the others
            report("backend", implementation=implementation, error=f"{type(error).__name__}: {error}"[:500])
    reference_logits, reference_grad = results["eager"]
    for implementation, (logits, grad) in results.items():
        report("backend_vs_eager", implementation=implementation,
               logits_max_abs_diff=float((logits - reference_logits).abs().max()),
               grad_max_abs_diff=float((grad - reference_grad).abs().max()))
    try:
        import flash_attn  # noqa: F401

        report("flash_attention", available=True)
    except ImportError:
        report("flash_attention", available=False, note="flash-attn not installed: varlen path not exercised")


if __name__ == "__main__":
    main()
