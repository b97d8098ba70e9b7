"""The GPU script (`scripts/gpu_run.sh`: `scripts/gpu_check.py` + `benchmarks.run --device cuda`) dry-run on CPU at tiny
size, as the device will run it — with only torch, transformers, numpy and their dependencies importable, as on the
GPU machine: both records are written, every check that can run on CPU passes, and what needs CUDA is listed as
skipped with its reason. No timing thresholds."""

import importlib.metadata
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def minimal_site(folder: Path, roots=("torch", "transformers", "numpy")) -> Path:
    """A folder of links to the installed packages `roots` need (their required dependencies, recursively) and nothing
    else: with `python -S` and it as PYTHONPATH, datasets, accelerate, soundfile, soxr, torchcodec... do not import."""
    folder.mkdir()
    seen, todo = set(), list(roots)
    while todo:
        distribution = importlib.metadata.distribution(todo.pop())
        if distribution.name.lower() in seen:
            continue
        seen.add(distribution.name.lower())
        todo += [r.name for r in map(Requirement, distribution.requires or []) if not r.marker or
                 r.marker.evaluate({"extra": ""})]
        for top in {Path(f).parts[0] for f in distribution.files or []} - {"..", "bin"}:
            source = Path(distribution.locate_file(top))
            if source.exists() and not (folder / top).exists():
                (folder / top).symlink_to(source)
    return folder


def test_gpu_run_dry_run_on_cpu(tmp_path):
    site = minimal_site(tmp_path / "site")
    env = {**os.environ, "DEVICE": "cpu", "SIZE": "tiny", "PYTHON": f"{sys.executable} -S", "PYTHONPATH": str(site),
           "OMP_NUM_THREADS": "1", "CHECK_TIMEOUT": "1500", "BENCH_TIMEOUT": "900"}  # a shared CI box can be slow
    for missing in ("datasets", "accelerate", "soundfile", "soxr", "torchcodec", "threadpoolctl"):
        probe = subprocess.run([sys.executable, "-S", "-c", f"import {missing}"], env=env, capture_output=True)
        assert probe.returncode != 0, f"{missing} imports in the minimal environment"
    out = tmp_path / "out"
    process = subprocess.Popen(["bash", str(ROOT / "scripts" / "gpu_run.sh"), str(out)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=2500)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"gpu_run.sh timed out:\n{process.communicate()[0][-5000:]}") from None
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-4000:]}" for p in out.glob("*.log"))
    assert process.returncode == 0, output + logs

    check = json.loads((out / "gpu_check.json").read_text())
    assert check["passed"] and check["command"].startswith("python scripts/gpu_check.py --device cpu --size tiny")
    assert check["machine"]["torch"] and check["machine"]["transformers"] and check["date"]
    assert check["audio"].endswith("chirps_16k.npy")  # no espeak-ng speech prepared: generated harmonics
    ran = {(c["backend"], c["precision"]) for c in check["checks"] if c["check"] == "backend"}
    assert {("eager", "fp32"), ("sdpa", "fp32"), ("flex_attention", "fp32"), ("eager", "bf16"), ("sdpa", "bf16")} <= ran
    skipped = {s["check"]: s["skipped"] for s in check["skipped"]}
    assert "CUDA" in skipped["backend torch_varlen/fp32"] or "no torch_varlen" in skipped["backend torch_varlen/fp32"]
    assert "backward on CPU" in skipped["backend flex_attention/fp32 backward"]
    assert set(skipped) <= {"backend torch_varlen/fp32", "backend torch_varlen/bf16", "backend flex_attention/bf16",
                            "backend flex_attention/fp32 backward", "backend flex_attention/bf16 backward",
                            "fbank device vs cpu", "fbank vs torchaudio"}
    trained = {c["model"]: c for c in check["checks"] if c["check"] == "training"}
    assert set(trained) == {"elasticast", "ast_stride16"} and all(c["ok"] for c in trained.values())

    bench = json.loads((out / "gpu_benchmark.json").read_text())
    assert bench["command"].startswith("python -m benchmarks.run --device cpu --size tiny")
    assert list(bench["results"]) == ["utilisation", "versus_ast", "attention"]
    assert bench["results"]["utilisation"]["precision"] == "fp32"  # bf16 only where a GPU runs it
    assert "| 3 | One training step vs AST stride 16" in output
    values = [bench["results"]["utilisation"]["utilisation_forward"],
              bench["results"]["versus_ast"]["ast_stride16"]["speedup_end_to_end"]]
    assert all(math.isfinite(v) and v > 0 for v in values)
