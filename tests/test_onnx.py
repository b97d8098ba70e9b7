"""ONNX export (`elasticast export-onnx`) and the torch-free runtime (`elasticast/onnx_runtime.py`).

Parity is end to end: ONNX Runtime (feature graph → windows → `model.onnx` → aggregation) against the PyTorch
feature extractor + `ElasticASTForAudioClassification.forward`, for the tiny test config and ElasticAST-base.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from elasticast import ElasticASTConfig, ElasticASTFeatureExtractor, ElasticASTForAudioClassification, ElasticASTModel
from elasticast.cli import main as cli_main
from elasticast.onnx_export import export_onnx
from elasticast.onnx_runtime import OnnxAudioClassifier, window_bounds

from conftest import TINY

LOGIT_TOLERANCE = 1e-4
FEATURE_TOLERANCE = 2e-4
SECONDS = (0.2, 1.0, 7.0, 30.0, 120.0)  # 120 s: 4 windows of the 192-patch time table
# Runs this file's subprocess with torch, transformers and the elasticast package made unimportable.
WITHOUT_TORCH = (
    "import sys, runpy\n"
    "for name in ('torch', 'transformers', 'elasticast'): sys.modules[name] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def _checkpoint(folder, config: ElasticASTConfig):
    torch.manual_seed(0)
    model = ElasticASTForAudioClassification(config).eval()
    model.save_pretrained(folder)
    ElasticASTFeatureExtractor().save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def waves(speech_16k) -> dict[float, np.ndarray]:
    """Real speech tiled to each length, plus a little seeded noise."""
    rng = np.random.default_rng(1)
    return {
        s: (np.resize(speech_16k, int(s * 16000)) + 0.003 * rng.standard_normal(int(s * 16000))).astype(np.float32)
        for s in SECONDS
    }


def _export(tmp_path_factory, name: str, config: ElasticASTConfig):
    folder = tmp_path_factory.mktemp(name)
    model = _checkpoint(folder / "checkpoint", config)
    started = time.perf_counter()
    export_onnx(folder / "checkpoint", folder / "onnx", compressions=(1.0, 2.0), progress=None)
    print(f"\n{name}: export-onnx took {time.perf_counter() - started:.1f} s")
    return model, folder / "onnx"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _export(tmp_path_factory, "tiny", ElasticASTConfig(**TINY, num_labels=5))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """ElasticAST-base (random weights), exported once for the module (about a minute on 2 cores)."""
    return _export(tmp_path_factory, "base", ElasticASTConfig(num_labels=10))


def _torch_logits(model, wave: np.ndarray, compression: float = 1.0) -> np.ndarray:
    features = ElasticASTFeatureExtractor()(wave, sampling_rate=16000, compression=compression, return_tensors="pt")
    with torch.no_grad():
        return model(**features).logits[0].double().numpy()


def test_window_bounds_are_the_extractors():
    for widest in (1, 7, 192):
        for n in range(1, 20 * widest + 1):
            assert window_bounds(n, widest) == ElasticASTFeatureExtractor.window_bounds(n, widest), (n, widest)


@pytest.mark.parametrize("compression", [1.0, 2.0])
def test_torch_free_features_equal_the_extractors(tiny, waves, compression):
    """The feature graphs, windowed by the runtime, give the extractor's row: same tokens, ids, values ≤ 2e-4."""
    _, folder = tiny
    runtime = OnnxAudioClassifier(folder)
    fe = ElasticASTFeatureExtractor()
    short = waves[1.0][:1600]  # 0.1 s: under one patch column, the extractor's padding branch
    for wave in [short, *waves.values()]:
        expected = fe(wave, sampling_rate=16000, compression=compression)
        windows = runtime.windows(wave, compression)
        assert [end - start for start, end, *_ in windows] == [
            n // 8 for n in fe.segment_lengths(len(wave), compression)
        ]
        values = np.concatenate([w[2] for w in windows])
        np.testing.assert_array_equal(np.concatenate([w[3] for w in windows]), expected["freq_ids"][0])
        np.testing.assert_array_equal(np.concatenate([w[4] for w in windows]), expected["time_ids"][0])
        assert values.shape == expected["input_values"][0].shape
        assert np.abs(values - expected["input_values"][0]).max() <= FEATURE_TOLERANCE


@pytest.mark.parametrize("compression", [1.0, 2.0])
def test_window_features_at_awkward_lengths(tiny, waves, compression):
    """Each window featurised from its own samples equals the extractor's row at the edges of the frame arithmetic:
    one frame, one sample short of a patch column, exactly one column, whole windows, and one frame past them."""
    _, folder = tiny
    runtime, fe = OnnxAudioClassifier(folder), ElasticASTFeatureExtractor()
    widest = runtime.manifest["max_window_patches"]
    min_samples = fe.num_samples(fe.patch_size, compression)
    whole_windows = fe.num_samples(2 * widest * fe.patch_size, compression)
    lengths = [fe.frame_length, min_samples - 1, min_samples, min_samples + fe.frame_shift(compression),
               whole_windows - 1, whole_windows, whole_windows + fe.frame_shift(compression)]
    source = waves[120.0]
    for length in lengths:
        wave = source[:length]
        expected = fe(wave, sampling_rate=16000, compression=compression)
        windows = runtime.windows(wave, compression)
        np.testing.assert_array_equal(np.concatenate([w[4] for w in windows]), expected["time_ids"][0])
        np.testing.assert_array_equal(np.concatenate([w[3] for w in windows]), expected["freq_ids"][0])
        values = np.concatenate([w[2] for w in windows])
        assert values.shape == expected["input_values"][0].shape, length
        assert np.abs(values - expected["input_values"][0]).max() <= FEATURE_TOLERANCE, length


@pytest.mark.parametrize("size", ["tiny", "base"])
def test_onnx_runtime_logits_equal_pytorch(request, waves, size):
    model, folder = request.getfixturevalue(size)
    runtime = OnnxAudioClassifier(folder)
    # C = 2 on a windowed clip too for tiny; base keeps CI time modest (one C = 2 clip, ~8 min → ~5 min).
    cases = [(s, 1.0) for s in SECONDS] + [(7.0, 2.0)] + ([(120.0, 2.0)] if size == "tiny" else [])
    for seconds, compression in cases:
        result = runtime.classify(waves[seconds], 16000, compression=compression)
        expected = _torch_logits(model, waves[seconds], compression)
        error = np.abs(np.asarray(result["logits"]) - expected).max()
        print(f"{size} {seconds:g} s C={compression:g}: max |ONNX Runtime − PyTorch| logit = {error:.1e}")
        assert error <= LOGIT_TOLERANCE, (size, seconds, compression, error)
        assert len(result["windows"]) == len(ElasticASTFeatureExtractor().segment_lengths(
            len(waves[seconds]), compression
        ))


def test_windows_are_batched_under_the_token_budget(tiny, waves):
    """Each `model.onnx` call holds at most `max_tokens` tokens (a wider window alone), every window is classified
    once, and the batching changes no result."""
    _, folder = tiny
    logits, calls = {}, {}
    for max_tokens in (1, 2048, 10**6):
        runtime = OnnxAudioClassifier(folder, max_tokens=max_tokens)
        seen = calls[max_tokens] = []
        run = runtime.window_logits
        runtime.window_logits = lambda values, freq_ids, time_ids: seen.append(values.shape) or run(values, freq_ids,
                                                                                                    time_ids)
        result = runtime.classify(waves[120.0], 16000)
        logits[max_tokens] = np.asarray([w["logits"] for w in result["windows"]])
        assert sum(batch for batch, *_ in seen) == len(result["windows"]) == 4
        assert all(batch * tokens <= max_tokens or batch == 1 for batch, tokens, _ in seen), (max_tokens, seen)
    assert len(calls[1]) == 4 and len(calls[10**6]) <= 2  # at most two window widths
    np.testing.assert_allclose(logits[1], logits[10**6], atol=1e-6)
    np.testing.assert_allclose(logits[2048], logits[10**6], atol=1e-6)
    with pytest.raises(ValueError, match="max_tokens must be ≥ 1"):
        OnnxAudioClassifier(folder, max_tokens=0)


def test_classify_a_wav_file_without_torch(tiny, waves, tmp_path):
    """The copied runtime script classifies wav files (16 kHz and 22.05 kHz) with torch unimportable."""
    model, folder = tiny
    wave_44 = waves[7.0][: 16000 * 3]
    paths = [tmp_path / "a.wav", tmp_path / "b.wav"]
    soundfile.write(paths[0], waves[30.0], 16000, subtype="FLOAT")
    import soxr

    soundfile.write(paths[1], soxr.resample(wave_44, 16000, 22050).astype(np.float32), 22050, subtype="FLOAT")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, str(folder / "elasticast_onnx.py"), str(folder), *map(str, paths),
         "--json", "--top-k", "3"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["source"] for r in results] == list(map(str, paths))
    for path, result in zip(paths, results):
        audio, rate = soundfile.read(path, dtype="float32")
        features = ElasticASTFeatureExtractor()(audio, sampling_rate=rate, return_tensors="pt")
        with torch.no_grad():
            expected = model(**features).logits[0].numpy()
        assert np.abs(np.asarray(result["logits"]) - expected).max() <= LOGIT_TOLERANCE
        assert len(result["top"]) == 3 and result["top"][0][1] == max(result["scores"])
        assert abs(sum(result["scores"]) - 1) < 1e-5  # single-label: softmax
        # events: elasticast.events on the window scores (the runtime imports the export's copy of it)
        from elasticast.events import detect_events

        windows = result["windows"]
        window_scores = np.stack([np.exp(w["logits"]) / np.exp(w["logits"]).sum() for w in windows])
        expected_events = detect_events([w["start"] for w in windows], [w["end"] for w in windows], window_scores,
                                        [model.config.id2label[i] for i in range(model.config.num_labels)], False)
        assert [(e["label"], e["start"]) for e in result["events"]] == \
            [(e.label, round(e.start, 6)) for e in expected_events]


def test_export_cli_writes_the_folder(tiny, tmp_path):
    """`elasticast export-onnx` through the CLI, at another opset; the folder holds everything the README names."""
    model, folder = tiny
    checkpoint = folder.parent / "checkpoint"
    assert cli_main(["export-onnx", str(checkpoint), str(tmp_path / "out"), "--opset", "20"]) == 0
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "features-C1.onnx", "features-C1-short.onnx", "config.json", "preprocessor_config.json",
            "README.md", "elasticast_onnx.py", "elasticast_events.py", "elasticast_onnx.json"} <= names
    manifest = json.loads((out / "elasticast_onnx.json").read_text())
    assert manifest["opset"] == 20 and manifest["window_aggregation"] == "mean" and manifest["scores"] == "softmax"
    import onnx

    assert {o.version for o in onnx.load(out / "model.onnx").opset_import if o.domain == ""} == {20}


def test_bad_input_gets_a_clear_error(tiny, tmp_path):
    _, folder = tiny
    checkpoint = folder.parent / "checkpoint"
    with pytest.raises(ValueError, match="is not a model checkpoint"):
        export_onnx(tmp_path, tmp_path / "out")
    ast_folder = tmp_path / "ast"
    ast_folder.mkdir()
    (ast_folder / "config.json").write_text(json.dumps({"model_type": "audio-spectrogram-transformer"}))
    with pytest.raises(ValueError, match="not ElasticAST. Convert it first"):
        export_onnx(ast_folder, tmp_path / "out")
    for opset in (17, 24):
        with pytest.raises(ValueError, match="Opset .* is not supported: use 18–23"):
            export_onnx(checkpoint, tmp_path / "out", opset=opset)
    encoder = tmp_path / "encoder"
    ElasticASTModel(ElasticASTConfig(**TINY)).save_pretrained(encoder)
    ElasticASTFeatureExtractor().save_pretrained(encoder)
    with pytest.raises(ValueError, match="not an ElasticASTForAudioClassification checkpoint"):
        export_onnx(encoder, tmp_path / "out")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds other files"):
        export_onnx(checkpoint, busy)
    assert (busy / "notes.txt").read_text() == "mine"
    runtime = OnnxAudioClassifier(folder)
    with pytest.raises(ValueError, match="--compression 1.0 2.0 3.0"):
        runtime.classify(np.zeros(16000, np.float32), 16000, compression=3.0)
    with pytest.raises(ValueError, match="fewer than one 400-sample analysis frame"):
        runtime.classify(np.zeros(300, np.float32), 16000)
    with pytest.raises(FileNotFoundError, match="not an ElasticAST ONNX export"):
        OnnxAudioClassifier(tmp_path)


def test_runtime_skips_bad_files_and_classifies_the_others(tiny, waves, tmp_path):
    """Reliability: a missing, an unreadable and a NaN file among good ones are each reported and skipped, the good
    ones classified; exit status 1 (a file failed), 2 for a usage error."""
    _, folder = tiny
    good = [tmp_path / "a.wav", tmp_path / "b.wav"]
    for path in good:
        soundfile.write(path, waves[7.0][: 16000 * 2], 16000, subtype="PCM_16")
    (tmp_path / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    nan = waves[7.0][: 16000 * 2].copy()
    nan[16000] = np.nan
    soundfile.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    paths = [good[0], tmp_path / "missing.wav", tmp_path / "garbage.wav", tmp_path / "nan.wav", good[1]]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, "-c", WITHOUT_TORCH, str(folder / "elasticast_onnx.py"), str(folder)]
    run = subprocess.run([*command, *map(str, paths), "--json"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 1, run.stderr
    results = {Path(r["source"]).name: r for r in map(json.loads, run.stdout.splitlines())}
    assert list(results) == [p.name for p in paths]
    assert "top" in results["a.wav"] and "top" in results["b.wav"]
    assert "no such file" in results["missing.wav"]["error"]
    assert "cannot read audio" in results["garbage.wav"]["error"]
    assert "sample 16000 (at 1.000 s) is NaN or Inf" in results["nan.wav"]["error"]
    assert run.stderr.count("skipped ") == 3 and "Traceback" not in run.stderr
    usage = subprocess.run([*command, str(good[0]), "--top-k", "0"], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=300)
    assert usage.returncode == 2 and "--top-k must be ≥ 1" in usage.stderr
