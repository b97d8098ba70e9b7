import numpy as np
import pytest
import soundfile
import torch
from transformers import pipeline

from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification
from examples.speech import synthesize

LABELS = ["alpha", "beta", "gamma", "delta"]


def saved_model(tiny_config, folder, **overrides):
    config = tiny_config(num_labels=4, id2label=dict(enumerate(LABELS)),
                         label2id={label: i for i, label in enumerate(LABELS)}, **overrides)
    model = ElasticASTForAudioClassification(config).eval()
    model.save_pretrained(folder)
    ElasticASTFeatureExtractor().save_pretrained(folder)
    return model


def scores_by_label(result):
    return {item["label"]: item["score"] for item in result}


def reference_scores(model, wave, activation):
    features = ElasticASTFeatureExtractor()(wave, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        logits = model(**features).logits[0]
    probabilities = logits.softmax(-1) if activation == "softmax" else logits.sigmoid()
    return dict(zip(LABELS, probabilities.tolist()))


def test_pipeline_on_arrays_dicts_and_wav_paths(tiny_config, clips, tmp_path):
    model = saved_model(tiny_config, tmp_path / "model")
    classifier = pipeline("audio-classification", model=str(tmp_path / "model"))
    waves = [clips[s] for s in (0.2, 1.0, 7.5, 27.0, 60.0)]
    for wave in waves:
        got = scores_by_label(classifier(wave, top_k=None))
        expected = reference_scores(model, wave, "softmax")
        assert got.keys() == expected.keys()
        np.testing.assert_allclose([got[k] for k in LABELS], [expected[k] for k in LABELS], atol=1e-5)
        as_dict = scores_by_label(classifier({"array": wave, "sampling_rate": 16000}, top_k=None))
        np.testing.assert_allclose([as_dict[k] for k in LABELS], [got[k] for k in LABELS], atol=1e-6)
    top2 = classifier(waves[1], top_k=2)
    assert len(top2) == 2 and top2[0]["score"] >= top2[1]["score"]

    # .wav files through ffmpeg decoding (the pipeline resamples a 22.05 kHz espeak-ng file to 16 kHz itself)
    spoken = synthesize("Packing keeps every clip whole.", tmp_path / "spoken.wav")
    written = tmp_path / "written.wav"
    soundfile.write(written, clips[3.0], 16000, subtype="FLOAT")
    for path in (spoken, written):
        result = classifier(str(path), top_k=None)
        assert sorted(item["label"] for item in result) == sorted(LABELS)
        assert abs(sum(item["score"] for item in result) - 1) < 1e-5
    got = scores_by_label(classifier(str(written), top_k=None))
    expected = reference_scores(model, clips[3.0], "softmax")
    np.testing.assert_allclose([got[k] for k in LABELS], [expected[k] for k in LABELS], atol=1e-5)


def test_batch_size_4_matches_batch_size_1(tiny_config, clips, tmp_path):
    saved_model(tiny_config, tmp_path / "model")
    classifier = pipeline("audio-classification", model=str(tmp_path / "model"))
    waves = [clips[s] for s in (0.2, 60.0, 1.0, 7.5, 0.4, 27.0, 3.0)]
    one = [scores_by_label(r) for r in classifier(waves, batch_size=1, top_k=None)]
    four = [scores_by_label(r) for r in classifier(waves, batch_size=4, top_k=None)]
    for a, b in zip(one, four):
        np.testing.assert_allclose([a[k] for k in LABELS], [b[k] for k in LABELS], atol=1e-5, rtol=0)


def test_multi_label_models_give_sigmoid_scores(tiny_config, clips, tmp_path):
    model = saved_model(tiny_config, tmp_path / "model", problem_type="multi_label_classification")
    classifier = pipeline("audio-classification", model=str(tmp_path / "model"))
    got = scores_by_label(classifier(clips[3.0], top_k=None))
    expected = reference_scores(model, clips[3.0], "sigmoid")
    np.testing.assert_allclose([got[k] for k in LABELS], [expected[k] for k in LABELS], atol=1e-5)
    assert abs(sum(got.values()) - 1) > 1e-3  # independent probabilities, not a softmax


def test_pipeline_rejects_bad_audio_with_clear_errors(tiny_config, tmp_path):
    saved_model(tiny_config, tmp_path / "model")
    classifier = pipeline("audio-classification", model=str(tmp_path / "model"))
    with pytest.raises(ValueError, match="empty"):
        classifier(np.zeros(0, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        classifier(np.full(16000, np.nan, dtype=np.float32))


@pytest.mark.parametrize("problem_type", ["single_label_classification", "multi_label_classification"])
def test_ten_minutes_of_audio_are_windowed_and_combined(tiny_config, speech_16k, tmp_path, problem_type):
    model = saved_model(tiny_config, tmp_path / "model", problem_type=problem_type)
    wave = np.resize(speech_16k, 600 * 16000)
    fe = ElasticASTFeatureExtractor()
    features = fe(wave, sampling_rate=16000, return_tensors="pt")
    windows = int(features["segment_ids"].max())
    assert features["input_values"].shape[0] == 1 and windows == 20  # 3749 time patches → 20 windows ≤ 192
    assert int(features["time_ids"].max()) < 192
    with torch.no_grad():
        per_window = model.classifier(model.elasticast(**features).segment_pooler_output)
        packed = model(**fe(wave, sampling_rate=16000, packing=True, return_tensors="pt")).logits[0]
    combined = per_window.mean(0) if problem_type == "single_label_classification" else per_window.amax(0)
    torch.testing.assert_close(packed, combined, atol=1e-5, rtol=0)
    activation = torch.sigmoid if problem_type == "multi_label_classification" else lambda x: x.softmax(-1)
    classifier = pipeline("audio-classification", model=str(tmp_path / "model"))
    got = scores_by_label(classifier(wave, top_k=None))
    np.testing.assert_allclose([got[k] for k in LABELS], activation(combined).tolist(), atol=1e-5)


def test_stock_pipeline_passes_the_audio_classification_pipeline_checks(tiny_config, clips, tmp_path):
    """The checks of transformers' audio-classification pipeline test (`run_pipeline_test` and its small-model
    tests), run offline on a local tiny checkpoint. transformers' `PipelineTesterMixin` itself cannot run here: its
    module reads tests/utils/tiny_model_summary.json at import (absent from the PyPI sdist) and its tests download
    hf-internal-testing tiny checkpoints from the Hub."""
    model = saved_model(tiny_config, tmp_path / "model")
    fe = ElasticASTFeatureExtractor.from_pretrained(tmp_path / "model")
    built_from_objects = pipeline("audio-classification", model=model, feature_extractor=fe)
    from_folder = pipeline("audio-classification", model=str(tmp_path / "model"))
    audio = np.zeros((34000,), dtype=np.float32)  # the mixin's input: 2.1 s of silence
    for classifier in (built_from_objects, from_folder):
        output = classifier(audio)  # default top_k = 5, capped at the 4 labels
        assert [sorted(item) for item in output] == [["label", "score"]] * 4
        assert all(isinstance(item["score"], float) and item["label"] in LABELS for item in output)
        assert [item["score"] for item in output] == sorted((item["score"] for item in output), reverse=True)
        assert len(classifier(audio, top_k=1)) == 1
        assert len(classifier(audio, top_k=None)) == 4  # fewer labels than the default top_k (#35736)
    wave = clips[3.0]
    features = fe(wave, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        raw = dict(zip(LABELS, model(**features).logits[0].tolist()))
    got = scores_by_label(from_folder(wave, top_k=None, function_to_apply="none"))
    np.testing.assert_allclose([got[k] for k in LABELS], [raw[k] for k in LABELS], atol=1e-5)
    sigmoid = scores_by_label(from_folder({"array": wave, "sampling_rate": 16000}, top_k=None,
                                          function_to_apply="sigmoid"))
    np.testing.assert_allclose([sigmoid[k] for k in LABELS], [1 / (1 + np.exp(-raw[k])) for k in LABELS], atol=1e-5)
    batched = from_folder([wave, audio, clips[0.4]], top_k=2, batch_size=2)
    assert len(batched) == 3 and all(len(result) == 2 for result in batched)
