"""The working folder the docs' code blocks run in (tests/test_docs.py), importable by any test that needs it.

    from doc_fixtures import build_fixtures   # tests/ is on sys.path in the test session (pytest rootdir)
    build_fixtures(folder)

writes, with generated audio only (nothing downloaded):

- `tiny-model/`: a tiny single-label `ElasticASTForAudioClassification` (hidden 32, 2 layers; labels "tone",
  "noise", "chirp"; random weights) with its `preprocessor_config.json`;
- `tiny-multilabel/`: the same, multi-label;
- `clip.wav` (3 s) and `long.wav` (70 s), 16 kHz mono;
- `recordings/a.wav`, `b.wav`, `c.wav` (2-5 s each);
- `data/`: an audiofolder dataset, `data/{train,validation,test}/*.wav` with `metadata.csv` (`file_name,label`),
  labels tone/noise/chirp, 12/6/6 clips of 1-4 s.
"""

from pathlib import Path

import numpy as np
import soundfile

RATE = 16000
LABELS = ("tone", "noise", "chirp")
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
SPLITS = {"train": 12, "validation": 6, "test": 6}


def sound(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A `seconds`-long float32 wave at 16 kHz: a tone, white noise or a rising chirp with a random pitch."""
    t = np.arange(int(seconds * RATE)) / RATE
    if kind == "tone":
        wave = np.sin(2 * np.pi * rng.uniform(300, 1200) * t)
    elif kind == "noise":
        wave = rng.standard_normal(t.size)
    elif kind == "chirp":
        start, end = rng.uniform(200, 600), rng.uniform(2000, 5000)
        wave = np.sin(2 * np.pi * (start * t + (end - start) * t**2 / (2 * max(seconds, 1e-3))))
    else:
        raise ValueError(f"Unknown sound kind {kind!r}: use one of {LABELS}.")
    return (0.3 * wave / max(np.abs(wave).max(), 1e-9)).astype(np.float32)


def mixture(seconds: float, rng: np.random.Generator, piece: float = 5.0) -> np.ndarray:
    """Tone, noise and chirp in turns of `piece` seconds."""
    parts, done = [], 0.0
    while done < seconds:
        length = min(piece, seconds - done)
        parts.append(sound(LABELS[len(parts) % 3], length, rng))
        done += length
    return np.concatenate(parts)


def tiny_checkpoint(folder: Path, problem_type: str = "single_label_classification", labels=LABELS) -> Path:
    """Save a tiny random-weight classifier and its feature extractor into `folder`."""
    import torch

    from elasticast import ElasticASTConfig, ElasticASTFeatureExtractor, ElasticASTForAudioClassification

    torch.manual_seed(0)
    config = ElasticASTConfig(**TINY, num_labels=len(labels), problem_type=problem_type,
                              id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    ElasticASTForAudioClassification(config).save_pretrained(folder)
    ElasticASTFeatureExtractor().save_pretrained(folder)
    return Path(folder)


def build_fixtures(folder: Path) -> Path:
    """Write every file the docs' code blocks may use into `folder` (see the module's docstring)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tiny_checkpoint(folder / "tiny-model")
    tiny_checkpoint(folder / "tiny-multilabel", "multi_label_classification")
    soundfile.write(folder / "clip.wav", mixture(3.0, rng, piece=1.0), RATE)
    soundfile.write(folder / "long.wav", mixture(70.0, rng), RATE)
    (folder / "recordings").mkdir(exist_ok=True)
    for name, seconds in (("a", 2.0), ("b", 3.5), ("c", 5.0)):
        soundfile.write(folder / "recordings" / f"{name}.wav", mixture(seconds, rng, piece=1.5), RATE)
    for split, count in SPLITS.items():
        (folder / "data" / split).mkdir(parents=True, exist_ok=True)
        rows = ["file_name,label"]
        for i in range(count):
            label = LABELS[i % 3]
            soundfile.write(folder / "data" / split / f"{label}_{i:02d}.wav", sound(label, rng.uniform(1, 4), rng), RATE)
            rows.append(f"{label}_{i:02d}.wav,{label}")
        (folder / "data" / split / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder
