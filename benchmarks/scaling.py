"""Item 6: time and peak memory of classifying one clip against its length, ElasticAST and AST, plotted.

ElasticAST gets the clip whole: its feature extractor cuts clips past the 192-patch time table (30.7 s) into
windows, all in one row, and one forward returns the clip's logits. AST gets the clip as consecutive 10-s windows,
all in one batch (logits averaged). Timed: features + forward, once, after a 1-s warm-up clip.

Peak memory (Linux): every (model, length) point runs in a fresh process forked from a forkserver that has only
imported the libraries. The figure is the peak resident set size of the timed call (VmHWM, reset just before it) minus
its resident set just before it (`/proc/self/statm`, after `malloc_trim` hands freed heap back): the memory the
features and the forward of that clip need on top of the model, the audio and the runtime. The warm-up clip (1 s)
is never longer than the timed one, so its own peak cannot mask the timed call's.
"""

import ctypes
import multiprocessing
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from .common import SAMPLING_RATE, Size, ast_chunks, elasticast_config, speech_clip, speech_source

MODELS = ("elasticast", "ast_stride10", "ast_stride16")


# How `_resident_mib()` before a call and `_peak_mib()` after it measure the call (the records' `memory_method`).
MEMORY_METHOD = ("peak resident set of the call (VmHWM, reset before it) minus the resident set before it "
                 "(after malloc_trim)")


def _peak_mib() -> float:
    """Peak resident set (MiB) since the last `_resident_mib()` call where Linux can reset the mark, else since the
    process started."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _resident_mib() -> float:
    """Resident set now, after returning freed heap memory to the system (glibc) so that it is not counted. Also
    resets the kernel's peak mark (`/proc/self/clear_refs` 5), so that `_peak_mib()` after a call is that call's
    peak, not a larger one of the set-up before it (loading weights, building ONNX Runtime sessions)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux, or not allowed: the peak then also covers what ran before
        pass
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure_point(kind: str, size: Size, seconds: float, threads: int, source) -> dict:
    """Runs in a child process: builds `kind`, classifies one `seconds`-long clip, returns time and peak memory."""
    from transformers import ASTFeatureExtractor

    from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification

    from .versus_ast import AST_STRIDES, ast_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if kind == "elasticast":
        fe, model = ElasticASTFeatureExtractor(), ElasticASTForAudioClassification(elasticast_config(size)).eval()

        def classify(wave):
            return model(**fe(wave, sampling_rate=SAMPLING_RATE, return_tensors="pt")).logits[0]

    else:
        fe, model = ASTFeatureExtractor(), ast_model(size, AST_STRIDES[kind])

        def classify(wave):
            windows = fe(ast_chunks(wave), sampling_rate=SAMPLING_RATE, return_tensors="pt")["input_values"]
            return model(input_values=windows).logits.mean(0)

    wave = speech_clip(seconds, seed=3, source=source)
    with torch.inference_mode():
        classify(speech_clip(1.0, seed=4, source=source))
        before = _resident_mib()
        start = time.perf_counter()
        classify(wave)
        elapsed = time.perf_counter() - start
    peak = _peak_mib()
    return {"seconds": seconds, "time_s": elapsed, "peak_rise_mib": peak - before, "peak_mib": peak}


def run(size: Size, threads: int) -> dict:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "transformers", "elasticast", __name__])
    source = speech_source()
    points = {kind: [] for kind in MODELS}
    for seconds in size.scaling_seconds:
        for kind in MODELS:
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                points[kind].append(pool.submit(measure_point, kind, size, seconds, threads, source).result())
    method = f"{MEMORY_METHOD}; a fresh process a point"
    return {"memory_method": method, "points": points}


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {
        "elasticast": "ElasticAST (windows ≤ 30.7 s)",
        "ast_stride10": "AST stride 10 (10-s windows)",
        "ast_stride16": "AST stride 16 (10-s windows)",
    }
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, points in result["points"].items():
        seconds = [p["seconds"] for p in points]
        left.plot(seconds, [p["time_s"] for p in points], "o-", label=labels[kind])
        right.plot(seconds, [max(p["peak_rise_mib"], 1e-3) for p in points], "o-", label=labels[kind])
    for axis, title in ((left, "time per clip (s)"), (right, "peak memory rise (MiB)")):
        axis.set(xscale="log", yscale="log", xlabel="clip length (s)", title=title)
        axis.grid(True, which="both", alpha=0.3)
    left.legend()
    figure.suptitle("One clip per call: features + forward (random weights, same width and depth)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def rows(result: dict) -> list[tuple]:
    points = result["points"]
    found = []
    for index, ours in enumerate(points["elasticast"]):
        ast10, ast16 = points["ast_stride10"][index], points["ast_stride16"][index]
        found.append(
            (
                f"One {ours['seconds']:g}-s clip, s / MiB: ElasticAST {ours['time_s']:.2f} / "
                f"{ours['peak_rise_mib']:.0f}, AST-10 {ast10['time_s']:.2f} / {ast10['peak_rise_mib']:.0f}, "
                f"AST-16 {ast16['time_s']:.2f} / {ast16['peak_rise_mib']:.0f}; AST time ÷ ElasticAST time (10, 16)",
                f"{ast10['time_s'] / ours['time_s']:.2f}, {ast16['time_s'] / ours['time_s']:.2f}",
                "",
                None,
            )
        )
    return found
