"""The main job (`python -m examples.demo`, `make demo`): dataset construction, results files, and a quick end-to-end run."""

import argparse
import csv
import json

import numpy as np

from examples import demo


def test_conversation_label_is_the_speaker_who_talks_most():
    rng = np.random.default_rng(0)
    # Each speaker's "speech" is a constant level, so every sample says who produced it.
    pool = {name: [np.full(int(s * 16000), i + 1, np.float32) for s in (1.0, 2.5, 4.0)]
            for i, name in enumerate(demo.SPEAKERS)}
    levels = {i + 1: name for i, name in enumerate(demo.SPEAKERS)}
    for seconds in (1.5, 6.0, 14.0, 29.0):
        for _ in range(10):
            wave, label = demo._conversation(rng, pool, seconds)
            counts = {levels[v]: n for v, n in zip(*np.unique(wave[wave > 0], return_counts=True))}
            assert max(counts, key=counts.get) == label and len(counts) <= 2
            assert seconds - 1.0 < wave.size / 16000 <= seconds  # 1-30 s clips stay within 30 s
            if seconds > 3:
                assert 0.55 < counts[label] / sum(counts.values()) < 0.9


def test_results_table_csv_and_plot(tmp_path):
    results = {"A": {256: 0.5, 512: 0.75}, "B": {256: 0.25, 512: 1.0}}
    table = demo.write_results(tmp_path, results, [256, 512])
    assert "| 512 | 5.12 | 0.750 | 1.000 |" in table
    with open(tmp_path / "results.csv") as f:
        assert list(csv.reader(f))[1] == ["256", "2.56", "0.5000", "0.2500"]
    assert (tmp_path / "results.png").stat().st_size > 10_000


def quick_args(tmp_path, **chosen) -> argparse.Namespace:
    """`python -m examples.demo --quick` arguments into `tmp_path/demo` (sizes 0: the quick run picks them), plus `chosen`."""
    return argparse.Namespace(output_dir=str(tmp_path / "demo"), train_clips=0, test_clips=0, epochs=0, hidden_size=0,
                              num_layers=0, num_heads=0, learning_rate=5e-4, processes=1, seed=0, quick=True, **chosen)


def test_quick_demo_runs_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = quick_args(tmp_path, lengths="256,1024", compressions="1", axis="length")
    assert demo.run(args) == 0
    out = tmp_path / "demo"
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["frames"] for r in rows] == ["256", "1024"]
    assert set(rows[0]) == {"frames", "seconds", "ElasticAST (native)", "AST (1024 frames, grid resized to L)",
                            "AST (1024 frames, cut/pad to 1024)", "log-mel stats + LR"}
    assert "## Elasticity: length" in (out / "elasticast" / "README.md").read_text()
    with open(out / "data" / "train" / "metadata.csv") as f:
        labels = {r["label"] for r in csv.DictReader(f)}
    assert labels <= set(demo.SPEAKERS) and len(labels) > 1
    assert json.loads((out / "elasticast" / "metrics.json").read_text())["summary"]["clips"] == 48
    assert "Who speaks most?" in capsys.readouterr().out
    record = json.loads((out / "record_length.json").read_text())
    assert record["command"].startswith("python -m examples.demo --quick --output-dir") and record["axis"] == "length"
    assert record["machine"]["cpus"] >= 1 and record["machine"]["gemm_gflops"] > 0 and record["wall_seconds"] > 0
    assert abs(record["results"]["ElasticAST (native)"]["256"] - float(rows[0]["ElasticAST (native)"])) < 1e-4

