"""Push (captured at the HfApi boundary, no push-capable Hub runs offline) and pull over real HTTP from olah."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard

from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification
from elasticast.cli import main as cli

REPO_ID = "elastic-user/tiny-elasticast"
EXPECTED_FILES = {
    "README.md", "config.json", "model.safetensors", "preprocessor_config.json", "modeling_elasticast.py",
    "configuration_elasticast.py", "feature_extraction_elasticast.py", "app.py",
}


@pytest.fixture
def captured_hub(monkeypatch):
    """Replaces the network calls of HfApi with recorders; returns what each call received."""
    calls = {"create_repo": [], "create_commit": []}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"].append({"repo_id": repo_id, **kwargs})

    def create_commit(self, repo_id, operations, **kwargs):
        files = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}
        calls["create_commit"].append({"repo_id": repo_id, "files": files, **kwargs})
        return f"captured commit to {repo_id}"

    def no_download(*args, **kwargs):
        raise AssertionError("the push must not download anything (e.g. an existing card)")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    monkeypatch.setattr(ModelCard, "load", no_download)
    return calls


def trained_like_model(tiny_config, folder: Path):
    labels = ["cat", "dog", "bird"]
    model = ElasticASTForAudioClassification(tiny_config(
        num_labels=3, id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)},
    )).eval()
    model.save_pretrained(folder)
    ElasticASTFeatureExtractor(mean=-5.0, std=4.0).save_pretrained(folder)
    (folder / "eval_results.json").write_text(json.dumps(
        {"dataset_id": "local/espeak-speakers", "split": "test", "metric": "accuracy", "value": 0.75}))
    (folder / "elasticity_length.json").write_text(json.dumps({"axis": "length", "metric": "accuracy", "rows": [
        {"model": "elasticast", "x": 256, "value": 0.6}, {"model": "elasticast", "x": 512, "value": 0.7},
        {"model": "ast-1024", "x": 256, "value": 0.4}, {"model": "ast-1024", "x": 512, "value": 0.5}]}))
    return model


def test_card_metadata_and_tables(tiny_config, tmp_path):
    trained_like_model(tiny_config, tmp_path / "ckpt")
    assert cli(["card", str(tmp_path / "ckpt"), "--repo-id", REPO_ID, "--base-model", "org/base"]) == 0
    card = ModelCard.load(tmp_path / "ckpt" / "README.md")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "audio-classification" and data["library_name"] == "transformers"
    assert {"custom_code", "audio-classification", "elasticast"} <= set(data["tags"])
    assert data["datasets"] == ["local/espeak-speakers"] and data["metrics"] == ["accuracy"]
    assert data["base_model"] == "org/base"
    result = data["model-index"][0]["results"][0]
    assert result["metrics"][0]["value"] == 0.75 and result["dataset"]["type"] == "local/espeak-speakers"
    assert "| 256 | 0.6000 | 0.4000 |" in card.text and "softmax" in card.text
    assert f'model="{REPO_ID}"' in card.text


def test_push_routes_upload_the_same_complete_commit(tiny_config, tmp_path, captured_hub):
    model = trained_like_model(tiny_config, tmp_path / "ckpt")
    assert cli(["push", str(tmp_path / "ckpt"), REPO_ID, "--private"]) == 0
    loaded = ElasticASTForAudioClassification.from_pretrained(tmp_path / "ckpt")
    loaded.push_to_hub(REPO_ID, commit_message="from python")
    model.push_to_hub(REPO_ID, feature_extractor=ElasticASTFeatureExtractor(mean=-5.0, std=4.0))
    assert [c["repo_id"] for c in captured_hub["create_repo"]] == [REPO_ID] * 3
    assert captured_hub["create_repo"][0]["private"] is True
    cli_commit, loaded_commit, model_commit = captured_hub["create_commit"]
    assert EXPECTED_FILES <= set(cli_commit["files"]) and "eval_results.json" in cli_commit["files"]
    for commit in (loaded_commit, model_commit):
        assert EXPECTED_FILES == set(commit["files"])
    assert loaded_commit["commit_message"] == "from python"
    for commit in captured_hub["create_commit"]:
        config = json.loads(commit["files"]["config.json"])
        assert config["auto_map"] == {
            "AutoConfig": "configuration_elasticast.ElasticASTConfig",
            "AutoModel": "modeling_elasticast.ElasticASTModel",
            "AutoModelForAudioClassification": "modeling_elasticast.ElasticASTForAudioClassification",
        }
        preprocessor = json.loads(commit["files"]["preprocessor_config.json"])
        assert preprocessor["auto_map"]["AutoFeatureExtractor"].endswith("ElasticASTFeatureExtractor")
        assert preprocessor["mean"] == -5.0  # the loaded model's own feature extractor travels with it
        assert b"library_name: transformers" in commit["files"]["README.md"]
        assert f'MODEL = "{REPO_ID}"'.encode() in commit["files"]["app.py"]  # the Space app, set to this repo
    assert model_commit["files"]["model.safetensors"] == cli_commit["files"]["model.safetensors"]


def test_push_rejects_a_folder_without_code(tmp_path, captured_hub):
    (tmp_path / "config.json").write_text('{"model_type": "elasticast"}')
    with pytest.raises(ValueError, match=r"lacks \['modeling_elasticast.py', 'preprocessor_config.json'\]"):
        cli(["push", str(tmp_path), REPO_ID])
    (tmp_path / "config.json").write_text('{"model_type": "wav2vec2"}')
    with pytest.raises(ValueError, match="neither ElasticAST nor AST"):
        cli(["push", str(tmp_path), REPO_ID])
    assert not captured_hub["create_commit"]


def test_ast_baseline_folder_gets_its_card_through_the_same_push(tmp_path, captured_hub):
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    folder = tmp_path / "ast"
    config = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=3,
                       frequency_stride=16, time_stride=16, max_length=512)
    ASTForAudioClassification(config).save_pretrained(folder)
    ASTFeatureExtractor(max_length=512).save_pretrained(folder)
    (folder / "metrics.json").write_text(json.dumps({"epochs": 3, "steps": 42}))
    assert cli(["push", str(folder), "me/ast-baseline"]) == 0
    (commit,) = captured_hub["create_commit"]
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "metrics.json"} == set(
        commit["files"])
    assert commit["commit_message"] == "Upload AST checkpoint"
    card = commit["files"]["README.md"].decode()
    assert "16×16 patches at stride 16 (frequency) / 16 (time)" in card and "cut or padded to 512 frames" in card
    assert "3 epochs, 42 optimiser steps" in card and 'model="me/ast-baseline")' in card
    assert "custom_code" not in card and "trust_remote_code" not in card


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def olah_server(tmp_path):
    """olah serving git repositories under <tmp>/mirrors on 127.0.0.1, its upstream a dead loopback port."""
    root = tmp_path / "olah"
    (root / "mirrors").mkdir(parents=True)
    port = free_port()
    (root / "configs.toml").write_text(textwrap.dedent(f"""
        [basic]
        host = "127.0.0.1"
        port = {port}
        repos-path = "{root / 'cache'}"
        mirrors-path = ["{root / 'mirrors'}"]
        mirror-scheme = "http"
        mirror-netloc = "127.0.0.1:{port}"
        mirror-lfs-netloc = "127.0.0.1:{port}"
        hf-scheme = "http"
        hf-netloc = "127.0.0.1:9"
        hf-lfs-netloc = "127.0.0.1:9"
        [accessibility]
        offline = true
    """))
    launcher = Path(__file__).with_name("olah_server.py")
    server = subprocess.Popen([sys.executable, str(launcher), "-c", str(root / "configs.toml"), "--log-path", str(root / "logs")],
                              cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        yield {"port": port, "mirrors": root / "mirrors", "process": server}
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_for(url: str, timeout: float = 60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


def commit_to_git(files: dict[str, bytes], repo: Path):
    repo.mkdir(parents=True)
    for name, content in files.items():
        (repo / name).write_bytes(content)
    git = ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "push captured from create_commit"], check=True)


PULL_SCRIPT = """
import json, sys
sys.modules["elasticast"] = None  # the package must not be importable here
import numpy as np, torch
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline
repo, wave_path = sys.argv[1], sys.argv[2]
wave = np.load(wave_path)
model = AutoModelForAudioClassification.from_pretrained(repo, trust_remote_code=True).eval()
fe = AutoFeatureExtractor.from_pretrained(repo, trust_remote_code=True)
with torch.no_grad():
    logits = model(**fe(wave, sampling_rate=16000, return_tensors="pt")).logits[0].tolist()
classifier = pipeline("audio-classification", model=repo, trust_remote_code=True)
scores = {r["label"]: r["score"] for r in classifier(wave, top_k=None)}
print(json.dumps({"logits": logits, "scores": scores, "module": type(model).__module__}))
"""


def run_pull(repo_id, wave_path, env):
    result = subprocess.run([sys.executable, "-c", PULL_SCRIPT, repo_id, str(wave_path)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_pushed_repo_pulls_over_http_and_then_offline(tiny_config, clips, tmp_path, captured_hub, olah_server):
    model = trained_like_model(tiny_config, tmp_path / "ckpt")
    model.push_to_hub(REPO_ID, feature_extractor=ElasticASTFeatureExtractor(mean=-5.0, std=4.0))
    commit_to_git(captured_hub["create_commit"][-1]["files"], olah_server["mirrors"] / "models" / REPO_ID)
    port = olah_server["port"]
    wait_for(f"http://127.0.0.1:{port}/api/models/{REPO_ID}/revision/main")

    wave = clips[27.0]
    np.save(tmp_path / "wave.npy", wave)
    features = ElasticASTFeatureExtractor(mean=-5.0, std=4.0)(wave, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected = model(**features).logits[0]
    env = {**os.environ, "PYTHONPATH": "", "HF_HOME": str(tmp_path / "hf-home"), "HF_ENDPOINT": f"http://127.0.0.1:{port}",
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
    online = run_pull(REPO_ID, tmp_path / "wave.npy", env)
    assert online["module"].startswith("transformers_modules")
    torch.testing.assert_close(torch.tensor(online["logits"]), expected, atol=1e-6, rtol=0)
    probabilities = expected.softmax(-1)
    for i, label in model.config.id2label.items():
        assert abs(online["scores"][label] - float(probabilities[i])) < 1e-5

    olah_server["process"].terminate()
    olah_server["process"].wait(timeout=30)
    offline = run_pull(REPO_ID, tmp_path / "wave.npy", {**env, "HF_HUB_OFFLINE": "1"})
    assert offline["logits"] == online["logits"] and offline["scores"] == online["scores"]
