"""`elasticast export-onnx MODEL OUT`: an ElasticAST classifier as ONNX graphs that run without PyTorch.

OUT receives:

- `model.onnx`: `ElasticASTForAudioClassification.window_logits` — `input_values [B, L, P*P]` float32, `freq_ids [L]`,
  `time_ids [L]` int64 → `logits [B, num_labels]`: B windows of the same L tokens; L (the number of time patches ×
  mel patches) and B are dynamic. A long clip's windows are calls of this one graph; the caller combines them.
- `features-C<C>.onnx` per exported compression C: waveform `[N]` float32 → the clip's normalised patches
  `[L, P*P]`, `freq_ids [L]`, `time_ids [L]` — the feature extractor's own fbank/patching code (`fbank_frames`,
  `spectrogram`, `window_tokens`; float64 fbank, as on CPU in PyTorch); `features-C<C>-short.onnx` is the same
  code for clips shorter than one patch column (its padding branch).
- with `--quantize int8`, `model.int8.onnx`: the same graph with the encoder blocks' `Linear` products dynamically
  quantized to int8 by ONNX Runtime (`onnxruntime.quantization.quantize_dynamic`, the nodes of `layers.N` only, as
  the PyTorch int8 path; attention, patch embedding, pooler and head stay float32), checked against `model.onnx`
  at export time: max |Δscore| ≤ `INT8_SCORE_TOLERANCE`.
- `config.json`, `preprocessor_config.json`, `elasticast_onnx.json` (the manifest the runtime reads), a README and
  `elasticast_onnx.py` (a copy of `elasticast/onnx_runtime.py`: numpy + onnxruntime + soundfile only).

All graphs come from `torch.onnx.export(..., dynamo=True)` of the model's and extractor's own code, never a rewrite.
Each export is checked against PyTorch before it is written: ONNX Runtime must reproduce a three-window batch's logits
and a clip's features.
"""

import json
import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedConfig

from .feature_extraction_elasticast import ElasticASTFeatureExtractor
from .modeling_elasticast import ElasticASTForAudioClassification

# torch.onnx's dynamo exporter translates at opset 18 (its torchlib) and converts upwards; 23 is its newest target.
# Older opsets would need a down-conversion the exporter does not support for these graphs (DFT needs ≥ 17).
SUPPORTED_OPSETS = range(18, 24)
# Opset 23 (the default) exports attention as one fused `Attention` node (opset 23's operator, ONNX Runtime ≥ 1.23)
# instead of MatMul → Softmax → MatMul: with the runtime's one window per call, ONNX Runtime's peak memory on 10
# minutes of audio is then below the PyTorch classifier's, and the decomposed graph's about twice the fused one's
# and above PyTorch's (benchmark record `precision_base`). Per window it still holds every head's [L, L] scores
# (ONNX Runtime 1.32's CPU kernel, core/providers/cpu/llm/attention.cc), so one 30-s clip costs more than in PyTorch
# (record `onnx_base`). 18 is there for runtimes without opset 23 (ONNX Runtime ≥ 1.14, onnxruntime-web).
DEFAULT_OPSET = 23
QUANTIZATIONS = ("int8",)
# |int8 graph − fp32 graph| on the scores (softmax/sigmoid) of the export check's random windows. Measured: ≤ 0.01 on
# random-weight tiny and base models; a wrong scale or a quantized attention product would move scores by ≫ 0.05.
INT8_SCORE_TOLERANCE = 0.05
MANIFEST = "elasticast_onnx.json"
RUNTIME_SCRIPT = "elasticast_onnx.py"
EVENTS_SCRIPT = "elasticast_events.py"  # a copy of elasticast/events.py, imported by the runtime beside it
EXPORT_TOLERANCE = 1e-4  # ONNX Runtime vs PyTorch, checked on every export


class _WindowLogits(torch.nn.Module):
    """The model's per-window path as the module torch.onnx traces (its modules and weights, shared)."""

    def __init__(self, model: ElasticASTForAudioClassification):
        super().__init__()
        self.model = model

    def forward(self, input_values, freq_ids, time_ids):
        return self.model.window_logits(input_values, freq_ids, time_ids)


class _ClipFeatures(torch.nn.Module):
    """The feature extractor's waveform → tokens code for one clip at one compression, as a traceable module:
    `[N]` → `(input_values [L, P*P], freq_ids [L], time_ids [L])` of the whole clip as one window. The split into
    windows (`window_bounds`: Python `round` on the length, not traceable with a dynamic length) is the runtime's."""

    def __init__(self, feature_extractor: ElasticASTFeatureExtractor, compression: float):
        super().__init__()
        self.fe = feature_extractor
        self.compression = compression

    def forward(self, waveform):
        fe = self.fe
        # `fbank_frames` (the streaming entry: no whole-clip mean removal, a no-op beyond float rounding given the
        # per-frame DC removal) rather than `fbank`, whose per-clip frame counts (`len`) would fix the length.
        log_mel = fe.fbank_frames(waveform, self.compression)
        return fe.window_tokens(fe.spectrogram(log_mel, self.compression, "frame_shift", fe.max_length))


def _windows_example(fe: ElasticASTFeatureExtractor, windows: int, time_patches: int) -> tuple[torch.Tensor, ...]:
    """Random `window_logits` inputs: `windows` windows of `time_patches` time patches, ids as the extractor lays
    them out."""
    patches, freq_ids, time_ids = fe.window_tokens(torch.randn(time_patches * fe.patch_size, fe.num_mel_bins))
    return torch.randn(windows, *patches.shape), freq_ids, time_ids


def _compression_name(compression: float) -> str:
    return f"{compression:g}"


def load_for_export(model: str | Path) -> tuple[ElasticASTForAudioClassification, ElasticASTFeatureExtractor]:
    """The classifier and feature extractor of a checkpoint folder or Hub id, with errors that name the fix."""
    fix = (
        "Pass a folder written by `save_pretrained` / `elasticast train` / `elasticast convert`, or the Hub repo id "
        "of an ElasticAST classifier."
    )
    if Path(model).is_dir() and not (Path(model) / "config.json").is_file():
        raise ValueError(f"{model} is not a model checkpoint (it has no config.json). {fix}")
    try:
        config, _ = PreTrainedConfig.get_config_dict(str(model))
    except OSError as error:
        raise ValueError(f"{model} is not a model checkpoint ({error}). {fix}") from None
    if config.get("model_type") != "elasticast":
        raise ValueError(
            f"{model} holds a {config.get('model_type', 'unknown')!r} model, not ElasticAST. Convert it first "
            "(`elasticast convert --from ast|vit|official ...`) and export the converted folder."
        )
    try:
        feature_extractor = ElasticASTFeatureExtractor.from_pretrained(str(model))
    except OSError:
        raise ValueError(
            f"{model} has no preprocessor_config.json. Save the feature extractor the model was trained with beside "
            "it (`ElasticASTFeatureExtractor(...).save_pretrained(folder)`) and export again."
        ) from None
    classifier, info = ElasticASTForAudioClassification.from_pretrained(str(model), output_loading_info=True)
    if info["missing_keys"] and all(k.startswith("classifier.") for k in info["missing_keys"]):
        raise ValueError(
            f"{model} lacks weights of the classifier ({', '.join(sorted(info['missing_keys'])[:4])}, ...): it is "
            "not an ElasticASTForAudioClassification checkpoint (an encoder-only ElasticASTModel?). Fine-tune a "
            "classification head first (`elasticast train`)."
        )
    from .loading import check_loading_info

    check_loading_info(info, model, "ElasticASTForAudioClassification")  # any other missing/unexpected weight
    return classifier.eval(), feature_extractor


def _repeat_interleave_self_int(self, repeats, dim=None, output_size=None):
    """`aten::repeat_interleave.self_int` for torch.onnx: `x.repeat_interleave(r, dim)` = unsqueeze after `dim`,
    expand that axis to r, merge it back.

    onnxscript 0.7.2's own translation puts a symbolic r one axis too early in the Expand shape, so any graph with a
    dynamic `repeat_interleave` count (the feature extractor's `freq_ids` for a clip of dynamic length) fails in
    ONNX Runtime with "invalid expand shape"; this replaces it until onnxscript is fixed.
    """
    from onnxscript import opset18 as op

    if dim is None:
        self, dim, rank = op.Reshape(self, op.Constant(value_ints=[-1])), 0, 1
    else:
        rank = len(self.shape)
    axis = dim % rank
    count = op.Constant(value_ints=[repeats]) if isinstance(repeats, int) else op.Reshape(
        repeats, op.Constant(value_ints=[-1])
    )
    after = [op.Constant(value_ints=[1] * (rank - axis - 1))] if axis + 1 < rank else []
    expanded = op.Expand(
        op.Unsqueeze(self, op.Constant(value_ints=[axis + 1])),
        op.Concat(op.Constant(value_ints=[1] * (axis + 1)), count, *after, axis=0),
    )
    shape = [op.Shape(self, start=0, end=axis)] if axis else []
    shape += [op.Constant(value_ints=[-1])] + ([op.Shape(self, start=axis + 1)] if axis + 1 < rank else [])
    return op.Reshape(expanded, op.Concat(*shape, axis=0))


def _export(module: torch.nn.Module, args: tuple, dynamic_shapes, path: Path, opset: int, names: dict) -> None:
    program = torch.onnx.export(
        module, args, dynamic_shapes=dynamic_shapes, dynamo=True, opset_version=opset, verbose=False,
        custom_translation_table={torch.ops.aten.repeat_interleave.self_int: _repeat_interleave_self_int}, **names,
    )
    program.save(str(path))


def _check(session_path: Path, feeds: dict[str, np.ndarray], expected: tuple[np.ndarray, ...], what: str) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(session_path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, feeds)
    for out, ref in zip(outputs, expected):
        if out.shape != ref.shape:
            raise RuntimeError(f"ONNX export of {what} gives shape {out.shape}, PyTorch {ref.shape}.")
    error = max(float(np.abs(out.astype(np.float64) - ref).max()) for out, ref in zip(outputs, expected))
    if error > EXPORT_TOLERANCE:
        raise RuntimeError(
            f"ONNX export of {what} differs from PyTorch by {error:.2e} (> {EXPORT_TOLERANCE}). Please report it with "
            "your torch/onnxscript/onnxruntime versions."
        )
    return error


def _scores(logits: np.ndarray, problem_type: str | None) -> np.ndarray:
    if problem_type == "multi_label_classification":
        return 1 / (1 + np.exp(-logits))
    if problem_type == "single_label_classification" or logits.shape[-1] > 1:
        shifted = np.exp(logits - logits.max(-1, keepdims=True))
        return shifted / shifted.sum(-1, keepdims=True)
    return logits


def quantize_int8(fp32_path: Path, int8_path: Path) -> list[str]:
    """`model.onnx` → `model.int8.onnx`: ONNX Runtime's dynamic int8 quantization (int8 weights, uint8 activations
    quantized per call) of the MatMul/Gemm nodes inside the encoder blocks — found by the module scope torch.onnx
    records on each node (`...layers.N...`), the layers the PyTorch int8 path quantizes. Returns those node names."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    constants = {initializer.name for initializer in graph.initializer}
    chosen = []
    for node in graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        if node.op_type in ("MatMul", "Gemm") and any(i in constants for i in node.input[1:2]) and re.search(
            r"\.layers\.\d+\.", scopes
        ):
            chosen.append(node.name)
    if not chosen:
        raise RuntimeError(f"{fp32_path} has no encoder-block MatMul to quantize (no `layers.N` scopes recorded by "
                           "torch.onnx); please report it with your torch/onnxscript versions.")
    # ONNX Runtime logs a hint to run its pre-processing (symbolic shape inference + graph optimisation) first; the
    # graph from torch.onnx has its shapes already, and the export check below measures the result, so it is muted.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(fp32_path), str(int8_path), nodes_to_quantize=chosen, weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    return chosen


def export_onnx(
    model: str | Path,
    output_dir: str | Path,
    opset: int = DEFAULT_OPSET,
    compressions: tuple[float, ...] = (1.0,),
    progress=print,
    quantize: str | None = None,
) -> Path:
    """Exports the ElasticAST classifier at `model` (folder or Hub id) to `output_dir` (see the module docstring).

    Args:
        opset: ONNX opset, one of `SUPPORTED_OPSETS` (23 exports attention as one fused `Attention` node).
        compressions: Temporal compressions C to export feature graphs for (one graph pair each).
        progress: Called with one line per step (`None`: silent).
        quantize: `"int8"` also writes `model.int8.onnx` (see the module docstring), checked against `model.onnx`.
    Returns: `output_dir` as a Path.
    """
    say = progress or (lambda line: None)
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(
            f"Opset {opset} is not supported: use {SUPPORTED_OPSETS.start}–{SUPPORTED_OPSETS.stop - 1} (torch.onnx "
            f"exports these graphs at opset ≥ 18; 18 reaches the most runtimes)."
        )
    if quantize not in (None, *QUANTIZATIONS):
        raise ValueError(f"Unknown quantization {quantize!r}: use one of {', '.join(QUANTIZATIONS)} (or none).")
    compressions = tuple(float(c) for c in compressions)
    if not compressions:
        raise ValueError("Give at least one compression C ≥ 1 (frame shift = 10·C ms).")
    for c in compressions:
        ElasticASTFeatureExtractor.check_compression(c)
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise FileExistsError(f"{out} exists and holds other files; choose a new or empty folder.")
    classifier, fe = load_for_export(model)
    out.mkdir(parents=True, exist_ok=True)
    p = fe.patch_size

    started = time.perf_counter()
    say(f"exporting model.onnx (window_logits, opset {opset}) ...")
    window = _WindowLogits(classifier).eval()
    example = _windows_example(fe, windows=2, time_patches=3)
    windows, tokens = torch.export.Dim("windows", min=1), torch.export.Dim("tokens", min=1)
    with torch.no_grad():
        _export(
            window, example, ({0: windows, 1: tokens}, {0: tokens}, {0: tokens}), out / "model.onnx", opset,
            {"input_names": ["input_values", "freq_ids", "time_ids"], "output_names": ["logits"]},
        )
        # Checked on other sizes than traced: 3 windows of 5 time patches.
        check = _windows_example(fe, windows=3, time_patches=5)
        error = _check(
            out / "model.onnx", dict(zip(["input_values", "freq_ids", "time_ids"], (t.numpy() for t in check))),
            (window(*check).double().numpy(),), "window_logits",
        )
    say(f"  done in {time.perf_counter() - started:.1f} s, max |ONNX Runtime − PyTorch| = {error:.1e}")
    models = {"fp32": "model.onnx"}
    if quantize == "int8":
        say("quantizing model.int8.onnx (dynamic int8, encoder blocks) ...")
        chosen = quantize_int8(out / "model.onnx", out / "model.int8.onnx")
        feeds = dict(zip(["input_values", "freq_ids", "time_ids"], (t.numpy() for t in check)))
        import onnxruntime

        logits = [onnxruntime.InferenceSession(str(out / name), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
                  for name in ("model.onnx", "model.int8.onnx")]
        problem = classifier.config.problem_type
        score_error = float(np.abs(_scores(logits[1], problem) - _scores(logits[0], problem)).max())
        if not score_error <= INT8_SCORE_TOLERANCE:
            raise RuntimeError(
                f"The int8 graph's scores differ from the fp32 graph's by {score_error:.3f} (> {INT8_SCORE_TOLERANCE}); "
                "model.int8.onnx is unusable for this model: use model.onnx (drop --quantize)."
            )
        models["int8"] = "model.int8.onnx"
        say(f"  {len(chosen)} MatMul nodes quantized, max |Δscore| vs model.onnx = {score_error:.1e}")

    features = {}
    rng = np.random.default_rng(0)
    for c in compressions:
        shift = fe.frame_shift(c)
        min_samples = fe.num_samples(p, c)  # fewest samples with a patch column: the padding branch below it
        name = f"features-C{_compression_name(c)}"
        module = _ClipFeatures(fe, c).eval()
        for graph, low, high, traced, checked in (
            (f"{name}.onnx", min_samples, None, min_samples + 40 * shift + 5, min_samples + 100 * shift + 3),
            (f"{name}-short.onnx", fe.frame_length, min_samples - 1, fe.frame_length + shift + 1, min_samples - 2),
        ):
            say(f"exporting {graph} (waveform → patches at compression {c:g}) ...")
            samples = torch.export.Dim("samples", min=low, max=high) if high else torch.export.Dim("samples", min=low)
            with torch.no_grad():
                _export(
                    module, (torch.randn(traced),), ({0: samples},), out / graph, opset,
                    {"input_names": ["waveform"], "output_names": ["input_values", "freq_ids", "time_ids"]},
                )
                wave = (0.1 * rng.standard_normal(checked)).astype(np.float32)
                expected = tuple(t.numpy().astype(np.float64) for t in module(torch.from_numpy(wave)))
                error = _check(out / graph, {"waveform": wave}, expected, graph)
            say(f"  max |ONNX Runtime − PyTorch| = {error:.1e}")
        features[_compression_name(c)] = {
            "graph": f"{name}.onnx", "short_graph": f"{name}-short.onnx", "min_samples": min_samples,
            "frame_shift": shift,
        }

    config = classifier.config
    manifest = {
        "format": 1,
        "model": "model.onnx",
        "models": models,  # precision → graph
        "opset": opset,
        "features": features,
        "default_compression": compressions[0],
        "sampling_rate": fe.sampling_rate,
        "frame_length": fe.frame_length,
        "patch_size": p,
        "max_window_patches": fe.max_window_patches(),
        "window_aggregation": config.resolved_window_aggregation,
        "scores": config.score_function,
        "id2label": {str(i): label for i, label in config.id2label.items()},
        "class_thresholds": config.class_thresholds,  # calibrated (elasticast calibrate); events use them
        "min_confidence": config.min_confidence,
        "exported_with": {"torch": torch.__version__, "source": str(model)},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    config.save_pretrained(out)
    fe.save_pretrained(out)
    shutil.copyfile(Path(__file__).with_name("onnx_runtime.py"), out / RUNTIME_SCRIPT)
    shutil.copyfile(Path(__file__).with_name("events.py"), out / EVENTS_SCRIPT)  # numpy only; the runtime's events
    (out / "README.md").write_text(_readme(model, manifest))
    say(f"wrote {out} in {time.perf_counter() - started:.1f} s")
    return out


def _readme(model, manifest: dict) -> str:
    compressions = ", ".join(manifest["features"])
    int8 = ("- `model.int8.onnx`: the same with the encoder blocks' products dynamically quantized to int8 (`--precision "
            "int8` of the runtime; scores checked against `model.onnx` at export).\n" if "int8" in manifest["models"] else "")
    runtime = '"onnxruntime>=1.23"' if manifest["opset"] >= 23 else "onnxruntime"  # opset 23's Attention operator
    return f"""# ElasticAST as ONNX

Exported from `{model}` by `elasticast export-onnx` (opset {manifest['opset']}, torch {manifest['exported_with']['torch']}).

Classify without PyTorch (Python ≥ 3.10):

```bash
pip install {runtime} numpy soundfile    # + soxr for audio at rates other than {manifest['sampling_rate']} Hz
python elasticast_onnx.py . clip.wav --top-k 5     # --compression C for one of: {compressions}; --json
```

Files:

- `model.onnx`: one call classifies a batch of equal windows: `input_values [B, L, {manifest['patch_size'] ** 2}]` float32
  (normalised 16×16 spectrogram patches, frequency-major), `freq_ids [L]`, `time_ids [L]` int64 → `logits [B,
  num_labels]`. B and L are dynamic; a window holds at most {manifest['max_window_patches']} time patches.
{int8}- `features-C<C>.onnx` (and `-short` for clips under one patch column): waveform `[N]` float32 at
  {manifest['sampling_rate']} Hz → its `input_values [L, 256]`, `freq_ids [L]`, `time_ids [L]`.
- `elasticast_onnx.py`: the runtime — cuts a clip's time patches into the extractor's near-equal windows, runs the
  features graph on each window's samples and `model.onnx` on one window per call (memory stays that of one
  window), and combines window logits by `{manifest['window_aggregation']}`, then {manifest['scores']}.
- `config.json`, `preprocessor_config.json`: the model's and feature extractor's settings;
  `elasticast_onnx.json`: what the runtime reads.
"""


def run(args) -> int:
    export_onnx(args.model, args.output_dir, opset=args.opset, compressions=tuple(args.compression),
                quantize=args.quantize)
    return 0


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "export-onnx",
        help="export an ElasticAST classifier to ONNX (+ a torch-free runtime script)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("model", help="checkpoint folder or Hub id of an ElasticAST classifier")
    parser.add_argument("output_dir", help="folder to write (new, empty, or a previous export)")
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET,
        help=f"ONNX opset, {SUPPORTED_OPSETS.start}–{SUPPORTED_OPSETS.stop - 1} (default {DEFAULT_OPSET})",
    )
    parser.add_argument(
        "--compression", type=float, nargs="+", default=[1.0],
        help="temporal compressions C to export feature graphs for; the first is the runtime's default (default 1)",
    )
    parser.add_argument(
        "--quantize", choices=QUANTIZATIONS, default=None,
        help="also write model.int8.onnx (dynamic int8 encoder blocks; checked against model.onnx; run it with "
        "elasticast_onnx.py --precision int8)",
    )
    parser.set_defaults(func=run)
