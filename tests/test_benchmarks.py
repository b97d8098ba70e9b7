"""The benchmark suite (benchmarks/) at tiny size: it runs end to end and its counts are right. No timing thresholds."""

import json
import math

import numpy as np
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import run
from benchmarks.common import elasticast_flops, voxceleb_like_durations
from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification, PackedLayout


def numbers(value):
    """Every float in a nested record."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in numbers(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in numbers(v)]
    return [value] if isinstance(value, float) else []


def test_suite_runs_at_tiny_size(tmp_path, capsys):
    out, plot = tmp_path / "results.json", tmp_path / "scaling.png"
    record = run.main(["--device", "cpu", "--size", "tiny", "--threads", "1", "--out", str(out), "--plot", str(plot)])
    printed = capsys.readouterr().out

    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    assert record["table"] in printed and printed.lstrip().startswith("{")
    results = record["results"]
    assert set(results) == set(run.ITEMS)
    assert all(math.isfinite(x) for x in numbers(results))
    table_items = {line.split("|")[1].strip() for line in record["table"].splitlines()[2:]}
    assert table_items == {str(number) for number, _ in run.ITEMS.values()}

    use = results["utilisation"]
    assert use["gemm_gflops"] > 0 and use["forward_s"] > 0 and use["forward_backward_s"] > 0
    assert use["dense_row_attention_gflop_forward"] >= use["useful_gflop_forward"] > 0

    attention = results["attention"]
    assert attention["precision"] == "fp32" and [p["clips"] for p in attention["sweep"]] == [2, 4]
    for point in attention["sweep"]:
        assert set(point["forward_ms"]) == set(point["forward_backward_ms"]) == {
            "sdpa_grouped", "eager_grouped", "masked_sdpa", "per_clip_loop"
        }  # flex and torch_varlen need CUDA: said so in the record
        assert set(point["not_run"]) == {"flex", "torch_varlen"}
        assert point["segments"] >= point["clips"] and point["tokens"] <= point["rows"] * point["row_length"]
        assert max(point["max_abs_diff_output"].values()) < 1e-4
        assert max(point["max_abs_diff_grad"].values()) < 1e-4

    versus = results["versus_ast"]
    assert versus["ast_windows"] >= versus["clips"]
    assert all(versus[name]["audio_s_per_s"] > 0 for name in ("ast_stride10", "ast_stride16"))
    assert all(versus[name]["training_tokens_per_s"] > 0 for name in ("ast_stride10", "ast_stride16"))
    assert versus["elasticast_training_tokens_per_s"] > 0 and versus["peak_mib"] is None  # no GPU memory on CPU

    features = results["features"]
    assert features["float64"]["max_abs_diff"] <= 1e-6 and features["float64"]["speedup"] > 0
    assert features["float32"]["max_abs_diff"] <= 2e-4 and features["float32"]["speedup"] > 0

    usage = results["packing"]["results"]
    assert {r["batch_size"] for r in usage} == {None, 12, 64}
    remainder = results["packing"]["sub_patch_remainder_percent"]
    assert 0 < remainder < 2  # ≤ 15 of each clip's frames (1-30 s clips)
    batcher = results["packing"]["training_batcher"]
    for r in [*usage[1:], batcher]:  # ElasticAST cuts exactly the sub-patch remainder, nothing more
        assert 0 < r["useful_percent"] <= 100 and abs(r["cut_percent"] - remainder) < 1e-9, r
    assert usage[0]["cut_percent"] > 2  # the fixed-length AST cuts the long clips of the mix
    assert batcher["rows"] > 0

    for points in results["scaling"]["points"].values():
        assert [p["seconds"] for p in points] == [1.0, 40.0]
        assert all(p["time_s"] > 0 and p["peak_mib"] > 0 for p in points)
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_flop_count_matches_torch_flop_counter(tiny_config):
    """The useful-FLOP formula equals what torch counts for an eager forward on packed rows."""
    config = tiny_config()
    model = ElasticASTForAudioClassification._from_config(config, attn_implementation="eager").eval()
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(int(s * 16000)).astype(np.float32) for s in (1.0, 3.3, 7.0, 0.5)]
    batch = ElasticASTFeatureExtractor()(
        waves, sampling_rate=16000, packing=True, max_tokens_per_row=512, return_tensors="pt"
    )
    layout = PackedLayout(batch["segment_ids"], batch["clip_ids"])
    assert layout.num_segments == 4 and layout.shape[0] > 1
    with FlopCounterMode(display=False) as counter:
        model(**batch)
    assert elasticast_flops(config, layout.segment_lengths) == counter.get_total_flops()

    rows, length = layout.shape
    dense = elasticast_flops(config, layout.segment_lengths, attention_lengths=[length] * rows)
    squares = sum(n * n for n in layout.segment_lengths)
    assert dense - counter.get_total_flops() == 4 * config.hidden_size * config.num_hidden_layers * (
        rows * length * length - squares
    )


def test_mix_is_long_tailed_within_bounds():
    durations = voxceleb_like_durations(2000)
    assert durations.min() >= 1 and durations.max() <= 30
    assert np.mean(durations) > np.median(durations)  # right tail


def test_gpu_items_dry_run_and_their_gpu_rows(tmp_path):
    """Items 1-3 as `--device cuda` runs them, dry-run on CPU at tiny size (fast); then their table rows for a
    GPU-shaped record (device, bf16, peak memory per candidate) use the GPU goals of issue 11."""
    record = run.main(["--device", "cpu", "--size", "tiny", "--threads", "1", "--only", *run.GPU_ITEMS,
                       "--out", str(tmp_path / "gpu.json")])
    assert list(record["results"]) == run.GPU_ITEMS and record["device"] == "cpu"
    results = json.loads(json.dumps(record["results"]))
    use, versus, attention = results["utilisation"], results["versus_ast"], results["attention"]
    assert use["precision"] == versus["precision"] == attention["precision"] == "fp32" and use["peak_mib"] is None

    for result in (use, versus, attention):  # as a GPU run records them
        result.update(device="cuda", precision="bf16")
    use["peak_mib"] = {"gemm": 1.0, "forward": 2.0, "forward_backward": 3.0}
    versus["peak_mib"] = {name: 1.0 for name in versus["times_s"]}
    for point in attention["sweep"]:
        for key in ("forward_ms", "forward_backward_ms"):
            point[key]["torch_varlen"] = point[key]["sdpa_grouped"] / 2
        point["forward_backward_peak_mib"] = {name: 1.0 for name in point["forward_backward_ms"]}
    table = run.markdown_table({"results": results})
    assert "bf16 GEMM" in table and "| ≥ 0.50 |" in table and "| ≥ 0.40 |" in table
    assert "| ≥ 1.4x |" in table and "| ≥ 2.5x |" in table and "tokens/s ratio ≥ 1.0" in table
    assert table.count("sdpa grouped ÷ varlen") == 2 * len(attention["sweep"]) and "2.00 (masked" in table
    assert "Peak GPU memory, MiB (forward, forward+backward) | 2, 3" in table
    assert "AST-16 1 / 1" in table and "peak GPU MiB" in table


def test_precision_and_attention_share_benchmarks_at_tiny_size(tmp_path):
    """The CPU-precision benchmarks run end to end at tiny size and write records the pages can render."""
    from benchmarks import attention_share, pages, precision
    from elasticast.precision import bf16_supported

    record = precision.main(["--size", "tiny", "--threads", "1", "--stream-seconds", "5", "--repeats", "1",
                             "--out", str(tmp_path / "precision.json")])
    assert json.loads((tmp_path / "precision.json").read_text())["table"] == record["table"]
    point = record["results"]["threads"]["1"]
    kinds = precision.candidates()
    assert ("pytorch-bf16" in kinds) == bf16_supported()
    assert set(point["clip"]) == set(kinds)
    assert set(point["stream"]) == {*kinds, "onnxruntime-fp32-opset18", "onnxruntime-fp32-batched"}
    assert all(v["audio_s_per_s"] > 0 and math.isfinite(v["peak_rise_mib"]) for v in point["stream"].values())
    assert point["clip"]["onnxruntime-fp32"]["max_abs_score_diff_vs_fp32"] < 1e-5
    assert point["clip"]["pytorch-int8"]["max_abs_score_diff_vs_fp32"] < 0.05
    assert "peak rise" in " ".join(record["notes"])

    share = attention_share.main(["--size", "tiny", "--threads", "1", "--out", str(tmp_path / "share.json")])
    rows = share["results"]["rows"].values()
    assert {r["precision"] for r in rows} == {"fp32", "int8", *(["bf16"] if bf16_supported() else [])}
    assert all(0 < r["attention_share"] <= 1 and r["tokens"] > 0 for r in rows)
    longest = max(r["seconds"] for r in rows)
    assert all(r["tokens"] > 2 * s["tokens"] for r in rows for s in rows
               if r["precision"] == s["precision"] and r["seconds"] == longest and s["seconds"] == 10.0)
    for name, written in (("precision_tiny", record), ("attention_share_tiny", share)):
        assert written["title"] in pages.render(name, written)
