"""Training checks that need a CUDA machine; prints one JSON line per check.

Run from the repository root on a GPU machine: `python scripts/gpu_training_check.py` (falls back to CPU when no
GPU is present, for a dry run). Needs accelerate but not datasets/torchcodec: clips are generated tones fed straight
to the training collators, so what runs is the training step of `elasticast.training` — packed rows or AST
spectrograms on the device, bf16 autocast through Accelerate, loss normalised by the clip count, attention backends.
"""

import json
import sys
import time

import numpy as np
import torch

sys.path.insert(0, ".")
from accelerate import Accelerator  # noqa: E402

from elasticast import ElasticASTConfig, ElasticASTFeatureExtractor, ElasticASTForAudioClassification  # noqa: E402
from elasticast.training.batching import Augmentation, FixedCollator, PackedCollator  # noqa: E402
from elasticast.training.data import Clip, ClipTransform  # noqa: E402
from elasticast.training.loop import forward, loss_sum  # noqa: E402


def report(check, **values):
    print(json.dumps({"check": check, **values}), flush=True)


def tone_clips(n: int, transform: ClipTransform, seed: int = 0) -> list[Clip]:
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        t = np.arange(int(rng.uniform(0.5, 6.0) * 16000)) / 16000
        wave = torch.from_numpy((0.3 * np.sin(2 * np.pi * (300 + 400 * (i % 3)) * t)
                                 + 0.05 * rng.standard_normal(t.size)).astype(np.float32))
        wave, c, full, audio = transform(wave, rng)
        clips.append(Clip((0, i), label=i % 3, wave=wave, compression=c, full_frames=full, audio_frames=audio))
    return clips


def train_steps(acc, model, batches, steps: int) -> tuple[float, float, float]:
    """`steps` AdamW steps cycling over `batches`; returns first loss, last loss, seconds per step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = acc.prepare(model, optimizer)
    losses, start = [], time.perf_counter()
    for step in range(steps):
        batch = batches[step % len(batches)]
        loss = loss_sum(forward(model, batch, acc.device), batch.targets.to(acc.device), False) / len(batch)
        acc.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return float(np.mean(losses[:3])), float(np.mean(losses[-3:])), (time.perf_counter() - start) / steps


def grads(model, batches, device, weight) -> list[torch.Tensor]:
    model.zero_grad()
    for batch in batches:
        (loss_sum(forward(model, batch, device), batch.targets.to(device), False) * weight).backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def main():
    fe = ElasticASTFeatureExtractor()
    rng = np.random.default_rng(1)
    transform = ClipTransform("native", fe, max_seconds=30.0)
    collator = PackedCollator(fe, transform, 3, 1024, Augmentation(freq_mask=24, time_mask=0.2))
    clips = tone_clips(48, transform)
    batches = [collator(clips[i : i + 12], rng, train=True) for i in range(0, 48, 12)]
    config = ElasticASTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                              num_labels=3)

    acc = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    torch.manual_seed(0)
    first, last, seconds = train_steps(acc, ElasticASTForAudioClassification(config), batches, 60)
    report("elasticast_train_bf16", device=str(acc.device), precision=acc.mixed_precision, first_loss=first,
           last_loss=last, seconds_per_step=seconds, learned=last < 0.5 * first)

    # Loss normalisation on the device: two micro-batches weighted 1/N (N = clips of both) give the gradient of
    # the mean loss over the union, computed in one batch.
    device = acc.device
    torch.manual_seed(0)
    model = ElasticASTForAudioClassification(config).to(device)
    joint = collator(clips[:24], np.random.default_rng(0), train=False)
    halves = [collator(clips[:12], np.random.default_rng(0), train=False),
              collator(clips[12:24], np.random.default_rng(0), train=False)]
    split = grads(model, halves, device, 1 / 24)
    whole = grads(model, [joint], device, 1 / 24)
    report("global_loss_normalisation_fp32", max_grad_diff=max((a - b).abs().max().item()
                                                               for a, b in zip(split, whole)))

    # Training gradients agree across attention backends on the device.
    reference = None
    for implementation in ("sdpa", "eager", "flex_attention"):
        model.config._attn_implementation = implementation
        try:
            g = grads(model, [joint], device, 1 / 24)
        except Exception as error:  # report, keep checking the others
            report("backend_gradients", backend=implementation, error=f"{type(error).__name__}: {error}"[:300])
            continue
        reference = reference or g
        report("backend_gradients", backend=implementation,
               max_grad_diff_vs_sdpa=max((a - b).abs().max().item() for a, b in zip(g, reference)))

    # The AST baseline (16x16 patches, stride 16, fixed 512 frames) through the same step.
    from transformers import ASTConfig, ASTForAudioClassification

    fixed = FixedCollator(fe, ClipTransform("fixed", fe, fixed_frames=512, pad=False), 3,
                          512, Augmentation(freq_mask=24, time_mask=0.2))
    ast_batches = [fixed(clips[i : i + 12], rng, train=True) for i in range(0, 48, 12)]
    ast = ASTForAudioClassification(ASTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                              intermediate_size=128, num_labels=3, patch_size=16, frequency_stride=16,
                                              time_stride=16, max_length=512, num_mel_bins=128))
    first, last, seconds = train_steps(acc, ast, ast_batches, 60)
    report("ast_train_bf16", first_loss=first, last_loss=last, seconds_per_step=seconds, learned=last < 0.5 * first)


if __name__ == "__main__":
    main()
