"""Item 2: packed attention — the model's attention backends side by side, against a boolean-masked SDPA over rows and
a per-clip loop, forward and forward+backward, at several clip counts.

Every candidate computes the same attention core (queries `[Σ, D]` from one tensor, keys and values from another)
on the segments of `n` mix-length clips packed best-fit into rows of 2048 tokens, for each `n` of
`size.attention_clips` (8–64 clips on a GPU):
- `sdpa_grouped`, `eager_grouped`: `ElasticASTAttention` itself with its four projections set to identity, so
  exactly the model's code runs: one attention call per group of equal-length segments;
- `flex` (CUDA): the model's flex-attention path, one call with a document BlockMask cached on the layout
  (transformers compiles it; flex has no backward on CPU);
- `torch_varlen` (CUDA, where the model registers it): one `varlen_attn` call over the Σ real tokens;
- `masked_sdpa`: the tokens scattered into `[R, L]` rows and one SDPA call with a block-diagonal boolean mask
  `[R, 1, L, L]` (what the official code and a mask-based port do);
- `per_clip_loop`: one SDPA call per segment on views of the packed tokens.
bf16 on a GPU, fp32 on CPU (`common.precision`). The layout (with its caches) and the boolean mask are built once and
reused by every timed call, as the model reuses its layout in every layer of a forward. On CUDA the peak memory of
each candidate's forward+backward is recorded.
"""

import torch
from torch import nn
from torch.nn.functional import scaled_dot_product_attention as sdpa

from elasticast import ElasticASTFeatureExtractor, PackedLayout, pack_segments
from elasticast import modeling_elasticast
from elasticast.modeling_elasticast import ElasticASTAttention

from .common import ROW_TOKENS, SAMPLING_RATE, Size, best_times, elasticast_config, precision, voxceleb_like_durations


def packed_segment_ids(clips: int, seed: int = 2) -> torch.Tensor:
    """`[R, L]` segment ids of `clips` mix-length clips' segments, packed best-fit into rows of ≤ 2048 tokens."""
    fe = ElasticASTFeatureExtractor()
    durations = voxceleb_like_durations(clips, seed)
    lengths = [
        n for d in durations for n in fe.segment_lengths(int(d * SAMPLING_RATE), max_tokens_per_row=ROW_TOKENS)
    ]
    rows = [[lengths[i] for i in row] for row in pack_segments(lengths, ROW_TOKENS)]
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


def model_backends(device: str) -> tuple[dict[str, str], dict[str, str]]:
    """Candidate name → the model's attention implementation, and name → why it does not run on `device`."""
    found, missing = {"sdpa_grouped": "sdpa", "eager_grouped": "eager"}, {}
    if torch.device(device).type == "cuda":
        found["flex"] = "flex_attention"
    else:
        missing["flex"] = "flex attention has no backward on CPU"
    if "torch_varlen" not in getattr(modeling_elasticast, "VARLEN_IMPLEMENTATIONS", ()):
        missing["torch_varlen"] = "this checkout's model has no torch_varlen attention"
    elif torch.device(device).type != "cuda":
        missing["torch_varlen"] = "varlen_attn is CUDA only"
    else:
        found["torch_varlen"] = "torch_varlen"
    return found, missing


def candidates(size: Size, segment_ids: torch.Tensor, device: str) -> tuple[dict, dict]:
    """Name → function `(queries [Σ, D], tokens [Σ, D]) → [Σ, D]` for every way of computing packed attention
    that runs on `device`, and name → why the others do not."""
    layout = PackedLayout(segment_ids.to(device))
    rows, length = layout.shape
    heads = size.model["num_attention_heads"]
    width = size.model["hidden_size"]
    mask = (segment_ids[:, None, :, None] == segment_ids[:, None, None, :]).to(device)  # padding sees padding only

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

    backends, missing = model_backends(device)
    found = {}
    for name, implementation in backends.items():
        module = core_attention(size, implementation, device)
        found[name] = lambda queries, tokens, module=module: module(queries, tokens, layout)[0]
    return {**found, "masked_sdpa": masked_sdpa, "per_clip_loop": per_clip_loop}, missing


def measure(size: Size, clips: int, device: str) -> dict:
    torch.manual_seed(0)
    segment_ids = packed_segment_ids(clips)
    functions, missing = candidates(size, segment_ids, device)
    tokens = int((segment_ids > 0).sum())
    width = size.model["hidden_size"]
    dtype = torch.bfloat16 if precision(device) == "bf16" else torch.float32
    queries, keys, grad_output = (torch.randn(tokens, width, device=device, dtype=dtype) for _ in range(3))
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

    peaks = {}
    forward_times = best_times({name: forward(f) for name, f in functions.items()}, size.attention_repeats)
    training_times = best_times(
        {name: forward_backward(f, leaves[name]) for name, f in functions.items()}, size.attention_repeats, peaks
    )
    with torch.no_grad():
        outputs = {name: f(queries, keys).float() for name, f in functions.items()}
    reference = outputs["sdpa_grouped"]
    return {
        "clips": clips,
        "rows": segment_ids.shape[0],
        "row_length": segment_ids.shape[1],
        "segments": sum(int(row.max()) for row in segment_ids),
        "tokens": tokens,
        "not_run": missing,
        "forward_ms": {name: 1e3 * t for name, t in forward_times.items()},
        "forward_backward_ms": {name: 1e3 * t for name, t in training_times.items()},
        "forward_backward_peak_mib": peaks or None,
        "max_abs_diff_output": {name: float((out - reference).abs().max()) for name, out in outputs.items()},
        "max_abs_diff_grad": {
            name: max(float((x.grad - r.grad).abs().max()) for x, r in zip(leaves[name], leaves["sdpa_grouped"]))
            for name in training_times
        },
    }


def run(size: Size, device: str = "cpu") -> dict:
    return {
        "device": device,
        "precision": precision(device),
        "heads": size.model["num_attention_heads"],
        "sweep": [measure(size, clips, device) for clips in size.attention_clips],
    }


def rows(result: dict) -> list[tuple]:
    r = result
    cuda = r["device"].startswith("cuda")
    found = []
    for point in r["sweep"]:
        shape = (f"{point['clips']} clips, {point['segments']} segments, {point['rows']}×{point['row_length']} "
                 f"tokens, {r['heads']} heads, {r['device']} {r['precision']}")
        for key, label in (("forward_ms", "forward"), ("forward_backward_ms", "forward+backward")):
            ms = point[key]
            detail = ", ".join(f"{name} {value:.2f}" for name, value in ms.items())
            if cuda and "torch_varlen" in ms:  # the GPU default: one varlen call against the grouped calls
                ratio, what, goal = ms["sdpa_grouped"] / ms["torch_varlen"], "sdpa grouped ÷ varlen", "≥ 1.0"
            elif cuda:
                ratio, what, goal = ms["sdpa_grouped"] / ms["flex"], "sdpa grouped ÷ flex", ""
            else:  # CPU default: grouped sdpa against the hand loop
                ratio, what, goal = ms["per_clip_loop"] / ms["sdpa_grouped"], "per-clip loop ÷ sdpa grouped", "≥ 1.0"
            found.append((
                f"Packed attention {label} ({shape}): {what} [ms: {detail}]",
                f"{ratio:.2f} (masked ÷ sdpa grouped {ms['masked_sdpa'] / ms['sdpa_grouped']:.2f})",
                goal,
                ratio >= 1.0 if goal else None,
            ))
        if point["forward_backward_peak_mib"]:
            peaks = ", ".join(f"{name} {mib:.0f}" for name, mib in point["forward_backward_peak_mib"].items())
            found.append((f"Packed attention forward+backward peak GPU MiB ({point['clips']} clips)", peaks, "", None))
    worst = max(max(max(p["max_abs_diff_output"].values()), max(p["max_abs_diff_grad"].values())) for p in r["sweep"])
    not_run = "".join(f"; {name} not run: {why}" for name, why in r["sweep"][0]["not_run"].items())
    found.append((f"Packed attention, max abs diff between backends (outputs, grads){not_run}", f"{worst:.1e}", "≈ 0",
                  None))
    return found
