"""Inference precision (`elasticast.precision`): hardware detection, int8 and bf16 scores against fp32 through every
entry point (classifier, `classify`, `evaluate`, ONNX export), and bf16 training.

bf16 tests run only where the CPU has bf16 instructions (AVX512-BF16 / AMX-BF16) and skip with that reason
elsewhere; int8 tests run everywhere. Tolerances: the measured differences on these seeded models with 3-10x
headroom; which layers are quantized (and that attention stays a float op) is checked by name.
"""

import copy
import json

import numpy as np
import onnx
import pytest
import soundfile
import torch

from elasticast import ElasticASTConfig, ElasticASTFeatureExtractor, ElasticASTForAudioClassification
from elasticast.cli import main as cli_main
from elasticast.inference import ElasticASTClassifier
from elasticast.precision import (
    PRECISIONS,
    apply_precision,
    bf16_supported,
    cpu_flags,
    int8_fast,
    resolve_precision,
)

from conftest import TINY

needs_bf16 = pytest.mark.skipif(not bf16_supported(), reason="this CPU lacks avx512_bf16/amx_bf16: bf16 would be "
                                "emulated (several times slower than fp32), so the bf16 paths refuse to run here")
# Measured on the sharpened tiny model below (max |Δscore| vs fp32 over the four clips): PyTorch int8 3.1e-4, ONNX
# Runtime int8 2.7e-4, bf16 4.2e-3 (bf16 keeps 8 mantissa bits against int8's per-tensor scales on 32-wide layers).
INT8_SCORE_TOLERANCE = 3e-3
BF16_SCORE_TOLERANCE = 1.5e-2


def _sharp_model(num_labels: int = 3) -> ElasticASTForAudioClassification:
    """A seeded tiny classifier whose head is scaled up, so that its scores are far from uniform (differences of
    precision then show in the scores, as in a trained model)."""
    torch.manual_seed(0)
    model = ElasticASTForAudioClassification(ElasticASTConfig(**TINY, num_labels=num_labels)).eval()
    with torch.no_grad():
        model.classifier.dense.weight.mul_(40.0)
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("precision") / "checkpoint"
    model = _sharp_model()
    model.config.id2label = {0: "tone", 1: "noise", 2: "chirp"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(folder)
    ElasticASTFeatureExtractor().save_pretrained(folder)
    return folder


def _clips() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 4) / 16000
    return [
        (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        (0.2 * rng.standard_normal(16000 * 7)).astype(np.float32),
        (0.3 * np.sin(2 * np.pi * (200 * t + 600 * t**2))).astype(np.float32),
        (0.1 * rng.standard_normal(16000 * 40)).astype(np.float32),  # two windows
    ]


def _scores(precision: str) -> np.ndarray:
    classifier = ElasticASTClassifier(_sharp_model(), ElasticASTFeatureExtractor(), precision=precision)
    return np.stack([classifier.classify(clip, sampling_rate=16000).scores for clip in _clips()])


def test_detection_and_resolution_follow_the_cpu_flags():
    flags = cpu_flags()
    assert bf16_supported() == bool({"avx512_bf16", "amx_bf16"} & flags)
    expected_auto = "int8" if int8_fast() else ("bf16" if bf16_supported() else "fp32")
    assert resolve_precision("auto") == expected_auto
    assert resolve_precision("fp32") == "fp32" and resolve_precision("int8") == "int8"
    with pytest.raises(ValueError, match="Unknown precision 'fp16'"):
        resolve_precision("fp16")
    with pytest.raises(ValueError, match="CPU only"):
        resolve_precision("int8", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not supported in hardware on this GPU"):
            resolve_precision("bf16", "cuda")
    assert set(PRECISIONS) == {"fp32", "bf16", "int8", "auto"}


@pytest.mark.skipif(bf16_supported(), reason="this CPU has bf16 instructions: the refusal is tested where it lacks them")
def test_bf16_is_refused_where_the_cpu_lacks_it(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="avx512_bf16"):
        ElasticASTClassifier.from_pretrained(checkpoint, device="cpu", precision="bf16")
    with pytest.raises(SystemExit, match="bf16 is not supported in hardware"):
        cli_main(["classify", str(checkpoint), str(tmp_path), "--precision", "bf16", "--output", str(tmp_path / "r.jsonl")])


def test_int8_quantizes_only_the_encoder_blocks_and_stays_close_to_fp32():
    model = apply_precision(_sharp_model(), "int8")
    quantized = {name for name, module in model.named_modules()
                 if isinstance(module, torch.ao.nn.quantized.dynamic.Linear)}
    assert quantized == {f"elasticast.layers.{i}.{part}" for i in range(TINY["num_hidden_layers"]) for part in (
        "attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj", "mlp.fc1", "mlp.fc2")}
    for name in ("elasticast.embeddings.patch_embeddings", "elasticast.pooler.attention.q_proj", "classifier.dense"):
        assert type(model.get_submodule(name)) is torch.nn.Linear, name
    fp32, int8 = _scores("fp32"), _scores("int8")
    assert fp32.max(1).min() > 0.6  # sharpened: every clip has a clear top label
    difference = np.abs(int8 - fp32).max()
    assert 0 < difference <= INT8_SCORE_TOLERANCE, difference
    assert (int8.argmax(1) == fp32.argmax(1)).all()


@needs_bf16
def test_bf16_stays_close_to_fp32():
    fp32, bf16 = _scores("fp32"), _scores("bf16")
    difference = np.abs(bf16 - fp32).max()
    assert 0 < difference <= BF16_SCORE_TOLERANCE, difference
    assert (bf16.argmax(1) == fp32.argmax(1)).all()


def test_classify_cli_int8_agrees_with_fp32(checkpoint, tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    for index, clip in enumerate(_clips()[:3]):
        soundfile.write(folder / f"{index}.wav", clip, 16000)
    results = {}
    for precision in ("fp32", "int8"):
        out = tmp_path / f"{precision}.jsonl"
        assert cli_main(["classify", str(checkpoint), str(folder), "--output", str(out), "--precision", precision]) == 0
        results[precision] = [json.loads(line) for line in out.read_text().splitlines()]
    for a, b in zip(results["fp32"], results["int8"]):
        assert a["source"] == b["source"] and a["top"][0]["label"] == b["top"][0]["label"]
        assert max(abs(a["scores"][k] - b["scores"][k]) for k in a["scores"]) <= INT8_SCORE_TOLERANCE


def test_evaluate_reports_each_precision(checkpoint, tmp_path):
    data = tmp_path / "data" / "test"
    data.mkdir(parents=True)
    rows = ["file_name,label"]
    for index, (clip, label) in enumerate(zip(_clips()[:3] * 2, ["tone", "noise", "chirp"] * 2)):
        soundfile.write(data / f"{index}.wav", clip, 16000)
        rows.append(f"{index}.wav,{label}")
    (data / "metadata.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "eval"
    assert cli_main(["evaluate", str(checkpoint), "--dataset", str(tmp_path / "data"), "--compressions", "1.0",
                     "--precision", "fp32", "int8", "--output-dir", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [(r["checkpoint"], r["precision"]) for r in results] == [("checkpoint", "fp32"),
                                                                      ("checkpoint [int8]", "int8")]
    assert results[0]["clips"] == 6 and abs(results[0]["value"] - results[1]["value"]) <= 1 / 6


def test_onnx_int8_export_is_checked_and_close_to_fp32(checkpoint, tmp_path):
    from elasticast.onnx_export import INT8_SCORE_TOLERANCE as EXPORT_TOLERANCE
    from elasticast.onnx_runtime import OnnxAudioClassifier

    out = tmp_path / "onnx"
    assert cli_main(["export-onnx", str(checkpoint), str(out), "--quantize", "int8", "--opset", "23"]) == 0
    manifest = json.loads((out / "elasticast_onnx.json").read_text())
    assert manifest["models"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"} and manifest["opset"] == 23
    fp32_graph, int8_graph = onnx.load(out / "model.onnx"), onnx.load(out / "model.int8.onnx")
    # opset 23: attention as fused nodes (encoder blocks + pooler), no Softmax of [B, H, L, L] scores
    ops = [node.op_type for node in fp32_graph.graph.node]
    assert ops.count("Attention") == TINY["num_hidden_layers"] + 1 and "Softmax" not in ops
    int8_ops = [node.op_type for node in int8_graph.graph.node]
    assert int8_ops.count("MatMulInteger") == 6 * TINY["num_hidden_layers"]  # the blocks' Linear layers only
    assert int8_ops.count("Attention") == TINY["num_hidden_layers"] + 1  # attention stays float
    fp32, int8 = OnnxAudioClassifier(out), OnnxAudioClassifier(out, precision="int8")
    torch_scores = _scores("fp32")
    for clip, reference in zip(_clips(), torch_scores):
        a, b = fp32.classify(clip, 16000)["scores"], int8.classify(clip, 16000)["scores"]
        assert np.abs(np.asarray(a) - reference).max() <= 1e-4
        assert 0 < np.abs(np.asarray(b) - np.asarray(a)).max() <= min(INT8_SCORE_TOLERANCE, EXPORT_TOLERANCE)
    with pytest.raises(ValueError, match="--quantize int8"):
        plain = tmp_path / "plain"
        cli_main(["export-onnx", str(checkpoint), str(plain)])
        OnnxAudioClassifier(plain, precision="int8")


@needs_bf16
def test_training_auto_picks_bf16_and_a_tiny_run_still_learns(tmp_path):
    from accelerate.state import AcceleratorState

    from elasticast.training import build_parser
    from elasticast.training.loop import train

    from test_training import TINY_RUN, write_audiofolder

    data = write_audiofolder(tmp_path / "tones", 24)
    run = [argument for argument in TINY_RUN]
    run[run.index("--mixed-precision") + 1] = "auto"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        AcceleratorState._reset_state(reset_partial_state=True)
        train(build_parser().parse_args(["--dataset", str(data), "--output-dir", str(tmp_path / "run"), "--epochs",
                                         "6", *run]))
        assert AcceleratorState().mixed_precision == "bf16"
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        torch.set_num_threads(threads)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    losses = [epoch["train_loss"] for epoch in metrics["history"]]
    assert losses[-1] < 0.8 * losses[0], losses
    assert metrics["best_eval"]["accuracy"] > 1 / 3 + 0.2  # above chance (3 pitches)
