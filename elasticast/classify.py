"""`elasticast classify`: label audio files of any length with a trained model, with timelines, plots and resume.

    elasticast classify MODEL INPUTS... [--output results.jsonl|.csv] [--timeline] [--window S --hop S] [--top-k K]
                        [--threshold T] [--compression C] [--plot DIR]
                        [--precision fp32|bf16|int8|auto]
    accelerate launch -m elasticast.classify MODEL INPUTS... --output results.jsonl   # files sharded over processes

INPUTS are files, folders (searched recursively for audio files) and globs. Each recording is streamed
(`elasticast.inference.ElasticASTClassifier`), so hours of audio need no more memory than a minute.

Output: one JSON line per file (`.jsonl`, the default) or CSV rows (`.csv`: the top-k labels, and with --timeline
one row per segment), in input order. A file that cannot be decoded or is empty is reported and written as an
`error` entry, and the run goes on. Re-running with the same --output skips the files already done (entries with
an error are retried). Under `accelerate launch` every process classifies its share of the files
(`split_between_processes`) into a part file; the main process merges them into one output, equal to a
single-process run's.
"""

import argparse
import csv
import glob
import io
import json
import os
import sys
from pathlib import Path

# Extensions a folder is searched for (ffmpeg reads many more; name such files or use a glob).
AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".wma", ".webm", ".mka"}
CSV_FIELDS = ["source", "kind", "label", "score", "start", "end", "duration", "error"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("model", help="model folder or Hub repo id (model + feature extractor)")
    parser.add_argument("inputs", nargs="+", help="audio files, folders (searched recursively) or globs")
    parser.add_argument("--output", default="results.jsonl",
                        help="results file, .jsonl (one JSON line per file) or .csv; re-running resumes it")
    parser.add_argument("--timeline", action="store_true", help="write per-window scores and segments too")
    parser.add_argument("--window", type=float, help="window length in seconds (default: the model's time table, "
                        "30.7 s at compression 1)")
    parser.add_argument("--hop", type=float, help="hop between windows in seconds (default: no overlap)")
    parser.add_argument("--top-k", type=int, default=5, help="labels listed per file")
    parser.add_argument("--threshold", type=float, default=0.5, help="event threshold of multi-label models")
    parser.add_argument("--compression", type=float, default=None,
                        help="temporal compression C ≥ 1 (less compute); default: the checkpoint's feature extractor's")
    parser.add_argument("--plot", metavar="DIR", help="write one timeline PNG per file into DIR")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the process's accelerate device)")
    parser.add_argument("--max-tokens", type=int, default=8192, help="tokens per forward call (memory vs speed)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8", "auto"), default="fp32",
                        help="bf16: autocast, only where the CPU/GPU has bf16 in hardware; int8: dynamically quantized "
                        "encoder (CPU); auto: the fastest this machine supports (docs: guides/cpu-precision.md)")
    return parser


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("classify", help="label audio files of any length (timeline, plots, resume)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser).set_defaults(func=run)


# ------------------------------------------------------------------------------------------------------- inputs
def find_inputs(patterns: list[str]) -> list[Path]:
    """Files named, found in folders (recursively, by extension) or matched by globs, sorted per pattern, once each."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not matches:
                print(f"warning: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) in folder {path}", file=sys.stderr)
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not matches:
                raise SystemExit(f"error: {pattern!r} is neither a file, a folder nor a glob matching files; check it.")
        found.extend(matches)
    return list(dict.fromkeys(found))


# ------------------------------------------------------------------------------------------------------ records
def record_of(result, timeline: bool) -> dict:
    """The entry written for one file: the result's dict without its wall time (so that runs compare equal)."""
    record = result.to_dict(timeline=timeline)
    del record["compute_seconds"]
    return record


def _csv_rows(record: dict) -> list[dict]:
    base = {"source": record["source"], "duration": record.get("duration", "")}
    if "error" in record:
        return [{**base, "kind": "error", "error": record["error"]}]
    rows = [{**base, "kind": "top", "label": t["label"], "score": t["score"]} for t in record["top"]]
    for s in record.get("segments", []):
        rows.append({**base, "kind": "segment", "label": s["label"], "score": s["score"], "start": s["start"],
                     "end": s["end"]})
    return rows


def _format(records: list[dict], csv_format: bool, header: bool) -> str:
    if not csv_format:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n")
    if header:
        writer.writeheader()
    for record in records:
        writer.writerows(_csv_rows(record))
    return out.getvalue()


def read_records(path: Path, csv_format: bool) -> dict[str, list[str]]:
    """Entries of an output or part file, as their text lines per source (a torn last line is dropped)."""
    if not path.exists():
        return {}
    entries: dict[str, list[str]] = {}
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]  # an interrupted write
    if csv_format:
        rows = list(csv.reader(lines))
        for line, row in zip(lines, rows):
            if row and row != CSV_FIELDS:
                entries.setdefault(row[0], []).append(line)
    else:
        for line in lines:
            if line.strip():
                entries.setdefault(json.loads(line)["source"], []).append(line)
    return entries


def _is_error(lines: list[str], csv_format: bool) -> bool:
    if csv_format:
        return any(next(csv.reader([line]))[1] == "error" for line in lines)
    return any("error" in json.loads(line) for line in lines)


def _part(output: Path, rank: int) -> Path:
    return output.with_name(f"{output.name}.{rank}.part")


# --------------------------------------------------------------------------------------------------------- run
def _plot_name(path: Path, root: str) -> str:
    """`root/a/b.wav` → `a__b.png` (unique for files below the inputs' common folder)."""
    return "__".join(path.resolve().relative_to(root).with_suffix("").parts).replace(" ", "_") + ".png"


def _fixed_mmap_threshold() -> None:
    """Fixes glibc's mmap threshold at its 128-KiB default. glibc raises it after each large free (up to 32 MiB), so
    the forward passes' buffers then come from the heap, which fragments: measured, a tiny model's peak RSS rose
    33 MiB from a 10-minute to a 1-hour recording with the dynamic threshold and 3 MiB with it fixed
    (`records/long_recordings_tiny_mmap_threshold.json`). No effect elsewhere than glibc."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def run(args) -> int:
    _fixed_mmap_threshold()
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from torchcodec.decoders import AudioDecoder

    from .inference import ElasticASTClassifier, plot_timeline

    output = Path(args.output)
    csv_format = output.suffix.lower() == ".csv"
    if output.suffix.lower() not in (".csv", ".jsonl", ".json"):
        raise SystemExit(f"error: --output {output} must end in .jsonl or .csv.")
    # cpu=True only where no CUDA device exists: it selects gloo for CPU processes under `accelerate launch`.
    state = PartialState(cpu=not torch.cuda.is_available())
    files = find_inputs(args.inputs)
    sources = [str(f) for f in files]
    root = os.path.commonpath([str(f.resolve().parent) for f in files]) if files else "."
    done: dict[str, list[str]] = {}
    for path in [output, *sorted(output.parent.glob(f"{output.name}.*.part"))]:
        done.update(read_records(path, csv_format))
    todo = [s for s in sources if s not in done or _is_error(done[s], csv_format)]
    if state.is_main_process and len(todo) < len(sources):
        print(f"resuming {output}: {len(sources) - len(todo)} of {len(sources)} files already done", file=sys.stderr)

    device = args.device or str(state.device)
    try:
        classifier = ElasticASTClassifier.from_pretrained(args.model, device=device, precision=args.precision)
    except ValueError as error:  # e.g. bf16 on a CPU without bf16 instructions
        raise SystemExit(f"error: {error}") from None
    classifier.max_tokens = args.max_tokens
    if args.plot:
        Path(args.plot).mkdir(parents=True, exist_ok=True)
    errors = 0
    with state.split_between_processes(todo) as mine:
        seconds = 0.0
        for source in mine:  # header durations, for the progress bar's total (estimates for compressed formats)
            try:
                seconds += AudioDecoder(source).metadata.duration_seconds_from_header or 0.0
            except Exception:  # reported when it is classified below
                pass
        bar = tqdm(total=round(seconds, 1), unit="audio-s", unit_scale=True, dynamic_ncols=True,
                   disable=not state.is_local_main_process, desc=f"classify ({len(mine)} files)")
        part = _part(output, state.process_index)
        with part.open("a") as sink:
            for source in mine:
                shown = [0.0]

                def progress(done_seconds, total_seconds, shown=shown):
                    bar.update(round(done_seconds - shown[0], 3))
                    shown[0] = done_seconds

                try:
                    result = classifier.classify(
                        source, compression=args.compression, window=args.window, hop=args.hop, top_k=args.top_k,
                        threshold=args.threshold, progress=progress,
                    )
                except (ValueError, RuntimeError, OSError) as error:
                    errors += 1
                    bar.write(f"skipped {source}: {error}", file=sys.stderr)
                    record = {"source": source, "error": " ".join(str(error).split())}
                else:
                    record = record_of(result, args.timeline)
                    if args.plot:
                        plot_timeline(result, source, Path(args.plot) / _plot_name(Path(source), root),
                                      feature_extractor=classifier.fe,
                                      threshold=args.threshold if classifier.multi_label else None)
                sink.write(_format([record], csv_format, header=False))
                sink.flush()
        bar.close()
    state.wait_for_everyone()
    if state.is_main_process:
        _merge(output, sources, csv_format)
        print(f"wrote {output} ({len(sources)} files)", file=sys.stderr)
    return 0


def _merge(output: Path, sources: list[str], csv_format: bool) -> None:
    """Output + part files → one output in input order (entries of files not among the inputs kept at the end)."""
    parts = sorted(output.parent.glob(f"{output.name}.*.part"))
    entries = read_records(output, csv_format)
    for part in parts:
        entries.update(read_records(part, csv_format))
    order = sources + [s for s in entries if s not in set(sources)]
    text = "".join("".join(entries[s]) for s in order if s in entries)
    header = (",".join(CSV_FIELDS) + "\n") if csv_format else ""
    temporary = output.with_name(output.name + ".tmp")
    temporary.write_text(header + text)
    os.replace(temporary, output)
    for part in parts:
        part.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m elasticast.classify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
