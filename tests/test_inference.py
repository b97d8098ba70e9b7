"""Streaming inference (`elasticast.inference`): equality with the whole-file path, timeline, segments."""

import numpy as np
import pytest
import soundfile
import soxr
import torch
from transformers import pipeline

from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification
from elasticast.inference import ElasticASTClassifier, Segment, WindowResult, plot_timeline, segments_of, window_plan

LABELS = ["alpha", "beta", "gamma", "delta"]
ONE_WINDOW = 400 + (3072 - 1) * 160  # samples giving exactly 3072 frames = 192 time patches = the time table


@pytest.fixture
def tiny(tiny_config, tmp_path):
    config = tiny_config(num_labels=4, id2label=dict(enumerate(LABELS)), label2id={k: i for i, k in enumerate(LABELS)})
    model = ElasticASTForAudioClassification(config).eval()
    fe = ElasticASTFeatureExtractor()
    model.save_pretrained(tmp_path / "model")
    fe.save_pretrained(tmp_path / "model")
    return model, fe, tmp_path / "model"


def whole_file(model, fe, wave):
    """The reference: features of the whole clip at once, one forward; per-window logits and input windows."""
    features = fe(wave, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        out = model.elasticast(**features)
        window_logits = model.classifier(out.segment_pooler_output)
        clip_logits = model(**features).logits[0]
    segments = features["segment_ids"][0]
    windows = [features["input_values"][0][segments == s] for s in range(1, int(segments.max()) + 1)]
    return window_logits, clip_logits, windows


def captured_inputs(model):
    """Records the `input_values` of every streamed window (packed rows → one tensor per window, in window order)."""
    seen = []

    def hook(module, args, kwargs):
        values, segment_ids, clip_ids = kwargs["input_values"], kwargs["segment_ids"], kwargs["clip_ids"]
        for clip in range(1, int(clip_ids.max()) + 1):
            seen.append(values[clip_ids == clip])

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("samples", [1600, ONE_WINDOW, ONE_WINDOW + 1, 1_124_937])  # 0.1 s, one window, +1, 70.3 s
def test_streaming_equals_whole_file_at_awkward_chunks(tiny, clips, tmp_path, samples):
    model, fe, _ = tiny
    wave = np.resize(clips[7.5], samples).astype(np.float32)
    path = tmp_path / "clip.wav"
    soundfile.write(path, wave, 16000, subtype="FLOAT")
    window_logits, clip_logits, windows = whole_file(model, fe, wave)
    # 1.013 s = 16208 samples (cuts frames: not a multiple of the 160-sample hop, nor of the 30.72-s window);
    # 0.37 s cuts inside the 400-sample frame overlap; 20 s is the default.
    for chunk in (1.013, 0.37, 20.0):
        classifier = ElasticASTClassifier(model, fe, chunk_seconds=chunk, max_tokens=2000)
        seen, handle = captured_inputs(model)
        try:
            streamed = list(classifier.iter_windows(path))
        finally:
            handle.remove()
        assert len(streamed) == len(windows) == len(seen)
        for got, expected in zip(seen, windows):
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        expected_scores = window_logits.softmax(-1).numpy()
        np.testing.assert_allclose(np.stack([w.scores for w in streamed]), expected_scores, atol=1e-5, rtol=0)
        result = classifier.classify(path)
        np.testing.assert_allclose(result.scores, clip_logits.softmax(-1).numpy(), atol=1e-5, rtol=0)
        assert result.duration == pytest.approx(samples / 16000)
        assert result.num_tokens == sum(len(w) for w in windows)
    ends = [w.end for w in streamed]
    assert streamed[0].start == 0 and all(a.end == b.start for a, b in zip(streamed, streamed[1:]))
    assert ends[-1] <= max(samples / 16000, 16 * 0.01) + 1e-9  # a clip under one patch is padded to one (0.16 s)


def test_file_level_result_equals_the_pipeline(tiny, clips, tmp_path):
    model, fe, folder = tiny
    wave = np.resize(clips[7.5], 16000 * 65 + 77).astype(np.float32)
    path = tmp_path / "clip.wav"
    soundfile.write(path, wave, 16000, subtype="PCM_16")
    classifier = ElasticASTClassifier.from_pretrained(folder, device="cpu")
    result = classifier.classify(path, top_k=2)
    stock = {d["label"]: d["score"] for d in pipeline("audio-classification", model=str(folder))(str(path), top_k=None)}
    np.testing.assert_allclose(result.scores, [stock[label] for label in LABELS], atol=1e-5, rtol=0)
    assert [label for label, _ in result.top] == sorted(stock, key=stock.get, reverse=True)[:2]
    as_dict = result.to_dict()
    assert as_dict["source"] == str(path) and len(as_dict["windows"]) == 3 and as_dict["segments"]
    # a smaller token budget and decode chunk change memory and call count, not the result
    small = ElasticASTClassifier.from_pretrained(folder, device="cpu", max_tokens=64, chunk_seconds=3.0)
    assert (small.max_tokens, small.chunk_seconds) == (64, 3.0)
    np.testing.assert_allclose(small.classify(path).scores, result.scores, atol=1e-6, rtol=0)


def test_resampled_stereo_flac_and_datasets_examples(tiny, clips, tmp_path):
    """A 22.05-kHz stereo FLAC streams through soxr's ResampleStream: equal to resampling the channel mean whole."""
    model, fe, _ = tiny
    left = soxr.resample(np.resize(clips[7.5], 16000 * 40), 16000, 22050).astype(np.float32)
    right = np.roll(left, 999) * 0.5
    path = tmp_path / "stereo.flac"
    soundfile.write(path, np.stack([left, right], 1), 22050, subtype="PCM_24")
    decoded, rate = soundfile.read(path, dtype="float32")
    mono = soxr.resample(decoded.mean(1).astype(np.float32), rate, 16000).astype(np.float32)
    _, clip_logits, _ = whole_file(model, fe, mono)
    classifier = ElasticASTClassifier(model, fe, chunk_seconds=3.3)
    result = classifier.classify(path)
    np.testing.assert_allclose(result.scores, clip_logits.softmax(-1).numpy(), atol=1e-5, rtol=0)
    assert result.duration == pytest.approx(len(mono) / 16000)
    # numpy array at another rate, and 🤗 datasets examples (decoded array dict and undecoded bytes)
    by_array = classifier.classify(decoded.mean(1), sampling_rate=22050)
    np.testing.assert_allclose(by_array.scores, result.scores, atol=1e-5, rtol=0)
    example = {"audio": {"array": decoded.mean(1), "sampling_rate": 22050, "path": "x.flac"}, "label": 1}
    np.testing.assert_allclose(classifier.classify(example).scores, result.scores, atol=1e-5, rtol=0)
    undecoded = {"audio": {"bytes": path.read_bytes(), "path": "stereo.flac"}}
    np.testing.assert_allclose(classifier.classify(undecoded).scores, result.scores, atol=1e-5, rtol=0)


def test_overlapping_windows_and_compression(tiny, clips, tmp_path):
    model, fe, _ = tiny
    wave = np.resize(clips[7.5], 16000 * 20).astype(np.float32)
    classifier = ElasticASTClassifier(model, fe)
    result = classifier.classify(wave, sampling_rate=16000, window=4.0, hop=2.0)
    starts = [w.start for w in result.windows]
    np.testing.assert_allclose(np.diff(starts), 2.08)  # 2 s → 13 patches of 0.16 s
    assert all(w.end - w.start == pytest.approx(4.0, abs=0.08) for w in result.windows[:-1])
    assert result.windows[-1].end == pytest.approx(124 * 16 * 160 / 16000)  # the last whole patch
    # each overlapping window equals the same stretch classified alone
    p = fe.patch_size * 160
    window = result.windows[3]
    alone = wave[int(window.start * 16000) : int(window.start * 16000) + 25 * p + 400 - 160]
    _, logits, _ = whole_file(model, fe, alone)
    np.testing.assert_allclose(window.scores, logits.softmax(-1).numpy(), atol=1e-5, rtol=0)
    # the file-level score aggregates all windows (mean of logits for a single-label model)
    compressed = classifier.classify(wave, sampling_rate=16000, compression=2.0)
    assert compressed.compression == 2.0 and compressed.num_tokens == 8 * (fe.num_frames(len(wave), 2.0) // 16)
    features = fe(wave, sampling_rate=16000, compression=2.0, return_tensors="pt")
    with torch.no_grad():
        expected = model(**features).logits[0].softmax(-1).numpy()
    np.testing.assert_allclose(compressed.scores, expected, atol=1e-5, rtol=0)


def test_window_plan_and_segments():
    assert window_plan(10, 192, None, None) == [(0, 10)]
    assert window_plan(400, 192, None, None) == [(0, 133), (133, 267), (267, 400)]
    assert window_plan(10, 192, 4, 3) == [(0, 4), (3, 7), (6, 10)]
    with pytest.raises(ValueError, match="time table"):
        window_plan(10, 192, 193, None)
    windows = [WindowResult(i, i + 1.0, np.array(s)) for i, s in enumerate([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])]
    single = segments_of(windows, ["a", "b"], multi_label=False, threshold=0.5)
    assert single == [Segment(0, 2, "a", pytest.approx(0.85)), Segment(2, 3, "b", 0.7), Segment(3, 4, "a", 0.6)]
    multi = segments_of(windows, ["a", "b"], multi_label=True, threshold=0.65)
    assert multi == [Segment(0, 2, "a", 0.9), Segment(2, 3, "b", 0.7)]
    overlapping = [WindowResult(i * 0.5, i * 0.5 + 1.0, np.array(s)) for i, s in enumerate([[1, 0], [1, 0], [0, 1]])]
    assert [(s.start, s.end) for s in segments_of(overlapping, ["a", "b"], False, 0.5)] == [(0, 1.25), (1.25, 2.0)]


def test_bad_input_errors(tiny, tmp_path):
    model, fe, _ = tiny
    classifier = ElasticASTClassifier(model, fe)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF not really a wave file" * 10)
    with pytest.raises(ValueError, match="cannot decode"):
        classifier.classify(corrupt)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match="no audio"):
        classifier.classify(empty)
    with pytest.raises(FileNotFoundError):
        classifier.classify(tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="sampling_rate|1-D"):
        classifier.classify(np.zeros((2, 100), np.float32), sampling_rate=16000)


def test_plot_timeline(tiny, clips, tmp_path):
    model, fe, _ = tiny
    wave = np.resize(clips[7.5], 16000 * 12).astype(np.float32)
    result = ElasticASTClassifier(model, fe).classify(wave, sampling_rate=16000, window=2.0, hop=1.0)
    out = plot_timeline(result, wave, tmp_path / "plot.png")
    assert out.stat().st_size > 10_000


def test_segments_at_known_change_times(tiny_config):
    """Tone → noise → tone (changes at 4 s and 9 s): a tiny model trained here for a few steps on 1-s tones vs noise;
    the segments must change label at the known times ± one hop."""
    rng = np.random.default_rng(0)
    fe = ElasticASTFeatureExtractor()

    def tone(n):
        t = np.arange(n) / 16000
        return rng.uniform(0.05, 0.5) * np.sin(2 * np.pi * rng.uniform(200, 3000) * t + rng.uniform(0, 6))

    def noise(n):
        return rng.uniform(0.02, 0.3) * rng.standard_normal(n)

    config = tiny_config(num_labels=2, id2label={0: "tone", 1: "noise"}, label2id={"tone": 0, "noise": 1})
    model = ElasticASTForAudioClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    labels = torch.tensor([0] * 4 + [1] * 4)
    for _ in range(40):
        waves = [tone(16000).astype(np.float32) for _ in range(4)] + [noise(16000).astype(np.float32) for _ in range(4)]
        loss = model(**fe(waves, sampling_rate=16000, packing=True, return_tensors="pt"), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    clip = np.concatenate([tone(4 * 16000), noise(5 * 16000), tone(4 * 16000)]).astype(np.float32)
    hop = 0.48
    result = ElasticASTClassifier(model, fe).classify(clip, sampling_rate=16000, window=0.96, hop=hop)
    assert [s.label for s in result.segments] == ["tone", "noise", "tone"], result.segments
    assert result.segments[1].start == pytest.approx(4.0, abs=hop)
    assert result.segments[1].end == pytest.approx(9.0, abs=hop)
    assert result.segments[0].start == 0 and result.segments[-1].end == pytest.approx(result.windows[-1].end)
    assert all(s.score > 0.5 for s in result.segments)


def test_mp3_length_is_counted_and_streaming_matches_whole_decoding(tiny, clips, tmp_path):
    """MP3 headers only estimate the length: a counting pass gives the exact one, and the windows then match the
    whole decoded file's."""
    from torchcodec.decoders import AudioDecoder

    model, fe, _ = tiny
    path = tmp_path / "clip.mp3"
    soundfile.write(path, np.resize(clips[7.5], 16000 * 35), 16000)
    samples = AudioDecoder(str(path)).get_all_samples()
    wave = samples.data.mean(0).numpy()
    assert samples.sample_rate == 16000
    _, clip_logits, windows = whole_file(model, fe, wave)
    result = ElasticASTClassifier(model, fe, chunk_seconds=2.7).classify(path)
    assert result.duration == len(wave) / 16000 and len(result.windows) == len(windows) == 2
    np.testing.assert_allclose(result.scores, clip_logits.softmax(-1).numpy(), atol=1e-5, rtol=0)


def test_fbank_blocks_and_frames_equal_the_whole_clip(clips):
    """The extractor's FFT runs `fbank_block_frames` frames at a time (bounded memory): the same frames as one block;
    `fbank_frames` on a frame-aligned piece gives the whole clip's frames of that piece."""
    fe = ElasticASTFeatureExtractor()
    wave = torch.from_numpy(np.resize(clips[7.5], 16000 * 50 + 33))
    whole = fe.fbank([wave], [1.0])[0]
    fe.fbank_block_frames = 777
    np.testing.assert_array_equal(fe.fbank([wave], [1.0])[0].numpy(), whole.numpy())
    piece = fe.fbank_frames(wave[1234 * 160 : 3000 * 160 + 240].double())
    assert piece.shape == (3000 - 1234, 128)
    torch.testing.assert_close(piece, whole[1234:3000], atol=2e-5, rtol=0)  # float rounding of the skipped mean


def test_compiled_classifier_gives_the_same_results_and_reuses_a_repeated_layout(tiny, clips):
    from torch._dynamo.utils import counters

    model, fe, _ = tiny
    wave = np.resize(clips[7.5], 16000 * 40).astype(np.float32)
    eager = ElasticASTClassifier(model, fe, chunk_seconds=3.0, max_tokens=2000).classify(wave, sampling_rate=16000,
                                                                                         window=2.0, hop=2.0)
    torch._dynamo.reset()
    counters.clear()
    # backend "eager": the same dynamo graph capture as inductor without its code generation (minutes on CPU)
    compiled = ElasticASTClassifier(model, fe, chunk_seconds=3.0, max_tokens=2000, compile="eager")
    result = compiled.classify(wave, sampling_rate=16000, window=2.0, hop=2.0)
    np.testing.assert_allclose(result.scores, eager.scores, atol=1e-5, rtol=0)
    np.testing.assert_allclose([w.scores for w in result.windows], [w.scores for w in eager.windows], atol=1e-5)
    calls = len(result.windows)
    assert counters["stats"]["unique_graphs"] >= 1
    assert counters["stats"]["unique_graphs"] < calls  # 20 windows: the full chunks' layout compiled once, reused
