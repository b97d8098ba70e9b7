"""Item 4: feature extraction, `ElasticASTFeatureExtractor` (all clips' frames in one batched torch FFT) against
`ASTFeatureExtractor`'s numpy path (one clip at a time), on the clips of the mix, with parity.

Both extractors make the whole fbank of every clip: AST's `max_length` is set to the longest clip so that nothing is
cut. Ours is timed through its full `__call__` (fbank, normalisation, 16×16 patches, rows), at its default CPU
precision (float64 FFT, float32 power and mel) and with `fbank_dtype="float32"`, thread for thread: at one torch
thread against numpy's one (the goal rows), and at the run's thread count beside it. Parity compares the normalised log-mel frames,
`(fbank - mean) / (2 * std)` with AudioSet's statistics in both.
"""

import numpy as np
import torch
from transformers import ASTFeatureExtractor
from transformers.utils import is_speech_available

from elasticast import ElasticASTFeatureExtractor

from .common import SAMPLING_RATE, Size, best_times


def run(size: Size, mix: list) -> dict:
    extractors = {"float64": ElasticASTFeatureExtractor(), "float32": ElasticASTFeatureExtractor(fbank_dtype="float32")}
    longest = max(extractors["float64"].raw_frames(len(wave)) for wave in mix)
    ast_fe = ASTFeatureExtractor(max_length=longest)
    threads = torch.get_num_threads()

    def at(count, fe):
        def call():
            torch.set_num_threads(count)
            try:
                return fe(mix, sampling_rate=SAMPLING_RATE, return_tensors="pt")
            finally:
                torch.set_num_threads(threads)

        return call

    candidates = {precision: at(1, fe) for precision, fe in extractors.items()}
    if threads > 1:
        candidates.update({f"{precision}@{threads}": at(threads, fe) for precision, fe in extractors.items()})
    times = best_times({**candidates, "ast": lambda: ast_fe(mix, sampling_rate=SAMPLING_RATE, return_tensors="np")},
                       size.repeats)
    theirs = ast_fe(mix, sampling_rate=SAMPLING_RATE, return_tensors="np")["input_values"]
    result = {
        "clips": len(mix),
        "audio_seconds": sum(len(wave) for wave in mix) / SAMPLING_RATE,
        "ast_backend": "torchaudio" if is_speech_available() else "numpy",
        "ast_ms_per_clip": 1e3 * times["ast"] / len(mix),
        "threads": {"ours": 1, "ast_numpy": 1, "run": threads},
    }
    for precision, fe in extractors.items():
        ours = fe.fbank([torch.from_numpy(wave) for wave in mix], [1.0] * len(mix))
        result[precision] = {
            "ms_per_clip": 1e3 * times[precision] / len(mix),
            "speedup": times["ast"] / times[precision],  # one thread each
            **({f"speedup_at_{threads}_threads": times["ast"] / times[f"{precision}@{threads}"]} if threads > 1 else {}),
            "max_abs_diff": max(
                float(np.abs(fe.normalize(mel.numpy()) - reference[: len(mel)]).max())
                for mel, reference in zip(ours, theirs)
            ),
        }
    return result


def rows(result: dict) -> list[tuple]:
    r = result
    return [
        (
            f"Feature extraction ({precision}{', default on CPU' if precision == 'float64' else ''}) vs "
            f"ASTFeatureExtractor ({r['ast_backend']}), {r['clips']} clips, {r['audio_seconds']:.0f} s, one thread "
            f"each: ms/clip {r[precision]['ms_per_clip']:.1f} vs {r['ast_ms_per_clip']:.1f}"
            + "".join(f"; {k.replace('_', ' ')}: {v:.1f}x" for k, v in r[precision].items() if k.startswith("speedup_at")),
            f"{r[precision]['speedup']:.1f}x, max abs diff {r[precision]['max_abs_diff']:.1e}",
            "≥ 4x at ≤ 2e-4",
            r[precision]["speedup"] >= 4 and r[precision]["max_abs_diff"] <= 2e-4,
        )
        for precision in ("float64", "float32")
    ]


def main(argv=None) -> dict:
    """`python -m benchmarks.features --clips 16 --seconds 10 --out records/features_threads.json`: this item alone,
    on `clips` speech clips of `seconds` each, with a machine record."""
    import argparse
    import dataclasses
    import datetime
    import json
    import os
    import shlex
    import sys
    from pathlib import Path

    from .common import SIZES, speech_clip, speech_source
    from .machine import machine_record

    parser = argparse.ArgumentParser(prog="python -m benchmarks.features", description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads of the run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    source = speech_source()
    mix = [speech_clip(args.seconds, seed=i, source=source) for i in range(args.clips)]
    machine = machine_record()
    result = run(dataclasses.replace(SIZES["tiny"], repeats=args.repeats), mix)
    found = rows(result)
    record = {
        "title": "Feature extraction thread for thread",
        "command": "python -m benchmarks.features " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "results": result,
        "table": "\n".join(["| measure | result | goal | met |", "|---|---|---|---|"]
                           + [f"| {m} | {v} | {g} | {'yes' if ok else '**no**'} |" for m, v, g, ok in found]),
        "notes": [f"Load average at the end: {list(os.getloadavg())}."],
    }
    print(record["table"])
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    main()
