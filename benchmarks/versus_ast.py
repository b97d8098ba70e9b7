"""Item 3: audio-seconds classified per wall-second, ElasticAST against transformers' `ASTForAudioClassification`.

Both models have random weights and the same width and depth. ElasticAST gets the whole mix in one call: its
feature extractor packs all clips into rows of 2048 tokens and one forward returns one logit vector per clip. AST is
fed every clip cut into consecutive 10-s windows (the last one padded to 1024 frames by `ASTFeatureExtractor`), so
that it sees all the audio, in batches of `size.ast_batch` windows; a clip's logits are the mean over its windows.
Two ASTs: transformers' default (patch stride 10, 12×101 patches) and the paper's stride 16 (8×64 patches).
Features and models are timed separately, in one interleaved loop; end-to-end = features + model.
"""

import torch
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification, PackedLayout
from elasticast.ast_baseline import ast_grid

from .common import ROW_TOKENS, SAMPLING_RATE, Size, ast_chunks, best_times, elasticast_config

AST_STRIDES = {"ast_stride10": 10, "ast_stride16": 16}


def ast_model(size: Size, stride: int) -> ASTForAudioClassification:
    config = ASTConfig(**size.model, num_labels=size.labels, frequency_stride=stride, time_stride=stride)
    return ASTForAudioClassification(config).eval()


def ast_patches(ast: ASTForAudioClassification) -> int:
    """Tokens of one AST window: the patch grid (transformers' own `get_shape`) plus the [CLS] and distillation
    tokens."""
    freq, time = ast_grid(ast)
    return freq * time + 2


def run(size: Size, mix: list) -> dict:
    torch.manual_seed(0)
    fe, ast_fe = ElasticASTFeatureExtractor(), ASTFeatureExtractor()
    model = ElasticASTForAudioClassification(elasticast_config(size)).eval()
    asts = {name: ast_model(size, stride) for name, stride in AST_STRIDES.items()}
    windows = [ast_chunks(wave) for wave in mix]
    owner = torch.repeat_interleave(torch.arange(len(mix)), torch.tensor([len(w) for w in windows]))
    flat_windows = [chunk for clip in windows for chunk in clip]
    state = {}

    def elasticast_features():
        state["elasticast"] = fe(
            mix, sampling_rate=SAMPLING_RATE, packing=True, max_tokens_per_row=ROW_TOKENS, return_tensors="pt"
        )

    def elasticast_model():
        with torch.inference_mode():
            state["elasticast_logits"] = model(**state["elasticast"]).logits

    def ast_features():
        state["ast"] = ast_fe(flat_windows, sampling_rate=SAMPLING_RATE, return_tensors="pt")["input_values"]

    def classify(name, ast):
        def call():
            with torch.inference_mode():
                logits = torch.cat([ast(input_values=b).logits for b in state["ast"].split(size.ast_batch)])
                per_clip = torch.zeros(len(mix), logits.shape[1]).index_add_(0, owner, logits)
                state[name] = per_clip / torch.bincount(owner)[:, None]

        return call

    times = best_times(
        {
            "elasticast_features": elasticast_features,
            "elasticast_model": elasticast_model,
            "ast_features": ast_features,
            **{name: classify(name, ast) for name, ast in asts.items()},
        },
        size.repeats,
    )
    audio_seconds = sum(len(wave) for wave in mix) / SAMPLING_RATE
    elastic_total = times["elasticast_features"] + times["elasticast_model"]
    found = {
        "clips": len(mix),
        "audio_seconds": audio_seconds,
        "ast_windows": len(flat_windows),
        "elasticast_tokens": len(PackedLayout(state["elasticast"]["segment_ids"]).token_index),
        "times_s": times,
        "elasticast_audio_s_per_s": audio_seconds / elastic_total,
    }
    for name, ast in asts.items():
        total = times["ast_features"] + times[name]
        found[name] = {
            "tokens": len(flat_windows) * ast_patches(ast),
            "audio_s_per_s": audio_seconds / total,
            "speedup_end_to_end": total / elastic_total,
            "speedup_model_only": times[name] / times["elasticast_model"],
        }
    return found


def rows(result: dict) -> list[tuple]:
    r = result
    found = []
    for name, stride in AST_STRIDES.items():
        a = r[name]
        found.append(
            (
                f"Audio-s per wall-s vs AST stride {stride} ({r['clips']} clips, {r['audio_seconds']:.0f} s, "
                f"{r['ast_windows']} AST windows; {r['elasticast_audio_s_per_s']:.1f} vs {a['audio_s_per_s']:.1f} "
                f"audio-s/s; tokens {r['elasticast_tokens']} vs {a['tokens']})",
                f"{a['speedup_end_to_end']:.2f}x (model only {a['speedup_model_only']:.2f}x)",
                "≥ 2.5x",
                a["speedup_end_to_end"] >= 2.5,
            )
        )
    return found
