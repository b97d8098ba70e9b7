"""Item 7: ONNX Runtime (CPU) against PyTorch eager, one clip per call — features + forward, per clip length.

The model (random weights, the run's size) is saved and exported with `export_onnx` (export time recorded). PyTorch
eager = `ElasticASTFeatureExtractor` + `ElasticASTForAudioClassification` under `inference_mode`; ONNX Runtime =
`OnnxAudioClassifier.classify` of the export (feature graph, windows, `model.onnx`), with as many intra-op threads
as torch. Times are the best of `size.repeats` interleaved runs in this process, next to a fp32 GEMM timed the same
way; the logits of both are compared. Peak memory is measured as in item 6: a fresh process per (runtime, length),
peak resident set after the call minus the resident set before it.
"""

import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .common import SAMPLING_RATE, Size, best_times, elasticast_config, speech_clip, speech_source
from .scaling import MEMORY_METHOD, _peak_mib, _resident_mib

SECONDS = (1.0, 10.0, 30.0, 120.0)
RUNTIMES = ("pytorch", "onnxruntime")


def _classifier(kind: str, folder: Path, threads: int):
    """A callable wave → logits `[num_labels]` for `kind`, built from the saved checkpoint or its export."""
    if kind == "pytorch":
        from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification

        fe = ElasticASTFeatureExtractor.from_pretrained(folder / "checkpoint")
        model = ElasticASTForAudioClassification.from_pretrained(folder / "checkpoint").eval()

        def classify(wave):
            with torch.inference_mode():
                return model(**fe(wave, sampling_rate=SAMPLING_RATE, return_tensors="pt")).logits[0].numpy()

        return classify
    import onnxruntime

    from elasticast.onnx_runtime import OnnxAudioClassifier

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    runtime = OnnxAudioClassifier(folder / "onnx", session_options=options)
    return lambda wave: np.asarray(runtime.classify(wave, SAMPLING_RATE)["logits"])


def measure_memory(kind: str, folder: Path, seconds: float, threads: int, source) -> dict:
    """Runs in a child process: peak resident memory rise of classifying one `seconds`-long clip."""
    torch.set_num_threads(threads)
    classify = _classifier(kind, folder, threads)
    classify(speech_clip(1.0, seed=4, source=source))  # warm-up (builds sessions, allocator pools)
    before = _resident_mib()
    classify(speech_clip(seconds, seed=3, source=source))
    peak = _peak_mib()
    return {"peak_rise_mib": peak - before, "peak_mib": peak}


def run(size: Size, threads: int, seconds: tuple[float, ...] = SECONDS) -> dict:
    from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification
    from elasticast.onnx_export import DEFAULT_OPSET, export_onnx

    torch.manual_seed(0)
    source = speech_source()
    with tempfile.TemporaryDirectory(prefix="elasticast-onnx-bench-") as tmp:
        folder = Path(tmp)
        ElasticASTForAudioClassification(elasticast_config(size)).save_pretrained(folder / "checkpoint")
        ElasticASTFeatureExtractor().save_pretrained(folder / "checkpoint")
        started = time.perf_counter()
        export_onnx(folder / "checkpoint", folder / "onnx", progress=None)
        export_s = time.perf_counter() - started

        classifiers = {kind: _classifier(kind, folder, threads) for kind in RUNTIMES}
        a, b = torch.randn(size.gemm, size.gemm), torch.randn(size.gemm, size.gemm)
        gemm_s = best_times({"gemm": lambda: a @ b}, size.repeats)["gemm"]
        points = []
        for length in seconds:
            wave = speech_clip(length, seed=3, source=source)
            logits = {kind: classify(wave) for kind, classify in classifiers.items()}
            times = best_times({kind: (lambda c=c: c(wave)) for kind, c in classifiers.items()}, size.repeats)
            points.append({
                "seconds": length,
                "time_s": times,
                "onnxruntime_speedup": times["pytorch"] / times["onnxruntime"],
                "max_abs_logit_diff": float(np.abs(logits["pytorch"] - logits["onnxruntime"]).max()),
            })

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", "transformers", "onnxruntime", "elasticast", __name__])
        for point in points:
            point["memory"] = {}
            for kind in RUNTIMES:
                with ProcessPoolExecutor(1, mp_context=context) as pool:
                    job = pool.submit(measure_memory, kind, folder, point["seconds"], threads, source)
                    point["memory"][kind] = job.result()

    import onnxruntime

    return {
        "gemm_n": size.gemm,
        "gemm_gflops": 2 * size.gemm**3 / gemm_s / 1e9,
        "threads": threads,
        "opset": DEFAULT_OPSET,
        "onnxruntime": onnxruntime.__version__,
        "export_s": export_s,
        "memory_method": f"{MEMORY_METHOD}; a fresh process per runtime and length, after a 1-s warm-up clip",
        "points": points,
    }


def rows(result: dict) -> list[tuple]:
    found = [(
        f"ONNX export of the model (window_logits) and features, fp32 GEMM {result['gemm_n']}³ of the run",
        f"{result['export_s']:.0f} s, {result['gemm_gflops']:.0f} GFLOP/s",
        "",
        None,
    )]
    for point in result["points"]:
        t, m = point["time_s"], point["memory"]
        found.append((
            f"One {point['seconds']:g}-s clip, ONNX Runtime vs PyTorch eager, s / MiB peak rise: "
            f"ORT {t['onnxruntime']:.2f} / {m['onnxruntime']['peak_rise_mib']:.0f}, PyTorch {t['pytorch']:.2f} / "
            f"{m['pytorch']['peak_rise_mib']:.0f}; max |Δlogit| {point['max_abs_logit_diff']:.1e}; speed-up",
            f"{point['onnxruntime_speedup']:.2f}×",
            "≥ 1×",
            point["onnxruntime_speedup"] >= 1,
        ))
    return found
