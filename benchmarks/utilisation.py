"""Item 1: useful-FLOP rate of ElasticAST on packed rows of the mix, as a fraction of the fp32 GEMM rate.

Useful FLOPs count attention per clip (block-diagonal), not over whole rows; forward+backward counts 3× the forward
FLOPs (the usual convention: the backward of a matmul is two matmuls). The GEMM, the forward and the training step
are timed interleaved in the same run.
"""

import torch

from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification, PackedLayout

from .common import ROW_TOKENS, SAMPLING_RATE, Size, best_times, elasticast_config, elasticast_flops


def run(size: Size, mix: list) -> dict:
    torch.manual_seed(0)
    batch = ElasticASTFeatureExtractor()(
        mix, sampling_rate=SAMPLING_RATE, packing=True, max_tokens_per_row=ROW_TOKENS, return_tensors="pt"
    )
    model = ElasticASTForAudioClassification(elasticast_config(size))
    layout = PackedLayout(batch["segment_ids"], batch["clip_ids"])
    rows, row_length = layout.shape
    useful = elasticast_flops(model.config, layout.segment_lengths)
    dense = elasticast_flops(model.config, layout.segment_lengths, attention_lengths=[row_length] * rows)
    labels = torch.randint(size.labels, (len(mix),))
    a, b = torch.randn(size.gemm, size.gemm), torch.randn(size.gemm, size.gemm)

    def forward():
        model.eval()
        with torch.inference_mode():
            model(**batch)

    def forward_backward():
        model.train()
        model.zero_grad(set_to_none=True)
        model(**batch, labels=labels).loss.backward()

    times = best_times({"gemm": lambda: a @ b, "forward": forward, "forward_backward": forward_backward}, size.repeats)
    gemm = 2 * size.gemm**3 / times["gemm"] / 1e9
    forward_rate = useful / times["forward"] / 1e9
    training_rate = 3 * useful / times["forward_backward"] / 1e9
    return {
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
    where = f"{r['clips']} clips, {r['rows']}×{r['row_length']} tokens"
    return [
        (f"fp32 GEMM {r['gemm_n']}³ (the limit)", f"{r['gemm_gflops']:.0f} GFLOP/s", "", None),
        (
            f"ElasticAST forward, useful GFLOP/s ÷ GEMM ({where})",
            f"{r['utilisation_forward']:.2f} ({r['forward_gflops']:.0f} GFLOP/s)",
            "≥ 0.80",
            r["utilisation_forward"] >= 0.80,
        ),
        (
            "ElasticAST forward+backward, useful GFLOP/s ÷ GEMM",
            f"{r['utilisation_forward_backward']:.2f} ({r['forward_backward_gflops']:.0f} GFLOP/s)",
            "≥ 0.65",
            r["utilisation_forward_backward"] >= 0.65,
        ),
    ]
