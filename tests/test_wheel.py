"""The package as users install it: a regular (non-editable) wheel carries the card templates and the metric scripts,
and they load from the installed copy, not from the source tree."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter whose only `elasticast` is the one the wheel installed into `target`.
CHECK = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import elasticast
    from elasticast.hub import CARDS_DIR, render_card
    from elasticast.metrics import load_metric, metric_path

    target = Path(sys.argv[1]).resolve()
    assert Path(elasticast.__file__).resolve().is_relative_to(target), elasticast.__file__
    assert CARDS_DIR.resolve().is_relative_to(target) and Path(metric_path("accuracy")).resolve().is_relative_to(target)
    assert (CARDS_DIR / "app.py").is_file()  # the Space entry point `push` uploads
    import elasticast_cli  # the console script's light package ships beside the model package
    assert Path(elasticast_cli.__file__).resolve().is_relative_to(target)
    entry_points = next(target.glob("elasticast-*.dist-info")).joinpath("entry_points.txt").read_text()
    assert "elasticast = elasticast_cli:main" in entry_points, entry_points

    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification
    from elasticast import ElasticASTConfig, ElasticASTFeatureExtractor, ElasticASTForAudioClassification

    size = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=3)
    ElasticASTForAudioClassification(ElasticASTConfig(**size)).save_pretrained("elastic")
    ElasticASTFeatureExtractor().save_pretrained("elastic")
    ast_config = ASTConfig(**size, frequency_stride=16, time_stride=16, max_length=256)
    ASTForAudioClassification(ast_config).save_pretrained("ast")
    ASTFeatureExtractor(max_length=256).save_pretrained("ast")
    for folder in ("elastic", "ast"):
        Path(folder, "eval_results.json").write_text(json.dumps(
            {"dataset_id": "me/tones", "split": "test", "metric": "accuracy", "value": 0.625}))
    elastic, ast = render_card("elastic", repo_id="me/elastic"), render_card("ast", repo_id="me/ast")
    assert "An [ElasticAST]" in elastic.text and "trust_remote_code=True" in elastic.text, elastic.text
    assert "cut or padded to 256 frames" in ast.text and "trust_remote_code" not in ast.text, ast.text
    assert "| me/tones | test | accuracy | 0.6250 |" in ast.text and "custom_code" not in ast.data.tags

    accuracy = load_metric("accuracy").compute(predictions=[0, 1, 1, 2], references=[0, 1, 0, 0])
    assert accuracy == {"accuracy": 0.5}, accuracy
    # Class 0: its positives rank 1st and 3rd -> AP (1/1 + 2/3) / 2 = 5/6; class 1: its positive ranks 1st -> 1.
    mean_ap = load_metric("mean_average_precision").compute(
        predictions=[[0.9, 0.1], [0.6, 0.8], [0.5, 0.3]], references=[[1, 0], [0, 1], [1, 0]])
    assert abs(mean_ap["mean_average_precision"] - 11 / 12) < 1e-12, mean_ap
    print("wheel ok")
""")


def _run(argv, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, argv))}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def test_wheel_ships_card_templates_and_metrics(tmp_path):
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    source = tmp_path / "source"
    for package in ("elasticast", "elasticast_cli"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "wheels",
          source])
    wheel = next((tmp_path / "wheels").glob("elasticast-*.whl"))
    target = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel])
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    result = _run([sys.executable, "-c", CHECK, target], cwd=work, env=env)
    assert "wheel ok" in result.stdout
