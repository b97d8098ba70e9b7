"""One home for how logits become scores: a regression, a single-label and a multi-label checkpoint give the same
scores through the model + `score_function`, the stock pipeline, the streaming classifier, the ONNX runtime, the
evaluation's metric input and the card's statement."""

import json

import numpy as np
import pytest
import torch
from transformers import pipeline

import elasticast  # noqa: F401
from doc_fixtures import mixture, tiny_checkpoint
from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification
from elasticast.configuration_elasticast import apply_score_function, score_function
from elasticast.evaluation import metric_predictions
from elasticast.hub import write_card
from elasticast.inference import ElasticASTClassifier

KINDS = {
    "regression": ("regression", ("level",), "none"),
    "single": ("single_label_classification", ("tone", "noise", "chirp"), "softmax"),
    "multi": ("multi_label_classification", ("tone", "noise", "chirp"), "sigmoid"),
}


@pytest.fixture(scope="module")
def wave() -> np.ndarray:
    return mixture(4.0, np.random.default_rng(1), piece=1.0)


@pytest.fixture(scope="module", params=sorted(KINDS))
def checkpoint(request, tmp_path_factory):
    problem_type, labels, function = KINDS[request.param]
    folder = tiny_checkpoint(tmp_path_factory.mktemp(request.param) / "model", problem_type, labels)
    model = ElasticASTForAudioClassification.from_pretrained(folder).eval()
    fe = ElasticASTFeatureExtractor.from_pretrained(folder)
    with torch.no_grad():
        logits = model(**fe(request.getfixturevalue("wave"), sampling_rate=16000, return_tensors="pt")).logits[0]
    return folder, model.config, function, logits


def _by_label(config, scores) -> dict:
    return {config.id2label[i]: float(s) for i, s in enumerate(scores)}


def test_the_config_names_the_function(checkpoint):
    _, config, function, _ = checkpoint
    assert config.score_function == score_function(config.problem_type) == function


def test_pipeline_and_classifier_give_the_same_scores(checkpoint, wave):
    folder, config, function, logits = checkpoint
    expected = apply_score_function(logits, function)
    if function == "softmax":
        assert abs(float(expected.sum()) - 1) < 1e-6
    got = pipeline("audio-classification", model=str(folder))(wave.copy(), top_k=config.num_labels)
    assert {d["label"]: d["score"] for d in got} == pytest.approx(_by_label(config, expected), abs=1e-5)
    result = ElasticASTClassifier.from_pretrained(folder, device="cpu").classify(wave, sampling_rate=16000)
    np.testing.assert_allclose(result.scores, expected.numpy(), atol=1e-5)


def test_onnx_runtime_gives_the_same_scores(checkpoint, wave, tmp_path):
    pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")
    from elasticast.onnx_export import export_onnx
    from elasticast.onnx_runtime import OnnxAudioClassifier

    folder, config, function, logits = checkpoint
    out = export_onnx(folder, tmp_path / "onnx", progress=None)
    assert json.loads((out / "elasticast_onnx.json").read_text())["scores"] == function
    result = OnnxAudioClassifier(out).classify(wave, 16000, top_k=config.num_labels)
    np.testing.assert_allclose(result["scores"], apply_score_function(logits, function).numpy(), atol=1e-4)


def test_evaluation_and_card_use_the_same_function(checkpoint, tmp_path):
    folder, config, function, logits = checkpoint
    batch = logits[None]
    if function == "none":
        with pytest.raises(ValueError, match="regression"):
            metric_predictions(batch, config.problem_type)
    elif function == "sigmoid":
        np.testing.assert_allclose(metric_predictions(batch, config.problem_type), batch.sigmoid().numpy(), atol=1e-7)
    else:
        assert metric_predictions(batch, config.problem_type).tolist() == [int(logits.argmax())]
    card = write_card(folder).read_text()
    assert f'function_to_apply="{function}"' in card
