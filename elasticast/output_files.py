"""Crash-safe result files: one writer per output, whole-record appends, torn-tail repair and checked part files.

Used by `elasticast classify` and written for any command that appends one record per input to a JSONL or CSV
file and resumes it (sound-event and live-audio outputs can reuse `ResultFile` and `output_lock`).

Guarantees:
    * Every possible file name round-trips. JSONL is written with `json.dumps(ensure_ascii=True)` (pure ASCII: no
      raw U+2028/U+0085/newline can split a line); CSV (RFC 4180, CRLF row ends) with the `csv` module's quoting
      (CR and LF inside a quoted field are kept and read back; read it with `open(..., newline="")`). A path that is not valid UTF-8 is written as its `os.fsdecode` text
      (surrogate escapes, e.g. ``\\udcff`` in JSON) plus the raw bytes in hex in `source_hex`; read them back with
      `source_bytes(record)` (or `bytes.fromhex(record["source_hex"])`).
    * Each record is appended with one `os.write` of whole lines on an `O_APPEND` descriptor; a write that fails
      part-way (disk full, `RLIMIT_FSIZE`) is cut back to the record's start, so finished records are never mixed
      with half ones.
    * On start, a torn last record (a crash while writing) is detected, moved to `NAME.torn` (kept, not merged),
      cut off and reported; its input is then recomputed. Any other unreadable record makes the file refused
      (reported with its line number), never silently dropped or overwritten.
    * Part files of a crashed multi-process run are merged only after they are checked: a regular file (not a
      link, device or FIFO), at most `MAX_PART_BYTES`, parsed record by record. A bad part is renamed
      `NAME.bad` and reported; its inputs are recomputed.
    * `output_lock` takes an exclusive `fcntl.flock` on `NAME.lock`: a second run on the same output is refused
      with the holder's process id and command line.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import glob
import io
import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

MAX_PART_BYTES = 64 * 2**30  # a part file larger than this is not one this program wrote (a device, a wrong link)
FORMATS = (".jsonl", ".csv")


class OutputError(RuntimeError):
    """An output, part or lock file that cannot be used as it is; the message says why and what to do."""


# ----------------------------------------------------------------------------------------------------- names
def source_fields(path: str | os.PathLike | bytes) -> dict:
    """`{"source": text}` for a path, plus `{"source_hex": raw bytes in hex}` when its bytes are not valid UTF-8.

    `text` is `os.fsdecode(path)`: a non-UTF-8 byte becomes a lone surrogate (U+DC80-U+DCFF), which
    `json.dumps(ensure_ascii=True)` writes as a `\\udcXX` escape and `json.loads` reads back.
    """
    raw = os.fsencode(path)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"source": os.fsdecode(raw), "source_hex": raw.hex()}
    return {"source": os.fsdecode(raw)}


def source_bytes(record: dict) -> bytes:
    """The exact bytes of the path a record (JSONL dict or CSV row) was written for."""
    if record.get("source_hex"):
        return bytes.fromhex(record["source_hex"])
    return os.fsencode(record["source"])


def source_key(record: dict) -> str:
    """The record's path as `os.fsdecode` text: equal to `str(path)` of the input it came from."""
    return os.fsdecode(source_bytes(record))


def _csv_text(text: str) -> str:
    # CSV files are UTF-8 text: a lone surrogate cannot be written, so it is shown as `\udcXX` (source_hex holds
    # the exact bytes).
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# ---------------------------------------------------------------------------------------------- encode/parse
class ResultFile:
    """One JSONL or CSV result file (`fields`: the CSV columns; JSONL records are free-form dicts with "source").

    A *record* is everything written for one input: one JSON line, or one or more CSV rows that share a source.
    """

    def __init__(self, path: str | os.PathLike, fields: list[str] | None = None):
        self.path = Path(path)
        self.csv = self.path.suffix.lower() == ".csv"
        self.fields = list(fields or [])
        if self.csv and ("source" not in self.fields or "source_hex" not in self.fields):
            raise ValueError("CSV result files need 'source' and 'source_hex' columns.")

    # --------------------------------------------------------------------------------------- encoding
    def header(self) -> bytes:
        return (",".join(self.fields) + "\r\n").encode() if self.csv else b""

    def encode(self, rows: list[dict]) -> bytes:
        """Whole lines for one input's rows (JSONL: one dict per line; CSV: one row per dict)."""
        if not self.csv:
            return "".join(json.dumps(row, ensure_ascii=True, allow_nan=False) + "\n" for row in rows).encode("ascii")
        out = io.StringIO()
        # RFC 4180's CRLF row ends: the csv module then quotes every field holding a CR or LF.
        writer = csv.DictWriter(out, self.fields, lineterminator="\r\n", extrasaction="raise")
        for row in rows:
            writer.writerow({k: _csv_text(v) if isinstance(v, str) else v for k, v in row.items()})
        return out.getvalue().encode("utf-8")

    # ---------------------------------------------------------------------------------------- parsing
    def parse(self, data: bytes, *, name: str | None = None) -> tuple[list[tuple[str, bytes, dict]], bytes]:
        """File bytes → `(records, torn)`: `(source key, record bytes, parsed row)` for each whole row in order,
        and the bytes of a torn last record (b"" if none). Raises OutputError for damage anywhere else."""
        name = name or str(self.path)
        end = data.rfind(b"\n") + 1  # a record is complete only with its final newline
        body, torn = data[:end], data[end:]
        rows: list[tuple[str, bytes, dict]] = []
        if not self.csv:
            for number, line in enumerate(body.split(b"\n")[:-1], 1):
                try:
                    row = json.loads(line)
                    key = source_key(row)
                except (ValueError, TypeError, KeyError, AttributeError) as error:
                    raise OutputError(f"{name}, line {number}: not a result record ({error}).") from None
                rows.append((key, line + b"\n", row))
            return rows, torn
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise OutputError(f"{name}: not UTF-8 text ({error}).") from None
        lines = io.StringIO(text, newline="").readlines()
        counted = iter(lines)
        reader = csv.reader(counted, strict=True)
        consumed, position = 0, 0
        header_seen = False
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as error:  # a quoted field cut off by the crash: the rest is the torn record
                if reader.line_num >= len(lines) and "end of data" in str(error):
                    torn = text[position:].encode("utf-8") + torn
                    break
                raise OutputError(f"{name}, line {reader.line_num}: {error}.") from None
            piece = "".join(lines[consumed : reader.line_num])
            consumed = reader.line_num
            position += len(piece)
            if not header_seen:
                header_seen = True
                if row != self.fields:
                    raise OutputError(f"{name}: its header {row} is not this program's ({self.fields}).")
                continue
            if len(row) != len(self.fields):
                raise OutputError(f"{name}, line {reader.line_num}: {len(row)} columns, expected {len(self.fields)}.")
            record = dict(zip(self.fields, row))
            rows.append((source_key(record), piece.encode("utf-8"), record))
        return rows, torn

    def looks_like_ours(self) -> bool:
        """Whether an existing file starts as one of our result files (empty files count)."""
        with self.path.open("rb") as handle:
            start = handle.read(4096)
        if not start:
            return True
        if self.csv:
            header = self.header()
            return start.startswith(header) or header.startswith(start)
        first = start.split(b"\n", 1)[0]
        if b"\n" in start:
            try:
                return isinstance(json.loads(first), dict) and "source" in json.loads(first)
            except ValueError:
                return False
        return first.startswith(b'{"source"') or b'{"source"'.startswith(first)

    # ------------------------------------------------------------------------------------- reading/repair
    def read(self, path: Path | None = None, *, repair: bool = True, log=print) -> dict[str, tuple[bytes, dict]]:
        """`{source key: (record bytes, first row)}` of a result file (missing: empty). A torn tail is moved to
        `PATH.torn` and cut off when `repair` (reported through `log`)."""
        path = Path(path or self.path)
        if not path.exists():
            return {}
        data = _read_regular(path, MAX_PART_BYTES)
        rows, torn = self.parse(data, name=str(path))
        if torn:
            if not repair:
                raise OutputError(f"{path}: ends in a torn record.")
            with open(f"{path}.torn", "ab") as keep:
                keep.write(torn + b"\n")
            os.truncate(path, len(data) - len(torn))
            log(f"{path}: cut off a torn last record ({len(torn)} bytes, kept in {path}.torn); its file is "
                "computed again.")
        records: dict[str, tuple[bytes, dict]] = {}
        for key, piece, row in rows:
            if key in records and not self.csv:
                records[key] = (piece, row)  # a later line for the same input (a retried error) wins
            elif key in records:
                old, first = records[key]
                records[key] = (old + piece, first) if first.get("kind") != "error" else (piece, row)
            else:
                records[key] = (piece, row)
        return records

    def parts(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{glob.escape(self.path.name)}.*.part"))

    def part(self, rank: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{rank}.part")

    def read_parts(self, log=print) -> dict[str, tuple[bytes, dict]]:
        """Records of every valid part file; invalid ones are renamed `.bad` and reported (their inputs redone)."""
        merged: dict[str, tuple[bytes, dict]] = {}
        for part in self.parts():
            try:
                records = self.read(part, log=log)
            except OutputError as error:
                bad = part.with_name(part.name + f".{int(time.time())}.bad")
                os.replace(part, bad)
                log(f"{part}: not merged ({error}); moved to {bad.name}, its files are computed again.")
                continue
            merged.update(records)
        return merged

    # ------------------------------------------------------------------------------------------- writing
    @contextlib.contextmanager
    def appender(self, path: Path) -> Iterator["_Appender"]:
        """Appends whole records to `path` (created if missing; CSV parts start with the header)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            appender = _Appender(fd, str(path))
            if os.fstat(fd).st_size == 0 and self.csv:
                appender.write(self.header())
            yield appender
        finally:
            os.close(fd)

    def replace(self, records: list[bytes]) -> None:
        """Writes header + records to `PATH.tmp`, fsyncs, then renames it over the output (atomic)."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(self.header())
                for piece in records:
                    handle.write(piece)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


class _Appender:
    def __init__(self, fd: int, name: str):
        self.fd, self.name = fd, name

    def write(self, data: bytes) -> None:
        """One record: written whole, or (on an error part-way) cut back to where it started and re-raised."""
        start = os.fstat(self.fd).st_size
        done = 0
        try:
            while done < len(data):
                done += os.write(self.fd, data[done:])
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, start)
            raise


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file no larger than `limit`; anything else (link, device, FIFO) is refused."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise OutputError(f"{path} is not a regular file (a link, device or FIFO); remove it.")
    if info.st_size > limit:
        raise OutputError(f"{path} is {info.st_size} bytes, more than any result file this program writes.")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            raise OutputError(f"{path} is not a regular file of a sane size; remove it.")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(info.st_size)
    finally:
        os.close(fd)


def cut_torn_line(path: str | os.PathLike, log=print) -> None:
    """Cuts a last line without its newline (left by a run killed mid-write) so that lines appended later stay whole
    (for append-only line files such as `elasticast listen --output`; result files use `ResultFile.read`)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        size = end = handle.seek(0, os.SEEK_END)
        while end > 0:  # look backwards, a block at a time, for the last newline
            start = max(0, end - (1 << 16))
            handle.seek(start)
            newline = handle.read(end - start).rfind(b"\n")
            if newline >= 0:
                break
            end = start
        keep = start + newline + 1 if end > 0 else 0
        handle.seek(keep)
        torn = handle.read()
        with open(f"{path}.torn", "ab") as kept:  # nothing is lost: the torn bytes are kept beside the file
            kept.write(torn + b"\n")
        log(f"{path}: cut an incomplete last line ({size - keep} bytes, kept in {path}.torn) left by an "
            "interrupted run")
        handle.truncate(keep)


@contextlib.contextmanager
def output_lock(output: str | os.PathLike, what: str = "this output") -> Iterator[Path]:
    """Holds an exclusive `fcntl.flock` on `OUTPUT.lock` (the kernel drops it when the process dies, even by
    SIGKILL). Raises OutputError naming the holder's process id and command when another process has it."""
    lock = Path(f"{os.fspath(output)}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            raise OutputError(f"{output} is being written by {holder}; wait for it to finish (or stop it) before "
                              f"starting another run on {what}, or choose another output.") from None
        os.ftruncate(fd, 0)
        command = " ".join(sys.argv) if sys.argv else "python"
        os.pwrite(fd, f"process {os.getpid()} ({command})\n".encode("utf-8", "backslashreplace"), 0)
        yield lock
    finally:
        os.close(fd)  # closing releases the lock; the file stays (removing it would race with a waiting run)


__all__ = ["FORMATS", "MAX_PART_BYTES", "OutputError", "ResultFile", "output_lock", "source_bytes", "source_fields",
           "source_key"]
