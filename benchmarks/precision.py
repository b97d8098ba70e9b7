"""CPU inference precision, side by side in one run: PyTorch fp32 / bf16 / int8 and ONNX Runtime fp32 / int8.

    python -m benchmarks.precision --size base --threads 1 2 --out records/precision_base.json

For each thread count: (1) one 10-s clip, features + forward (`ElasticASTClassifier.classify` /
`OnnxAudioClassifier.classify`), best of `--repeats` runs taken interleaved in one process; (2) `--stream-seconds`
(default 10 minutes) of streaming `classify` from a WAV file, one fresh process per candidate, the candidates run one
after the other in a rotating order; and once, first: peak memory of the 10-s clip, a fresh process per candidate
(peak resident set of the call, VmHWM reset just before it, minus the resident set before it, after a 1-s warm-up).
ONNX Runtime runs the `export-onnx --quantize int8` export at opset 23 (fused `Attention` node); the same model exported at opset 18 (MatMul → Softmax
→ MatMul) is measured for memory beside it. Also: GEMM rates per dtype (fp32, bf16, int8 `torch._int_mm`) at each
thread count, and training clips/s (forward + backward + AdamW step on packed 10-s clips) in fp32 against bf16
autocast. bf16 runs only where the CPU has bf16 instructions (`elasticast.precision.bf16_supported`); the record
says when it was left out. Weights are random (speed does not depend on them); accuracy per precision is
`benchmarks/precision_accuracy.py`'s record.
"""

import argparse
import datetime
import json
import multiprocessing
import os
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .common import SAMPLING_RATE, SIZES, best_times, elasticast_config, speech_clip, speech_source
from .long_recordings import write_recording
from .machine import machine_record
from .scaling import _peak_mib, _resident_mib

CLIP_SECONDS = 10.0
GOALS = {"pytorch-int8": 2.5, "pytorch-bf16": 1.6}  # speed-up over PyTorch fp32 on a CPU with AVX512-VNNI/BF16


def candidates() -> list[str]:
    from elasticast.precision import bf16_supported

    return ["pytorch-fp32"] + (["pytorch-bf16"] if bf16_supported() else []) + ["pytorch-int8", "onnxruntime-fp32",
                                                                                 "onnxruntime-int8"]


def _classifier(kind: str, folder: Path, threads: int):
    """`kind` → a callable (waveform or WAV path) → file-level logits/scores `[num_labels]`."""
    torch.set_num_threads(threads)
    runtime, precision = kind.split("-", 1)
    if runtime == "pytorch":
        from elasticast.inference import ElasticASTClassifier

        classifier = ElasticASTClassifier.from_pretrained(folder / "checkpoint", device="cpu", precision=precision)

        def classify(source):
            if isinstance(source, np.ndarray):
                return classifier.classify(source, sampling_rate=SAMPLING_RATE).scores
            return classifier.classify(source).scores

        return classify
    import onnxruntime

    from elasticast.onnx_runtime import OnnxAudioClassifier, read_audio

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    precision, *variant = precision.split("-")  # variants: opset18 (decomposed attention), batched (8192 tokens/call)
    graph = "onnx-opset18" if "opset18" in variant else "onnx"
    runtime = OnnxAudioClassifier(folder / graph, session_options=options, precision=precision,
                                  **({"max_tokens": 8192} if "batched" in variant else {}))

    def classify(source):
        wave = source if isinstance(source, np.ndarray) else read_audio(source)[0]
        return np.asarray(runtime.classify(wave, SAMPLING_RATE)["scores"])

    return classify


def measure_process(kind: str, folder: str, threads: int, source, warmup, seconds: float) -> dict:
    """Runs in a fresh child process: time and peak memory rise of classifying `source` (an array or a file)."""
    classify = _classifier(kind, Path(folder), threads)
    with torch.inference_mode():
        classify(warmup)
        before = _resident_mib()
        start = time.perf_counter()
        classify(source)
        elapsed = time.perf_counter() - start
    peak = _peak_mib()
    return {"time_s": elapsed, "audio_s_per_s": seconds / elapsed, "peak_rise_mib": peak - before,
            "peak_mib": peak, "load_average_after": list(os.getloadavg())}


def gemm_rates(threads: int, n: int = 1024, repeats: int = 5) -> dict:
    """Best-of-`repeats` `n`³ matrix product rates (GFLOP/s, GOP/s for int8) per dtype at `threads` threads."""
    from elasticast.precision import bf16_supported

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    runs = {"fp32": lambda: a @ b}
    if bf16_supported():
        a16, b16 = a.bfloat16(), b.bfloat16()
        runs["bf16"] = lambda: a16 @ b16
    a8, b8 = torch.randint(-128, 127, (n, n), dtype=torch.int8), torch.randint(-128, 127, (n, n), dtype=torch.int8)
    runs["int8"] = lambda: torch._int_mm(a8, b8)
    times = best_times(runs, repeats)
    return {name: round(2 * n**3 / t / 1e9, 1) for name, t in times.items()}


def training_rates(size, threads: int, clips: int = 4, repeats: int = 2) -> dict:
    """Clips per second of a training step (packed 10-s clips, forward + backward + AdamW) in fp32 and, where the
    CPU has it, bf16 autocast (what `elasticast train --mixed-precision auto` picks there)."""
    from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification
    from elasticast.precision import autocast, bf16_supported

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ElasticASTForAudioClassification(elasticast_config(size)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    source = speech_source()
    waves = [speech_clip(CLIP_SECONDS, seed=20 + i, source=source) for i in range(clips)]
    batch = ElasticASTFeatureExtractor()(waves, sampling_rate=SAMPLING_RATE, packing=True, return_tensors="pt")
    labels = torch.arange(clips) % model.config.num_labels

    def step(precision):
        with autocast(precision, "cpu"):
            loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    precisions = ["fp32"] + (["bf16"] if bf16_supported() else [])
    times = best_times({p: (lambda p=p: step(p)) for p in precisions}, repeats)
    return {"clips": clips, "clip_seconds": CLIP_SECONDS,
            "clips_per_s": {p: clips / t for p, t in times.items()},
            **({"bf16_speedup": times["fp32"] / times["bf16"]} if "bf16" in times else {})}


def _export(folder: Path, size) -> dict:
    from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification
    from elasticast.onnx_export import export_onnx

    torch.manual_seed(0)
    ElasticASTForAudioClassification(elasticast_config(size)).save_pretrained(folder / "checkpoint")
    ElasticASTFeatureExtractor().save_pretrained(folder / "checkpoint")
    started = time.perf_counter()
    export_onnx(folder / "checkpoint", folder / "onnx", opset=23, quantize="int8", progress=None)
    export_s = time.perf_counter() - started
    export_onnx(folder / "checkpoint", folder / "onnx-opset18", opset=18, progress=None)
    return {"export_s_opset23_int8": export_s}


def run(size, threads_list, stream_seconds: float, repeats: int, save=None) -> dict:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "transformers", "onnxruntime", "elasticast", "elasticast.inference",
                                    __name__])
    source = speech_source()
    clip = speech_clip(CLIP_SECONDS, seed=3, source=source)
    warm = speech_clip(1.0, seed=4, source=source)
    kinds = candidates()
    result = {"model": size.name, "candidates": kinds, "clip_seconds": CLIP_SECONDS, "stream_seconds": stream_seconds,
              "repeats": repeats, "threads": {}}

    def fresh(kind, folder, threads, what, warmup, seconds):
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            return pool.submit(measure_process, kind, str(folder), threads, what, warmup, seconds).result()

    with tempfile.TemporaryDirectory(prefix="precision-bench-") as tmp:
        folder = Path(tmp)
        result.update(_export(folder, size))
        recording = write_recording(folder / "stream.wav", stream_seconds, source) if stream_seconds else None
        warm_file = write_recording(folder / "warm.wav", 1.0, source, seed=1)
        memory = result["clip_memory"] = {}
        for kind in kinds + ["onnxruntime-fp32-opset18"]:
            memory[kind] = fresh(kind, folder, 1, clip, warm, CLIP_SECONDS)
        result["training"] = training_rates(size, max(threads_list))
        if save:
            save(result)
        for threads in threads_list:
            point = result["threads"][str(threads)] = {"gemm": gemm_rates(threads),
                                                       "load_average_before": list(os.getloadavg())}
            runners = {kind: _classifier(kind, folder, threads) for kind in kinds}
            scores = {kind: runner(clip) for kind, runner in runners.items()}
            times = best_times({kind: (lambda r=r: r(clip)) for kind, r in runners.items()}, repeats)
            del runners
            point["clip"] = {
                kind: {"time_s": times[kind], "audio_s_per_s": CLIP_SECONDS / times[kind],
                       "speedup_vs_fp32": times["pytorch-fp32"] / times[kind],
                       "max_abs_score_diff_vs_fp32": float(np.abs(scores[kind] - scores["pytorch-fp32"]).max())}
                for kind in kinds
            }
            print(f"[precision] {threads} thread(s), 10-s clip: " + ", ".join(
                f"{k} {v['audio_s_per_s']:.1f} audio-s/s ({v['speedup_vs_fp32']:.2f}x)" for k, v in point["clip"].items()),
                file=sys.stderr, flush=True)
            if save:
                save(result)
            if recording is not None:
                point["stream"] = {}
                order = kinds[threads_list.index(threads) % len(kinds):] + kinds[: threads_list.index(threads) % len(kinds)]
                if threads == threads_list[0]:  # ONNX Runtime's alternatives, once: decomposed attention, batched windows
                    order += ["onnxruntime-fp32-opset18", "onnxruntime-fp32-batched"]
                for kind in order:  # rotated per thread count: no candidate always runs first
                    point["stream"][kind] = fresh(kind, folder, threads, str(recording), str(warm_file), stream_seconds)
                    print(f"[precision] {threads} thread(s), {stream_seconds:g}-s stream, {kind}: "
                          f"{point['stream'][kind]['audio_s_per_s']:.1f} audio-s/s, peak rise "
                          f"{point['stream'][kind]['peak_rise_mib']:.0f} MiB", file=sys.stderr, flush=True)
                    if save:
                        save(result)
                fp32 = point["stream"]["pytorch-fp32"]["time_s"]
                for kind, value in point["stream"].items():
                    value["speedup_vs_fp32"] = fp32 / value["time_s"]
            point["load_average_after"] = list(os.getloadavg())
    return result


def table(result: dict) -> str:
    lines = ["| threads | candidate | 10-s clip audio-s/s | × fp32 | stream audio-s/s | × fp32 | stream peak rise MiB |"
             " max \\|Δscore\\| |", "|---|---|---|---|---|---|---|---|"]
    for threads, point in result["threads"].items():
        clips, streams = point.get("clip", {}), point.get("stream", {})
        for kind in [*clips, *(k for k in streams if k not in clips)]:
            clip, stream = clips.get(kind), streams.get(kind)
            clip_cells = f"{clip['audio_s_per_s']:.1f} | {clip['speedup_vs_fp32']:.2f}" if clip else "– | –"
            stream_cells = (f"{stream['audio_s_per_s']:.1f} | {stream.get('speedup_vs_fp32', float('nan')):.2f} | "
                            f"{stream['peak_rise_mib']:.0f}") if stream else "– | – | –"
            diff = f"{clip['max_abs_score_diff_vs_fp32']:.1e}" if clip else "–"
            lines.append(f"| {threads} | {kind} | {clip_cells} | {stream_cells} | {diff} |")
    if result.get("clip_memory"):
        lines += ["", "| 10-s clip, 1 thread | peak rise MiB |", "|---|---|"]
        lines += [f"| {kind} | {m['peak_rise_mib']:.0f} |" for kind, m in result["clip_memory"].items()]
    if result.get("training"):
        t = result["training"]
        lines += ["", "| training step | clips/s |", "|---|---|"]
        lines += [f"| {p} | {v:.2f} |" for p, v in t["clips_per_s"].items()]
    return "\n".join(lines)


def notes(result: dict) -> list[str]:
    from elasticast.precision import bf16_supported, int8_fast

    found = []
    for threads, point in result["threads"].items():
        for kind, goal in GOALS.items():
            for where in ("clip", "stream"):
                value = point.get(where, {}).get(kind)
                if value and "speedup_vs_fp32" in value:
                    met = "met" if value["speedup_vs_fp32"] >= goal else "missed"
                    found.append(f"{threads} thread(s), {where}: {kind} {value['speedup_vs_fp32']:.2f}x PyTorch fp32 "
                                 f"(goal ≥ {goal}x with VNNI/BF16: {met}).")
    memory = result.get("clip_memory", {})
    if {"onnxruntime-fp32", "pytorch-fp32", "onnxruntime-fp32-opset18"} <= memory.keys():
        found.append(
            f"10-s clip peak rise: ONNX Runtime fp32 {memory['onnxruntime-fp32']['peak_rise_mib']:.0f} MiB with the fused "
            f"Attention node (opset 23), {memory['onnxruntime-fp32-opset18']['peak_rise_mib']:.0f} MiB decomposed "
            f"(opset 18), PyTorch fp32 {memory['pytorch-fp32']['peak_rise_mib']:.0f} MiB.")
    streams = next(iter(result["threads"].values()), {}).get("stream", {})
    if {"pytorch-fp32", "onnxruntime-fp32", "onnxruntime-fp32-opset18", "onnxruntime-fp32-batched"} <= streams.keys():
        mib = {kind: f"{value['peak_rise_mib']:.0f} MiB ({value['audio_s_per_s']:.1f} audio-s/s)"
               for kind, value in streams.items()}
        found.append(
            f"{result['stream_seconds']:g}-s stream, {next(iter(result['threads']))} thread(s), peak rise: ONNX Runtime "
            f"fp32 {mib['onnxruntime-fp32']} with the fused Attention node (opset 23) and one window per call, "
            f"{mib['onnxruntime-fp32-opset18']} decomposed (opset 18), {mib['onnxruntime-fp32-batched']} with "
            f"windows batched up to 8192 tokens; PyTorch fp32 {mib['pytorch-fp32']}.")
    if result.get("training", {}).get("bf16_speedup"):
        found.append(f"Training step: bf16 autocast {result['training']['bf16_speedup']:.2f}x fp32 clips/s.")
    if not bf16_supported():
        found.append("bf16 not measured: this CPU lacks avx512_bf16/amx_bf16.")
    if not int8_fast():
        found.append("This CPU lacks VNNI/AMX int8 dot-product instructions: the int8 goal does not apply.")
    return found


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--stream-seconds", type=float, default=600.0, help="streaming classify length (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timings per candidate (best counts)")
    parser.add_argument("--out", default=None, help="JSON record to write (rewritten after every point)")
    args = parser.parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine = machine_record()
    command = "python -m benchmarks.precision " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    def record_of(result):
        return {"title": f"CPU inference precision, ElasticAST-{args.size}", "command": command, "date": started,
                "machine": machine, "results": result, "table": table(result), "notes": notes(result)}

    def save(result):
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(record_of(result), indent=2) + "\n")

    result = run(SIZES[args.size], args.threads, args.stream_seconds, args.repeats, save)
    record = record_of(result)
    record["machine_at_end"] = {"load_average": list(os.getloadavg())}
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(record["table"])
    print("\n".join(record["notes"]))
    return record


if __name__ == "__main__":
    main()
