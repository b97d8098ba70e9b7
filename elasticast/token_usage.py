"""Where training tokens go (the paper's Table 1, for any dataset): fixed-length AST against ElasticAST packing.

A fixed-length AST with 16×16 patches at stride 16 turns every clip into `L/16 × 8` tokens: short clips are padded,
long ones cut. ElasticAST packs each batch of B clips (in loader order) into rows of ≤ L' tokens, padded to the
batch's longest row — with the paper's sequential fill or our best-fit packer (`pack_segments`) — and cuts only
clips longer than its cap. Percentages:

- padding % = padding tokens / all tokens computed;
- cut % = tokens of the clips' native spectrograms that were cut away / all native tokens (frames beyond the last
  whole 16-frame patch count as cut for ElasticAST, and as kept for AST, which pads them);
- useful % = 100 - padding %.

`elasticast token-usage --dataset ...` reads only the audio headers (torchcodec), never decodes samples; with
`--output` it writes a JSON record: the command, the date, the platform and versions (token counts only: no
timings, so no GEMM rate), the results and their markdown table.
"""

import json
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

from .feature_extraction_elasticast import ElasticASTFeatureExtractor, pack_segments

Packer = Callable[[Sequence[int], int], list[list[int]]]


def sequential_fill(lengths: Sequence[int], max_tokens_per_row: int) -> list[list[int]]:
    """The paper's packer: items in loader order; one that would overflow the current row starts the next."""
    rows: list[list[int]] = []
    used = max_tokens_per_row
    for index, n in enumerate(lengths):
        if used + n > max_tokens_per_row:
            rows.append([])
            used = 0
        rows[-1].append(index)
        used += n
    return rows


PACKERS: dict[str, Packer] = {"sequential": sequential_fill, "best_fit": pack_segments}


def packed_usage(
    segments: Sequence[Sequence[int]], batch_size: int, max_tokens_per_row: int, packer: Packer
) -> dict[str, int]:
    """Token counts when each batch of `batch_size` clips (each a list of segment lengths) is packed.

    Returns `{"placed", "computed", "rows"}`: real tokens, tokens computed (rows × longest row, per batch), rows.
    """
    placed = computed = rows_total = 0
    for start in range(0, len(segments), batch_size):
        lengths = [n for clip in segments[start : start + batch_size] for n in clip]
        rows = packer(lengths, max_tokens_per_row)
        row_tokens = [sum(lengths[i] for i in row) for row in rows]
        placed += sum(row_tokens)
        computed += len(rows) * max(row_tokens)
        rows_total += len(rows)
    return {"placed": placed, "computed": computed, "rows": rows_total}


def token_usage(
    num_samples: Sequence[int],
    fe: ElasticASTFeatureExtractor,
    batch_sizes: Sequence[int] = (12, 24, 48),
    max_tokens_per_row: int = 2048,
    ast_length: int = 1024,
    max_length: int | None = 3072,
) -> list[dict]:
    """Padding/cut/useful % of fixed-length AST (`ast_length` frames) and of ElasticAST packing (cap
    `max_length` frames, None = no cap: long clips become windows) for clips of `num_samples` at `fe`'s rate."""
    n_freq = fe.num_mel_bins // fe.patch_size
    native = [n_freq * fe.raw_frames(n) / fe.patch_size for n in num_samples]  # fractional tokens of the full clip
    total_native = sum(native)
    ast_tokens = n_freq * ast_length // fe.patch_size
    ast_kept = sum(min(t, ast_tokens) for t in native)
    results = [{
        "method": f"AST, fixed {ast_length} frames", "batch_size": None,
        "padding_percent": 100 * (ast_tokens * len(native) - ast_kept) / (ast_tokens * len(native)),
        "cut_percent": 100 * (total_native - ast_kept) / total_native,
    }]
    segments = [fe.segment_lengths(n, max_length=max_length, max_tokens_per_row=max_tokens_per_row)
                for n in num_samples]
    for batch_size in batch_sizes:
        for name, packer in PACKERS.items():
            usage = packed_usage(segments, batch_size, max_tokens_per_row, packer)
            results.append({
                "method": f"ElasticAST, {name.replace('_', '-')} packing", "batch_size": batch_size,
                "padding_percent": 100 * (usage["computed"] - usage["placed"]) / usage["computed"],
                "cut_percent": 100 * (total_native - usage["placed"]) / total_native,
                "rows": usage["rows"],
            })
    for row in results:
        row["useful_percent"] = 100 - row["padding_percent"]
    return results


def markdown(results: list[dict], num_clips: int) -> str:
    lines = [f"Token usage over {num_clips} clips", "", "| method | batch | padding % | cut % | useful % |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['method']} | {r['batch_size'] or '–'} | {r['padding_percent']:.1f} | "
                     f"{r['cut_percent']:.1f} | {r['useful_percent']:.1f} |")
    return "\n".join(lines)


def dataset_num_samples(dataset: str, split: str, audio_column: str, sampling_rate: int, data_dir=None,
                        config_name=None, limit: int | None = None) -> list[int]:
    """Lengths in samples at `sampling_rate` of a split's clips, read from the audio headers (streaming)."""
    from datasets import Audio, load_dataset
    from torchcodec.decoders import AudioDecoder
    from tqdm.auto import tqdm

    stream = load_dataset(dataset, config_name, split=split, streaming=True,
                          **({"data_dir": data_dir} if data_dir else {}))
    stream = stream.select_columns([audio_column]).cast_column(audio_column, Audio(decode=False))
    lengths, skipped = [], 0
    for example in tqdm(stream.take(limit) if limit else stream, desc="reading audio headers", unit="clip"):
        audio = example[audio_column]
        try:
            decoder = AudioDecoder(audio.get("bytes") or audio["path"])
            seconds = decoder.metadata.duration_seconds_from_header
            if seconds is None:  # no duration in the header: decode once to count
                samples = decoder.get_all_samples()
                seconds = samples.data.shape[-1] / samples.sample_rate
            lengths.append(int(round(seconds * sampling_rate)))
        except Exception as error:  # noqa: BLE001 - an unreadable file is counted, not fatal
            skipped += 1
            tqdm.write(f"skipped an unreadable clip ({type(error).__name__}: {error})")
    if skipped:
        tqdm.write(f"{skipped} clip(s) could not be read and were left out")
    if not lengths:
        raise ValueError(f"No readable audio in {dataset!r} split {split!r} column {audio_column!r}.")
    return lengths


def add_parser(subparsers):
    parser = subparsers.add_parser("token-usage", help="padding and cut %% of fixed-length AST vs ElasticAST packing")
    parser.add_argument("--dataset", required=True, help="hub id, 'audiofolder' (with --data-dir), or a loader name")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dataset-config", default=None)
    parser.add_argument("--split", default="train")
    parser.add_argument("--audio-column", default="audio")
    parser.add_argument("--batch-sizes", default="12,24,48", help="clips per packing call, comma-separated")
    parser.add_argument("--max-tokens-per-row", type=int, default=2048)
    parser.add_argument("--ast-length", type=int, default=1024, help="fixed AST input length in frames")
    parser.add_argument("--max-length", default="3072", help="ElasticAST cap in frames, or 'none' (windows)")
    parser.add_argument("--limit", type=int, default=None, help="read only the first N clips")
    parser.add_argument("--output", default=None,
                        help="also write a JSON record here (command, date, machine, results, markdown table)")
    parser.set_defaults(func=run)


def run(args) -> int:
    fe = ElasticASTFeatureExtractor()
    lengths = dataset_num_samples(args.dataset, args.split, args.audio_column, fe.sampling_rate,
                                  data_dir=args.data_dir, config_name=args.dataset_config, limit=args.limit)
    results = token_usage(
        lengths, fe, batch_sizes=[int(b) for b in args.batch_sizes.split(",")],
        max_tokens_per_row=args.max_tokens_per_row, ast_length=args.ast_length,
        max_length=None if args.max_length.lower() == "none" else int(args.max_length),
    )
    table = markdown(results, len(lengths))
    print(table)
    if args.output:
        import datetime
        import platform

        import transformers

        # Token counts only (no timings), so the record needs no GEMM rate: just what made it and when.
        record = {"command": command_line(args), "num_clips": len(lengths), "results": results, "table": table,
                  "machine": {"platform": platform.platform(), "transformers": transformers.__version__,
                              },
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        Path(args.output).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return 0


def command_line(args) -> str:
    """The `elasticast token-usage` command that reproduces this run (every option spelled out)."""
    argv = ["elasticast", "token-usage", "--dataset", args.dataset, "--split", args.split,
            "--audio-column", args.audio_column, "--batch-sizes", args.batch_sizes,
            "--max-tokens-per-row", str(args.max_tokens_per_row), "--ast-length", str(args.ast_length),
            "--max-length", str(args.max_length)]
    for option, value in (("--data-dir", args.data_dir), ("--dataset-config", args.dataset_config),
                          ("--limit", args.limit)):
        if value is not None:
            argv += [option, str(value)]
    return shlex.join(argv)
