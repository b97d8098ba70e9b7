"""Item 3: audio-seconds per wall-second, ElasticAST against transformers' `ASTForAudioClassification`, in inference
and in one training step, features included.

Both models have random weights and the same width and depth. ElasticAST gets the whole mix in one call: its
feature extractor packs all clips into rows of 2048 tokens and one forward returns one logit vector per clip. AST is
fed every clip cut into consecutive 10-s windows (the last one padded to 1024 frames by `ASTFeatureExtractor`), so
that it sees all the audio, in batches of `size.ast_batch` windows; a clip's logits are the mean over its windows.
Two ASTs: transformers' default (patch stride 10, 12×101 patches) and the paper's stride 16 (8×64 patches), both with
sdpa attention.

Features are what each model's users run: ElasticAST's extractor on the model's device (on a GPU the fbank runs
there, in float32), `ASTFeatureExtractor` on the CPU (its numpy or torchaudio path) with the result moved to the
device. A training step is forward, backward (AST: accumulated over its batches of windows) and one AdamW step, on
the same mix; its tokens/s counts the tokens each model computes. bf16 autocast on a GPU, fp32 on CPU. Features,
inference and training steps are timed separately, in one interleaved loop; end-to-end = features + model. On CUDA
the peak GPU memory of each model's inference and training step is recorded.
"""

import torch
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

from elasticast import ElasticASTFeatureExtractor, PackedLayout
from elasticast.ast_baseline import ast_grid

from .common import ROW_TOKENS, SAMPLING_RATE, Size, ast_chunks, autocast, best_times, elasticast_model, precision

AST_STRIDES = {"ast_stride10": 10, "ast_stride16": 16}
GOALS = {"ast_stride10": 2.5, "ast_stride16": 1.4}  # end-to-end inference speed-up (issue 11; CPU: 2.5 for both)


def ast_model(size: Size, stride: int, device: str = "cpu") -> ASTForAudioClassification:
    config = ASTConfig(**size.model, num_labels=size.labels, frequency_stride=stride, time_stride=stride)
    return ASTForAudioClassification._from_config(config, attn_implementation="sdpa").to(device).eval()


def ast_patches(ast: ASTForAudioClassification) -> int:
    """Tokens of one AST window: the patch grid (transformers' own `get_shape`) plus the [CLS] and distillation
    tokens."""
    freq, time = ast_grid(ast)
    return freq * time + 2


def run(size: Size, mix: list, device: str = "cpu") -> dict:
    torch.manual_seed(0)
    fe, ast_fe = ElasticASTFeatureExtractor(), ASTFeatureExtractor()
    model = elasticast_model(size, device).eval()
    asts = {name: ast_model(size, stride, device) for name, stride in AST_STRIDES.items()}
    optimizers = {
        name: torch.optim.AdamW(m.parameters(), lr=1e-5) for name, m in [("elasticast", model), *asts.items()]
    }
    windows = [ast_chunks(wave) for wave in mix]
    owner = torch.repeat_interleave(torch.arange(len(mix)), torch.tensor([len(w) for w in windows])).to(device)
    flat_windows = [chunk for clip in windows for chunk in clip]
    labels = torch.randint(size.labels, (len(mix),), device=device)
    # Waveforms as users hand them over; ElasticAST's go to its device inside the timed features call.
    waves = [torch.from_numpy(wave) for wave in mix]
    state = {}

    def elasticast_features():
        state["elasticast"] = fe(
            [wave.to(device) for wave in waves], sampling_rate=SAMPLING_RATE, packing=True,
            max_tokens_per_row=ROW_TOKENS, return_tensors="pt",
        )

    def elasticast_inference():
        model.eval()
        with torch.inference_mode(), autocast(device):
            state["elasticast_logits"] = model(**state["elasticast"]).logits

    def elasticast_training():
        model.train()
        with autocast(device):
            loss = model(**state["elasticast"], labels=labels).loss
        loss.backward()
        optimizers["elasticast"].step()
        optimizers["elasticast"].zero_grad(set_to_none=True)

    def ast_features():
        values = ast_fe(flat_windows, sampling_rate=SAMPLING_RATE, return_tensors="pt")["input_values"]
        state["ast"] = values.to(device)

    def ast_logits(ast):
        """Per-clip logits (mean over the clip's windows) and the per-batch window logits."""
        logits = torch.cat([ast(input_values=b).logits for b in state["ast"].split(size.ast_batch)]).float()
        per_clip = torch.zeros(len(mix), logits.shape[1], device=device).index_add_(0, owner, logits)
        return per_clip / torch.bincount(owner, minlength=len(mix))[:, None]

    def ast_inference(name, ast):
        def call():
            ast.eval()
            with torch.inference_mode(), autocast(device):
                state[name] = ast_logits(ast)

        return call

    def ast_training(name, ast):
        def call():
            ast.train()
            batches = state["ast"].split(size.ast_batch)
            window_labels = labels[owner]  # every window learns its clip's label; mean over all windows
            for batch, batch_labels in zip(batches, window_labels.split(size.ast_batch)):
                with autocast(device):
                    logits = ast(input_values=batch).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), batch_labels, reduction="sum")
                (loss / len(window_labels)).backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)

        return call

    peaks = {}
    times = best_times(
        {
            "elasticast_features": elasticast_features,
            "elasticast_model": elasticast_inference,
            "elasticast_training": elasticast_training,
            "ast_features": ast_features,
            **{name: ast_inference(name, ast) for name, ast in asts.items()},
            **{f"{name}_training": ast_training(name, ast) for name, ast in asts.items()},
        },
        size.repeats,
        peaks,
    )
    audio_seconds = sum(len(wave) for wave in mix) / SAMPLING_RATE
    tokens = len(PackedLayout(state["elasticast"]["segment_ids"]).token_index)
    elastic_total = times["elasticast_features"] + times["elasticast_model"]
    elastic_training = times["elasticast_features"] + times["elasticast_training"]
    found = {
        "device": device,
        "precision": precision(device),
        "attention": model.config._attn_implementation,
        "clips": len(mix),
        "audio_seconds": audio_seconds,
        "ast_windows": len(flat_windows),
        "elasticast_tokens": tokens,
        "times_s": times,
        "peak_mib": peaks or None,
        "elasticast_audio_s_per_s": audio_seconds / elastic_total,
        "elasticast_training_audio_s_per_s": audio_seconds / elastic_training,
        "elasticast_training_tokens_per_s": tokens / times["elasticast_training"],
    }
    for name, ast in asts.items():
        total = times["ast_features"] + times[name]
        training = times["ast_features"] + times[f"{name}_training"]
        ast_tokens = len(flat_windows) * ast_patches(ast)
        found[name] = {
            "tokens": ast_tokens,
            "audio_s_per_s": audio_seconds / total,
            "speedup_end_to_end": total / elastic_total,
            "speedup_model_only": times[name] / times["elasticast_model"],
            "training_audio_s_per_s": audio_seconds / training,
            "training_speedup_end_to_end": training / elastic_training,
            "training_tokens_per_s": ast_tokens / times[f"{name}_training"],
        }
    return found


def rows(result: dict) -> list[tuple]:
    r = result
    cuda = r.get("device", "cpu").startswith("cuda")
    setting = f"{r['device']} {r['precision']}, {r['attention']} attention" if "device" in r else "cpu fp32"
    found = []
    for name, stride in AST_STRIDES.items():
        a = r[name]
        goal = GOALS[name] if cuda else 2.5
        found.append(
            (
                f"Audio-s per wall-s vs AST stride {stride}, inference ({r['clips']} clips, "
                f"{r['audio_seconds']:.0f} s, "
                f"{r['ast_windows']} AST windows, {setting}; {r['elasticast_audio_s_per_s']:.1f} vs "
                f"{a['audio_s_per_s']:.1f} audio-s/s; tokens {r['elasticast_tokens']} vs {a['tokens']}, ratio "
                f"{a['tokens'] / r['elasticast_tokens']:.2f})",
                f"{a['speedup_end_to_end']:.2f}x (model only {a['speedup_model_only']:.2f}x)",
                f"≥ {goal}x",
                a["speedup_end_to_end"] >= goal,
            )
        )
    if "elasticast_training_tokens_per_s" not in r:  # records from before the training step was measured
        return found
    for name, stride in AST_STRIDES.items():
        a = r[name]
        tokens_ratio = r["elasticast_training_tokens_per_s"] / a["training_tokens_per_s"]
        found.append(
            (
                f"One training step vs AST stride {stride}: audio-s per wall-s "
                f"{r['elasticast_training_audio_s_per_s']:.1f} vs {a['training_audio_s_per_s']:.1f}; tokens/s "
                f"{r['elasticast_training_tokens_per_s']:.0f} vs {a['training_tokens_per_s']:.0f} "
                f"(ratio {tokens_ratio:.2f})",
                f"{a['training_speedup_end_to_end']:.2f}x",
                "tokens/s ratio ≥ 1.0" if stride == 16 else "",
                tokens_ratio >= 1.0 if stride == 16 else None,
            )
        )
    if r.get("peak_mib"):
        p = r["peak_mib"]
        found.append((
            "Peak GPU memory, MiB, inference / training step: "
            + "; ".join(f"{label} {p[inference]:.0f} / {p[training]:.0f}" for label, inference, training in (
                ("ElasticAST", "elasticast_model", "elasticast_training"),
                ("AST-10", "ast_stride10", "ast_stride10_training"),
                ("AST-16", "ast_stride16", "ast_stride16_training"))),
            "", "", None))
    return found
