import json

import numpy as np
import soundfile
import torch

from elasticast import ElasticASTFeatureExtractor
from elasticast.cli import main as cli
from elasticast.token_usage import packed_usage, pack_segments, sequential_fill, token_usage


def test_sequential_fill_is_the_papers_order_preserving_packer():
    assert sequential_fill([1200, 1200, 800, 800], 2048) == [[0], [1, 2], [3]]
    assert pack_segments([1200, 1200, 800, 800], 2048) == [[0, 2], [1, 3]]
    usage = packed_usage([[1200], [1200], [800], [800]], 4, 2048, sequential_fill)
    assert usage == {"placed": 4000, "computed": 3 * 2000, "rows": 3}


def test_token_usage_matches_the_feature_extractors_packed_output(tmp_path):
    rng = np.random.default_rng(0)
    seconds = np.concatenate([rng.uniform(0.3, 9.0, 14), rng.uniform(12, 45, 4)])  # long-tailed, some > 30 s
    folder = tmp_path / "data" / "train"
    folder.mkdir(parents=True)
    for i, s in enumerate(seconds):  # a mix of rates: lengths are converted to 16 kHz samples
        rate = 16000 if i % 2 else 22050
        soundfile.write(folder / f"clip{i:02d}.wav", np.zeros(int(s * rate), dtype=np.float32), rate)
    out = tmp_path / "usage.json"
    assert cli(["token-usage", "--dataset", "audiofolder", "--data-dir", str(tmp_path / "data"),
                "--batch-sizes", "6,18", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["num_clips"] == 18
    assert report["command"].startswith("elasticast token-usage --dataset audiofolder --split train")
    assert "--batch-sizes 6,18" in report["command"] and report["table"].startswith("Token usage over 18 clips")
    assert report["machine"]["transformers"] and report["date"]  # token counts: no timings, so no GEMM rate
    by_method = {(r["method"], r["batch_size"]): r for r in report["results"]}

    fe = ElasticASTFeatureExtractor()
    samples = [int(round(len(soundfile.read(p)[0]) / soundfile.info(p).samplerate * 16000))
               for p in sorted(folder.glob("*.wav"))]
    native = [8 * fe.raw_frames(n) / 16 for n in samples]
    ast = by_method[("AST, fixed 1024 frames", None)]
    kept = sum(min(t, 512) for t in native)
    assert abs(ast["padding_percent"] - 100 * (512 * 18 - kept) / (512 * 18)) < 1e-9
    assert abs(ast["cut_percent"] - 100 * (sum(native) - kept) / sum(native)) < 1e-9

    for batch in (6, 18):  # best-fit numbers equal what the feature extractor really lays out
        placed = computed = 0
        for start in range(0, 18, batch):
            waves = [torch.zeros(n) for n in samples[start:start + batch]]
            packed = fe(waves, sampling_rate=16000, packing=True, max_length=3072, return_tensors="pt")
            placed += int((packed["segment_ids"] > 0).sum())
            computed += packed["segment_ids"].numel()
        best = by_method[("ElasticAST, best-fit packing", batch)]
        assert abs(best["padding_percent"] - 100 * (computed - placed) / computed) < 1e-9
        assert abs(best["cut_percent"] - 100 * (sum(native) - placed) / sum(native)) < 1e-9
        sequential = by_method[("ElasticAST, sequential packing", batch)]
        assert sequential["padding_percent"] >= best["padding_percent"] - 1e-9
        assert best["cut_percent"] == sequential["cut_percent"] and best["cut_percent"] < ast["cut_percent"]


def test_without_a_cap_nothing_is_cut_but_the_patch_remainder():
    fe = ElasticASTFeatureExtractor()
    samples = [16000 * 60, 16000 * 3 + 400 + 15 * 160]  # 60 s (windows) and a clip ending on a whole patch
    results = token_usage(samples, fe, batch_sizes=[2], max_length=None)
    native = sum(8 * fe.raw_frames(n) / 16 for n in samples)
    placed = sum(sum(fe.segment_lengths(n, max_tokens_per_row=2048)) for n in samples)
    best = next(r for r in results if r["method"] == "ElasticAST, best-fit packing")
    assert abs(best["cut_percent"] - 100 * (native - placed) / native) < 1e-9 and best["cut_percent"] < 0.5
