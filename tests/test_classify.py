"""`elasticast classify`: folders with broken files, JSONL/CSV output, plots, resume, `accelerate launch` sharding."""

import csv
import json
import os
import sys

import numpy as np
import pytest
import soundfile

from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification
from elasticast.cli import main as cli
from test_training import free_port, run_command

LABELS = ["alpha", "beta", "gamma"]


@pytest.fixture
def setup(tiny_config, clips, tmp_path):
    config = tiny_config(num_labels=3, id2label=dict(enumerate(LABELS)), label2id={k: i for i, k in enumerate(LABELS)})
    ElasticASTForAudioClassification(config).save_pretrained(tmp_path / "model")
    ElasticASTFeatureExtractor().save_pretrained(tmp_path / "model")
    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    for index, seconds in enumerate((3.0, 7.5, 27.0, 60.0, 1.0)):
        folder = audio / "sub" if index % 2 else audio
        soundfile.write(folder / f"clip{index}.wav", clips[seconds], 16000, subtype="PCM_16")
    (audio / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")  # undecodable
    soundfile.write(audio / "empty.flac", np.zeros(0, np.float32), 16000)  # no samples
    (audio / "notes.txt").write_text("not audio, not searched")
    return tmp_path / "model", audio


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_with_broken_files_plots_and_resume(setup, tmp_path, capsys):
    model, audio = setup
    out = tmp_path / "results.jsonl"
    assert cli(["classify", str(model), str(audio), "--output", str(out), "--timeline", "--window", "5", "--hop",
                "2.5", "--top-k", "2", "--plot", str(tmp_path / "plots")]) == 1  # exit 1: two files failed
    err = capsys.readouterr().err
    records = read_jsonl(out)
    sources = [r["source"] for r in records]
    assert sources == sorted(str(p) for p in audio.rglob("*") if p.suffix in (".wav", ".flac"))
    errors = {os.path.basename(r["source"]): r["error"] for r in records if "error" in r}
    assert set(errors) == {"broken.wav", "empty.flac"} and "cannot decode" in errors["broken.wav"]
    assert "skipped" in err and "broken.wav" in err and "audio-s" in err  # reported; tqdm counts audio-seconds
    good = [r for r in records if "error" not in r]
    assert len(good) == 5 and all(len(r["top"]) == 2 and r["segments"] and r["windows"] for r in good)
    longest = max(good, key=lambda r: r["duration"])
    assert longest["duration"] == pytest.approx(60.0) and len(longest["windows"]) == 23  # 4.96-s windows every 2.56 s
    assert "compute_seconds" not in longest
    assert len(list((tmp_path / "plots").glob("*.png"))) == 5

    # Resume: a second run skips every finished file (errors are retried) and leaves the output as it was.
    first = out.read_text()
    lines = first.splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:40])  # as if killed while writing the fourth entry
    torn = lines[3][:40]
    assert cli(["classify", str(model), str(audio), "--output", str(out), "--timeline", "--window", "5", "--hop",
                "2.5", "--top-k", "2"]) == 1
    err = capsys.readouterr().err
    assert "2 of 7 files already done" in err  # broken.wav (an error) is retried
    assert "cut off a torn last record" in err and (tmp_path / "results.jsonl.torn").read_text() == torn + "\n"
    assert out.read_text() == first


def test_csv_output(setup, tmp_path):
    model, audio = setup
    out = tmp_path / "results.csv"
    assert cli(["classify", str(model), str(audio / "clip*.wav"), str(audio / "broken.wav"), "--output", str(out),
                "--timeline", "--top-k", "3"]) == 1
    rows = list(csv.DictReader(out.open()))
    assert {r["kind"] for r in rows} == {"top", "segment", "error"}
    assert len([r for r in rows if r["kind"] == "top"]) == 3 * 3  # clip0, clip2, clip4 match the glob at the top
    assert [r["source"] for r in rows if r["kind"] == "error"] == [str(audio / "broken.wav")]
    before = out.read_text()
    assert cli(["classify", str(model), str(audio / "clip*.wav"), str(audio / "broken.wav"), "--output", str(out),
                "--timeline", "--top-k", "3"]) == 1
    assert out.read_text() == before


def test_accelerate_launch_sharding_equals_one_process(setup, tmp_path):
    model, audio = setup
    common = [str(model), str(audio), "--timeline", "--window", "10"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port()), "-m", "elasticast.classify"]
    done = run_command([*launch, *common, "--output", str(tmp_path / "two.jsonl")], timeout=300, check=False,
                       env_extra={"ACCELERATE_USE_CPU": "true", "PYTHONPATH": os.getcwd()})
    assert done.returncode == 1, done.stderr[-3000:]  # broken.wav and empty.flac failed
    assert not list(tmp_path.glob("two.jsonl.*.part"))  # parts merged and removed
    assert cli(["classify", *common, "--output", str(tmp_path / "one.jsonl")]) == 1
    two, one = read_jsonl(tmp_path / "two.jsonl"), read_jsonl(tmp_path / "one.jsonl")
    assert len(one) == 7, (tmp_path / "one.jsonl").read_text()
    assert [r["source"] for r in two] == [r["source"] for r in one]
    for a, b in zip(two, one):
        assert a.keys() == b.keys()
        if "error" in a:
            assert a == b
            continue
        assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
        np.testing.assert_allclose([w["scores"] for w in a["windows"]], [w["scores"] for w in b["windows"]],
                                   atol=1e-6, rtol=0)
        assert [(s["start"], s["end"], s["label"]) for s in a["segments"]] == \
            [(s["start"], s["end"], s["label"]) for s in b["segments"]]


def test_bad_arguments_have_clear_errors(setup, tmp_path, capsys):
    model, audio = setup
    with pytest.raises(SystemExit) as exit_:
        cli(["classify", str(model), str(audio / "missing*.wav"), "--output", str(tmp_path / "o.jsonl")])
    assert exit_.value.code == 2 and "neither a file, a folder nor a glob" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli(["classify", str(model), str(audio), "--output", str(tmp_path / "out.txt")])
    assert exit_.value.code == 2 and "must end in .jsonl or .csv" in capsys.readouterr().err
