"""torch.compile (inductor, CPU) against eager for ElasticAST on one packed batch, side by side in one run.

    python -m benchmarks.compile_speed --size base --out records/compile_base.json

The batch: `--clips` speech clips of VoxCeleb-like lengths packed into rows of 2048 tokens by the feature extractor.
Eager = `model(**features)` under `inference_mode`; compiled = `torch.compile(model, fullgraph=True)` (inductor) called
with the batch's `layout=model.packed_layout(...)`, built once outside the compiled region. Compile time is the first
call; steady times are the best of `--repeats` interleaved calls (eager, compiled, eager, ...), next to an fp32 GEMM of
the same run (`machine_record`). The logits of both are compared.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from .common import SIZES, best_times, elasticast_config, speech_mix, speech_source
from .machine import machine_record


def run(size_name: str, clips: int, repeats: int, threads: int | None) -> dict:
    from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification

    if threads:
        torch.set_num_threads(threads)
    size = SIZES[size_name]
    torch.manual_seed(0)
    model = ElasticASTForAudioClassification(elasticast_config(size)).eval()
    waves = speech_mix(clips, seed=0, source=speech_source())
    features = ElasticASTFeatureExtractor()(waves, sampling_rate=16000, packing=True, max_tokens_per_row=2048,
                                            return_tensors="pt").data
    layout = model.packed_layout(features["segment_ids"], features["freq_ids"], features["time_ids"],
                                 features["clip_ids"])
    compiled = torch.compile(model, fullgraph=True, backend="inductor")

    def eager_call():
        with torch.inference_mode():
            return model(**features).logits

    def compiled_call():
        with torch.inference_mode():
            return compiled(**features, layout=layout).logits

    eager = eager_call()
    started = time.perf_counter()
    result = compiled_call()
    compile_s = time.perf_counter() - started
    times = best_times({"eager": eager_call, "compiled": compiled_call}, repeats)
    return {
        "size": size_name,
        "clips": clips,
        "rows": int(features["segment_ids"].shape[0]),
        "tokens": int((features["segment_ids"] > 0).sum()),
        "segments": layout.num_segments,
        "compile_s": compile_s,
        "time_s": times,
        "speedup": times["eager"] / times["compiled"],
        "max_abs_logit_diff": float((eager - result).abs().max()),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="base", choices=sorted(SIZES))
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args.size, args.clips, args.repeats, args.threads)
    t = result["time_s"]
    table = "\n".join([
        "| batch | eager s | compiled s | speed-up | compile s | max abs Δlogit |",
        "|---|---|---|---|---|---|",
        f"| {result['clips']} clips, {result['tokens']} tokens in {result['rows']} rows (ElasticAST-{result['size']}) "
        f"| {t['eager']:.3f} | {t['compiled']:.3f} | {result['speedup']:.2f}× | {result['compile_s']:.0f} "
        f"| {result['max_abs_logit_diff']:.1e} |",
    ])
    print(table)
    if args.out:
        command = "python -m benchmarks.compile_speed " + " ".join(
            f"--{k} {v}" for k, v in (("size", args.size), ("clips", args.clips), ("repeats", args.repeats),
                                      ("threads", args.threads), ("out", args.out)) if v is not None)
        record = {
            "title": f"torch.compile (inductor, CPU) vs eager, ElasticAST-{args.size}, one packed batch",
            "command": command,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine_record(),
            "results": result,
            "table": table,
            "notes": [
                f"Steady-state speed-up of the compiled packed forward over eager: {result['speedup']:.2f}× "
                f"(best of {args.repeats} interleaved calls each).",
                f"Compiling costs {result['compile_s']:.0f} s once per packed layout (a new layout recompiles).",
            ],
        }
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
