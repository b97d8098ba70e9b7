"""Item 5: where the tokens go — best-fit packing (`pack_segments`), the paper's sequential fill, fixed-length AST.

Clips get ElasticAST's token counts (8 frequency patches × whole 16-frame time patches). A packing call receives
`clips_per_call` clips in loader order and makes rows of at most 2048 tokens, padded to the call's longest row
(as the paper describes); useful % = real tokens / allocated tokens. The fixed-length AST (stride 16, 1024 frames =
512 tokens per clip, the paper's Table 1 setting) pads short clips and cuts long ones: padding % of allocated
tokens, cut % of the clips' tokens.
"""

from elasticast import pack_segments

from .common import ROW_TOKENS, SAMPLING_RATE, Size, clip_tokens, voxceleb_like_durations

AST_TOKENS = (1024 // 16) * (128 // 16)


def sequential_fill(lengths: list[int], max_tokens_per_row: int) -> list[list[int]]:
    """The paper's packer: clips in loader order; a clip that would overflow the current row opens the next one."""
    rows, used = [], max_tokens_per_row
    for index, n in enumerate(lengths):
        if used + n > max_tokens_per_row:
            rows.append([])
            used = 0
        rows[-1].append(index)
        used += n
    return rows


def pack_stats(lengths: list[int], clips_per_call: int, packer) -> dict:
    """Useful % (real over allocated tokens: rows × longest row of each call) and cut % (tokens of clips that no
    row received) when `packer` packs each call of `clips_per_call` clips."""
    placed = allocated = 0
    for start in range(0, len(lengths), clips_per_call):
        call = lengths[start : start + clips_per_call]
        rows = packer(call, ROW_TOKENS)
        row_lengths = [sum(call[i] for i in row) for row in rows]
        if sorted(i for row in rows for i in row) != list(range(len(call))) or max(row_lengths) > ROW_TOKENS:
            raise AssertionError(f"{packer.__name__} lost, repeated or overfilled clips")
        placed += sum(row_lengths)
        allocated += len(rows) * max(row_lengths)
    return {"useful_percent": 100 * placed / allocated, "cut_percent": 100 * (1 - placed / sum(lengths))}


def run(size: Size) -> dict:
    lengths = [clip_tokens(int(d * SAMPLING_RATE)) for d in voxceleb_like_durations(size.packing_clips, seed=1)]
    total = sum(lengths)
    kept = sum(min(n, AST_TOKENS) for n in lengths)
    allocated = AST_TOKENS * len(lengths)
    return {
        "clips": len(lengths),
        "tokens": total,
        "row_tokens": ROW_TOKENS,
        "per_call": [
            {
                "clips_per_call": b,
                "best_fit": pack_stats(lengths, b, pack_segments),
                "sequential": pack_stats(lengths, b, sequential_fill),
            }
            for b in size.packing_batches
        ],
        "ast_fixed": {
            "tokens_per_clip": AST_TOKENS,
            "useful_percent": 100 * kept / allocated,
            "padding_percent": 100 * (allocated - kept) / allocated,
            "cut_percent": 100 * (total - kept) / total,
        },
    }


def rows(result: dict) -> list[tuple]:
    r, ast = result, result["ast_fixed"]
    found = []
    for call in r["per_call"]:
        best, sequential = call["best_fit"], call["sequential"]
        found.append(
            (
                f"Useful tokens, {call['clips_per_call']} clips per packing call ({r['clips']} clips, rows ≤ "
                f"{r['row_tokens']}): best-fit (sequential fill {sequential['useful_percent']:.1f} %)",
                f"{best['useful_percent']:.1f} %, {best['cut_percent']:.0f} % cut",
                "≥ 98 %, 0 % cut",
                best["useful_percent"] >= 98 and best["cut_percent"] == 0,
            )
        )
    found.append(
        (
            f"Fixed-length AST ({ast['tokens_per_clip']} tokens/clip): useful (padding + cut)",
            f"{ast['useful_percent']:.1f} % ({ast['padding_percent']:.1f} % padding, {ast['cut_percent']:.1f} % cut)",
            "",
            None,
        )
    )
    return found
