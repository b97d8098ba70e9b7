"""`elasticast listen`: classify live audio as it arrives — a microphone, a stream, a pipe — one line per window.

    elasticast listen MODEL -f pulse default                  # the default PulseAudio/PipeWire source (microphone)
    elasticast listen MODEL -f alsa hw:0                      # an ALSA capture device
    elasticast listen MODEL rtsp://camera.local/stream        # any URL ffmpeg opens (http, rtsp, rtmp, srt, ...)
    arecord -f S16_LE -r 16000 -c 1 | elasticast listen MODEL - -f s16le --rate 16000   # raw PCM on stdin
    cat clip.wav | elasticast listen MODEL -                  # WAV (or FLAC, MP3, ...) on stdin
    elasticast listen MODEL recording.wav --realtime          # a file read at real-time speed, to try it out

Every source is read by ffmpeg in a subprocess (decoded, down-mixed and resampled to the model's rate, mono float)
and drained by a reader thread, so a slow window never makes the device drop audio: it only delays results.
`ElasticASTClassifier.stream` turns the audio into windows of `--window` seconds every `--hop` seconds; each
window's result is printed (start and end in seconds of audio, the top labels and their scores) as soon as its
last sample has arrived, and with `--output` appended as one JSON line, flushed line by line. Ctrl-C or SIGTERM
stops the source and ends cleanly: the audio already received is classified (the last window shorter), every line
is written, the exit status is 0. A second Ctrl-C stops at once (lines already written stay whole).

With `--events`, sound events (`elasticast.events`: the model's calibrated thresholds unless `--threshold` /
`--min-confidence` are given, hysteresis, `--merge-gap`, `--min-duration`, `--labels` / `--exclude`) are printed
and appended (`"event"` lines) as soon as they close — when no later window can change them — and the open ones
when the stream ends: the same events `classify` finds in the recording.
"""

import argparse
import datetime
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from .argument_types import compression, count, seconds
from .events import EventTracker, add_event_arguments, event_options_from_args
from .output_files import OutputError, cut_torn_line, output_lock

RAW_FORMATS = {"s16le", "s16be", "s24le", "s32le", "f32le", "f64le", "u8", "s8", "f32be", "s32be"}
_INSTALL_FFMPEG = ("ffmpeg was not found on PATH; `elasticast listen` reads every source through it. Install it "
                   "(Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg; conda: conda install ffmpeg) "
                   "or put its folder on PATH.")


class _IntermixedParser(argparse.ArgumentParser):
    """Options and the optional SOURCE in any order, as in `listen MODEL -f pulse default`: argparse's plain parsing
    matches MODEL and the optional SOURCE together, so SOURCE gets nothing as soon as an option follows MODEL;
    `parse_known_intermixed_args` (argparse's own) reads positionals after the options instead."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:  # the intermixed parser's own inner passes
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "listen", help="classify live audio (microphone, stream, stdin) window by window as it arrives",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.__class__ = _IntermixedParser  # sub-parsers are made by the parent's class; only the parsing differs
    parser.add_argument("model", help="model folder or Hub repo id (model + feature extractor)")
    parser.add_argument("source", nargs="?", default=None,
                        help="'-' (stdin), an ffmpeg device name (with -f), a URL, or a file (with --realtime to "
                             "read it at real-time speed); default '-' when stdin is a pipe")
    parser.add_argument("-f", "--format", dest="input_format",
                        help="ffmpeg input format: a device (pulse, alsa, avfoundation, dshow, lavfi) or raw PCM on "
                             "stdin (s16le, f32le, ...; give --rate and --channels)")
    parser.add_argument("--rate", type=count("--rate"),
                        help="sampling rate of raw PCM input (ffmpeg -ar before -i)")
    parser.add_argument("--channels", type=count("--channels"),
                        help="channels of raw PCM input (ffmpeg -ac before -i)")
    parser.add_argument("--realtime", action="store_true",
                        help="read the source at its real-time pace (ffmpeg -re), e.g. to replay a file as if live")
    parser.add_argument("--window", type=seconds("--window"), default=2.0,
                        help="window length in seconds (default 2)")
    parser.add_argument("--hop", type=seconds("--hop"), default=1.0,
                        help="seconds between window starts, at most the window (default 1)")
    parser.add_argument("--compression", type=compression(), default=None,
                        help="temporal compression C ≥ 1 (less compute); default: the checkpoint's feature "
                             "extractor's")
    parser.add_argument("--top-k", type=count("--top-k"), default=3, help="labels printed per window (default 3)")
    parser.add_argument("--output", help="append one JSON line per window to this file, flushed as it goes")
    parser.add_argument("--json", action="store_true", help="print JSON lines on stdout instead of text")
    parser.add_argument("--events", action="store_true",
                        help="also print (and append) sound events as they close; options below")
    parser.add_argument("--device", help="torch device (default: CUDA if available, else CPU)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8", "auto"), default="fp32",
                        help="inference precision (bf16 only where the hardware has it; int8 on CPU; auto: fastest; "
                             "see the CPU-precision guide)")
    parser.add_argument("--threads", type=count("--threads"),
                        help="CPU threads for torch (default: torch's, one per core); on a machine busy with other "
                             "work, 1 avoids threads waiting on each other (see the live-audio guide's latency table)")
    add_event_arguments(parser)
    parser.set_defaults(func=run)


# ------------------------------------------------------------------------------------------------------- source
class SourceError(RuntimeError):
    """The audio source could not be opened or failed; the message says what to install or pass."""


def ffmpeg_command(source: str, *, input_format: str | None = None, rate: int | None = None,
                   channels: int | None = None, realtime: bool = False, output_rate: int = 16000) -> list[str]:
    """The ffmpeg command that decodes `source` to mono float32 little-endian PCM at `output_rate` on stdout,
    flushing every packet (no output buffering: results are not held back by ffmpeg)."""
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error"]
    if source != "-":
        command.append("-nostdin")  # ffmpeg would otherwise read keys from our terminal
    if realtime:
        command.append("-re")
    if input_format:
        command += ["-f", input_format]
    if rate:
        command += ["-ar", str(rate)]
    if channels:
        command += ["-ac", str(channels)]
    command += ["-i", "pipe:0" if source == "-" else source, "-vn", "-ac", "1", "-ar", str(output_rate),
                "-f", "f32le", "-flush_packets", "1", "pipe:1"]
    return command


class FfmpegSource:
    """Runs ffmpeg (see `ffmpeg_command`) and yields its audio as float32 numpy chunks `[n]` as they come.

    A reader thread drains ffmpeg's stdout all the time (a capture device never overruns while a window is being
    classified) into a queue; iterating takes the chunks in order. `stop()` asks ffmpeg to end (SIGTERM: it
    flushes what it holds); iteration then ends after the last chunk. `arrivals` (with `record_arrivals`) holds
    `(samples so far, time.perf_counter())` per chunk, for latency measurements.
    """

    def __init__(self, command: list[str], *, stdin=None, record_arrivals: bool = False):
        if shutil.which(command[0]) is None:
            raise SourceError(_INSTALL_FFMPEG)
        self.command = command
        self.arrivals: list[tuple[int, float]] | None = [] if record_arrivals else None
        self.samples = 0
        self.stopped = False
        self._queue: queue.Queue = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=20)
        # Its own session: a terminal's Ctrl-C reaches only us, and we stop ffmpeg so that it flushes cleanly.
        self.process = subprocess.Popen(command, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self._threads = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_errors, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read(self):
        fd, rest = self.process.stdout.fileno(), b""
        while True:
            data = os.read(fd, 1 << 16)
            now = time.perf_counter()
            if not data:
                break
            data, whole = rest + data, (len(rest) + len(data)) // 4 * 4
            data, rest = data[:whole], data[whole:]
            if data:
                self._queue.put((np.frombuffer(data, dtype="<f4"), now))
        self._queue.put(None)

    def _read_errors(self):
        for line in self.process.stderr:
            self._stderr.append(line.decode(errors="replace").rstrip())

    def __iter__(self):
        while (item := self._queue.get()) is not None:
            chunk, arrived = item
            self.samples += len(chunk)
            if self.arrivals is not None:
                self.arrivals.append((self.samples, arrived))
            yield chunk
        code = self.process.wait()
        self._threads[1].join(timeout=5)
        if code != 0 and not self.stopped:
            raise SourceError(explain_ffmpeg_failure(self.command, code, list(self._stderr)))

    def stop(self):
        """Asks ffmpeg to finish (SIGTERM); the chunks it still writes are delivered, then iteration ends."""
        self.stopped = True
        if self.process.poll() is None:
            self.process.terminate()

    def close(self):
        self.stop()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def explain_ffmpeg_failure(command: list[str], code: int, stderr: list[str]) -> str:
    """ffmpeg's own last lines, plus what to do for the common cases (missing device support, busy or absent
    device, raw PCM without its format)."""
    text = "\n".join(stderr) or "(no message)"
    source = command[command.index("-i") + 1]
    fmt = command[command.index("-f") + 1] if command.index("-f") < command.index("-i") else None
    hint = ""
    if "Unknown input format" in text:
        hint = (f"this ffmpeg has no '{fmt}' input; list what it has with `ffmpeg -hide_banner -devices`, pass one of "
                "them with -f, or install an ffmpeg built with it (Debian's ffmpeg has pulse and alsa).")
    elif fmt in {"pulse", "alsa", "oss", "jack", "avfoundation", "dshow", "sndio", "openal"}:
        hint = (f"could not open the {fmt} device '{source}'; check it exists and is free (ALSA: `arecord -l`, "
                "name it as hw:CARD,DEV; PulseAudio/PipeWire: `pactl list short sources`, or 'default'), that the "
                "sound server runs for this user, and that this user may use it (the 'audio' group).")
    elif source == "pipe:0" and ("Invalid data" in text or "could not find codec" in text.lower()):
        hint = ("ffmpeg could not recognise the audio on stdin; for raw PCM pass its layout, e.g. "
                "--format s16le --rate 16000 --channels 1.")
    elif "No such file" in text or "Connection refused" in text or "Server returned" in text:
        hint = f"check the source '{source}' (path or URL) and that it is reachable."
    return f"ffmpeg failed (exit status {code}) reading '{source}':\n{text}" + (f"\nHint: {hint}" if hint else "")


# ------------------------------------------------------------------------------------------------------- output
class _WindowSink:
    """Where each window goes: a printed line (text or JSON) and, with `output`, one JSON line appended and flushed
    (whole lines only: a line torn by a killed earlier run is cut off when the file is opened)."""

    def __init__(self, labels: list[str], top_k: int, source: str, output: str | None, as_json: bool):
        self.labels, self.top_k, self.source, self.as_json = labels, max(1, top_k), source, as_json
        self.count = self.events = 0
        self.file = None
        if output:
            path = Path(output)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = output_lock(path, f"--output {path}")  # one writer per output
            try:
                self._lock.__enter__()
            except OutputError as error:
                raise SystemExit(f"error: {error}") from None
            cut_torn_line(path, log=lambda message: print(f"warning: {message}", file=sys.stderr))
            self.file = open(path, "a", encoding="utf-8")

    def record(self, window) -> dict:
        from .inference import top_labels  # loaded with the model already; this module stays light for --help

        return {
            "source": self.source,
            "start": round(window.start, 6),
            "end": round(window.end, 6),
            "top": [{"label": label, "score": round(score, 6)}
                    for label, score in top_labels(window.scores, self.labels, self.top_k)],
            "scores": {label: round(float(s), 6) for label, s in zip(self.labels, window.scores)},
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        }

    def window(self, window) -> None:
        record = self.record(window)
        line = json.dumps(record, ensure_ascii=True)  # ASCII lines, as classify writes (any label, any name)
        if self.as_json:
            print(line, flush=True)
        else:
            top = "  ".join(f"{item['label']} {item['score']:.3f}" for item in record["top"])
            print(f"{window.start:9.2f} - {window.end:9.2f} s  {top}", flush=True)
        if self.file is not None:
            self.file.write(line + "\n")  # one write per whole line, flushed at once
            self.file.flush()
        self.count += 1

    def event(self, event) -> None:
        """A closed sound event: a printed line and, with `output`, an `"event"` JSON line."""
        record = {"source": self.source, "event": event.label, "start": round(event.start, 6),
                  "end": round(event.end, 6), "score": round(event.score, 6),
                  "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")}
        line = json.dumps(record, ensure_ascii=True)  # ASCII lines, as classify writes (any label, any name)
        if self.as_json:
            print(line, flush=True)
        else:
            print(f"{event.start:9.2f} - {event.end:9.2f} s  event: {event.label} ({event.score:.3f})", flush=True)
        if self.file is not None:
            self.file.write(line + "\n")
            self.file.flush()
        self.events += 1

    def close(self) -> None:
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            self.file = None
            self._lock.__exit__(None, None, None)


# ---------------------------------------------------------------------------------------------------------- run
def run(args) -> int:
    source = args.source
    if source is None:
        if sys.stdin.isatty():
            raise SystemExit("error: name a source: '-f pulse default' (the microphone through PulseAudio/PipeWire), "
                             "'-f alsa hw:0', a URL, a file with --realtime, or '-' with audio piped to stdin.")
        source = "-"
    if args.input_format in RAW_FORMATS and not args.rate:
        raise SystemExit(f"error: raw {args.input_format} audio has no header: pass its --rate (and --channels if "
                         "not 1).")
    if args.hop > args.window:
        raise SystemExit(f"error: --hop {args.hop} is longer than --window {args.window}: audio between windows would "
                         "go unheard; pass a hop at most the window.")
    if source != "-" and args.input_format is None and "://" not in source and not Path(source).exists():
        raise SystemExit(f"error: {source}: no such file; for a device pass its ffmpeg input format, e.g. "
                         f"`-f pulse {source}` or `-f alsa {source}`.")
    if shutil.which("ffmpeg") is None:
        raise SystemExit(f"error: {_INSTALL_FFMPEG}")

    import torch

    from .inference import ElasticASTClassifier

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        classifier = ElasticASTClassifier.from_pretrained(args.model, device=args.device, precision=args.precision)
    except ValueError as error:  # weights that do not match the model, bf16 on a CPU without it
        raise SystemExit(f"error: cannot load the model {args.model}: {error}") from None
    rate = classifier.fe.sampling_rate
    command = ffmpeg_command(source, input_format=args.input_format, rate=args.rate, channels=args.channels,
                             realtime=args.realtime, output_rate=rate)
    tracker = None
    if args.events:
        try:
            tracker = EventTracker(classifier.labels, classifier.multi_label,
                                   event_options_from_args(args, classifier.model.config))
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
    sink = _WindowSink(classifier.labels, args.top_k, source, args.output, args.json)
    stream_source = None
    previous = {}

    def stop(signum, frame):
        if stream_source is None or stream_source.stopped:  # a second signal: stop at once
            raise KeyboardInterrupt
        print(f"\nstopping ({signal.Signals(signum).name}): classifying the audio received so far ...",
              file=sys.stderr, flush=True)
        stream_source.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, stop)
    started = time.perf_counter()
    try:
        stream_source = FfmpegSource(command, stdin=sys.stdin.buffer if source == "-" else None)
        print(f"listening to {source} ({args.window:g}-s windows every {args.hop:g} s; Ctrl-C ends) ...",
              file=sys.stderr, flush=True)
        for window in classifier.stream(stream_source, rate, window=args.window, hop=args.hop,
                                        compression=args.compression):
            sink.window(window)
            for event in tracker.add(window.start, window.end, window.scores) if tracker else ():
                sink.event(event)
        for event in tracker.close() if tracker else ():  # the events still open when the stream ended
            sink.event(event)
    except SourceError as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:
        print("interrupted: the lines written so far are complete", file=sys.stderr)
        return 130
    finally:
        if stream_source is not None:
            stream_source.close()
        sink.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    heard = stream_source.samples / rate
    print(f"done: {sink.count} window(s) over {heard:.2f} s of audio in {time.perf_counter() - started:.2f} s"
          + (f"; appended to {args.output}" if args.output else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    from .cli import main

    raise SystemExit(main(["listen", *sys.argv[1:]]))
