"""Event tables people open in their tools: writers and readers of JSON lines, CSV, Audacity label tracks, Raven
selection tables and DCASE TSV, with a provenance record beside them.

Formats (one row per event; times in seconds from the start of the recording):
    - `jsonl`: one JSON object per event: `{"file", "start", "end", "label", "score"}`.
    - `csv`: header `file,start,end,label,score` (RFC 4180 quoting by Python's `csv`).
    - `audacity`: Audacity's label-track text (File → Import → Labels): no header, one region label per line,
      `start<TAB>end<TAB>label`, times with six decimals as Audacity writes them, UTF-8. One file per recording
      (a label track belongs to one audio track); tabs and line breaks in labels are replaced by spaces.
    - `raven`: a Raven selection table (File → Open Selection Table): tab-separated text with the header `Selection`,
      `View`, `Channel`, `Begin Time (s)`, `End Time (s)`, `Low Freq (Hz)`, `High Freq (Hz)`, then `Label` and
      `Score` annotation columns. Selections are numbered from 1, `View` is `Spectrogram 1`, `Channel` 1, and the
      frequency box is the whole band (0 to half the model's sampling rate): the model does not localise in
      frequency. A combined table (several recordings) adds `Begin Path` and `File Offset (s)` columns and places
      `Begin Time (s)` on the recordings laid end to end in the table's order, as Raven's multi-file tables do.
    - `dcase`: the DCASE challenge's tab-separated `filename onset offset event_label` with that header line
      (the reference format that `sed_eval` and `sed_scores_eval` read).

Provenance (source files, model, revision, compression, window, hop, thresholds and post-processing, package
version) goes into a JSON file beside the tables (`<name>.provenance.json`): Audacity and DCASE files have no
place for it, and one record for all formats keeps it in one home.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .events import Event

FORMATS = ("jsonl", "csv", "audacity", "raven", "dcase")
SUFFIXES = {"jsonl": ".events.jsonl", "csv": ".events.csv", "audacity": ".audacity.txt",
            "raven": ".selections.txt", "dcase": ".dcase.tsv"}
RAVEN_COLUMNS = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
                 "Label", "Score"]
RAVEN_MULTI_FILE_COLUMNS = ["Begin Path", "File Offset (s)"]
DCASE_COLUMNS = ["filename", "onset", "offset", "event_label"]

FileEvents = tuple[str, list[Event]]  # (recording's path or name, its events)


def parse_formats(text: str) -> list[str]:
    """`"jsonl,raven"` → `["jsonl", "raven"]`; raises a ValueError naming an unknown format and the known ones."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise ValueError(f"Unknown event format(s) {unknown or [text]}; choose from {','.join(FORMATS)} (several "
                         "separated by commas).")
    return list(dict.fromkeys(names))


def _clean(label: str) -> str:
    return " ".join(str(label).split())  # no tab or line break can split a column


# ----------------------------------------------------------------------------------------------------------- writers
def to_jsonl(files: Sequence[FileEvents]) -> str:
    return "".join(json.dumps({"file": name, **event.to_dict()}, ensure_ascii=False) + "\n"
                   for name, events in files for event in events)


def to_csv(files: Sequence[FileEvents]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", "start", "end", "label", "score"])
    for name, events in files:
        for e in events:
            writer.writerow([name, f"{e.start:.6f}", f"{e.end:.6f}", e.label, f"{e.score:.6f}"])
    return out.getvalue()


def to_audacity(events: Sequence[Event]) -> str:
    """One recording's events as an Audacity label track."""
    return "".join(f"{e.start:.6f}\t{e.end:.6f}\t{_clean(e.label)}\n" for e in events)


def to_raven(files: Sequence[FileEvents], sampling_rate: int, durations: Sequence[float] | None = None) -> str:
    """A Raven selection table; several recordings make a multi-file table (`durations` [s] lay them end to end)."""
    multi = len(files) > 1
    if multi and (durations is None or len(durations) != len(files)):
        raise ValueError("A combined Raven table needs each recording's duration (to place it on the table's time "
                         "axis); pass durations.")
    rows = ["\t".join(RAVEN_COLUMNS + (RAVEN_MULTI_FILE_COLUMNS if multi else []))]
    number, offset = 0, 0.0
    for index, (name, events) in enumerate(files):
        for e in events:
            number += 1
            row = [str(number), "Spectrogram 1", "1", f"{offset + e.start:.6f}", f"{offset + e.end:.6f}", "0.0",
                   f"{sampling_rate / 2:.1f}", _clean(e.label), f"{e.score:.6f}"]
            if multi:
                row += [_clean(name), f"{e.start:.6f}"]
            rows.append("\t".join(row))
        if multi:
            offset += durations[index]
    return "\n".join(rows) + "\n"


def to_dcase(files: Sequence[FileEvents]) -> str:
    lines = ["\t".join(DCASE_COLUMNS)]
    for name, events in files:
        lines += [f"{_clean(name)}\t{e.start:.6f}\t{e.end:.6f}\t{_clean(e.label)}" for e in events]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------- readers
def read_jsonl(path) -> list[FileEvents]:
    grouped: dict[str, list[Event]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            grouped.setdefault(row["file"], []).append(Event(row["start"], row["end"], row["label"], row["score"]))
    return list(grouped.items())


def read_csv(path) -> list[FileEvents]:
    grouped: dict[str, list[Event]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            grouped.setdefault(row["file"], []).append(
                Event(float(row["start"]), float(row["end"]), row["label"], float(row["score"])))
    return list(grouped.items())


def read_audacity(path) -> list[Event]:
    """An Audacity label track (region and point labels; the extended format's frequency lines, which start with a
    backslash, are skipped)."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("\\"):
            continue
        start, end, *label = line.split("\t")
        events.append(Event(float(start), float(end), label[0] if label else "", float("nan")))
    return events


def read_raven(path) -> list[FileEvents]:
    """A Raven selection table (single or multi-file) → events per file, times relative to each file."""
    grouped: dict[str, list[Event]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            name = row.get("Begin Path") or str(path)
            if "File Offset (s)" in row and row["File Offset (s)"]:
                start = float(row["File Offset (s)"])
                end = start + float(row["End Time (s)"]) - float(row["Begin Time (s)"])
            else:
                start, end = float(row["Begin Time (s)"]), float(row["End Time (s)"])
            score = float(row["Score"]) if row.get("Score") else float("nan")
            grouped.setdefault(name, []).append(Event(start, end, row.get("Label", ""), score))
    return list(grouped.items())


def read_dcase(path) -> list[FileEvents]:
    """A DCASE TSV (`filename onset offset event_label`; rows without a label, which DCASE uses for files without
    events, give a file with no events)."""
    grouped: dict[str, list[Event]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            events = grouped.setdefault(row["filename"], [])
            if row.get("event_label"):
                events.append(Event(float(row["onset"]), float(row["offset"]), row["event_label"], float("nan")))
    return list(grouped.items())


# ------------------------------------------------------------------------------------------------------------ output
def write_text(path: Path, text: str) -> Path:
    """Writes `text` whole or not at all (a temporary file renamed over `path`), so an interrupted run never leaves
    a torn table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def write_tables(base: Path, files: Sequence[FileEvents], formats: Iterable[str], *, sampling_rate: int,
                 durations: Sequence[float] | None = None, provenance: dict | None = None) -> list[Path]:
    """Writes the chosen formats for `files` as `<base><suffix>` (e.g. `out/scene.selections.txt`) and the
    provenance as `<base>.provenance.json`; returns the paths. Audacity tracks need one recording: with several, one
    label track per recording is written as `<base>.<recording stem>.audacity.txt`."""
    written = []
    for name in formats:
        if name == "audacity":
            if len(files) == 1:
                written.append(write_text(Path(f"{base}{SUFFIXES[name]}"), to_audacity(files[0][1])))
            else:
                for source, events in files:
                    written.append(write_text(Path(f"{base}.{Path(source).stem}{SUFFIXES[name]}"), to_audacity(events)))
            continue
        text = {"jsonl": lambda: to_jsonl(files), "csv": lambda: to_csv(files), "dcase": lambda: to_dcase(files),
                "raven": lambda: to_raven(files, sampling_rate, durations)}[name]()
        written.append(write_text(Path(f"{base}{SUFFIXES[name]}"), text))
    if provenance is not None:
        written.append(write_text(Path(f"{base}.provenance.json"), json.dumps(provenance, indent=2, ensure_ascii=False)
                                  + "\n"))
    return written




# ------------------------------------------------------------------------------------------ per-run event output
def provenance_of(classifier, source: str, duration: float, compression: float, window, hop, options, model: str,
                  revision: str | None = None) -> dict:
    """What made a recording's events: file, model (name, revision), compression, window, hop, thresholds and
    post-processing, package version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("elasticast")
    except PackageNotFoundError:  # a source checkout without installation
        package = None
    return {"file": source, "duration": round(duration, 6), "model": model, "revision": revision,
            "compression": compression, "window": window, "hop": hop,
            "events": options.describe(classifier.labels, classifier.multi_label),
            "elasticast_version": package}


def write_recording(folder, name: str, source: str, events: list[Event], formats: Sequence[str], combine: bool,
                    sampling_rate: int, provenance: dict) -> list[Path]:
    """One recording's events in `folder/<name>.*`: always the JSON lines and provenance (the source of a combined
    table, read back by `write_combined`), and the chosen `formats` unless they are to be combined."""
    chosen = ["jsonl"] + ([] if combine else [f for f in formats if f != "jsonl"])
    return write_tables(Path(folder) / name, [(source, events)], chosen, sampling_rate=sampling_rate,
                        durations=[provenance["duration"]], provenance=provenance)


def write_combined(folder, names: Sequence[str], formats: Sequence[str], sampling_rate: int,
                   base: str = "events") -> list[Path]:
    """One table per format over several recordings (like BirdNET-Analyzer's `--combine`), from the per-recording
    files `write_recording` left in `folder` (names in table order), as `folder/<base>.*`."""
    folder = Path(folder)
    files, durations, provenance = [], [], []
    for name in names:
        record = json.loads((folder / f"{name}.provenance.json").read_text(encoding="utf-8"))
        events = read_jsonl(folder / f"{name}{SUFFIXES['jsonl']}") if (folder / f"{name}{SUFFIXES['jsonl']}").is_file() \
            else []
        files.append((record["file"], events[0][1] if events else []))
        durations.append(record["duration"])
        provenance.append(record)
    return write_tables(folder / base, files, formats, sampling_rate=sampling_rate, durations=durations,
                        provenance={"recordings": provenance})


__all__ = [
    "FORMATS",
    "parse_formats",
    "read_audacity",
    "read_csv",
    "read_dcase",
    "read_jsonl",
    "read_raven",
    "to_audacity",
    "to_csv",
    "to_dcase",
    "to_jsonl",
    "to_raven",
    "provenance_of",
    "write_combined",
    "write_recording",
    "write_tables",
]
