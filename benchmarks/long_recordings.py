"""Item 8: long recordings — peak memory and audio-seconds per second of streaming `classify` against length, and
the stock pipeline on a long clip.

    python -m benchmarks.long_recordings --size base --seconds 600 3600 10800 --pipeline-seconds 3600 --out rec.json

The recordings are written to disk in 60-s blocks (16-bit WAV, tiled espeak-ng speech with random gain and faint
noise), never held whole in memory by the benchmark. Every point runs in a fresh process forked from a forkserver
that has only imported the libraries (as item 6): the model is built, a 1-s file is classified to warm up, then the
timed call. Memory is the peak resident set of the call (VmHWM, reset just before it) minus the resident set just
before it (after `malloc_trim`): what classifying the recording needs on top of the model and the runtime. The record holds the
2048³ fp32 GEMM rate measured in the same run (wall times mean little without it on a shared machine).
"""

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import gemm_gflops

from .common import SAMPLING_RATE, SIZES, Size, elasticast_config, speech_source
from .scaling import MEMORY_METHOD, _peak_mib, _resident_mib

LENGTHS = {"tiny": (10.0, 40.0), "base": (600.0, 3600.0, 10800.0)}  # seconds, streaming classify
PIPELINE = {"tiny": (40.0,), "base": (3600.0,)}  # seconds, stock pipeline
BLOCK_SECONDS = 60.0


def write_recording(path: Path, seconds: float, source: np.ndarray, seed: int = 0) -> Path:
    """A `seconds`-long 16-bit mono WAV at 16 kHz written block by block (never whole in memory)."""
    import soundfile

    rng = np.random.default_rng(seed)
    total, block = int(round(seconds * SAMPLING_RATE)), int(BLOCK_SECONDS * SAMPLING_RATE)
    with soundfile.SoundFile(path, "w", SAMPLING_RATE, 1, subtype="PCM_16") as sink:
        for start in range(0, total, block):
            n = min(block, total - start)
            offset = int(rng.integers(len(source)))
            wave = np.resize(np.roll(source, -offset), n) * rng.uniform(0.3, 0.9) + 0.003 * rng.standard_normal(n)
            sink.write(np.clip(wave, -1, 1).astype(np.float32))
    return path


def measure_point(kind: str, size: Size, path: str, warmup: str, threads: int) -> dict:
    """Runs in a child process: `kind` = "classify" (streaming) or "pipeline" (stock audio-classification)."""
    from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification
    from elasticast.inference import ElasticASTClassifier

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ElasticASTForAudioClassification(elasticast_config(size)).eval()
    fe = ElasticASTFeatureExtractor()
    if kind == "classify":
        classifier = ElasticASTClassifier(model, fe)

        def classify(file):
            return classifier.classify(file).duration

    else:
        from transformers import pipeline

        folder = tempfile.mkdtemp(prefix="long-recordings-model-")
        model.save_pretrained(folder)
        fe.save_pretrained(folder)
        stock = pipeline("audio-classification", model=folder, device="cpu")

        def classify(file):
            stock(file, top_k=1)
            import soundfile

            return soundfile.info(file).duration

    with torch.inference_mode():
        classify(warmup)
        before = _resident_mib()
        start = time.perf_counter()
        seconds = classify(path)
        elapsed = time.perf_counter() - start
    peak = _peak_mib()
    return {"kind": kind, "seconds": seconds, "time_s": elapsed, "audio_s_per_s": seconds / elapsed,
            "peak_rise_mib": peak - before, "peak_mib": peak, "load_average_after": os.getloadavg()}


def run(size: Size, threads: int, lengths=None, pipeline_lengths=(), folder=None, on_point=None) -> dict:
    """Points for each length (streaming classify) and `pipeline_lengths` (stock pipeline), each in a fresh process."""
    lengths = LENGTHS[size.name] if lengths is None else lengths
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "transformers", "elasticast", "elasticast.inference", __name__])
    source = speech_source()
    result = {"memory_method": f"{MEMORY_METHOD}; a fresh process a point", "gemm_gflops": gemm_gflops(size.gemm), "gemm_n": size.gemm,
              "threads": threads, "model": size.name, "points": []}
    with tempfile.TemporaryDirectory(dir=folder) as work:
        warmup = write_recording(Path(work) / "warmup.wav", 1.0, source, seed=1)
        # the shortest streaming point first, then the stock pipeline, then the longer streaming points
        order = [("classify", s) for s in lengths]
        order[1:1] = [("pipeline", s) for s in pipeline_lengths]
        for kind, seconds in order:
            path = write_recording(Path(work) / f"recording_{seconds:g}.wav", seconds, source)
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                point = pool.submit(measure_point, kind, size, str(path), str(warmup), threads).result()
            result["points"].append(point)
            print(f"[long_recordings] {kind} {seconds:g} s: {point['time_s']:.1f} s, {point['audio_s_per_s']:.1f} "
                  f"audio-s/s, peak rise {point['peak_rise_mib']:.0f} MiB", file=sys.stderr, flush=True)
            if on_point is not None:
                on_point(result)
            path.unlink()
    return result


def _length(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def rows(result: dict) -> list[tuple]:
    classify = [p for p in result["points"] if p["kind"] == "classify"]
    found = []
    for point in classify:
        found.append((
            f"Streaming classify, {_length(point['seconds'])}, ElasticAST-{result['model']} ({result['threads']} "
            f"threads, GEMM {result['gemm_n']}³ {result['gemm_gflops']:.0f} GFLOP/s): time s, audio-s/s, peak RSS rise MiB",
            f"{point['time_s']:.1f}, {point['audio_s_per_s']:.1f}, {point['peak_rise_mib']:.0f}",
            "≤ 1536 MiB", point["peak_rise_mib"] <= 1536,
        ))
    if len(classify) > 1:
        first, last = classify[0], classify[-1]
        growth = last["peak_rise_mib"] - first["peak_rise_mib"]
        found.append((f"Peak RSS rise, {_length(last['seconds'])} minus {_length(first['seconds'])}",
                      f"{growth:+.0f} MiB", "flat (≤ 100 MiB)", growth <= 100))
        ratio = (last["time_s"] / last["seconds"]) / (first["time_s"] / first["seconds"])
        loads = last["load_average_after"][0] / max(first["load_average_after"][0], 1e-9)
        judged = 2 / 3 <= loads <= 3 / 2  # on a shared machine a time ratio means little when the load changed
        found.append((f"Time per audio-second, {_length(last['seconds'])} ÷ {_length(first['seconds'])}", f"{ratio:.2f}",
                      "≤ 1.2" if judged else f"≤ 1.2 (not judged: load average ×{loads:.2f} between the points)",
                      ratio <= 1.2 if judged else None))
    for point in (p for p in result["points"] if p["kind"] == "pipeline"):
        found.append((f"Stock pipeline, one {_length(point['seconds'])} clip, ElasticAST-{result['model']}: time s, "
                      "peak RSS rise MiB",
                      f"{point['time_s']:.1f}, {point['peak_rise_mib']:.0f}", "≤ 4096 MiB",
                      point["peak_rise_mib"] <= 4096))
    return found


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.long_recordings", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seconds", type=float, nargs="+", help="recording lengths for streaming classify")
    parser.add_argument("--pipeline-seconds", type=float, nargs="*", default=[], help="lengths for the stock pipeline")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", help="JSON record, rewritten after every point")
    args = parser.parse_args(argv)
    record = {
        "command": "python -m benchmarks.long_recordings " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
                    "torch": torch.__version__},
    }

    def save(result):
        record["results"] = result
        record["table"] = "\n".join(f"| 8 | {m} | {v} | {g} | {'' if ok is None else ('yes' if ok else '**no**')} |"
                                    for m, v, g, ok in rows(result))
        if args.out:
            Path(args.out).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")

    torch.set_num_threads(args.threads)
    save(run(SIZES[args.size], args.threads, args.seconds, args.pipeline_seconds, on_point=save))
    record["machine"]["load_average_at_end"] = os.getloadavg()
    save(record["results"])
    print(record["table"])
    return record


if __name__ == "__main__":
    main()
