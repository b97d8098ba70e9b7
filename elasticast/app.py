"""`elasticast app`: the web demo (Gradio), the app a Hugging Face Space runs next to an ElasticAST model.

Record or upload audio of any length and see its top labels (or watch them change live while the microphone
records: `ElasticASTClassifier.live`); recordings longer than one window also get a timeline
plot and a table of segments; the compression slider (C = 1 … 4) trades accuracy for compute, with the tokens and the
measured time shown beside the result. All the work is done by the long-recordings API (`elasticast.inference`,
the same public functions `elasticast classify` calls): this file only lays out the page.

    elasticast app runs/demo/elasticast                 # a checkpoint folder
    elasticast app user/elasticast-model --share        # a Hub repo (e.g. one `elasticast push` wrote)
"""

import argparse
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import soundfile

from .inference import ElasticASTClassifier, plot_timeline, top_labels

logger = logging.getLogger(__name__)

_TITLE = "ElasticAST: audio classification at any length and resolution"
_SEGMENT_HEADERS = ["start (s)", "end (s)", "label", "score"]
# Gradio deletes the uploads and outputs it cached every hour once they are an hour old (and all of them when the
# server stops); our own timeline PNGs go as soon as Gradio has its copy, and our folder when the server stops.
CACHE_DELETION = (3600, 3600)
CONCURRENT_REQUESTS = 2  # a short clip is not queued behind a long one
DEFAULT_MAX_FILE_SIZE = "200mb"
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[^/\s:,;()'\"<>]+)+/?")  # absolute paths in library error text


def public_message(error: BaseException, upload: str | None = None) -> str:
    """An error's text as the page shows it: server paths (temporary folders, library sources) cut to their last
    part, the upload named by its file name."""
    text = " ".join(str(error).split())
    if upload:
        text = text.replace(str(upload), Path(upload).name)
    return _PATH.sub(lambda match: Path(match.group(0).rstrip("/")).name, text)
LIVE_WINDOW, LIVE_HOP = 2.0, 1.0  # seconds: the live microphone's windows (labels update every hop)
_LIVE_LINES = 12  # windows listed under the live labels, newest first


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "app", help="web demo (Gradio): record or upload audio, labels, timeline, compression slider",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("model", help="checkpoint folder or Hub repo id (an ElasticAST checkpoint)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action=argparse.BooleanOptionalAction, default=False,
                        help="also open a temporary public gradio.live link")
    parser.add_argument("--device", default=None, help="torch device (default: CUDA if available, else CPU)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--max-file-size", default=DEFAULT_MAX_FILE_SIZE,
                        help="largest upload accepted, e.g. 50mb or 1gb (larger ones get a message in the page)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8", "auto"), default="fp32",
                        help="inference precision (bf16 only where the hardware has it; int8 on CPU; auto: fastest)")
    parser.set_defaults(func=run)


def run(args) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no outside host contacted (Gradio reads it)
    demo = build_app(args.model, device=args.device, top_k=args.top_k, precision=args.precision)
    # SIGTERM (a service manager, `kill`) ends the server like Ctrl-C, so that the clean-up below runs.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        demo.queue(default_concurrency_limit=CONCURRENT_REQUESTS).launch(
            server_name=args.host, server_port=args.port, share=args.share, max_file_size=args.max_file_size)
    finally:
        demo.close()
        shutil.rmtree(demo.elasticast_work, ignore_errors=True)
    return 0


def example_clips(folder: str | Path, sampling_rate: int = 16000) -> list[Path]:
    """Writes the page's example recordings (generated here, nothing is downloaded): a tone, noise, a rising chirp
    and a 90-second mixture of the three that is longer than one window."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(3 * sampling_rate) / sampling_rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 880 * t)
    noise = 0.2 * rng.standard_normal(t.size)
    chirp = 0.3 * np.sin(2 * np.pi * (200 * t + 600 * t**2))  # 200 Hz rising to 3.8 kHz over 3 s
    parts = {"tone": tone, "noise": noise, "chirp": chirp}
    paths = []
    for name, wave in parts.items():
        paths.append(folder / f"{name}.wav")
        soundfile.write(paths[-1], wave.astype(np.float32), sampling_rate, subtype="PCM_16")
    order = [parts[name] for name in ("chirp", "tone", "noise")]
    mixture = np.concatenate([np.resize(order[i % len(order)], 10 * sampling_rate) for i in range(9)])
    paths.append(folder / "mixture_90s.wav")
    soundfile.write(paths[-1], mixture.astype(np.float32), sampling_rate, subtype="PCM_16")
    return paths


def build_app(model: str | Path | ElasticASTClassifier, *, device=None, top_k: int = 5, precision: str = "fp32",
              **hub_kwargs):
    """The Gradio page (a `gr.Blocks`) around `ElasticASTClassifier.from_pretrained(model)`; `model` is a checkpoint
    folder, a Hub repo id or a classifier (then `precision` is the classifier's own). Serve it with
    `build_app(...).launch()`."""
    try:
        import gradio as gr
    except ImportError as error:
        raise ImportError("The web demo needs Gradio: pip install 'elasticast[app]'.") from error

    classifier = model if isinstance(model, ElasticASTClassifier) else ElasticASTClassifier.from_pretrained(
        model, device=device, precision=precision, **hub_kwargs
    )
    top_k = min(top_k, len(classifier.labels))
    work = Path(tempfile.mkdtemp(prefix="elasticast-app-"))
    examples = example_clips(work / "examples", classifier.fe.sampling_rate)
    plots = work / "timelines"
    plots.mkdir()

    def drop_old_plots(age: float = 600.0) -> None:  # Gradio serves its own copies of returned files
        for old in plots.glob("*.png"):
            if time.time() - old.stat().st_mtime > age:
                old.unlink(missing_ok=True)

    def classify(audio: str | None, compression: float, window: float | None, hop: float | None,
                 progress=gr.Progress()):
        if audio is None:
            raise gr.Error("No audio yet: record with the microphone or upload a file, then press Classify.")
        progress(0, desc="decoding")

        def report(done_seconds: float, total_seconds: float):
            progress((int(done_seconds), int(round(total_seconds))), desc="audio classified", unit="s")

        try:
            result = classifier.classify(audio, compression=compression, window=window or None, hop=hop or None,
                                         top_k=top_k, progress=report)
        except Exception as error:  # shown in the page (without server paths); the server keeps serving
            logger.exception("classification of %s failed", audio)
            raise gr.Error(f"Could not classify {Path(audio).name}: {public_message(error, audio)}") from error
        cost = (
            f"**{result.num_tokens:,} tokens** at C = {compression:g} · **{result.compute_seconds:.2f} s** compute · "
            f"{result.duration:.1f} s of audio in {len(result.windows)} window(s) · {classifier.precision}"
        )
        long = len(result.windows) > 1
        timeline = None
        drop_old_plots()
        if long:
            timeline = str(plots / f"timeline-{uuid.uuid4().hex}.png")
            plot_timeline(result, audio, timeline, feature_extractor=classifier.fe)
        rows = [[round(s.start, 2), round(s.end, 2), s.label, round(float(s.score), 4)] for s in result.segments]
        return (
            {label: float(score) for label, score in result.top},
            cost,
            gr.Image(value=timeline, visible=long),
            gr.Dataframe(value=rows if long else None, visible=long),
        )

    streams: dict[str, object] = {}  # live microphone: one `LiveStream` per browser session

    def live_text(windows) -> str:
        lines = [f"{w.start:6.2f} - {w.end:6.2f} s: " + ", ".join(
            f"{label} {score:.2f}" for label, score in top_labels(w.scores, classifier.labels, 3))
            for w in reversed(windows[-_LIVE_LINES:])]
        return "\n".join(lines) if lines else "listening ..."

    def live_update(session: str, new):
        state = streams[session]
        state["windows"] += new
        if not state["windows"]:
            return gr.skip(), f"{state['stream'].seconds_in:.1f} s heard, first window after {LIVE_WINDOW:g} s"
        last = state["windows"][-1]
        labels = dict(top_labels(last.scores, classifier.labels, top_k))
        heard = f"{len(state['windows'])} window(s), {state['stream'].seconds_in:.1f} s heard"
        return labels, f"{heard}\n\n```\n{live_text(state['windows'])}\n```"

    def live_start(compression: float, request: gr.Request):
        streams[request.session_hash] = {"stream": None, "compression": compression, "windows": [],
                                         "lock": threading.Lock()}
        return None, "listening ..."

    def live_chunk(chunk, request: gr.Request):
        """One piece of the microphone stream `(rate, samples [n] or [n, channels])` → labels of the windows it
        completes (`ElasticASTClassifier.live`: the same windows as `classify` with this window and hop)."""
        if chunk is None:
            return gr.skip(), gr.skip()
        rate, samples = chunk
        state = streams.setdefault(request.session_hash, {"stream": None, "compression": None, "windows": [],
                                                          "lock": threading.Lock()})
        with state["lock"]:  # a session's chunks in order, one at a time (sessions run side by side)
            if state["stream"] is None:
                state["stream"] = classifier.live(rate, window=LIVE_WINDOW, hop=LIVE_HOP,
                                                  compression=state["compression"])
            return live_update(request.session_hash, state["stream"].push(samples))

    def live_stop(request: gr.Request):
        state = streams.get(request.session_hash)
        if state is None or state["stream"] is None:
            return gr.skip(), gr.skip()
        with state["lock"]:
            result = live_update(request.session_hash, state["stream"].close())
        streams.pop(request.session_hash, None)
        return result

    def live_forget(request: gr.Request):
        streams.pop(request.session_hash, None)

    with gr.Blocks(title=_TITLE, analytics_enabled=False, delete_cache=CACHE_DELETION) as demo:
        gr.Markdown(f"# {_TITLE}\nRecord or upload audio of any length. Model: `{classifier.model.name_or_path}`.")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", format=None, label="Audio",
                                 elem_id="audio")
                compression = gr.Slider(  # starts at the extractor's default C, the one the pipeline uses
                    1, max(4.0, classifier.fe.compression), value=classifier.fe.compression, step=0.1,
                    label="Compression C",
                    info="Frame shift × C: about C times fewer tokens and less compute, at some accuracy.",
                )
                with gr.Accordion("Timeline windows", open=False):
                    gr.Markdown("Empty: windows as wide as the model's position table, as the pipeline uses. Shorter "
                                "windows, and a hop below the window, give a finer timeline.")
                    with gr.Row():
                        window = gr.Number(None, label="Window (s)", minimum=0)
                        hop = gr.Number(None, label="Hop (s)", minimum=0)
                button = gr.Button("Classify", variant="primary")
            with gr.Column():
                labels = gr.Label(num_top_classes=top_k, label="Top labels", elem_id="top-labels")
                cost = gr.Markdown(elem_id="cost")
        timeline = gr.Image(label="Timeline", type="filepath", visible=False, elem_id="timeline")
        segments = gr.Dataframe(headers=_SEGMENT_HEADERS, label="Segments", visible=False, elem_id="segments")
        gr.Examples([[str(path), classifier.fe.compression] for path in examples], inputs=[audio, compression])
        outputs = [labels, cost, timeline, segments]
        button.click(classify, inputs=[audio, compression, window, hop], outputs=outputs,
                     concurrency_limit=CONCURRENT_REQUESTS)
        with gr.Accordion("Live microphone: labels while you record", open=True):
            gr.Markdown(f"Press Record: every {LIVE_HOP:g} s the last {LIVE_WINDOW:g} s are classified as the audio "
                        "arrives (the compression slider above applies).")
            with gr.Row():
                live_audio = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone",
                                      elem_id="live-audio")
                with gr.Column():
                    live_labels = gr.Label(num_top_classes=top_k, label="Now", elem_id="live-labels")
                    live_log = gr.Markdown(elem_id="live-log")
        live_audio.start_recording(live_start, inputs=[compression], outputs=[live_labels, live_log])
        live_audio.stream(live_chunk, inputs=[live_audio], outputs=[live_labels, live_log], stream_every=0.25,
                          time_limit=3600, concurrency_limit=None, show_progress="hidden")
        live_audio.stop_recording(live_stop, outputs=[live_labels, live_log])
        demo.unload(live_forget)  # a page closed while recording: drop its stream
    demo.elasticast_work = work  # removed by `run` when the server stops
    return demo
