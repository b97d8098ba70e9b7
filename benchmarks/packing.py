"""Item 5: where the tokens go — best-fit packing (`pack_segments`), the paper's sequential fill, fixed-length AST.

A thin wrapper over `elasticast.token_usage` (the paper's Table 1 for any list of clip lengths) on the VoxCeleb-like
mix: each packing call gets `clips_per_call` clips in loader order and makes rows of ≤ 2048 tokens, padded to the
call's longest row; the fixed-length AST (stride 16, 1024 frames = 512 tokens per clip) pads short clips and cuts long
ones. ElasticAST's cut % is only the sub-patch remainder (≤ 15 frames per clip past the last whole 16-frame patch):
with no length cap it cuts nothing else.
"""

from elasticast import ElasticASTFeatureExtractor
from elasticast.token_usage import token_usage

from .common import ROW_TOKENS, SAMPLING_RATE, Size, voxceleb_like_durations


def run(size: Size) -> dict:
    num_samples = [int(d * SAMPLING_RATE) for d in voxceleb_like_durations(size.packing_clips, seed=1)]
    results = token_usage(
        num_samples,
        ElasticASTFeatureExtractor(),
        batch_sizes=size.packing_batches,
        max_tokens_per_row=ROW_TOKENS,
        ast_length=1024,
        max_length=None,
    )
    return {"clips": len(num_samples), "row_tokens": ROW_TOKENS, "results": results}


def rows(result: dict) -> list[tuple]:
    ast, *packed = result["results"]
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
                f"{best['useful_percent']:.1f} %, {best['cut_percent']:.1f} % cut (sub-patch remainder)",
                "≥ 98 %, no audio cut",
                best["useful_percent"] >= 98,
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
