"""Temporal resolution as a compute knob: the feature extractor's default compression (so the stock pipeline
one-liner runs at C), the compute measurement, and a quick run of `python -m examples.demo --axis resolution`."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import pipeline

from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification
from examples import demo
from elasticast.evaluation import load_checkpoint, measure_cost
from test_demo import quick_args

LABELS = ["alpha", "beta", "gamma"]


@pytest.fixture
def saved(tiny_config, tmp_path):
    config = tiny_config(num_labels=3, id2label=dict(enumerate(LABELS)),
                         label2id={label: i for i, label in enumerate(LABELS)})
    torch.manual_seed(0)
    model = ElasticASTForAudioClassification(config).eval()
    model.save_pretrained(tmp_path / "model")
    ElasticASTFeatureExtractor().save_pretrained(tmp_path / "model")
    return model, tmp_path / "model"


def test_default_compression_is_saved_and_used(saved, clips, tmp_path):
    _, folder = saved
    wave = clips[7.5]
    explicit = ElasticASTFeatureExtractor()(wave, sampling_rate=16000, compression=2.5)
    fe = ElasticASTFeatureExtractor.from_pretrained(folder, compression=2.5)
    assert fe.compression == 2.5
    by_default = fe(wave, sampling_rate=16000)
    for key in explicit:
        np.testing.assert_array_equal(by_default[key], explicit[key])
    # about 2.5x fewer tokens than at C = 1
    full = (ElasticASTFeatureExtractor()(wave, sampling_rate=16000)["segment_ids"] > 0).sum()
    assert 2.2 < full / (by_default["segment_ids"] > 0).sum() < 2.8
    fe.save_pretrained(tmp_path / "fe")
    assert ElasticASTFeatureExtractor.from_pretrained(tmp_path / "fe").compression == 2.5
    # an explicit argument still wins over the default
    np.testing.assert_array_equal(fe(wave, sampling_rate=16000, compression=1.0)["input_values"],
                                  ElasticASTFeatureExtractor()(wave, sampling_rate=16000)["input_values"])
    pooled = ElasticASTFeatureExtractor(compression=2, compression_method="avg_pool")(wave, sampling_rate=16000)
    np.testing.assert_array_equal(
        pooled["input_values"],
        ElasticASTFeatureExtractor()(wave, sampling_rate=16000, compression=2, compression_method="avg_pool")[
            "input_values"])
    with pytest.raises(ValueError, match="integer C"):
        ElasticASTFeatureExtractor(compression=1.5, compression_method="avg_pool")
    with pytest.raises(ValueError, match="C ≥ 1"):
        ElasticASTFeatureExtractor(compression=0.5)


def test_stock_pipeline_one_liner_runs_at_the_extractors_compression(saved, clips):
    model, folder = saved
    classifier = pipeline("audio-classification", model=str(folder),
                          feature_extractor=ElasticASTFeatureExtractor.from_pretrained(folder, compression=2))
    at_one = pipeline("audio-classification", model=str(folder))
    for seconds in (1.0, 7.5, 27.0):
        wave = clips[seconds]
        got = {item["label"]: item["score"] for item in classifier(wave, top_k=None)}
        with torch.no_grad():
            features = ElasticASTFeatureExtractor()(wave, sampling_rate=16000, compression=2, return_tensors="pt")
            expected = model(**features).logits[0].softmax(-1)
        np.testing.assert_allclose([got[k] for k in LABELS], expected.numpy(), atol=1e-6)
        other = {item["label"]: item["score"] for item in at_one(wave, top_k=None)}
        assert max(abs(other[k] - got[k]) for k in LABELS) > 1e-4  # C really changed what the model saw


def test_pipeline_and_streaming_classifier_agree_at_the_same_compression(saved, clips):
    """The three entry points of the knob: extractor default (pipeline), `ElasticASTClassifier.classify(compression=)`
    (what `elasticast classify --compression` calls) and the direct call give one answer."""
    from elasticast.inference import ElasticASTClassifier

    _, folder = saved
    wave = clips[27.0]
    classifier = pipeline("audio-classification", model=str(folder),
                          feature_extractor=ElasticASTFeatureExtractor.from_pretrained(folder, compression=2.5))
    from_pipeline = {item["label"]: item["score"] for item in classifier(wave, top_k=None)}
    streamed = ElasticASTClassifier.from_pretrained(str(folder)).classify(wave, sampling_rate=16000, compression=2.5)
    np.testing.assert_allclose(streamed.scores, [from_pipeline[k] for k in LABELS], atol=1e-5)


def test_measure_cost_counts_the_tokens_the_extractor_makes(saved, clips):
    _, folder = saved
    checkpoint = load_checkpoint(str(folder), 2048, "frame_shift")
    waves = [torch.from_numpy(clips[s]) for s in (1.0, 7.5, 27.0)]
    rows = measure_cost(checkpoint, waves, [1.0, 2.0, 4.0], repeats=1)
    seconds = sum(w.numel() for w in waves) / 16000
    for row in rows:
        expected = sum(sum(checkpoint.fe.segment_lengths(w.numel(), row["compression"])) for w in waves)
        assert row["tokens_per_audio_s"] == pytest.approx(expected / seconds)
        assert row["audio_seconds"] == pytest.approx(seconds)
        assert row["forward_ms_per_audio_s"] > 0 and row["features_ms_per_audio_s"] > 0
    tokens = [row["tokens_per_audio_s"] for row in rows]
    assert tokens[0] > tokens[1] > tokens[2]


def test_quick_resolution_demo_runs_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = quick_args(tmp_path, lengths="256", compressions="1,1.5,2", axis="resolution")
    assert demo.run(args) == 0
    out = tmp_path / "demo"
    record = json.loads((out / "record_resolution.json").read_text())
    assert record["command"].startswith("python -m examples.demo --quick --output-dir")
    assert "--axis resolution" in record["command"]
    assert record["machine"]["cpus"] >= 1 and record["machine"]["gemm_gflops"] > 0 and record["wall_seconds"] > 0
    assert set(record["trainings"]) == {"elasticast", "ast", "elasticast-mixed", "elasticast-avgpool"}
    pooled = record["results"]["ElasticAST avg-pool (C 1-4, integer)"]
    assert sorted(pooled) == ["1.0", "2.0"]  # avg-pool only at integer C
    assert sorted(record["results"]["ElasticAST mixed (C 1-4, frame shift)"]) == ["1.0", "1.5", "2.0"]
    methods = [(row["method"], row["compression"]) for row in record["cost"]]
    assert methods == [("frame_shift", 1.0), ("frame_shift", 1.5), ("frame_shift", 2.0), ("avg_pool", 1.0),
                       ("avg_pool", 2.0), ("fixed length", 1.0)]
    shifted = [row["tokens_per_audio_s"] for row in record["cost"][:3]]
    assert shifted[0] > shifted[1] > shifted[2]
    elasticity = json.loads((out / "elasticity" / "elasticity_resolution.json").read_text())
    assert elasticity["axis"] == "resolution" and len(elasticity["rows"]) == 4 * 3 + 2  # 4 curves at 3 C, avg-pool at 2
    for name in ("elasticity_resolution.png", "resolution_cost.png", "resolution.md", "resolution.csv"):
        assert (out / "elasticity" / name).stat().st_size > 100
    card = (out / "elasticast-mixed" / "README.md").read_text()
    assert "## Elasticity: resolution" in card and "ElasticAST avg-pool (C 1-4, integer)" in card
    assert "accuracy and compute against temporal compression C" in capsys.readouterr().out
    # a model already trained with the same settings is reused, not trained again
    summary = demo._train(out / "data", out / "elasticast-mixed", "elasticast", args, 1, "mixed")
    assert summary["reused"] and not record["trainings"]["elasticast-mixed"]["reused"]
