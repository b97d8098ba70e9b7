"""What a measurement ran on: cores, threads, versions, load and the measured fp32 GEMM rate.

CPU speed differs about 2.4x between machines of the same kind, so every wall time we publish is recorded beside
the 2048³ fp32 GEMM rate measured in the same run (`machine_record`).
"""

import datetime
import os
import platform
import time


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-`repeats` fp32 `n`×`n` @ `n`×`n` matrix product rate in GFLOP/s, with torch's current threads."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up (allocations, thread pool)
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - began)
    return 2 * n**3 / best / 1e9


CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")


def cpu_info() -> dict:
    """`{"model", "flags"}`: the CPU model name and which of `CPU_FLAGS` it has (from /proc/cpuinfo on Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "flags": [flag for flag in CPU_FLAGS if flag in flags]}


def package_versions(names=("numpy", "torchcodec", "datasets", "accelerate", "onnxruntime", "soxr")) -> dict:
    """Installed versions of `names` (absent ones omitted)."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def machine_record(gemm_n: int = 2048) -> dict:
    """`{"cpus", "threads", "gemm_n", "gemm_gflops", "load_average", "platform", "processor", "torch",
    "transformers", "cpu" (model, flags), "packages", "date"}` — the `machine` entry of a JSON record (date in UTC, ISO 8601)."""
    import torch
    import transformers

    return {
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gemm_n": gemm_n,
        "gemm_gflops": round(gemm_gflops(gemm_n), 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": cpu_info(),
        "packages": package_versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
