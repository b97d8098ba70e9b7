import json

import numpy as np
import soundfile
import torch
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

from elasticast import ElasticASTFeatureExtractor, ElasticASTForAudioClassification
from elasticast.cli import main as cli
from elasticast.ast_baseline import resize_ast_positions

LABELS = ["low", "mid", "high"]


def labelled_folder(root, speech):
    """An audiofolder test split: speech clips of 0.5-9 s, pitched by class, with a metadata.csv."""
    rng = np.random.default_rng(0)
    split = root / "test"
    split.mkdir(parents=True)
    rows = ["file_name,label"]
    for i in range(14):
        label = LABELS[i % 3]
        n = int(rng.uniform(0.5, 9.0) * 16000)
        t = np.arange(n) / 16000
        wave = np.resize(speech, n) * 0.5 + 0.2 * np.sin(2 * np.pi * (200, 800, 3000)[i % 3] * t)
        soundfile.write(split / f"clip{i:02d}.wav", wave.astype(np.float32), 16000)
        rows.append(f"clip{i:02d}.wav,{label}")
    (split / "metadata.csv").write_text("\n".join(rows) + "\n")
    return sorted(split.glob("*.wav")), [LABELS[i % 3] for i in range(14)]


def test_ast_position_resize_follows_the_original_ast_rule():
    config = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, num_labels=3,
                       frequency_stride=16, time_stride=16, max_length=256)
    model = ASTForAudioClassification(config).eval()
    table = model.audio_spectrogram_transformer.embeddings.position_embeddings.detach()
    grid = table[0, 2:].reshape(8, 16, 32)
    same = resize_ast_positions(model, 256).audio_spectrogram_transformer.embeddings.position_embeddings
    torch.testing.assert_close(same.detach(), table)
    short = resize_ast_positions(model, 128).audio_spectrogram_transformer.embeddings.position_embeddings.detach()
    torch.testing.assert_close(short[0, 2:].reshape(8, 8, 32), grid[:, 4:12])  # centre crop
    torch.testing.assert_close(short[0, :2], table[0, :2])
    long = resize_ast_positions(model, 512).audio_spectrogram_transformer.embeddings.position_embeddings.detach()
    assert long.shape == (1, 2 + 8 * 32, 32)
    stretched = long[0, 2:].reshape(8, 32, 32)
    torch.testing.assert_close(stretched[:, 0], grid[:, 0])  # bilinear, align_corners=False: edges repeat
    torch.testing.assert_close(stretched[:, 1::2].mean(), grid.mean(), atol=0.05, rtol=0)


def test_evaluate_elasticast_and_ast_over_lengths_and_compressions(tiny_config, speech_16k, tmp_path):
    files, names = labelled_folder(tmp_path / "data", speech_16k)
    label_kwargs = dict(num_labels=3, id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)})
    elastic = ElasticASTForAudioClassification(tiny_config(**label_kwargs)).eval()
    elastic.save_pretrained(tmp_path / "elastic")
    fe = ElasticASTFeatureExtractor()
    fe.save_pretrained(tmp_path / "elastic")
    ast = ASTForAudioClassification(ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                              intermediate_size=64, frequency_stride=16, time_stride=16,
                                              max_length=256, **label_kwargs)).eval()
    ast.save_pretrained(tmp_path / "ast-256")
    ASTFeatureExtractor(max_length=256).save_pretrained(tmp_path / "ast-256")

    out = tmp_path / "out"
    assert cli(["evaluate", str(tmp_path / "elastic"), str(tmp_path / "ast-256"), "--dataset", "audiofolder",
                "--data-dir", str(tmp_path / "data"), "--split", "test", "--lengths", "128,384",
                "--compressions", "1.0,2.0", "--batch-size", "5", "--output-dir", str(out), "--write-cards"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert {(r["checkpoint"], r["curve"]) for r in rows} == {("elastic", "elasticast"), ("ast-256", "ast-paper"),
                                                              ("ast-256", "ast-own")}
    assert len(rows) == 3 * 4 and all(r["clips"] == 14 and r["metric"] == "accuracy" for r in rows)
    for name in ("results.csv", "elasticity_length.json", "elasticity_length.png", "elasticity_compression.png"):
        assert (out / name).stat().st_size > 0
    card_table = json.loads((out / "elasticity_length.json").read_text())
    assert card_table["axis"] == "length" and len(card_table["rows"]) == 3 * 2
    card = (tmp_path / "elastic" / "README.md").read_text()
    assert "## Elasticity: length" in card and "## Elasticity: compression" in card
    assert "![length elasticity](elasticity_length.png)" in card and (tmp_path / "elastic" / "elasticity_length.png").exists()
    assert not (tmp_path / "ast-256" / "README.md").exists()

    waves = [torch.from_numpy(soundfile.read(f, dtype="float32")[0]) for f in files]
    targets = torch.tensor([LABELS.index(n) for n in names])
    got = {(r["checkpoint"], r["curve"], r["axis"], r["x"]): r["value"] for r in rows}
    with torch.no_grad():
        for frames in (128, 384):  # ElasticAST: each clip alone, cut only when longer
            predicted = torch.cat([elastic(**fe(w, sampling_rate=16000, max_length=frames, return_tensors="pt")).logits
                                   for w in waves]).argmax(-1)
            assert abs(got[("elastic", "elasticast", "length", frames)] - (predicted == targets).float().mean()) < 1e-9
        for frames in (128, 384):  # AST, paper protocol: input of `frames` frames, position grid resized
            resized = resize_ast_positions(ast, frames)
            inputs = ASTFeatureExtractor(max_length=frames)([w.numpy() for w in waves], sampling_rate=16000,
                                                            return_tensors="pt")
            predicted = resized(**inputs).logits.argmax(-1)
            assert abs(got[("ast-256", "ast-paper", "length", frames)] - (predicted == targets).float().mean()) < 1e-9
            cut = [w[: 400 + (frames - 1) * 160].numpy() for w in waves]  # the clips' first `frames` frames
            own = ast(**ASTFeatureExtractor(max_length=256)(cut, sampling_rate=16000, return_tensors="pt")).logits
            assert abs(got[("ast-256", "ast-own", "length", frames)] - (own.argmax(-1) == targets).float().mean()) < 1e-9
        compressed = torch.cat([elastic(**fe(w, sampling_rate=16000, compression=2.0, return_tensors="pt")).logits
                                for w in waves]).argmax(-1)
        assert abs(got[("elastic", "elasticast", "compression", 2.0)] - (compressed == targets).float().mean()) < 1e-9
