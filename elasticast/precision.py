"""Inference precision on CPU (and GPU): `fp32`, `bf16`, `int8` or `auto`, with the hardware detected, never assumed.

- `fp32`: the model as saved.
- `bf16`: the forward pass under `torch.autocast(dtype=torch.bfloat16)`: matrix products in bf16, LayerNorm and
  softmax kept in float32 by autocast's own op lists. On a CPU only where the cores multiply bf16 in hardware
  (AVX512-BF16 or AMX-BF16; elsewhere oneDNN emulates it and bf16 runs several times slower than fp32), so
  `resolve_precision("bf16")` raises there, naming `fp32`/`int8` as the fix.
- `int8`: dynamic quantization of the encoder blocks' `Linear` layers (q/k/v/o projections and the MLP): int8
  weights quantized once, activations quantized per call with their own range. The attention product itself
  (softmax(QKᵀ)V), the patch embedding, the pooler, the head and the feature extractor stay in float. CPU only.
- `auto`: the fastest precision this machine supports, as measured by `benchmarks/precision.py` (record
  `precision_base`: on an EPYC with AVX512-BF16 and VNNI, int8 ran faster than bf16 on a 10-s clip and on 10 minutes
  of streaming, at 1 and 2 threads, and kept test accuracy as well as bf16 did, record `precision_accuracy`): on a
  CPU int8 where it has int8 dot-product instructions (VNNI/AMX), else bf16 where it has bf16 ones, else fp32; on
  CUDA bf16 where supported, else fp32.

Use it as `model = apply_precision(model, "int8")` and run the model inside `autocast(precision, device)`;
`ElasticASTClassifier(..., precision=...)`, `elasticast classify/evaluate/app --precision` do both.
"""

import contextlib
import re
import warnings
from pathlib import Path

import torch

PRECISIONS = ("fp32", "bf16", "int8", "auto")
# CPU flags (Linux /proc/cpuinfo names) of instructions that do the work in hardware.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (an empty set where there is none: macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """Whether `device` computes bf16 in hardware: CUDA's own check; on a CPU the AVX512-BF16 or AMX-BF16 flag.

    `torch.backends.cpu.get_cpu_capability()` says "AVX512" with or without AVX512-BF16 and oneDNN's
    `_is_mkldnn_bf16_supported()` is true wherever it can emulate bf16 (any AVX512 core), so neither tells the
    fast case from the several-times-slower one; the flags do.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool(set(BF16_FLAGS) & cpu_flags())


def int8_supported(device: str | torch.device = "cpu") -> bool:
    """Whether dynamic int8 quantization runs on `device`: CPU only, with one of torch's quantized engines."""
    if torch.device(device).type != "cpu":
        return False
    return any(engine in torch.backends.quantized.supported_engines for engine in ("x86", "fbgemm", "qnnpack"))


def int8_fast(device: str | torch.device = "cpu") -> bool:
    """Whether int8 products have dot-product instructions here (VNNI/AMX), where int8 beats bf16 and fp32."""
    return int8_supported(device) and bool(set(INT8_DOT_FLAGS) & cpu_flags())


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """`fp32`/`bf16`/`int8`/`auto` → the precision to run on `device` (`auto` resolved; see the module docstring).

    Raises:
        ValueError: an unknown name, `bf16` where the hardware lacks bf16 instructions, or `int8` off the CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}.")
    device = torch.device(device)
    if precision == "auto":
        if device.type == "cpu" and int8_fast(device):
            return "int8"
        return "bf16" if bf16_supported(device) else "fp32"
    if precision == "bf16" and not bf16_supported(device):
        where = "this GPU" if device.type == "cuda" else "this CPU (it lacks the avx512_bf16 / amx_bf16 flags)"
        raise ValueError(
            f"bf16 is not supported in hardware on {where}: emulated bf16 runs several times slower than fp32. "
            "Use --precision fp32, or int8 on a CPU, or auto to pick the fastest supported one."
        )
    if precision == "int8" and not int8_supported(device):
        raise ValueError(
            f"int8 (dynamic quantization) runs on the CPU only, not on {device}, and needs torch's fbgemm/x86 or "
            "qnnpack engine. Use --precision bf16 or fp32 on a GPU, or --device cpu."
        )
    return precision


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantization of the `Linear` layers inside the encoder blocks (`layers.N` / AST's `layer.N`), in
    place.

    Through `torch.ao.quantization.quantize_dynamic`, deprecated in favour of torchao, because torchao cannot serve
    this stack: torchao 0.18 (the release for torch 2.13) runs `Int8DynamicActivationInt8WeightConfig` in eager mode
    on the CPU slower than fp32 (measured here: a 1536×768→3072→768 MLP 0.26 s against 0.22 s fp32 and 0.065 s with
    torch.ao's fbgemm kernels); its fast CPU path needs `torch.compile` with a C++ toolchain and a compile per input
    shape, which streaming windows of varying length would pay again and again.
    """
    blocks = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
              and re.search(r"(^|\.)layers?\.\d+\.", name)}  # ElasticAST's `layers.N`, AST's `layer.N`
    if not blocks:
        raise ValueError("The model has no Linear layers inside encoder blocks (`layers.N`) to quantize.")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        return torch.ao.quantization.quantize_dynamic(model, blocks, dtype=torch.qint8, inplace=True)


def apply_precision(model: torch.nn.Module, precision: str, device: str | torch.device | None = None) -> torch.nn.Module:
    """The model ready for `precision` (`auto` and hardware checks via `resolve_precision`): int8 quantizes its
    encoder blocks in place; fp32 and bf16 return it unchanged (bf16 runs under `autocast`)."""
    device = device if device is not None else next(model.parameters()).device
    if resolve_precision(precision, device) == "int8":
        return quantize_int8(model.eval())
    return model


def autocast(precision: str, device: str | torch.device = "cpu"):
    """The context a forward pass at a resolved `precision` runs in: bf16 autocast for `bf16`, nothing otherwise."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


__all__ = [
    "PRECISIONS",
    "apply_precision",
    "autocast",
    "bf16_supported",
    "cpu_flags",
    "int8_fast",
    "int8_supported",
    "quantize_int8",
    "resolve_precision",
]
