"""Item 1: useful-FLOP rate of ElasticAST on packed rows of the mix, as a fraction of the GEMM rate.

Useful FLOPs count attention per clip (block-diagonal), not over whole rows; forward+backward counts 3× the forward
FLOPs (the usual convention: the backward of a matmul is two matmuls). The GEMM, the forward and the training step
are timed interleaved in the same run. On CPU everything runs in fp32 against an fp32 GEMM; on a GPU the model runs
under bf16 autocast with the one-call `torch_varlen` attention (`common.elasticast_model`) against a bf16 GEMM, and
the peak GPU memory of each is recorded.
"""

import torch

from elasticast import ElasticASTFeatureExtractor, PackedLayout

from .common import (
    ROW_TOKENS, SAMPLING_RATE, Size, autocast, best_times, elasticast_flops, elasticast_model, precision,
)

GOALS = {"fp32": (0.80, 0.65), "bf16": (0.5, 0.4)}  # forward, forward+backward (CPU goals; issue 11's GPU goals)


def run(size: Size, mix: list, device: str = "cpu") -> dict:
    torch.manual_seed(0)
    batch = ElasticASTFeatureExtractor()(
        mix, sampling_rate=SAMPLING_RATE, packing=True, max_tokens_per_row=ROW_TOKENS, return_tensors="pt"
    ).to(device)
    model = elasticast_model(size, device)
    layout = PackedLayout(batch["segment_ids"], batch["clip_ids"])
    rows, row_length = layout.shape
    useful = elasticast_flops(model.config, layout.segment_lengths)
    dense = elasticast_flops(model.config, layout.segment_lengths, attention_lengths=[row_length] * rows)
    labels = torch.randint(size.labels, (len(mix),), device=device)
    dtype = torch.bfloat16 if precision(device) == "bf16" else torch.float32
    a, b = (torch.randn(size.gemm, size.gemm, device=device, dtype=dtype) for _ in range(2))

    def forward():
        model.eval()
        with torch.inference_mode(), autocast(device):
            model(**batch)

    def forward_backward():
        model.train()
        model.zero_grad(set_to_none=True)
        with autocast(device):
            loss = model(**batch, labels=labels).loss
        loss.backward()

    peaks = {}
    times = best_times(
        {"gemm": lambda: a @ b, "forward": forward, "forward_backward": forward_backward}, size.repeats, peaks
    )
    gemm = 2 * size.gemm**3 / times["gemm"] / 1e9
    forward_rate = useful / times["forward"] / 1e9
    training_rate = 3 * useful / times["forward_backward"] / 1e9
    return {
        "device": device,
        "precision": precision(device),
        "attention": model.config._attn_implementation,
        "peak_mib": peaks or None,
        "gemm_n": size.gemm,
        "gemm_gflops": gemm,
        "rows": rows,
        "row_length": row_length,
        "tokens": len(layout.token_index),
        "clips": len(mix),
        "useful_gflop_forward": useful / 1e9,
        "dense_row_attention_gflop_forward": dense / 1e9,
        "forward_s": times["forward"],
        "forward_backward_s": times["forward_backward"],
        "forward_gflops": forward_rate,
        "forward_backward_gflops": training_rate,
        "utilisation_forward": forward_rate / gemm,
        "utilisation_forward_backward": training_rate / gemm,
    }


def rows(result: dict) -> list[tuple]:
    r = result
    kind = r.get("precision", "fp32")
    forward_goal, training_goal = GOALS[kind]
    where = f"{r['clips']} clips, {r['rows']}×{r['row_length']} tokens"
    if kind == "bf16":
        where += f", bf16 autocast, {r['attention']} attention"
    found = [
        (f"{kind} GEMM {r['gemm_n']}³ (the limit)", f"{r['gemm_gflops']:.0f} GFLOP/s", "", None),
        (
            f"ElasticAST forward, useful GFLOP/s ÷ GEMM ({where})",
            f"{r['utilisation_forward']:.2f} ({r['forward_gflops']:.0f} GFLOP/s)",
            f"≥ {forward_goal:.2f}",
            r["utilisation_forward"] >= forward_goal,
        ),
        (
            "ElasticAST forward+backward, useful GFLOP/s ÷ GEMM",
            f"{r['utilisation_forward_backward']:.2f} ({r['forward_backward_gflops']:.0f} GFLOP/s)",
            f"≥ {training_goal:.2f}",
            r["utilisation_forward_backward"] >= training_goal,
        ),
    ]
    if r.get("peak_mib"):
        found.append(("Peak GPU memory, MiB (forward, forward+backward)",
                      f"{r['peak_mib']['forward']:.0f}, {r['peak_mib']['forward_backward']:.0f}", "", None))
    return found
