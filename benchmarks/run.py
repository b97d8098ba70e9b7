"""One command for the whole suite: prints a JSON record and a markdown table, optionally writes both and a plot.

    python -m benchmarks.run --size base --out results.json --plot scaling.png
    python -m benchmarks.run --device cuda --size base --out gpu.json     # items 1-3 on a GPU, bf16

Items (issue 5; GPU: issue 11): 1 utilisation against the GEMM rate, 2 packed attention backends, 3 audio-seconds
per wall-second against transformers' AST (inference and a training step), 4 feature extraction against
`ASTFeatureExtractor`, 5 packing efficiency, 6 time and memory against clip length; (issue 13) 7 ONNX Runtime
against PyTorch eager; (issue 10) 8 streaming classify of long recordings (peak memory, audio-s/s) and the stock
pipeline on a long clip. Every speed figure is a ratio of timings taken side by side in this run. On a GPU (`--device
cuda`) items 1-3 run by default, in bf16 autocast, with more clips (`Size.cuda`) and the peak GPU memory of each
candidate; items 4-7 measure the CPU.
"""

import argparse
import datetime
import functools
import json
import os
import sys

import numpy as np
import torch

from benchmarks.machine import machine_record

from . import attention, features, long_recordings, onnx_speed, packing, scaling, utilisation, versus_ast
from .common import SIZES, speech_mix, speech_source

GPU_ITEMS = ["utilisation", "versus_ast", "attention"]  # attention last: flex compiles per shape
ITEMS = {
    "utilisation": (1, utilisation),
    "attention": (2, attention),
    "versus_ast": (3, versus_ast),
    "features": (4, features),
    "packing": (5, packing),
    "scaling": (6, scaling),
    "onnx": (7, onnx_speed),
    "long_recordings": (8, long_recordings),
}


def title(items: list[str], size: str) -> str:
    """The record's title: one item's docstring headline, or the suite with the item numbers."""
    numbers = ", ".join(str(ITEMS[name][0]) for name in items)
    if len(items) == 1:
        headline = ITEMS[items[0]][1].__doc__.strip().splitlines()[0].split(": ", 1)[-1].rstrip(".")
        return f"{headline}, ElasticAST-{size} (item {numbers})"
    return f"Benchmark suite, ElasticAST-{size} (items {numbers})"


def markdown_table(record: dict) -> str:
    lines = ["| # | measure | result | goal | met |", "|---|---|---|---|---|"]
    for name, (number, module) in ITEMS.items():
        if name not in record["results"]:
            continue
        for measure, value, goal, met in module.rows(record["results"][name]):
            mark = "" if met is None else ("yes" if met else "**no**")
            lines.append(f"| {number} | {measure} | {value} | {goal} | {mark} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="tiny: CI smoke run; base: ViT-B")
    parser.add_argument("--only", nargs="+", choices=list(ITEMS), help="items to run (default: all; on cuda 1-3)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="device of items 1-3: cpu, or cuda (bf16 autocast)")
    parser.add_argument("--speech", help="a 1-D float32 16 kHz waveform (.npy) to cut the mix from, instead of "
                        "speech synthesised with espeak-ng (for machines without it); only lengths matter to speed")
    parser.add_argument("--out", help="write the JSON record here")
    parser.add_argument("--plot", help="write the scaling plot (PNG) here")
    args = parser.parse_args(argv)
    cuda = torch.device(args.device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU here; the dry run is --device cpu --size tiny.")
    items = args.only or (GPU_ITEMS if cuda else list(ITEMS))

    torch.set_num_threads(args.threads)
    try:  # numpy's BLAS too (ASTFeatureExtractor's numpy path); threadpoolctl may be missing on a GPU machine
        import threadpoolctl

        threadpoolctl.threadpool_limits(args.threads)
        blas_threads = args.threads
    except ImportError:
        blas_threads = "not limited: threadpoolctl is not installed"
    torch.set_flush_denormal(True)
    size = SIZES[args.size].on(args.device)
    source = functools.cache(
        lambda: speech_source() if args.speech is None else np.load(args.speech).astype(np.float32)
    )
    mix = functools.cache(lambda: speech_mix(size.clips, source=source()))
    runs = {
        "utilisation": lambda: utilisation.run(size, mix(), args.device),
        "attention": lambda: attention.run(size, args.device),
        "versus_ast": lambda: versus_ast.run(size, mix(), args.device),
        "features": lambda: features.run(size, mix()),
        "packing": lambda: packing.run(size),
        "scaling": lambda: scaling.run(size, args.threads),
        "onnx": lambda: onnx_speed.run(size, args.threads),
        "long_recordings": lambda: long_recordings.run(size, args.threads, pipeline_lengths=long_recordings.PIPELINE[size.name]),
    }
    record = {
        "title": title(items, args.size),
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "size": args.size,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        # CPU model and flags, package versions, load average and the fp32 GEMM rate of this run
        "machine": {**machine_record(), "threads": args.threads, "blas_threads": blas_threads},
        "device": args.device,
        "audio": args.speech or "espeak-ng speech",
        "results": {},
    }
    if cuda:
        properties = torch.cuda.get_device_properties(args.device)
        record["machine"].update(gpu=properties.name, gpu_memory_gib=properties.total_memory / 2**30,
                                 capability=[properties.major, properties.minor], cuda=torch.version.cuda)
    for name in items:
        print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
        record["results"][name] = runs[name]()
        if args.out:  # what is done survives a later item's failure or a time limit
            with open(args.out, "w") as file:
                json.dump(record, file, indent=2, ensure_ascii=False)
    record["machine"]["load_average_at_end"] = os.getloadavg()
    if args.plot and "scaling" in record["results"]:
        scaling.plot(record["results"]["scaling"], args.plot)
        record["plot"] = args.plot
    record["table"] = markdown_table(record)
    text = json.dumps(record, indent=2, ensure_ascii=False)
    print(text)
    print()
    print(record["table"])
    if args.out:
        with open(args.out, "w") as file:
            file.write(text + "\n")
    return record


if __name__ == "__main__":
    main()
