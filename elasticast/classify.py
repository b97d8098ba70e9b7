"""`elasticast classify`: label audio files of any length with a trained model, with timelines, plots and resume.

    elasticast classify MODEL INPUTS... [--output results.jsonl|.csv] [--timeline] [--window S --hop S] [--top-k K]
                        [--threshold T] [--compression C] [--plot DIR]
                        [--events DIR --format jsonl,csv,audacity,raven,dcase [--combine]]
                        [--low-threshold T] [--min-confidence P] [--merge-gap S] [--min-duration S]
                        [--labels a,b] [--exclude c]
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

Crash safety (`elasticast.output_files`): records are appended whole; a run killed at any point (or stopped by a
full disk) and started again gives the uninterrupted output; a torn last record is cut off (kept in OUTPUT.torn)
and recomputed; leftover part files are checked before they are merged; OUTPUT.lock keeps a second run off the
same output. Names that are not UTF-8 are kept exactly (`source_hex`: their bytes in hex).

Events (`--events DIR`): the segments after `elasticast.events` post-processing — the model's calibrated
thresholds (`elasticast calibrate`) unless `--threshold` / `--min-confidence` are given, hysteresis with
`--low-threshold`, `--merge-gap`, `--min-duration`, `--labels` / `--exclude` — written per file as
`DIR/<name>.events.jsonl` + `<name>.provenance.json` and the `--format` tables (`elasticast.event_formats`), or with
`--combine` one table per format over all files (`DIR/events.*`). The same options shape the `segments` of
`--timeline`.
"""

import argparse
import glob
import math
import os
import sys
import tempfile
from pathlib import Path

from .argument_types import compression, count, seconds
from .event_formats import parse_formats
from .events import add_event_arguments

# Extensions a folder is searched for (ffmpeg reads many more; name such files or use a glob).
AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".wma", ".webm", ".mka"}
CSV_FIELDS = ["source", "kind", "label", "score", "start", "end", "duration", "error", "warning", "source_hex"]


EXIT_STATUS = """exit status:
  0  every file was classified
  1  a file failed (each one is reported and written as an `error` entry), or the output could not be written
  2  usage error (bad argument or output path; another run holds the output's lock)"""


def _output_path(text: str) -> Path:
    """--output: a .jsonl/.csv file in a writable folder that is either new, empty or a result file of ours."""
    from .output_files import FORMATS, ResultFile

    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; name a file in it, e.g. {path / 'results.jsonl'}")
    if path.suffix.lower() not in FORMATS:
        raise argparse.ArgumentTypeError(f"{text} must end in .jsonl or .csv (pick the format by the name)")
    folder = path.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"the folder {folder} does not exist; create it first (mkdir -p {folder})")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot write in {folder} ({error.strerror}); choose a writable folder") \
            from None
    if path.exists():
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"{text} exists and is not a regular file; choose another name")
        if not os.access(path, os.W_OK) and os.geteuid() != 0:
            raise argparse.ArgumentTypeError(f"{text} is not writable; fix its permissions or choose another name")
        if not ResultFile(path, CSV_FIELDS).looks_like_ours():
            raise argparse.ArgumentTypeError(
                f"{text} exists and is not an `elasticast classify` result file; it is left alone — choose another "
                "--output or move that file away")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("model", help="model folder or Hub repo id (model + feature extractor)")
    parser.add_argument("inputs", nargs="+", help="audio files, folders (searched recursively) or globs")
    parser.add_argument("--output", default="results.jsonl", type=_output_path,
                        help="results file, .jsonl (one JSON line per file) or .csv; re-running resumes it")
    parser.add_argument("--timeline", action="store_true", help="write per-window scores and segments too")
    parser.add_argument("--window", type=seconds("--window"),
                        help="window length in seconds (default: the model's time table, 30.7 s at compression 1)")
    parser.add_argument("--hop", type=seconds("--hop"),
                        help="hop between windows in seconds (default: no overlap)")
    parser.add_argument("--top-k", type=count("--top-k"), default=5,
                        help="labels listed per file")
    parser.add_argument("--compression", type=compression(), default=None,
                        help="temporal compression C ≥ 1 (less compute); default: the checkpoint's feature extractor's")
    parser.add_argument("--plot", metavar="DIR", help="write one timeline PNG per file into DIR")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the process's accelerate device)")
    parser.add_argument("--max-tokens", type=count("--max-tokens"), default=8192,
                        help="tokens per forward call (memory vs speed)")
    parser.add_argument("--events", metavar="DIR", help="write each file's sound events into DIR (see --format)")
    parser.add_argument("--format", default="jsonl", type=_formats,
                        help="event tables, several separated by commas: jsonl,csv,audacity,raven,dcase")
    parser.add_argument("--combine", action="store_true",
                        help="one table per format over all files (DIR/events.*) instead of one per file")
    add_event_arguments(parser)
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8", "auto"), default="fp32",
                        help="bf16: autocast, only where the CPU/GPU has bf16 in hardware; int8: dynamically quantized "
                        "encoder (CPU); auto: the fastest this machine supports (docs: guides/cpu-precision.md)")
    return parser


def _formats(text: str) -> list[str]:
    try:
        return parse_formats(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("classify", help="label audio files of any length (timeline, plots, resume)",
                                   description=__doc__, epilog=EXIT_STATUS,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
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
    """The entry written for one file: the result's dict without its wall time (so that runs compare equal), with
    the exact path fields (`source`, and `source_hex` for a name that is not valid UTF-8)."""
    from .output_files import source_fields

    record = result.to_dict(timeline=timeline)
    del record["compute_seconds"]
    record.update(source_fields(record["source"]))
    return record


def _csv_rows(record: dict) -> list[dict]:
    base = {"source": record["source"], "source_hex": record.get("source_hex", ""),
            "duration": record.get("duration", ""), "warning": record.get("warning", "")}
    if "error" in record:
        return [{**base, "kind": "error", "error": record["error"]}]
    rows = [{**base, "kind": "top", "label": t["label"], "score": t["score"]} for t in record["top"]]
    for s in record.get("segments", []):
        rows.append({**base, "kind": "segment", "label": s["label"], "score": s["score"], "start": s["start"],
                     "end": s["end"]})
    return rows


def _is_error(row: dict) -> bool:
    """Whether a parsed entry (a JSON record or a record's first CSV row) is a failed file (retried on resume)."""
    return "error" in row if "kind" not in row else row["kind"] == "error"


def _usage_error(message: str):
    print(f"elasticast classify: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _all_finite(record: dict) -> bool:
    return all(math.isfinite(v) for v in record.get("scores", {}).values())


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


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args) -> int:
    """Classifies the inputs into `args.output`; returns the exit status (0 all classified, 1 any failed)."""
    _fixed_mmap_threshold()
    import contextlib

    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    from .output_files import OutputError, ResultFile, output_lock

    if args.hop is not None and args.window is not None and args.hop > args.window:
        _usage_error(f"--hop {args.hop} is longer than --window {args.window}: audio between windows would go "
                     "unheard; pass a hop at most the window.")
    output = Path(args.output)
    results = ResultFile(output, CSV_FIELDS)
    # cpu=True only where no CUDA device exists: it selects gloo for CPU processes under `accelerate launch`.
    state = PartialState(cpu=not torch.cuda.is_available())
    try:
        files = find_inputs(args.inputs)
    except SystemExit as error:
        _usage_error(str(error).removeprefix("error: "))
    sources = [str(f) for f in files]

    with contextlib.ExitStack() as stack:
        # The main process holds the output's lock for the whole run, checks and repairs what is on disk, and tells
        # the other processes which files are left (or why the run stops).
        plan: list = [None, None]
        if state.is_main_process:
            try:
                stack.enter_context(output_lock(output, f"--output {output}"))
                done = _known_results(results)
                root = _common_root(sources)
                plan = [[s for s in sources if s not in done or _is_error(done[s][1])
                         or (args.events and not _events_written(args.events, s, root))], None]
            except OutputError as error:
                plan = [None, str(error)]
        plan = broadcast_object_list(plan) if state.num_processes > 1 else plan
        todo, problem = plan
        if problem is not None:
            _usage_error(problem)
        if state.is_main_process and len(todo) < len(sources):
            _log(f"resuming {output}: {len(sources) - len(todo)} of {len(sources)} files already done")
        from .inference import ElasticASTClassifier

        try:
            classifier = ElasticASTClassifier.from_pretrained(args.model, device=args.device or str(state.device),
                                                              precision=args.precision)
        except (OSError, ValueError) as error:  # no such model, or weights that do not match it (strict loading)
            _usage_error(f"cannot load the model {args.model}: {error}")
        classifier.max_tokens = args.max_tokens
        from .events import event_options_from_args

        try:  # the event options against the model's labels (an unknown label in --labels is a usage error)
            options = event_options_from_args(args, classifier.model.config)
            options.check_labels(classifier.labels)
            options.low_thresholds(classifier.labels)
        except ValueError as error:
            _usage_error(str(error))
        unwritable = None
        try:
            _classify_share(args, state, results, sources, todo, classifier, options)
        except OSError as error:  # the output cannot be written (disk full, file size limit): what is written stays
            unwritable = error
        state.wait_for_everyone()  # every process reaches the barrier, also one that could not write
        if unwritable is not None:
            _log(f"error: cannot write {output} ({unwritable}); free space or raise the limit and run the same "
                 "command again: every finished file is kept and skipped.")
            return 1
        if not state.is_main_process:
            return 0
        try:
            failed = _merge(results, sources)
        except (OSError, OutputError) as error:
            _log(f"error: cannot merge into {output} ({error}); the part files are kept: run the same command "
                 "again.")
            return 1
        if args.events and args.combine:
            _combine_events(args, sources, classifier)
    _log(f"wrote {output} ({len(sources)} files{f', {failed} failed' if failed else ''})")
    return 1 if failed else 0


def _common_root(sources: list[str]) -> str:
    """The inputs' common folder: plot and event file names are paths below it."""
    return os.path.commonpath([str(Path(s).resolve().parent) for s in sources]) if sources else "."


def _events_written(folder: str, source: str, root: str) -> bool:
    """Whether an earlier run wrote `source`'s events (its provenance file is written last)."""
    return (Path(folder) / f"{_plot_name(Path(source), root)[:-4]}.provenance.json").is_file()


def _combine_events(args, sources: list[str], classifier) -> None:
    """`--combine`: one table per format over every file whose events are in `args.events`."""
    from .event_formats import write_combined

    root = _common_root(sources)
    names = [_plot_name(Path(s), root)[:-4] for s in sources if _events_written(args.events, s, root)]
    if len(names) < len(sources):
        _log(f"warning: {len(sources) - len(names)} file(s) have no events in {args.events} (failed, or classified "
             "by an earlier run without --events); the combined tables leave them out")
    write_combined(args.events, names, args.format, classifier.fe.sampling_rate)


def _classify_share(args, state, results, sources: list[str], todo: list[str], classifier, options) -> None:
    """This process's share of `todo`, one whole record appended to its part file per input."""
    from tqdm.auto import tqdm

    from torchcodec.decoders import AudioDecoder

    from .event_formats import provenance_of, write_recording
    from .events import Event
    from .inference import decoder_source, plot_timeline

    root = _common_root(sources)
    if args.events:
        Path(args.events).mkdir(parents=True, exist_ok=True)
    if args.plot:
        Path(args.plot).mkdir(parents=True, exist_ok=True)
    with state.split_between_processes(todo) as mine:
        seconds = 0.0
        for source in mine:  # header durations, for the progress bar's total (estimates for compressed formats)
            try:
                seconds += AudioDecoder(decoder_source(Path(source))).metadata.duration_seconds_from_header or 0.0
            except Exception:  # reported when it is classified below
                pass
        bar = tqdm(total=round(seconds, 1), unit="audio-s", unit_scale=True, dynamic_ncols=True,
                   disable=not state.is_local_main_process, desc=f"classify ({len(mine)} files)")
        with results.appender(results.part(state.process_index)) as sink:
            for source in mine:
                shown = [0.0]

                def progress(done_seconds, total_seconds, shown=shown):
                    bar.update(round(done_seconds - shown[0], 3))
                    shown[0] = done_seconds

                try:
                    result = classifier.classify(
                        source, compression=args.compression, window=args.window, hop=args.hop, top_k=args.top_k,
                        progress=progress, events=options,
                    )
                    record = record_of(result, args.timeline)
                    if not _all_finite(record):
                        raise ValueError("the model returned NaN/Inf scores (damaged weights or an fp16 overflow); "
                                         "check the checkpoint or run in fp32")
                except (ValueError, RuntimeError, OSError) as error:
                    from .output_files import source_fields

                    bar.write(f"skipped {source}: {error}", file=sys.stderr)
                    record = {**source_fields(source), "error": " ".join(str(error).split())}
                else:
                    if record.get("warning"):
                        bar.write(f"warning: {source}: {record['warning']}", file=sys.stderr)
                    if args.plot:
                        plot_timeline(result, source, Path(args.plot) / _plot_name(Path(source), root),
                                      feature_extractor=classifier.fe,
                                      threshold=args.threshold if classifier.multi_label else None)
                    if args.events:
                        write_recording(args.events, _plot_name(Path(source), root)[:-4], source,
                                        [Event(e.start, e.end, e.label, e.score) for e in result.segments],
                                        args.format, args.combine, classifier.fe.sampling_rate, provenance_of(
                                            classifier, source, result.duration, result.compression, args.window,
                                            args.hop, options, args.model,
                                            getattr(classifier.model.config, "_commit_hash", None)))
                rows = _csv_rows(record) if results.csv else [record]
                sink.write(results.encode(rows))
        bar.close()


def _known_results(results) -> dict:
    """The output's entries (torn tail repaired) updated by the checked part files of a crashed or sharded run: a
    part's entry wins unless it is an error and the output already has that file classified."""
    entries = results.read(log=_log)
    for key, value in results.read_parts(log=_log).items():
        if key not in entries or _is_error(entries[key][1]) or not _is_error(value[1]):
            entries[key] = value
    return entries


def _merge(results, sources: list[str]) -> int:
    """Output + checked part files → one output in input order (entries of files not among the inputs kept at the
    end), written atomically; then the parts are removed. Returns how many inputs failed."""
    entries = _known_results(results)
    wanted = set(sources)
    order = sources + [s for s in entries if s not in wanted]
    results.replace([entries[s][0] for s in dict.fromkeys(order) if s in entries])
    for part in results.parts():
        part.unlink()
    return sum(1 for s in sources if s not in entries or _is_error(entries[s][1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m elasticast.classify", description=__doc__, epilog=EXIT_STATUS,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
