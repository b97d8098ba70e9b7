"""Item 5: where the tokens go — best-fit packing (`pack_segments`), the paper's sequential fill, fixed-length AST.

A thin wrapper over `elasticast.token_usage` (the paper's Table 1 for any list of clip lengths) on the VoxCeleb-like
mix: each packing call gets `clips_per_call` clips in loader order and makes rows of ≤ 2048 tokens, padded to the
call's longest row; the fixed-length AST (stride 16, 1024 frames = 512 tokens per clip) pads short clips and cuts long
ones. ElasticAST's cut % should be only the sub-patch remainder (≤ 15 frames per clip past the last whole 16-frame
patch; `sub_patch_remainder_percent`): with no length cap it cuts nothing else, and "met" checks that too.

The training batcher (`elasticast.training.batching.TokenBudgetBatcher`: a look-ahead buffer of clips packed
best-fit into batches of 4 rows × 2048 tokens) is measured on the same clips; its useful % counts whole rows
(real tokens / (rows × 2048)), as training computes them.
"""

import torch

from elasticast import ElasticASTFeatureExtractor, pack_segments
from elasticast.token_usage import token_usage
from elasticast.training.batching import PackedCollator, TokenBudgetBatcher
from elasticast.training.data import Clip, ClipTransform

from .common import ROW_TOKENS, SAMPLING_RATE, Size, voxceleb_like_durations


def training_batcher_usage(fe: ElasticASTFeatureExtractor, num_samples: list[int], lookahead: int = 4) -> dict:
    """Useful % of the training batcher's batches (rows × 2048 tokens computed) on clips of `num_samples`, and the %
    of the clips' tokens (whole spectrograms, fractional last patch included) that no batch holds."""
    collator = PackedCollator(fe, ClipTransform("native", fe, max_seconds=None), 2, ROW_TOKENS)
    clips = [Clip((0, i), 0, torch.zeros(n)) for i, n in enumerate(num_samples)]
    batcher = TokenBudgetBatcher(collator.segments, 4 * ROW_TOKENS, ROW_TOKENS, lookahead)
    rows = placed = 0
    for batch in batcher(iter(clips)):
        lengths = [n for clip in batch for n in collator.segments(clip)]
        rows += len(pack_segments(lengths, ROW_TOKENS))
        placed += sum(lengths)
    native = sum(fe.raw_frames(n) for n in num_samples) * (fe.num_mel_bins // fe.patch_size) / fe.patch_size
    return {"lookahead": lookahead, "rows": rows, "useful_percent": 100 * placed / (rows * ROW_TOKENS),
            "cut_percent": 100 * (native - placed) / native}


def sub_patch_remainder_percent(fe: ElasticASTFeatureExtractor, num_samples: list[int]) -> float:
    """% of the clips' frames past their last whole patch: all that ElasticAST may cut without a length cap."""
    frames = sum(fe.raw_frames(n) for n in num_samples)
    return 100 * (frames - sum(fe.num_frames(n) for n in num_samples)) / frames


def run(size: Size) -> dict:
    num_samples = [int(d * SAMPLING_RATE) for d in voxceleb_like_durations(size.packing_clips, seed=1)]
    fe = ElasticASTFeatureExtractor()
    results = token_usage(
        num_samples,
        fe,
        batch_sizes=size.packing_batches,
        max_tokens_per_row=ROW_TOKENS,
        ast_length=1024,
        max_length=None,
    )
    return {"clips": len(num_samples), "row_tokens": ROW_TOKENS, "results": results,
            "sub_patch_remainder_percent": sub_patch_remainder_percent(fe, num_samples),
            "training_batcher": training_batcher_usage(fe, num_samples)}


def rows(result: dict) -> list[tuple]:
    ast, *packed = result["results"]
    remainder = result["sub_patch_remainder_percent"]
    goal = f"≥ 98 %, cut ≤ the sub-patch remainder ({remainder:.2f} %)"
    found = []
    for best in packed:
        if "best-fit" not in best["method"]:
            continue
        sequential = next(
            r for r in packed if r["batch_size"] == best["batch_size"] and "sequential" in r["method"]
        )
        found.append(
            (
                f"Useful tokens, {best['batch_size']} clips per packing call ({result['clips']} clips, rows ≤ "
                f"{result['row_tokens']}): best-fit (sequential fill {sequential['useful_percent']:.1f} %)",
                f"{best['useful_percent']:.1f} %, {best['cut_percent']:.2f} % cut",
                goal,
                best["useful_percent"] >= 98 and best["cut_percent"] <= remainder + 1e-9,
            )
        )
    batcher = result["training_batcher"]
    found.append(
        (
            f"Useful tokens, training batcher (buffered best-fit, look-ahead {batcher['lookahead']} batches of "
            f"4 × {result['row_tokens']} tokens, whole rows counted; same clips)",
            f"{batcher['useful_percent']:.1f} %, {batcher['cut_percent']:.2f} % cut",
            goal,
            batcher["useful_percent"] >= 98 and batcher["cut_percent"] <= remainder + 1e-9,
        )
    )
    found.append(
        (
            f"{ast['method']} (512 tokens/clip): useful (padding, cut)",
            f"{ast['useful_percent']:.1f} % ({ast['padding_percent']:.1f} % padding, {ast['cut_percent']:.1f} % cut)",
            "",
            None,
        )
    )
    return found
