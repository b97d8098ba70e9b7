"""Live-audio latency: how long after a window's last sample arrives its result comes out, on a real-time source.

    python -m benchmarks.latency --sizes tiny base --windows 1 2 5 --hops 0.5 1 --compressions 1 2 --seconds 20 \
        --threads 1 2 --out records/live_latency.json

Per configuration (model size, window, hop, compression C): ffmpeg plays `-re -f lavfi sine=...` (real-time pace,
10-ms packets at 16 kHz, decoded to float32 on a pipe) into `elasticast.listen.FfmpegSource` — the `elasticast
listen` reader — whose thread stamps each packet's arrival; `ElasticASTClassifier.stream` classifies. A window's
delay is the time from the arrival of the packet holding its last sample (the end of its last 25-ms fbank frame) to
the moment `stream` yields it. The last, shorter window (yielded when the source ends) is left out: it measures the
end of the source, not the steady state. Beside it, the real-time factor: audio seconds per compute second when the
same audio is streamed as fast as it goes (no pacing), same window/hop/C. The models are randomly initialised at
the benchmark sizes (speed does not depend on the weights), 527 labels (AudioSet's).

The machine may be shared: the record holds the 2048³ fp32 GEMM rate and the load average at the start, and each
row the 1-minute load average when it ran.
"""

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import SIZES
from benchmarks.machine import machine_record
from elasticast import ElasticASTConfig, ElasticASTFeatureExtractor, ElasticASTForAudioClassification
from elasticast.inference import ElasticASTClassifier
from elasticast.listen import FfmpegSource, ffmpeg_command

RATE = 16000
SPEC = "sine=frequency=440:beep_factor=4:sample_rate=16000:samples_per_frame=160:duration={seconds}"


def build(size: str) -> ElasticASTClassifier:
    config = ElasticASTConfig(**SIZES[size].model, num_labels=527)
    torch.manual_seed(0)
    return ElasticASTClassifier(ElasticASTForAudioClassification(config).eval(), ElasticASTFeatureExtractor())


def paced_delays(classifier, seconds: float, window: float, hop: float, compression: float) -> list[float]:
    """Delays (s) of the windows of a real-time lavfi source, last shorter window excluded."""
    fe = classifier.fe
    extra = fe.frame_length - fe.frame_shift(compression)  # a window's last frame reaches past its end time
    source = FfmpegSource(ffmpeg_command(SPEC.format(seconds=seconds), input_format="lavfi", realtime=True),
                          record_arrivals=True)
    total = round(seconds * RATE)
    delays = []
    try:
        for result in classifier.stream(source, RATE, window=window, hop=hop, compression=compression):
            now = time.perf_counter()
            last = round(result.end * RATE) + extra  # samples up to the window's last one
            if last > total:
                continue  # the final window: emitted at the end of the source
            arrived = next(t for count, t in source.arrivals if count >= last)
            delays.append(now - arrived)
    finally:
        source.close()
    return delays


def real_time_factor(classifier, seconds: float, window: float, hop: float, compression: float) -> float:
    """Audio seconds per compute second, the same audio streamed unpaced in 10-ms chunks."""
    t = np.arange(round(seconds * RATE)) / RATE
    wave = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    chunks = (wave[i : i + 160] for i in range(0, len(wave), 160))
    started = time.perf_counter()
    for _ in classifier.stream(chunks, RATE, window=window, hop=hop, compression=compression):
        pass
    return seconds / (time.perf_counter() - started)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=sorted(SIZES))
    parser.add_argument("--windows", nargs="+", type=float, default=[1.0, 2.0, 5.0])
    parser.add_argument("--hops", nargs="+", type=float, default=[0.5, 1.0])
    parser.add_argument("--compressions", nargs="+", type=float, default=[1.0, 2.0])
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per configuration")
    parser.add_argument("--threads", nargs="+", type=int, default=[2],
                        help="torch thread counts to run (the goal is stated for 2 cores)")
    parser.add_argument("--rtf-seconds", type=float, default=10.0, help="audio for the unpaced real-time factor")
    parser.add_argument("--out", default="records/live_latency.json")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.latency " + shlex.join(argv if argv is not None else sys.argv[1:])
    machine = machine_record()
    rows = []
    for size, threads in ((size, threads) for size in args.sizes for threads in args.threads):
        torch.set_num_threads(threads)
        classifier = build(size)
        list(classifier.stream([np.zeros(RATE * 6, np.float32)], RATE, window=5.0, hop=1.0))  # warm-up
        for compression in args.compressions:
            for window in args.windows:
                for hop in args.hops:
                    if hop > window:
                        continue
                    load = os.getloadavg()[0]
                    delays = paced_delays(classifier, args.seconds, window, hop, compression)
                    rtf = real_time_factor(classifier, args.rtf_seconds, window, hop, compression)
                    patch = classifier.fe.patch_size * classifier.fe.frame_shift(compression) / RATE
                    real_window = classifier._patches(window, compression) * patch
                    real_hop = classifier._patches(hop, compression) * patch
                    row = {
                        "size": size, "threads": threads, "compression": compression, "window": window, "hop": hop,
                        "window_seconds": round(real_window, 4), "hop_seconds": round(real_hop, 4),
                        "windows": len(delays), "median_ms": round(1000 * float(np.median(delays)), 1),
                        "p95_ms": round(1000 * float(np.percentile(delays, 95)), 1),
                        "max_ms": round(1000 * max(delays), 1), "real_time_factor": round(rtf, 1),
                        "keeps_up": bool(np.percentile(delays, 95) < real_hop), "load_1min": round(load, 2),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    lines = ["| model | threads | C | window (s) | hop (s) | windows | median delay (ms) | p95 delay (ms) | p95 < hop | "
             "real-time factor | load (1 min) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| ElasticAST-{r['size']} | {r['threads']} | {r['compression']:g} | {r['window_seconds']:g} | {r['hop_seconds']:g} "
                     f"| {r['windows']} | {r['median_ms']:g} | {r['p95_ms']:g} | {'yes' if r['keeps_up'] else 'no'} | "
                     f"{r['real_time_factor']:g}x | {r['load_1min']:g} |")
    goal = [r for r in rows if r["size"] == "base" and r["window"] == 2.0]
    notes = [f"{args.seconds:g} s of real-time audio per configuration ({args.rtf_seconds:g} s unpaced for the "
             f"real-time factor), torch threads {', '.join(map(str, args.threads))}, CPU.",
             f"Load average at the start {machine['load_average']} on {machine['cpus']} cores; the GEMM rate "
             f"{machine['gemm_gflops']} GFLOP/s was measured in the same run; process niceness {os.nice(0)}."]
    for r in goal:
        notes.append(f"Goal (base, 2-s window, p95 delay < hop) with {r['threads']} thread(s) at C = {r['compression']:g}, hop {r['hop_seconds']:g} s: "
                     f"{'met' if r['keeps_up'] else 'missed'} (p95 {r['p95_ms']:g} ms, load {r['load_1min']:g}).")
    record = {
        "title": "Live audio: delay from a window's last sample to its result",
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "table": "\n".join(lines),
        "rows": rows,
        "notes": notes,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(record["table"])
    return record


if __name__ == "__main__":
    main()
