"""Sound events: post-processing on constructed window scores, calibration, event tables round trip, metrics equal
to the libraries' own results, and the commands end to end on a tiny multi-label model."""

import csv
import json
import warnings

import numpy as np
import pytest
import soundfile

from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification
from elasticast.calibrate import calibrate_scores, choose_threshold, parse_target
from elasticast.cli import main as cli
from elasticast.event_formats import (
    RAVEN_COLUMNS, parse_formats, read_audacity, read_csv, read_dcase, read_jsonl, read_raven, to_audacity, to_csv,
    to_dcase, to_jsonl, to_raven, write_tables,
)
from elasticast.events import Event, EventOptions, detect_events, window_cores

LABELS = ["tone", "noise", "chirp"]


# ------------------------------------------------------------------------------------------------ post-processing
def _windows(count, width=1.0, hop=0.5):
    starts = np.arange(count) * hop
    return starts, starts + width


def test_window_cores_are_hop_wide_around_centres():
    starts, ends = _windows(5)
    cores = window_cores(starts, ends)
    centres = (starts + ends) / 2
    np.testing.assert_allclose(cores[1:-1, 0], centres[1:-1] - 0.25)
    np.testing.assert_allclose(cores[1:-1, 1], centres[1:-1] + 0.25)
    assert cores[0, 0] == 0 and cores[-1, 1] == ends[-1]
    np.testing.assert_allclose(cores[1:, 0], cores[:-1, 1])  # contiguous


def test_threshold_merge_min_duration_and_label_lists():
    starts, ends = _windows(20)  # cores: [0, .75], [.75, 1.25], ... every 0.5 s
    scores = np.zeros((20, 3))
    scores[2:5, 0] = 0.9  # tone: windows 2-4
    scores[6:8, 0] = 0.8  # tone again after a one-window gap (0.5 s)
    scores[12, 1] = 0.7  # noise: one window (0.5 s)
    scores[15:18, 2] = [0.6, 0.95, 0.6]  # chirp
    cores = window_cores(starts, ends)
    plain = detect_events(starts, ends, scores, LABELS, True, EventOptions(threshold=0.5))
    assert [(e.label, e.start, e.end) for e in plain] == [
        ("tone", cores[2, 0], cores[4, 1]), ("tone", cores[6, 0], cores[7, 1]),
        ("noise", cores[12, 0], cores[12, 1]), ("chirp", cores[15, 0], cores[17, 1])]
    assert plain[-1].score == pytest.approx(0.95)  # peak score
    merged = detect_events(starts, ends, scores, LABELS, True, EventOptions(threshold=0.5, merge_gap=0.6,
                                                                            min_duration=0.6))
    assert [(e.label, e.start, e.end) for e in merged] == [("tone", cores[2, 0], cores[7, 1]),
                                                          ("chirp", cores[15, 0], cores[17, 1])]
    per_class = detect_events(starts, ends, scores, LABELS, True, EventOptions(threshold={"chirp": 0.9}))
    assert [e.label for e in per_class] == ["tone", "tone", "noise", "chirp"]
    assert (per_class[-1].start, per_class[-1].end) == (cores[16, 0], cores[16, 1])  # only the 0.95 window
    kept = detect_events(starts, ends, scores, LABELS, True, EventOptions(labels=["tone", "noise"], exclude=["noise"]))
    assert {e.label for e in kept} == {"tone"}
    with pytest.raises(ValueError, match="Unknown label"):
        detect_events(starts, ends, scores, LABELS, True, EventOptions(exclude=["tonne"]))


def test_hysteresis_extends_events_while_above_the_low_threshold():
    starts, ends = _windows(10)
    scores = np.zeros((10, 3))
    scores[2:8, 0] = [0.4, 0.45, 0.9, 0.4, 0.35, 0.1]
    scores[8, 0] = 0.45  # above low but no window ≥ high in its run
    cores = window_cores(starts, ends)
    events = detect_events(starts, ends, scores, LABELS, True, EventOptions(threshold=0.8, low_threshold=0.3))
    assert [(e.start, e.end) for e in events] == [(cores[2, 0], cores[6, 1])]
    with pytest.raises(ValueError, match="at most the onset threshold"):
        EventOptions(threshold=0.3, low_threshold=0.5).low_thresholds(LABELS)


def test_single_label_runs_and_unknown_below_min_confidence():
    starts, ends = _windows(6, width=1.0, hop=1.0)
    scores = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.4, 0.35, 0.25], [0.1, 0.8, 0.1], [0.1, 0.7, 0.2],
                       [0.2, 0.1, 0.7]])
    events = detect_events(starts, ends, scores, LABELS, False, EventOptions(min_confidence=0.5))
    assert [(e.label, e.start, e.end) for e in events] == [("tone", 0, 2), ("unknown", 2, 3), ("noise", 3, 5),
                                                          ("chirp", 5, 6)]
    assert events[0].score == pytest.approx(0.85)
    without = detect_events(starts, ends, scores, LABELS, False)
    assert [(e.label, e.start, e.end) for e in without][:1] == [("tone", 0, 3)]


# --------------------------------------------------------------------------------------------------- calibration
def test_calibration_picks_the_threshold_of_highest_f1():
    rng = np.random.default_rng(0)
    positive = rng.random(200) < 0.3
    scores = np.clip(0.35 * positive + rng.normal(0.35, 0.18, 200), 0, 1)
    chosen = choose_threshold(positive, scores)

    def f1_at(threshold):
        predicted = scores >= threshold
        tp = (predicted & positive).sum()
        return 2 * tp / (predicted.sum() + positive.sum())

    best = max(f1_at(t) for t in np.unique(scores))  # brute force over every distinct decision
    assert f1_at(chosen["threshold"]) == pytest.approx(best)
    assert chosen["f1"] == pytest.approx(best)
    # precision / recall targets
    p = choose_threshold(positive, scores, parse_target("precision=0.8"))
    predicted = scores >= p["threshold"]
    assert (predicted & positive).sum() / predicted.sum() >= 0.8
    r = choose_threshold(positive, scores, parse_target("recall=0.9"))
    assert ((scores >= r["threshold"]) & positive).sum() / positive.sum() >= 0.9
    assert r["threshold"] > choose_threshold(positive, scores, parse_target("recall=1.0"))["threshold"] - 1e-12
    with pytest.raises(ValueError, match="precision=P"):
        parse_target("accuracy")


def test_calibration_record_lists_classes_with_too_few_examples():
    rng = np.random.default_rng(1)
    targets = np.zeros((60, 3))
    targets[:25, 0] = 1
    targets[30:55, 1] = 1
    targets[:2, 2] = 1  # two positives only
    scores = np.clip(targets * 0.5 + rng.random((60, 3)) * 0.6, 0, 1)
    record = calibrate_scores(scores, targets, LABELS, True, min_examples=5)
    assert record["defaulted"] == ["chirp"] and set(record["thresholds"]) == {"tone", "noise"}
    assert record["classes"]["tone"]["positives"] == 25 and "recall" in record["classes"]["tone"]
    single = calibrate_scores(np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1]] * 0.5 + 0.16, np.array([0, 1, 2, 0, 1, 2, 1, 0]),
                              LABELS, False, min_examples=5)
    assert single["min_confidence"] is not None or single["defaulted"] == ["min_confidence"]


# ------------------------------------------------------------------------------------------------------- formats
EVENTS = [("rec one.wav", [Event(0.5, 1.25, "tone", 0.91), Event(2.0, 3.5, "chirp\tsweep", 0.6)]),
          ("b.wav", [Event(0.0, 0.75, "noise", 0.7)])]


def _same(a, b, score=True):
    assert [(x.label, round(x.start, 6), round(x.end, 6)) for x in a] == \
           [(y.label, round(y.start, 6), round(y.end, 6)) for y in b]
    if score:
        assert [round(x.score, 6) for x in a] == [round(y.score, 6) for y in b]


def test_every_format_round_trips(tmp_path):
    cleaned = [(name, [Event(e.start, e.end, " ".join(e.label.split()), e.score) for e in events])
               for name, events in EVENTS]
    paths = write_tables(tmp_path / "run", EVENTS, parse_formats("jsonl,csv,audacity,raven,dcase"),
                         sampling_rate=16000, durations=[4.0, 1.0], provenance={"model": "m"})
    assert json.loads((tmp_path / "run.provenance.json").read_text()) == {"model": "m"}
    assert len(paths) == 7  # jsonl, csv, two Audacity tracks, raven, dcase, provenance
    for name, events in read_jsonl(tmp_path / "run.events.jsonl"):
        _same(events, dict(EVENTS)[name])
    for (name, events), (ref_name, ref) in zip(read_csv(tmp_path / "run.events.csv"), EVENTS):
        assert name == ref_name
        _same(events, ref)
    for (name, events), (ref_name, ref) in zip(read_raven(tmp_path / "run.selections.txt"), cleaned):
        assert name == ref_name
        _same(events, ref)
    for (name, events), (ref_name, ref) in zip(read_dcase(tmp_path / "run.dcase.tsv"), cleaned):
        assert name == ref_name
        _same(events, ref, score=False)
    _same(read_audacity(tmp_path / "run.rec one.audacity.txt"), cleaned[0][1], score=False)


def test_audacity_and_raven_column_rules():
    # Audacity label track: no header; start<TAB>end<TAB>label per line; seconds with six decimals.
    text = to_audacity(EVENTS[0][1])
    lines = text.splitlines()
    assert lines[0] == "0.500000\t1.250000\ttone" and lines[1].split("\t") == ["2.000000", "3.500000", "chirp sweep"]
    assert all(len(line.split("\t")) == 3 for line in lines)
    # Raven: tab-separated, the standard columns first, selections numbered from 1, whole band as the box.
    single = list(csv.DictReader(to_raven(EVENTS[:1], 16000).splitlines(), delimiter="\t"))
    assert list(single[0])[:7] == RAVEN_COLUMNS[:7]
    assert [r["Selection"] for r in single] == ["1", "2"] and single[0]["View"] == "Spectrogram 1"
    assert single[0]["Channel"] == "1" and single[0]["High Freq (Hz)"] == "8000.0"
    multi = list(csv.DictReader(to_raven(EVENTS, 16000, durations=[4.0, 1.0]).splitlines(), delimiter="\t"))
    assert multi[2]["Begin Path"] == "b.wav" and float(multi[2]["Begin Time (s)"]) == 4.0  # after the 4-s file
    assert float(multi[2]["File Offset (s)"]) == 0.0
    with pytest.raises(ValueError, match="durations"):
        to_raven(EVENTS, 16000)
    # DCASE: header and four tab-separated columns
    assert to_dcase(EVENTS).splitlines()[0] == "filename\tonset\toffset\tevent_label"
    assert to_jsonl(EVENTS).count("\n") == 3 and to_csv(EVENTS).splitlines()[0] == "file,start,end,label,score"
    with pytest.raises(ValueError, match="choose from"):
        parse_formats("jsonl,txt")


# ------------------------------------------------------------------------------------------------------- metrics
@pytest.fixture(scope="module")
def pair():
    """A constructed reference and window scores on 0.5-s stretches of two 60-s files."""
    timestamps = np.arange(0, 60.01, 0.5)
    starts, ends = timestamps[:-1], timestamps[1:]
    reference = {"a.wav": [Event(1.0, 3.0, "tone", 1), Event(5.0, 6.0, "chirp", 1)],
                 "b.wav": [Event(2.0, 4.5, "noise", 1), Event(7.0, 8.0, "tone", 1)]}
    rng = np.random.default_rng(3)
    scores = {}
    for name, events in reference.items():
        s = rng.random((len(starts), 3)) * 0.4
        for e in events:
            s[(starts >= e.start) & (ends <= e.end), LABELS.index(e.label)] += 0.5
            s[(starts >= e.start - 1.0) & (ends <= e.start), LABELS.index(e.label)] += 0.3  # early onsets
        scores[name] = s
    scores["a.wav"][40:42, 1] = 0.95  # a false alarm scoring above every true event
    scores["b.wav"][14:16, 0] = 0.45  # a true tone scoring weakly
    return starts, ends, reference, scores


def test_metrics_equal_the_libraries_own_results(pair):
    warnings.simplefilter("ignore")
    import sed_eval
    import sed_scores_eval
    from dcase_util.containers import MetaDataContainer

    from elasticast.event_metrics import PSDS_SCENARIOS, evaluate, score_frame

    starts, ends, reference, scores = pair
    frames = {k: score_frame(starts, ends, v, LABELS) for k, v in scores.items()}
    estimated = {k: detect_events(starts, ends, v, LABELS, True, EventOptions(threshold=0.5))
                 for k, v in scores.items()}
    report = evaluate(frames, reference, estimated, {"a.wav": 60.0, "b.wav": 60.0}, LABELS)
    # PSDS straight from sed_scores_eval
    ground_truth = {k: [(e.start, e.end, e.label) for e in v] for k, v in reference.items()}
    for name, scenario in PSDS_SCENARIOS.items():
        expected = sed_scores_eval.intersection_based.psds(
            scores=frames, ground_truth=ground_truth, audio_durations={"a.wav": 60.0, "b.wav": 60.0},
            unit_of_time="hour", max_efpr=100, **scenario)[0]
        assert report["overall"][name] == pytest.approx(expected) and 0 < expected < 1
    # F1 straight from sed_eval, all files at once
    metric = sed_eval.sound_event.EventBasedMetrics(event_label_list=LABELS, t_collar=0.2, percentage_of_length=0.2)
    segment = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=LABELS, time_resolution=1.0)
    for key in reference:
        ref = MetaDataContainer([{"filename": key, "onset": e.start, "offset": e.end, "event_label": e.label}
                                 for e in reference[key]])
        est = MetaDataContainer([{"filename": key, "onset": e.start, "offset": e.end, "event_label": e.label}
                                 for e in estimated[key]])
        metric.evaluate(ref, est)
        segment.evaluate(ref, est)
    assert report["overall"]["event_f1_micro"] == pytest.approx(metric.results_overall_metrics()["f_measure"]
                                                                ["f_measure"])
    assert report["overall"]["segment_f1_micro"] == pytest.approx(segment.results_overall_metrics()["f_measure"]
                                                                  ["f_measure"])
    # and sed_scores_eval's collar-based F1 on the same scores and threshold agrees with sed_eval's event-based F1
    collar = sed_scores_eval.collar_based.fscore(scores=frames, ground_truth=ground_truth, threshold=0.5,
                                                 onset_collar=0.2, offset_collar=0.2, offset_collar_rate=0.2)[0]
    assert report["overall"]["event_f1_micro"] == pytest.approx(collar["micro_average"])


def test_perfect_detection_scores_one_and_empty_zero(pair):
    warnings.simplefilter("ignore")
    from elasticast.event_metrics import evaluate, score_frame

    starts, ends, reference, _ = pair
    durations = {"a.wav": 60.0, "b.wav": 60.0}
    perfect_scores = {}
    for name, events in reference.items():
        s = np.zeros((len(starts), 3))
        for e in events:
            s[(starts >= e.start) & (ends <= e.end), LABELS.index(e.label)] = 1.0
        perfect_scores[name] = s
    frames = {k: score_frame(starts, ends, v, LABELS) for k, v in perfect_scores.items()}
    perfect = evaluate(frames, reference, reference, durations, LABELS)["overall"]
    for key in ("psds1", "psds2", "event_f1_micro", "event_f1_macro", "segment_f1_micro"):
        assert perfect[key] == pytest.approx(1.0), key
    empty_frames = {k: score_frame(starts, ends, np.zeros((len(starts), 3)), LABELS) for k in reference}
    empty = evaluate(empty_frames, reference, {k: [] for k in reference}, durations, LABELS)["overall"]
    for key in ("psds1", "psds2", "event_f1_micro", "segment_f1_micro"):
        assert empty[key] == pytest.approx(0.0), key


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.fixture
def multilabel(tiny_config, tmp_path):
    """A tiny multi-label model, an audiofolder validation split and a 12-s recording with its reference."""
    config = tiny_config(num_labels=3, id2label=dict(enumerate(LABELS)), label2id={k: i for i, k in enumerate(LABELS)},
                         problem_type="multi_label_classification")
    ElasticASTForAudioClassification(config).save_pretrained(tmp_path / "model")
    ElasticASTFeatureExtractor().save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(0)
    rows = []
    for index in range(12):
        (tmp_path / "data" / "validation").mkdir(parents=True, exist_ok=True)
        kind = LABELS[index % 3]
        t = np.arange(16000) / 16000
        wave = {"tone": 0.3 * np.sin(2 * np.pi * 440 * t), "noise": 0.1 * rng.standard_normal(16000),
                "chirp": 0.3 * np.sin(2 * np.pi * (300 + 1500 * t) * t)}[kind]
        soundfile.write(tmp_path / "data" / "validation" / f"{index}.wav", wave.astype(np.float32), 16000)
        rows.append(json.dumps({"file_name": f"{index}.wav", "label": [kind] if index % 4 else [kind, "noise"]}))
    (tmp_path / "data" / "validation" / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    recording = 0.05 * rng.standard_normal(12 * 16000)
    recording[32000:64000] += 0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)
    soundfile.write(tmp_path / "scene.wav", recording.astype(np.float32), 16000)
    (tmp_path / "ref.tsv").write_text("filename\tonset\toffset\tevent_label\nscene.wav\t2.0\t4.0\ttone\n")
    return tmp_path


def test_calibrate_classify_and_evaluate_events_commands(multilabel, capsys):
    from elasticast.inference import ElasticASTClassifier

    tmp = multilabel
    assert cli(["calibrate", str(tmp / "model"), "--dataset", str(tmp / "data"), "--split", "validation",
                "--min-examples", "5"]) == 0
    record = json.loads((tmp / "model" / "calibration.json").read_text())
    config = json.loads((tmp / "model" / "config.json").read_text())
    assert config["class_thresholds"] == record["thresholds"] and record["split"] == "validation"
    assert record["examples"] == 12 and record["classes"]["noise"]["positives"] == 6
    assert record["defaulted"] == ["tone", "chirp"]  # 4 positives each, below --min-examples 5
    # the classifier applies the calibrated thresholds by default, an explicit threshold overrides them
    classifier = ElasticASTClassifier.from_pretrained(tmp / "model", device="cpu")
    assert classifier.model.config.class_thresholds == record["thresholds"]
    calibrated = classifier.classify(str(tmp / "scene.wav"), window=1.0, hop=0.5)
    expected = detect_events([w.start for w in calibrated.windows], [w.end for w in calibrated.windows],
                             np.stack([w.scores for w in calibrated.windows]), LABELS, True,
                             EventOptions(threshold=record["thresholds"]))
    assert [(s.start, s.end, s.label) for s in calibrated.segments] == [(e.start, e.end, e.label) for e in expected]
    everything = classifier.classify(str(tmp / "scene.wav"), window=1.0, hop=0.5, threshold=0.0)
    assert len(everything.segments) == 3  # every class active over the whole recording
    # classify writes the event tables, per file and combined
    out = tmp / "events"
    assert cli(["classify", str(tmp / "model"), str(tmp / "scene.wav"), str(tmp / "data" / "validation" / "0.wav"),
                "--output", str(tmp / "r.jsonl"), "--window", "1", "--hop", "0.5", "--threshold", "0.0",
                "--events", str(out), "--format", "raven,dcase,audacity", "--combine", "--min-duration", "0.5"]) == 0
    combined = dict(read_dcase(out / "events.dcase.tsv"))
    assert {e.label for e in combined[str(tmp / "scene.wav")]} == set(LABELS)
    assert len(read_raven(out / "events.selections.txt")) == 2
    provenance = json.loads((out / "events.provenance.json").read_text())["recordings"][0]
    assert provenance["window"] == 1.0 and provenance["events"]["thresholds"]["tone"] == 0.0
    assert provenance["events"]["min_duration"] == 0.5
    # evaluate-events: metrics from the libraries, table and plots
    report_dir = tmp / "report"
    assert cli(["evaluate-events", str(tmp / "model"), str(tmp / "scene.wav"), "--reference", str(tmp / "ref.tsv"),
                "--window", "1", "--hop", "0.5", "--output-dir", str(report_dir), "--plot-scene", "scene.wav"]) == 0
    report = json.loads((report_dir / "metrics.json").read_text())
    assert 0 <= report["overall"]["psds1"] <= 1 and report["overall"]["reference_events"] == 1
    assert report["overall"]["psds_classes_without_reference"] == ["noise", "chirp"]
    assert report["settings"]["events"]["thresholds"] == {**{l: 0.5 for l in LABELS}, **record["thresholds"]}
    assert (report_dir / "scene.png").stat().st_size > 10000 and (report_dir / "per_class.png").is_file()
    assert "| tone | 1 |" in (report_dir / "metrics.md").read_text()
    # bad input: a clear error
    with pytest.raises(SystemExit, match="not among the audio"):
        (tmp / "bad.tsv").write_text("filename\tonset\toffset\tevent_label\nother.wav\t1\t2\ttone\n")
        cli(["evaluate-events", str(tmp / "model"), str(tmp / "scene.wav"), "--reference", str(tmp / "bad.tsv")])
    with pytest.raises(SystemExit, match="precision=P"):
        cli(["calibrate", str(tmp / "model"), "--dataset", str(tmp / "data"), "--target", "accuracy=1"])
