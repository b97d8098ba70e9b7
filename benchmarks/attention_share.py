"""Where inference time goes per precision: the attention product's share of a window's forward, by window length.

    python -m benchmarks.attention_share --size base --threads 1 --out records/attention_share_base.json

For each precision this CPU runs (fp32, bf16 where it has bf16 instructions, int8) and each clip length (one window
each: 10 s and the widest window of the model's time table), `ElasticASTClassifier.classify` of a speech clip is run
under `torch.profiler` (after a warm-up) and the self CPU time of the attention kernel (every `aten` op whose name
holds `scaled_dot_product`) is divided by the classify call's wall time. The attention product stays in float32
under int8 and grows with the square of the window's tokens; the record shows how much of the remaining time that
is. Random weights (time does not depend on them).
"""

import argparse
import datetime
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from .common import SAMPLING_RATE, SIZES, elasticast_config, speech_clip, speech_source
from .machine import machine_record


def share(classifier, wave) -> dict:
    """One profiled `classify` of `wave`: wall time, attention self time and its share."""
    classifier.classify(wave, sampling_rate=SAMPLING_RATE)  # warm-up: first-call allocations out of the timing
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        started = time.perf_counter()
        result = classifier.classify(wave, sampling_rate=SAMPLING_RATE)
        wall = time.perf_counter() - started
    attention = sum(event.self_cpu_time_total for event in profile.key_averages()
                    if "scaled_dot_product" in event.key) / 1e6
    return {"wall_s": wall, "attention_s": attention, "attention_share": attention / wall,
            "tokens": result.num_tokens}


def run(size, threads: int) -> dict:
    from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification
    from elasticast.inference import ElasticASTClassifier
    from elasticast.precision import bf16_supported

    torch.set_num_threads(threads)
    fe = ElasticASTFeatureExtractor()
    widest = fe.max_window_patches() * fe.seconds_per_patch()
    source = speech_source()
    clips = {seconds: speech_clip(seconds, seed=5, source=source) for seconds in (10.0, widest)}
    precisions = ["fp32"] + (["bf16"] if bf16_supported() else []) + ["int8"]
    result = {"model": size.name, "threads": threads, "widest_window_s": widest, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="attention-share-") as tmp:
        torch.manual_seed(0)
        ElasticASTForAudioClassification(elasticast_config(size)).save_pretrained(tmp)
        fe.save_pretrained(tmp)
        for precision in precisions:
            classifier = ElasticASTClassifier.from_pretrained(tmp, device="cpu", precision=precision)
            for seconds, wave in clips.items():
                row = result["rows"][f"{precision} {seconds:g} s"] = {"precision": precision, "seconds": seconds,
                                                                      **share(classifier, wave)}
                print(f"[attention] {precision} {seconds:g} s: {row['wall_s']:.2f} s, attention "
                      f"{row['attention_share']:.0%}", file=sys.stderr, flush=True)
    return result


def table(result: dict) -> str:
    lines = ["| precision | clip (one window) | tokens | classify s | attention s | attention share |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['precision']} | {r['seconds']:g} s | {r['tokens']} | {r['wall_s']:.2f} | {r['attention_s']:.2f} | "
              f"{r['attention_share']:.0%} |" for r in result["rows"].values()]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attention_share", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="JSON record to write")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.attention_share " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine = machine_record()
    result = run(SIZES[args.size], args.threads)
    record = {"title": f"Attention's share of inference time per precision, ElasticAST-{args.size}",
              "command": command, "date": started, "machine": machine, "results": result, "table": table(result)}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(record["table"])
    return record


if __name__ == "__main__":
    main()
