"""Item 2: packed attention — the model's default path against a boolean-masked SDPA over rows and a per-clip loop.

The three candidates compute the same attention core (queries `[Σ, D]` from one tensor, keys and values from
another) on packed rows of clip-length segments:
- `default`: `ElasticASTAttention` itself, with its four projections set to identity, so exactly the model's code
  runs (on CPU: one SDPA call per group of equal-length segments, gathered by index);
- `masked_sdpa`: the tokens scattered into `[R, L]` rows and one SDPA call with a block-diagonal boolean mask
  `[R, 1, L, L]` (what the official code and a mask-based port do);
- `per_clip_loop`: one SDPA call per segment on views of the packed tokens.
On CUDA the model's flex-attention path (`flex`, a document BlockMask cached on the layout) runs as a fourth
candidate; flex has no backward on CPU. The layout (with its caches) and the boolean mask are built once and reused
by every timed call, as the model reuses its layout in every layer of a forward.
"""

import torch
from torch import nn
from torch.nn.functional import scaled_dot_product_attention as sdpa

from elasticast import ElasticASTFeatureExtractor, PackedLayout, pack_segments
from elasticast.modeling_elasticast import ElasticASTAttention

from .common import SAMPLING_RATE, Size, best_times, elasticast_config, voxceleb_like_durations


def packed_segment_ids(size: Size, seed: int = 2) -> torch.Tensor:
    """`[R, L]` segment ids of the R fullest rows that best-fit packing makes of the segments of mix-length clips."""
    budget, fe = size.attention_row_tokens, ElasticASTFeatureExtractor()
    durations = voxceleb_like_durations(16 * size.attention_rows, seed)
    lengths = [n for d in durations for n in fe.segment_lengths(int(d * SAMPLING_RATE), max_tokens_per_row=budget)]
    rows = sorted(pack_segments(lengths, budget), key=lambda row: -sum(lengths[i] for i in row))
    rows = [[lengths[i] for i in row] for row in rows[: size.attention_rows]]
    segment_ids = torch.zeros(len(rows), max(map(sum, rows)), dtype=torch.long)
    for r, row in enumerate(rows):
        segment_ids[r, : sum(row)] = torch.repeat_interleave(torch.arange(1, len(row) + 1), torch.tensor(row))
    return segment_ids


def core_attention(size: Size, implementation: str, device: str) -> ElasticASTAttention:
    """The model's attention module with identity projections: only its attention core is left to time."""
    config = elasticast_config(size)
    config._attn_implementation = implementation
    module = ElasticASTAttention(config)
    module.q_proj = module.k_proj = module.v_proj = module.o_proj = nn.Identity()
    return module.to(device)


def candidates(size: Size, segment_ids: torch.Tensor, device: str) -> dict:
    """Name → function `(queries [Σ, D], tokens [Σ, D]) → [Σ, D]` for every way of computing packed attention."""
    layout = PackedLayout(segment_ids.to(device))
    rows, length = layout.shape
    heads = size.model["num_attention_heads"]
    width = size.model["hidden_size"]
    mask = (segment_ids[:, None, :, None] == segment_ids[:, None, None, :]).to(device)  # padding sees padding only
    default = core_attention(size, "sdpa", device)

    def masked_sdpa(queries, tokens):
        q, kv = (layout.to_rows(x).view(rows, length, heads, -1).transpose(1, 2) for x in (queries, tokens))
        out = sdpa(q, kv, kv, attn_mask=mask).transpose(1, 2).reshape(rows * length, width)
        return out[layout.token_index]

    def per_clip_loop(queries, tokens):
        pieces = []
        for q, kv in zip(queries.split(layout.segment_lengths), tokens.split(layout.segment_lengths)):
            q, kv = (x.view(1, len(x), heads, -1).transpose(1, 2) for x in (q, kv))  # one segment: [1, H, l, d]
            pieces.append(sdpa(q, kv, kv).transpose(1, 2).reshape(q.shape[2], width))
        return torch.cat(pieces)

    found = {
        "default": lambda queries, tokens: default(queries, tokens, layout)[0],
        "masked_sdpa": masked_sdpa,
        "per_clip_loop": per_clip_loop,
    }
    if device == "cuda":
        flex = core_attention(size, "flex_attention", device)
        found["flex"] = lambda queries, tokens: flex(queries, tokens, layout)[0]
    return found


def run(size: Size, device: str = "cpu") -> dict:
    torch.manual_seed(0)
    segment_ids = packed_segment_ids(size)
    functions = candidates(size, segment_ids, device)
    tokens = int((segment_ids > 0).sum())
    width = size.model["hidden_size"]
    queries, keys = (torch.randn(tokens, width, device=device) for _ in range(2))
    grad_output = torch.randn(tokens, width, device=device)
    leaves = {name: [x.clone().requires_grad_() for x in (queries, keys)] for name in functions}

    def forward(function):
        def call():
            with torch.no_grad():  # not inference_mode: the layout caches index tensors reused with autograd
                return function(queries, keys)

        return call

    def forward_backward(function, inputs):
        def call():
            for x in inputs:
                x.grad = None
            function(*inputs).backward(grad_output)

        return call

    forward_times = best_times({name: forward(f) for name, f in functions.items()}, size.attention_repeats)
    training_times = best_times(
        {name: forward_backward(f, leaves[name]) for name, f in functions.items()}, size.attention_repeats
    )
    outputs = {name: f(queries, keys) for name, f in functions.items()}
    reference = outputs["default"]
    return {
        "device": device,
        "rows": segment_ids.shape[0],
        "row_length": segment_ids.shape[1],
        "segments_per_row": [int(row.max()) for row in segment_ids],
        "tokens": tokens,
        "heads": size.model["num_attention_heads"],
        "forward_ms": {name: 1e3 * t for name, t in forward_times.items()},
        "forward_backward_ms": {name: 1e3 * t for name, t in training_times.items()},
        "max_abs_diff_output": {name: float((out - reference).abs().max()) for name, out in outputs.items()},
        "max_abs_diff_grad": {
            name: max(float((x.grad - r.grad).abs().max()) for x, r in zip(leaves[name], leaves["default"]))
            for name in training_times
        },
    }


def rows(result: dict) -> list[tuple]:
    r = result
    shape = f"{r['rows']}×{r['row_length']} tokens, {r['heads']} heads, {r['device']}"
    found = []
    for key, label in (("forward_ms", "forward"), ("forward_backward_ms", "forward+backward")):
        ms = r[key]
        loop_ratio = ms["per_clip_loop"] / ms["default"]
        detail = ", ".join(f"{name} {value:.1f}" for name, value in ms.items())
        found.append(
            (
                f"Packed attention {label} ({shape}): per-clip loop ÷ default [ms: {detail}]",
                f"{loop_ratio:.2f} (masked ÷ default {ms['masked_sdpa'] / ms['default']:.2f})",
                "≥ 1.0",
                loop_ratio >= 1.0,
            )
        )
    worst = max(max(r["max_abs_diff_output"].values()), max(r["max_abs_diff_grad"].values()))
    found.append(("Packed attention, max abs diff between backends (outputs, grads)", f"{worst:.1e}", "≈ 0", None))
    return found
