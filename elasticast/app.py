"""`elasticast app`: the web demo (Gradio), the app a Hugging Face Space runs next to an ElasticAST model.

Record or upload audio of any length and see its top labels; recordings longer than one window also get a timeline
plot and a table of segments; the compression slider (C = 1 … 4) trades accuracy for compute, with the tokens and the
measured time shown beside the result. All the work is done by the long-recordings API (`elasticast.inference`,
the same public functions `elasticast classify` calls): this file only lays out the page.

    elasticast app runs/demo/elasticast                 # a checkpoint folder
    elasticast app user/elasticast-model --share        # a Hub repo (e.g. one `elasticast push` wrote)
"""

import argparse
import logging
import tempfile
import uuid
from pathlib import Path

import numpy as np
import soundfile

from .inference import ElasticASTClassifier, plot_timeline

logger = logging.getLogger(__name__)

_TITLE = "ElasticAST: audio classification at any length and resolution"
_SEGMENT_HEADERS = ["start (s)", "end (s)", "label", "score"]


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
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8", "auto"), default="fp32",
                        help="inference precision (bf16 only where the hardware has it; int8 on CPU; auto: fastest)")
    parser.set_defaults(func=run)


def run(args) -> int:
    demo = build_app(args.model, device=args.device, top_k=args.top_k, precision=args.precision)
    demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share)
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
        except Exception as error:  # shown in the page; the server keeps serving
            logger.exception("classification of %s failed", audio)
            raise gr.Error(f"Could not classify {Path(audio).name}: {error}") from error
        cost = (
            f"**{result.num_tokens:,} tokens** at C = {compression:g} · **{result.compute_seconds:.2f} s** compute · "
            f"{result.duration:.1f} s of audio in {len(result.windows)} window(s) · {classifier.precision}"
        )
        long = len(result.windows) > 1
        timeline = None
        if long:
            timeline = str(work / f"timeline-{uuid.uuid4().hex}.png")
            plot_timeline(result, audio, timeline, feature_extractor=classifier.fe)
        rows = [[round(s.start, 2), round(s.end, 2), s.label, round(float(s.score), 4)] for s in result.segments]
        return (
            {label: float(score) for label, score in result.top},
            cost,
            gr.Image(value=timeline, visible=long),
            gr.Dataframe(value=rows if long else None, visible=long),
        )

    with gr.Blocks(title=_TITLE) as demo:
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
        button.click(classify, inputs=[audio, compression, window, hop], outputs=outputs)
    return demo
