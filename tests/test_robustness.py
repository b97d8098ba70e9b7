"""Reliability by fault injection: hostile file names, torn lines, SIGKILL and disk-full runs that are resumed, two
runs on one output, wrong weights, NaN/Inf and mislabelled audio, training folders (issue "Reliability").

Every case of the issue's "What was seen" list is one test (or one block of one) below; the app's cases are in
tests/test_app.py (they need the served page), the ONNX runtime's in tests/test_onnx.py (they reuse its export)."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elasticast import ElasticASTConfig, ElasticASTFeatureExtractor, ElasticASTForAudioClassification
from elasticast.cli import main as cli
from elasticast.output_files import OutputError, ResultFile, output_lock, source_bytes, source_fields, source_key

LABELS = ["tone", "noise", "chirp"]
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
FIELDS = ["source", "kind", "label", "score", "start", "end", "duration", "error", "warning", "source_hex"]
ROOT = str(Path(__file__).resolve().parents[1])
HOSTILE = [b"x\xff.wav", "a\u2028b.wav".encode(), "c\u0085d.wav".encode(), b"new\nline.wav", b'q"uo,te\r.wav',
           "caf\u00e9 \U0001f600.wav".encode()]


# ------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test of this module at one thread (see `one_thread`)."""


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    config = ElasticASTConfig(**TINY, num_labels=3, id2label=dict(enumerate(LABELS)),
                              label2id={k: i for i, k in enumerate(LABELS)})
    import torch

    torch.manual_seed(0)
    ElasticASTForAudioClassification(config).save_pretrained(folder)
    ElasticASTFeatureExtractor().save_pretrained(folder)
    return folder


def clip(seconds: float, seed: int, rate: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * (300 + 100 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def write_clips(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        soundfile.write(folder / f"clip{index:02d}.wav", clip(0.5 + 0.25 * (index % 3), index), 16000,
                        subtype="PCM_16")
    return folder


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line]


def classify_command(model: Path, inputs: Path, output: Path) -> list[str]:
    return [sys.executable, "-m", "elasticast.classify", str(model), str(inputs), "--output", str(output),
            "--timeline", "--window", "0.5"]


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


# -------------------------------------------------------------------------------- 1. names that break the output
names = st.one_of(
    st.binary(min_size=1, max_size=40).filter(lambda b: b"\x00" not in b),
    st.text(min_size=1, max_size=30).filter(lambda t: "\x00" not in t).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# allow_subnormal=False: an earlier in-process training run sets torch.set_flush_denormal(True) (process-wide), and
# hypothesis refuses to draw subnormal floats where the CPU flushes them.
@given(raw=st.lists(names, min_size=1, max_size=4, unique=True), cut=st.floats(0, 1, allow_subnormal=False),
       suffix=st.sampled_from([".jsonl", ".csv"]))
def test_any_name_round_trips_and_a_cut_file_keeps_its_whole_records(tmp_path, raw, cut, suffix):
    """Any bytes or Unicode (line separators, quotes, newlines, non-UTF-8) written by the writer parse back to the
    exact bytes; a file cut anywhere parses to its whole records plus one torn tail."""
    results = ResultFile(tmp_path / f"out{suffix}", FIELDS)
    pieces = []
    for index, name in enumerate(raw):
        fields = source_fields(os.fsdecode(name))
        assert source_bytes(fields) == name
        if results.csv:
            rows = [{**fields, "kind": "top", "label": "tone", "score": 0.5},
                    {**fields, "kind": "segment", "label": "a\nb", "score": 0.25, "start": 0, "end": 1}]
        else:
            rows = [{**fields, "top": [{"label": "tone", "score": 0.5}], "n": index}]
        pieces.append(results.encode(rows))
    data = results.header() + b"".join(pieces)
    if not results.csv:
        assert data.isascii()  # no raw U+2028/U+0085 for a line splitter to trip on
    parsed, torn = results.parse(data)
    assert torn == b"" and [source_bytes(row) for _, _, row in parsed if row.get("kind") != "segment"] == raw
    assert [key for key, _, _ in parsed][:: 2 if results.csv else 1] == [os.fsdecode(n) for n in raw]

    position = int(cut * len(data))
    whole = sum(1 for end in np.cumsum([len(results.header())] + [len(p) for p in pieces])[1:] if end <= position)
    if position < len(results.header()):
        return
    parsed, torn = results.parse(data[:position])
    keys = list(dict.fromkeys(key for key, _, _ in parsed))
    assert keys[:whole] == [os.fsdecode(n) for n in raw[:whole]]
    assert len(keys) <= whole + 1 and b"".join(p for _, p, _ in parsed) + torn == data[len(results.header()):position]


def test_hostile_names_through_the_cli_jsonl_and_csv(model, tmp_path, capsys):
    """Non-UTF-8 bytes, U+2028, U+0085, a newline, quotes and a comma in names: the output parses line by line (JSONL)
    or with the csv module, holds each file once with its exact bytes, and a second run finds every file done."""
    folder = tmp_path / "in"
    folder.mkdir()
    for index, name in enumerate(HOSTILE):
        soundfile.write(os.path.join(os.fsencode(folder), name), clip(0.5, index), 16000, subtype="PCM_16")
    expected = sorted(os.path.join(os.fsencode(folder), name) for name in HOSTILE)
    for suffix in (".jsonl", ".csv"):
        out = tmp_path / f"out{suffix}"
        assert cli(["classify", str(model), str(folder), "--output", str(out)]) == 0
        if suffix == ".jsonl":
            records = jsonl(out)
            assert len(records) == len(HOSTILE) and all("error" not in r for r in records)
            assert [source_bytes(r) for r in records] == expected
        else:
            with open(out, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            assert [source_bytes(r) for r in rows if r["kind"] == "top"][::3] == expected
        before = out.read_bytes()
        assert cli(["classify", str(model), str(folder), "--output", str(out)]) == 0
        assert f"{len(HOSTILE)} of {len(HOSTILE)} files already done" in capsys.readouterr().err
        assert out.read_bytes() == before


# ------------------------------------------------------------------------------ 2. torn lines, SIGKILL, disk full
@pytest.fixture(scope="module")
def batch(model, tmp_path_factory) -> tuple[Path, bytes]:
    """Twelve short clips and their uninterrupted JSONL output."""
    folder = write_clips(tmp_path_factory.mktemp("batch") / "in", 12)
    out = folder.parent / "uninterrupted.jsonl"
    assert cli(["classify", str(model), str(folder), "--output", str(out), "--timeline", "--window", "0.5"]) == 0
    return folder, out.read_bytes()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_point_then_resume_equals_uninterrupted(model, batch, tmp_path, seed, capsys):
    """Also: while the first run works, a second run on the same output is refused, naming the first's process."""
    folder, uninterrupted = batch
    out = tmp_path / "out.jsonl"
    rng = random.Random(seed)
    process = subprocess.Popen(classify_command(model, folder, out), env=environment(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    part, wanted = Path(f"{out}.0.part"), rng.randrange(1, 11)
    lock = Path(f"{out}.lock")
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text()) and time.time() < deadline:
        time.sleep(0.02)
    with pytest.raises(SystemExit) as exit_:
        cli(["classify", str(model), str(folder), "--output", str(out), "--timeline", "--window", "0.5"])
    assert exit_.value.code == 2
    assert f"is being written by process {process.pid}" in capsys.readouterr().err
    while time.time() < deadline and process.poll() is None:  # until `wanted` records are written ...
        if part.exists() and part.read_bytes().count(b"\n") >= wanted:
            break
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.3))  # ... then a random moment later (mid-file, mid-write)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read()[-2000:]
    assert cli(["classify", str(model), str(folder), "--output", str(out), "--timeline", "--window", "0.5"]) == 0
    assert out.read_bytes() == uninterrupted
    assert not list(tmp_path.glob("out.jsonl.*.part"))
    with output_lock(out):  # the killed holder's lock went with it (the kernel drops it), as did the resumer's
        pass


def test_disk_full_then_resume_equals_full_output(model, batch, tmp_path):
    """`prlimit --fsize` stops writes part-way: exit 1 with a message, nothing torn, and the resumed run completes."""
    folder, uninterrupted = batch
    out = tmp_path / "out.jsonl"
    limit = len(uninterrupted) // 2
    run = subprocess.run(["prlimit", f"--fsize={limit}", *classify_command(model, folder, out)], env=environment(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "cannot write" in run.stderr and "run the same command again" in run.stderr
    part = Path(f"{out}.0.part")
    kept = part.read_bytes()
    assert 0 < len(kept) <= limit and kept.endswith(b"\n")  # whole records only: the failed write was cut back
    assert uninterrupted.startswith(kept)
    assert cli(["classify", str(model), str(folder), "--output", str(out), "--timeline", "--window", "0.5"]) == 0
    assert out.read_bytes() == uninterrupted


def test_torn_last_line_is_cut_reported_and_recomputed(model, batch, tmp_path, capsys):
    folder, uninterrupted = batch
    out = tmp_path / "out.jsonl"
    lines = uninterrupted.split(b"\n")
    out.write_bytes(b"\n".join(lines[:5]) + b"\n" + lines[5][:30])  # disk full in the middle of the sixth record
    assert cli(["classify", str(model), str(folder), "--output", str(out), "--timeline", "--window", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "cut off a torn last record (30 bytes" in err and "5 of 12 files already done" in err
    assert out.read_bytes() == uninterrupted
    assert Path(f"{out}.torn").read_bytes() == lines[5][:30] + b"\n"  # kept, not merged


def test_damaged_output_and_bad_parts_are_reported_not_trusted(model, batch, tmp_path, capsys):
    folder, uninterrupted = batch
    lines = uninterrupted.split(b"\n")
    out = tmp_path / "out.jsonl"
    # a damaged record in the middle of the output: refused, the file left as it is
    out.write_bytes(lines[0] + b"\n" + b"{garbage\n" + lines[1] + b"\n")
    damaged = out.read_bytes()
    with pytest.raises(SystemExit) as exit_:
        cli(["classify", str(model), str(folder), "--output", str(out)])
    assert exit_.value.code == 2 and "line 2: not a result record" in capsys.readouterr().err
    assert out.read_bytes() == damaged
    # parts: one pointing at a device, one with garbage, one good → the good one is merged, the others moved aside
    out.unlink()
    Path(f"{out}.0.part").symlink_to("/dev/zero")
    Path(f"{out}.1.part").write_bytes(b"\x00\x01not json\n")
    Path(f"{out}.2.part").write_bytes(b"".join(line + b"\n" for line in lines[:3]))
    assert cli(["classify", str(model), str(folder), "--output", str(out), "--timeline", "--window", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "out.jsonl.0.part: not merged" in err and "not a regular file" in err
    assert "out.jsonl.1.part: not merged" in err and "3 of 12 files already done" in err
    assert out.read_bytes() == uninterrupted
    assert len(list(tmp_path.glob("out.jsonl.*.bad"))) == 2


# ------------------------------------------------------------------------------------------------- 4. wrong weights
def test_weights_of_another_architecture_are_refused_everywhere(model, tmp_path, capsys):
    from transformers import ASTConfig, ASTForAudioClassification

    from elasticast.evaluation import load_checkpoint
    from elasticast.inference import ElasticASTClassifier
    from elasticast.loading import WeightsMismatchError
    from elasticast.onnx_export import load_for_export

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (wrong / name).write_bytes((model / name).read_bytes())
    ast = ASTForAudioClassification(ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                              intermediate_size=64, num_labels=3))
    ast.save_pretrained(tmp_path / "ast")
    (wrong / "model.safetensors").write_bytes((tmp_path / "ast" / "model.safetensors").read_bytes())
    for load in (ElasticASTClassifier.from_pretrained, lambda p: load_checkpoint(str(p), 2048, "frame_shift"),
                 load_for_export):
        with pytest.raises(WeightsMismatchError, match=r"missing \(would be random\): .*elasticast\.") as error:
            load(wrong)
        assert "unexpected (ignored): audio_spectrogram_transformer." in str(error.value)
    clips = write_clips(tmp_path / "in", 1)
    with pytest.raises(SystemExit) as exit_:
        cli(["classify", str(wrong), str(clips), "--output", str(tmp_path / "o.jsonl")])
    assert exit_.value.code == 2 and "does not hold ElasticASTForAudioClassification weights" in \
        capsys.readouterr().err
    pytest.importorskip("gradio", reason="the app extra")
    from elasticast.app import build_app

    with pytest.raises(WeightsMismatchError):
        build_app(wrong)
    assert build_app(model).analytics_enabled is False  # and no outside host contacted at start


# ---------------------------------------------------------------------------------------------- 5/6/11. the audio
def patch_flac_total_samples(path: Path, total: int) -> None:
    """Rewrites STREAMINFO's 36-bit total-samples field (bytes 18-25 hold rate/channels/bits/total)."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # the first metadata block is STREAMINFO
    field = int.from_bytes(data[18:26], "big")
    data[18:26] = ((field & ~((1 << 36) - 1)) | total).to_bytes(8, "big")
    path.write_bytes(bytes(data))


def test_audio_integrity(model, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    nan = clip(1.0, 0)
    nan[12000] = np.nan
    soundfile.write(folder / "nan.wav", nan, 16000, subtype="FLOAT")
    huge = clip(1.0, 1).astype(np.float64)
    huge[4000] = 1e200
    soundfile.write(folder / "huge.wav", huge, 16000, subtype="DOUBLE")
    soundfile.write(folder / "slow.wav", clip(1.0, 2, rate=500), 500, subtype="PCM_16")
    soundfile.write(folder / "header.flac", clip(2.0, 3), 16000)
    patch_flac_total_samples(folder / "header.flac", 8000)  # the header says 0.5 s of a 2-s stream
    soundfile.write(tmp_path / "whole.wav", clip(2.0, 4), 16000, subtype="PCM_16")
    data = (tmp_path / "whole.wav").read_bytes()
    (folder / "truncated.wav").write_bytes(data[: 44 + 16000 * 2])  # the header says 2 s, 1 s is left
    out = tmp_path / "out.jsonl"
    with pytest.warns(UserWarning, match="header announces"):
        assert cli(["classify", str(model), str(folder), "--output", str(out)]) == 1
    records = {Path(r["source"]).name: r for r in jsonl(out)}
    assert "sample 12000 (at 0.750 s) is NaN or Inf" in records["nan.wav"]["error"]
    assert "sample 4000 (at 0.250 s) is NaN or Inf" in records["huge.wav"]["error"]
    assert "500 Hz is below 1000 Hz" in records["slow.wav"]["error"]
    flac = records["header.flac"]
    assert flac["duration"] == pytest.approx(2.0) and flac["header_duration"] == pytest.approx(0.5)
    assert "header announces 0.500 s but 2.000 s" in flac["warning"]
    wav = records["truncated.wav"]
    assert wav["duration"] == pytest.approx(1.0) and wav["header_duration"] == pytest.approx(2.0)
    err = capsys.readouterr().err
    assert "warning:" in err and "truncated.wav" in err and "3 failed" in err

    fe = ElasticASTFeatureExtractor()
    with pytest.raises(TypeError, match="Got NoneType instead of audio"):
        fe(None)
    with pytest.raises(TypeError, match="whole number of Hz such as 16000, got '16000'"):
        fe(clip(1.0, 0), sampling_rate="16000")
    for rate in (1, 999, 16000.5, float("nan")):
        with pytest.raises(ValueError, match="sampling_rate"):
            fe(clip(0.5, 0), sampling_rate=rate)
    with pytest.raises(ValueError, match="beyond float32's range"):
        fe(huge, sampling_rate=16000)
    from transformers import pipeline

    classify = pipeline("audio-classification", model=str(model))
    with pytest.raises(ValueError, match="NaN or Inf"):
        classify(nan)
    from elasticast.inference import ElasticASTClassifier

    classifier = ElasticASTClassifier.from_pretrained(model)
    with pytest.raises(ValueError, match="below 1000 Hz"):
        classifier.classify(clip(1.0, 0, rate=8), sampling_rate=8)


def test_truncated_mp3_is_never_silent(model, tmp_path):
    import shutil

    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is needed (the project's set-up installs it)")
    whole = tmp_path / "whole.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=6", "-ar", "16000",
                    "-c:a", "libmp3lame", "-b:a", "64k", str(whole)], check=True)
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    from elasticast.inference import ElasticASTClassifier

    classifier = ElasticASTClassifier.from_pretrained(model)
    assert classifier.classify(str(whole)).warning is None  # an intact file: header and decoded length agree
    with pytest.warns(UserWarning, match="header announces"):
        result = classifier.classify(str(cut))
    assert result.header_duration == pytest.approx(6.0, abs=0.1) and result.duration < 3.0


# ------------------------------------------------------------------------------------- 9. arguments, exit status
@pytest.mark.parametrize("argv, message", [
    (["--window", "0"], "--window must be > 0 seconds"),
    (["--hop", "-1"], "--hop must be > 0 seconds"),
    (["--compression", "0.5"], "--compression must be a finite number ≥ 1"),
    (["--compression", "nan"], "--compression must be a finite number ≥ 1"),
    (["--threshold", "1.5"], "--threshold must be a score in [0, 1]"),
    (["--top-k", "0"], "--top-k must be an integer ≥ 1"),
    (["--output", "{tmp}"], "is a folder; name a file in it"),
    (["--output", "{tmp}/notes.jsonl"], "is not an `elasticast classify` result file"),
    (["--output", "{tmp}/missing/o.jsonl"], "does not exist; create it first"),
    (["--output", "/proc/o.jsonl"], "cannot write in /proc"),
])
def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys, argv, message):
    (tmp_path / "notes.jsonl").write_text("my own notes\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        cli(["classify", str(tmp_path / "no-model-needed"), str(tmp_path), *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert (tmp_path / "notes.jsonl").read_text() == "my own notes\n"


def test_exit_status_is_documented_in_help(capsys):
    with pytest.raises(SystemExit):
        cli(["classify", "--help"])
    text = capsys.readouterr().out
    assert "0  every file was classified" in text and "1  a file failed" in text and "2  usage error" in text


def test_all_files_failing_exits_1(model, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.wav").write_bytes(b"RIFF....garbage")
    assert cli(["classify", str(model), str(tmp_path / "in"), "--output", str(tmp_path / "o.jsonl")]) == 1


# ------------------------------------------------------------------------------------------ 7. training folders
def test_training_folders(tmp_path, capsys):
    from test_training import TINY_RUN, write_audiofolder

    from elasticast.training import build_parser
    from elasticast.training.arguments import validate

    data = write_audiofolder(tmp_path / "tones", 9)
    out = tmp_path / "run"

    def args(*extra):
        return build_parser().parse_args(["--dataset", str(data), "--output-dir", str(out), *TINY_RUN, *extra])

    for bad in ("0", "-3"):
        for flag in ("--epochs", "--max-steps"):
            with pytest.raises(SystemExit) as exit_:
                args(flag, bad)
            assert exit_.value.code == 2 and "must be ≥ 1" in capsys.readouterr().err
    # a folder holding a run: refused without --resume / --overwrite-output-dir
    (out / "checkpoints" / "step_00000004").mkdir(parents=True)
    (out / "eval_results.json").write_text(json.dumps({"metric": "accuracy", "value": 1.0}))
    (out / "model.safetensors").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds a run already .*--overwrite-output-dir"):
        validate(args())
    with pytest.raises(ValueError, match="is not a checkpoint of --output-dir .* continues in its own folder"):
        validate(build_parser().parse_args(["--dataset", str(data), "--output-dir", str(tmp_path / "new"),
                                            "--resume", str(out / "checkpoints" / "step_00000004")]))
    with pytest.raises(ValueError, match="pass one"):
        validate(args("--resume", "--overwrite-output-dir"))
    # --overwrite-output-dir: the old run's files go first; every epoch stays in metrics.json
    from accelerate.state import AcceleratorState

    from elasticast.training.loop import train

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        train(args("--overwrite-output-dir", "--epochs", "2", "--eval-split", "none", "--save-steps", "0"))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert not (out / "eval_results.json").exists() and not (out / "checkpoints" / "step_00000004").exists()
    assert (out / "notes.txt").read_text() == "mine"  # not a run file: kept
    metrics = json.loads((out / "metrics.json").read_text())
    assert [record["epoch"] for record in metrics["history"]] == [0, 1] and metrics["epochs"] == 2
    assert "removed" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- writer internals
def test_writer_internals(tmp_path):
    results = ResultFile(tmp_path / "o.jsonl", FIELDS)
    with pytest.raises(ValueError):  # a bare NaN is never written
        results.encode([{"source": "a", "score": float("nan")}])
    assert source_key({"source": "x", "source_hex": b"y\xff".hex()}) == os.fsdecode(b"y\xff")
    (tmp_path / "o.jsonl").write_bytes(b'{"source": "a"}\n[1, 2]\n')
    with pytest.raises(OutputError, match="line 2"):
        results.read()
    csv_file = ResultFile(tmp_path / "o.csv", FIELDS)
    (tmp_path / "o.csv").write_text("a,b\n")
    with pytest.raises(OutputError, match="header"):
        csv_file.read()
