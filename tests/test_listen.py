"""Live audio: `ElasticASTClassifier.stream` / `LiveStream` (equality with `classify`, timing, memory) and the
`elasticast listen` command (stdin WAV and raw PCM, an ffmpeg lavfi source, SIGTERM, missing ffmpeg/device)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification
from elasticast.inference import ElasticASTClassifier

LABELS = ["tone", "noise", "chirp"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test of this module at one thread (see `one_thread`)."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from elasticast import ElasticASTConfig

    torch.manual_seed(0)
    config = ElasticASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                              num_labels=3, id2label=dict(enumerate(LABELS)),
                              label2id={label: i for i, label in enumerate(LABELS)})
    folder = tmp_path_factory.mktemp("model")
    ElasticASTForAudioClassification(config).eval().save_pretrained(folder)
    ElasticASTFeatureExtractor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier(model_dir):
    return ElasticASTClassifier.from_pretrained(model_dir, device="cpu")


def signal_at(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like test audio: a gliding tone, noise bursts and a chirp, float32 in [-1, 1)."""
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * (300 + 200 * np.sin(0.7 * t)) * t)
    wave += 0.2 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 0.4 * t) > 0.3)
    wave += 0.2 * np.sin(2 * np.pi * (200 * (t % 1.3) + 1500 * (t % 1.3) ** 2))
    return (0.8 * wave / np.abs(wave).max()).astype(np.float32)


def chunked(wave: np.ndarray, sizes, seed: int = 0):
    """`wave` cut into chunks: a fixed size, or random sizes in [1, sizes] when `sizes` is a tuple."""
    rng = np.random.default_rng(seed)
    start = 0
    while start < len(wave):
        size = int(rng.integers(1, sizes[0] + 1)) if isinstance(sizes, tuple) else sizes
        yield wave[start : start + size]
        start += size


# ------------------------------------------------------------------------------------------------------ the API
@pytest.mark.parametrize("rate", [16000, 44100])
@pytest.mark.parametrize("window,hop", [(2.0, 1.0), (1.0, 0.5), (3.0, None)])
def test_stream_equals_classify_with_the_same_window_and_hop(classifier, tmp_path, rate, window, hop):
    wave = signal_at(rate, 8.1)  # not a whole number of hops: the stream ends with a shorter window
    path = tmp_path / f"clip_{rate}.wav"
    soundfile.write(path, wave, rate, subtype="FLOAT")
    expected = classifier.classify(path, window=window, hop=hop or window).windows
    assert len(expected) >= 3 and expected[-1].end - expected[-1].start < expected[0].end - expected[0].start
    for sizes in (331, 1013, (5000,), rate * 3):
        got = list(classifier.stream(chunked(wave, sizes), rate, window=window, hop=hop))
        assert [(w.start, w.end) for w in got] == [(w.start, w.end) for w in expected], sizes
        np.testing.assert_allclose(np.stack([w.scores for w in got]), np.stack([w.scores for w in expected]),
                                   atol=1e-5, rtol=0)


def test_stream_takes_torch_int16_and_stereo_chunks(classifier):
    wave = signal_at(16000, 4.3)
    reference = list(classifier.stream(chunked(wave, 4000), 16000, window=1.0, hop=0.5))
    pcm = np.round(wave * 32767).astype(np.int16)
    as_int16 = list(classifier.stream(chunked(pcm, 2222), 16000, window=1.0, hop=0.5))
    stereo = np.stack([wave, wave], axis=1)  # [samples, channels]
    as_torch_stereo = list(classifier.stream((torch.from_numpy(c) for c in chunked(stereo, 3001)), 16000,
                                             window=1.0, hop=0.5))
    for got, tolerance in ((as_int16, 2e-3), (as_torch_stereo, 1e-5)):
        assert [(w.start, w.end) for w in got] == [(w.start, w.end) for w in reference]
        np.testing.assert_allclose(np.stack([w.scores for w in got]), np.stack([w.scores for w in reference]),
                                   atol=tolerance, rtol=0)


def test_each_window_comes_out_with_the_chunk_that_completes_it(classifier):
    """A window is yielded right after the chunk holding its last sample (the end of its last 25-ms frame), before
    any later chunk is read, and only the open windows' frames are held, however long the stream."""
    fe, rate, size = classifier.fe, 16000, 800  # 50-ms chunks
    wave = signal_at(rate, 30.0)
    pulled = [0]
    live = classifier.live(rate, window=1.92, hop=0.48)  # 12 and 3 time patches

    def source():
        for chunk in chunked(wave, size):
            pulled[0] += len(chunk)
            yield chunk

    held, windows = [], []
    for chunk in source():
        for result in live.push(chunk):
            last_sample = round(result.end * rate) - fe.frame_shift() + fe.frame_length  # exclusive end
            assert pulled[0] - size < last_sample <= pulled[0]
            windows.append(result)
        held.append(live._windower.frames.shape[0])
    tail = live.close()
    # 30 s = 2998 frames = 187 patches: 59 full windows (the last ending at patch 186) arrive while streaming, then
    # one shorter window 177-187 (0.16 s beyond the last full one) when the stream ends
    assert len(windows) == 59 and windows[-1].end == pytest.approx(186 * 0.16)
    assert len(tail) == 1 and (tail[0].start, tail[0].end) == pytest.approx((177 * 0.16, 187 * 0.16))
    expected = classifier.classify(wave, sampling_rate=rate, window=1.92, hop=0.48).windows
    assert [(w.start, w.end) for w in windows + tail] == [(w.start, w.end) for w in expected]
    assert max(held) <= 12 * 16 + size // fe.frame_shift() + 16  # one window of frames, one chunk, one patch
    assert live.close() == [] and live.seconds_in == 30.0


def test_stream_errors_say_the_fix(classifier):
    with pytest.raises(ValueError, match="hop no longer than the window"):
        list(classifier.stream([np.zeros(16000, np.float32)], 16000, window=1.0, hop=2.0))
    with pytest.raises(ValueError, match="NaN or Inf"):
        list(classifier.stream([np.full(1600, np.nan, np.float32)], 16000, window=1.0))
    with pytest.raises(ValueError, match="fixed number of channels"):
        list(classifier.stream([np.zeros((160, 2)), np.zeros((2, 160))], 16000, window=1.0))
    with pytest.raises(ValueError, match="positive integer"):
        classifier.live(16000.5, window=1.0)
    assert list(classifier.stream([], 16000, window=1.0)) == []


# ------------------------------------------------------------------------------------------------------ the CLI
def listen_command(model_dir, *args) -> list[str]:
    return [sys.executable, "-m", "elasticast.cli", "listen", str(model_dir), *args]


def cli_env(**extra) -> dict:
    # OMP_NUM_THREADS=1: see `one_thread`
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def read_jsonl(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def assert_same_windows(records: list[dict], expected, atol: float):
    assert [(r["start"], r["end"]) for r in records] == [(round(w.start, 6), round(w.end, 6)) for w in expected]
    got = np.array([[r["scores"][label] for label in LABELS] for r in records])
    np.testing.assert_allclose(got, np.stack([w.scores for w in expected]), atol=atol, rtol=0)


def lavfi_wav(path: Path, spec: str) -> Path:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", spec, "-ar", "16000", "-ac", "1",
                    "-c:a", "pcm_f32le", str(path)], check=True)
    return path


@pytest.mark.parametrize("kind", ["wav", "raw"])
def test_cli_reads_wav_and_raw_pcm_on_stdin(model_dir, classifier, tmp_path, kind):
    wave = signal_at(16000, 5.3)
    path = tmp_path / "clip.wav"
    soundfile.write(path, wave, 16000, subtype="PCM_16")
    pcm = soundfile.read(path, dtype="int16")[0]
    data = path.read_bytes() if kind == "wav" else pcm.astype("<i2").tobytes()
    fmt = [] if kind == "wav" else ["-f", "s16le", "--rate", "16000"]
    out = tmp_path / "windows.jsonl"
    done = subprocess.run(listen_command(model_dir, "-", *fmt, "--window", "1", "--hop", "0.5", "--output", str(out)),
                          input=data, capture_output=True, env=cli_env(), timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    expected = classifier.classify(path, window=1.0, hop=0.5).windows
    assert_same_windows(read_jsonl(out), expected, atol=2e-6)  # the JSON keeps 6 decimals
    printed = done.stdout.decode().splitlines()
    assert len(printed) == len(expected) and printed[0].split()[:3] == ["0.00", "-", "0.96"]


def test_cli_stdin_at_another_rate_is_resampled(model_dir, classifier, tmp_path):
    path = tmp_path / "clip_44k.wav"
    soundfile.write(path, signal_at(44100, 4.1), 44100, subtype="FLOAT")
    done = subprocess.run(listen_command(model_dir, "-", "--window", "2", "--hop", "1", "--json"),
                          input=path.read_bytes(), capture_output=True, env=cli_env(), timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    records = [json.loads(line) for line in done.stdout.decode().splitlines()]
    expected = classifier.classify(path, window=2.0, hop=1.0).windows  # soxr here, ffmpeg's resampler there
    assert_same_windows(records, expected, atol=2e-2)


def test_cli_lavfi_source_in_real_time(model_dir, classifier, tmp_path):
    spec = "sine=frequency=440:beep_factor=4:duration=4"
    out = tmp_path / "live.jsonl"
    started = time.monotonic()
    done = subprocess.run(listen_command(model_dir, "-f", "lavfi", spec, "--realtime", "--window", "1", "--hop",
                                         "0.5", "--output", str(out)), capture_output=True, env=cli_env(),
                          timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    records = read_jsonl(out)
    # 4 s = 398 frames = 24 patches: windows of 6 patches every 3, the last ending at patch 24: 7 windows, equal to
    # the same signal rendered to a file and classified whole
    assert len(records) == 7
    assert_same_windows(records, classifier.classify(lavfi_wav(tmp_path / "sine.wav", spec), window=1.0,
                                                     hop=0.5).windows, atol=2e-6)
    # results came out while the audio played (-re: 4 s), not all at the end
    stamps = [time.mktime(time.strptime(r["time"][:19], "%Y-%m-%dT%H:%M:%S")) for r in records]
    assert stamps[-1] - stamps[0] >= 2 and time.monotonic() - started >= 4


def test_cli_sigterm_ends_cleanly_with_every_line_written(model_dir, tmp_path):
    out = tmp_path / "live.jsonl"
    out.write_text('{"earlier": "run"}\n{"torn": ')  # a line cut by a killed earlier run: repaired on open
    process = subprocess.Popen(listen_command(model_dir, "-f", "lavfi", "anoisesrc=color=pink", "--realtime",
                                              "--window", "1", "--hop", "0.5", "--output", str(out)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    deadline = time.monotonic() + 240
    while len(out.read_text().splitlines()) < 5:  # the earlier line + at least 4 windows
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()
    records = read_jsonl(out)
    assert records[0] == {"earlier": "run"}
    windows = records[1:]
    assert len(windows) >= 4 and len(stdout.decode().splitlines()) == len(windows)
    starts = [w["start"] for w in windows]
    assert starts == [round(0.48 * i, 6) for i in range(len(windows))]  # every window, in order, none lost
    assert windows[-1]["end"] - windows[-1]["start"] <= 0.96 + 1e-9  # the last one ends where the audio stopped
    assert f"done: {len(windows)} window(s)" in stderr.decode()


def test_cli_names_what_is_missing(model_dir, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    done = subprocess.run(listen_command(model_dir, "-f", "alsa", "default"), capture_output=True,
                          env=cli_env(PATH=str(empty)), timeout=300)
    assert done.returncode == 1 and "apt-get install ffmpeg" in done.stderr.decode()
    done = subprocess.run(listen_command(model_dir, "-f", "alsa", "hw:9"), capture_output=True, env=cli_env(),
                          timeout=300)
    assert done.returncode == 1 and "arecord -l" in done.stderr.decode(), done.stderr.decode()
    done = subprocess.run(listen_command(model_dir, "-"), input=b"\x01\x02" * 8000, capture_output=True,
                          env=cli_env(), timeout=300)
    assert done.returncode == 1 and "--format s16le --rate 16000" in done.stderr.decode(), done.stderr.decode()


def test_latency_benchmark_runs_and_writes_a_record(tmp_path):
    """A short run of `benchmarks.latency` (tiny model, one configuration): a record with the required fields and
    the expected number of windows measured on the real-time source."""
    from benchmarks import latency

    out = tmp_path / "latency.json"
    record = latency.main(["--sizes", "tiny", "--windows", "1", "--hops", "0.5", "--compressions", "1",
                           "--seconds", "3", "--rtf-seconds", "2", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == record
    assert {"title", "command", "date", "machine", "table", "notes"} <= record.keys()
    assert "load_average" in record["machine"] and "gemm_gflops" in record["machine"]
    (row,) = record["rows"]
    # 3 s = 18 patches: windows of 6 every 3 patches, the last ending at 2.88 s (+15 ms of frame) inside the source
    assert row["windows"] == 5 and (row["window_seconds"], row["hop_seconds"]) == (0.96, 0.48)
    assert 0 < row["median_ms"] <= row["p95_ms"] <= row["max_ms"] and row["real_time_factor"] > 0


# ------------------------------------------------------------------------------------------------- live events
@pytest.mark.parametrize("multi_label", [True, False])
@pytest.mark.parametrize("merge_gap,min_duration,low", [(0.0, 0.0, None), (1.0, 0.0, 0.3), (0.5, 1.5, None)])
def test_event_tracker_gives_the_events_of_the_whole_recording(multi_label, merge_gap, min_duration, low):
    """Windows fed one at a time: the events returned as they close (+ those open at the end) are exactly
    `detect_events` over all the windows, each once, and none is returned before its last window has arrived."""
    from elasticast.events import EventOptions, EventTracker, detect_events

    rng = np.random.default_rng(1)
    starts = np.arange(200) * 0.5
    ends = starts + 1.0
    # slowly varying scores: runs of activity with flicker
    base = (np.sin(np.arange(200)[:, None] / np.array([4.0, 7.0, 11.0])) + 1) / 2
    scores = np.clip(base + 0.25 * rng.standard_normal(base.shape), 0, 1)
    if not multi_label:
        scores = scores / scores.sum(1, keepdims=True)
    options = EventOptions(threshold=0.55 if multi_label else None, low_threshold=low if multi_label else None,
                           min_confidence=None if multi_label else 0.36, merge_gap=merge_gap, min_duration=min_duration)
    tracker = EventTracker(LABELS, multi_label, options)
    got = []
    for index, (start, end, score) in enumerate(zip(starts, ends, scores)):
        for event in tracker.add(start, end, score):
            assert event.end <= end  # closed: it ended before this window
            got.append(event)
    got += tracker.close()
    expected = detect_events(starts, ends, scores, LABELS, multi_label, options)
    key = lambda e: (round(e.start, 6), round(e.end, 6), e.label, round(e.score, 9))  # noqa: E731
    assert len(expected) > 5 and sorted(map(key, got)) == sorted(map(key, expected))


def test_cli_events_as_they_close_equal_classify(model_dir, classifier, tmp_path):
    """`listen --events`: event lines in the output equal the segments `classify` finds with the same options."""
    from elasticast.events import EventOptions

    wave = signal_at(16000, 9.0)
    path = tmp_path / "clip.wav"
    soundfile.write(path, wave, 16000, subtype="FLOAT")
    out = tmp_path / "live.jsonl"
    done = subprocess.run(listen_command(model_dir, "-", "--window", "1", "--hop", "0.5", "--events", "--min-confidence",
                                         "0.34", "--output", str(out)),
                          input=path.read_bytes(), capture_output=True, env=cli_env(), timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    events = [r for r in read_jsonl(out) if "event" in r]
    expected = classifier.classify(path, window=1.0, hop=0.5, events=EventOptions(min_confidence=0.34)).segments
    assert events and [(e["event"], e["start"], e["end"]) for e in events] == [
        (s.label, round(s.start, 6), round(s.end, 6)) for s in expected]
    assert sum("event:" in line for line in done.stdout.decode().splitlines()) == len(events)
