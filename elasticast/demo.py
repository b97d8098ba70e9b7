"""`elasticast demo`: the main job, offline on a CPU machine.

1. Builds a small real-speech dataset with espeak-ng: six synthetic speakers (voice variant, pitch, speed) read
   generated sentences; each clip (1-30 s) is a conversation of two of them, and the label is the speaker who talks
   most. The turns come in random order, so the answer is spread over the whole clip: a model that hears only part
   of it (a cut) loses information — a task where clip length carries information. Training, validation (best
   epoch) and test (final table) clips are read from disjoint sentences.
2. Trains a tiny ElasticAST at native length and a same-size AST (transformers' `ASTForAudioClassification`,
   16×16 patches at stride 16) at a fixed 1024 frames, with `elasticast.training` (two processes when the machine
   has two cores).
3. Evaluates both at 256 … 3072 frames with `elasticast evaluate`'s protocols (ElasticAST: clips cut to L only when
   longer; AST: cut/padded to L with its position grid resized as the original AST code does, and cut/padded to its
   own 1024 frames), beside a simple baseline (log-mel mean/std + logistic regression), and writes `results.csv`,
   `results.md` and `results.png` (accuracy against evaluation length), the elasticity files and the ElasticAST
   model card.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


SPEAKERS = {  # name: (espeak-ng voice, pitch 0-99, words per minute)
    "ava": ("en+f2", 75, 165),
    "ben": ("en+m3", 35, 150),
    "cleo": ("en-us+f4", 60, 185),
    "dan": ("en-gb-scotland+m7", 45, 140),
    "eve": ("en+f5", 90, 150),
    "finn": ("en-us+m2", 20, 175),
}
LENGTHS = (256, 512, 1024, 1536, 2048, 3072)
_WORDS = {
    "subject": "the farmer|a small child|my neighbour|the old captain|our teacher|a tired doctor|the baker|her brother"
               "|the young pilot|a quiet student|the mayor|his grandmother",
    "verb": "painted|carried|found|sold|repaired|described|borrowed|watched|cleaned|remembered|ordered|counted",
    "object": "a red bicycle|the wooden boat|seven apples|an old map|the broken clock|a blue umbrella|the heavy box"
              "|twelve letters|a silver key|the garden gate|a warm blanket|the longest bridge",
    "place": "near the station|after dinner|in the morning|by the river|before the storm|at the market|on sunday"
             "|under the bridge|behind the school|during the festival|in the kitchen|next to the church",
}


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo", help="main job: speech dataset, train ElasticAST and AST, accuracy against evaluation length",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--output-dir", default="runs/demo")
    parser.add_argument("--train-clips", type=int, default=600)
    parser.add_argument("--test-clips", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--hidden-size", type=int, default=96)
    parser.add_argument("--num-layers", type=int, default=3)
    parser.add_argument("--num-heads", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--processes", type=int, default=None, help="training processes (default: 2 if ≥ 2 cores)")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="evaluation lengths in frames")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the whole path in about a minute")
    parser.set_defaults(func=run)


# ----------------------------------------------------------------------------------------------------- dataset
def _sentence(rng) -> str:
    parts = [rng.choice(_WORDS[k].split("|")) for k in ("subject", "verb", "object", "place")]
    return " ".join(parts).capitalize() + "."


def _utterances(rng, sentences: list[str], work: Path) -> dict[str, list]:
    """Every speaker reads every sentence once → float32 waveforms at 16 kHz."""
    import numpy as np
    import soundfile
    import soxr

    from .speech import synthesize

    out = {}
    for name, (voice, pitch, speed) in SPEAKERS.items():
        out[name] = []
        for i, text in enumerate(sentences):
            path = synthesize(text, work / f"{name}_{i}.wav", voice=voice, speed=speed, pitch=pitch)
            audio, rate = soundfile.read(path, dtype="float32")
            wave = soxr.resample(audio, rate, 16000).astype(np.float32)
            nonzero = np.flatnonzero(np.abs(wave) > 1e-3)  # trim espeak's leading/trailing silence
            out[name].append(wave[nonzero[0] : nonzero[-1] + 1] if nonzero.size else wave)
            path.unlink()
    return out


def _conversation(rng, pool: dict[str, list], seconds: float) -> tuple:
    """A clip of at most `seconds`: turns of a main speaker (60-80 % of the speech) and one other, in random order,
    separated by pauses that share the remaining 10 % of the time."""
    import numpy as np

    names = list(pool)
    main, other = rng.choice(names, size=2, replace=False)
    share = rng.uniform(0.6, 0.8) if seconds > 3 else 1.0
    turns = []
    for speaker, budget in ((main, 0.9 * share * seconds), (other, 0.9 * (1 - share) * seconds)):
        while budget > 0.3:
            wave = pool[speaker][rng.integers(len(pool[speaker]))][: int(budget * 16000)]
            turns.append(wave)
            budget -= wave.size / 16000
    turns = [turns[i] for i in rng.permutation(len(turns))]
    speech = sum(t.size for t in turns)
    gaps = rng.dirichlet(np.ones(max(len(turns) - 1, 1))) * max(int(seconds * 16000) - speech, 0)
    pieces = [turns[0]]
    for gap, turn in zip(gaps, turns[1:]):
        pieces += [np.zeros(int(gap), np.float32), turn]
    return np.concatenate(pieces), str(main)


def build_dataset(root: Path, train_clips: int, test_clips: int, seed: int) -> Path:
    """audiofolder `root/{train,validation,test}/*.wav` + metadata.csv (label = main speaker), each split read from
    its own sentences; the validation split picks the best epoch, the test split is only used for the final table.
    Reused when already built with the same settings."""
    import numpy as np
    import soundfile

    stamp = {"train": train_clips, "test": test_clips, "seed": seed, "speakers": SPEAKERS, "version": 3}
    if (root / "stamp.json").is_file() and json.loads((root / "stamp.json").read_text()) == stamp:
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    sentences = list(dict.fromkeys(_sentence(rng) for _ in range(400)))
    split_sentences = {"train": sentences[:40], "validation": sentences[40:50], "test": sentences[50:70]}
    counts = {"train": train_clips, "validation": max(test_clips // 2, 6), "test": test_clips}
    for split, count in counts.items():
        folder = root / split
        folder.mkdir(parents=True)
        pool = _utterances(rng, split_sentences[split], folder)
        rows = []
        for i in range(count):
            seconds = float(rng.uniform(1.0, 30.0))
            wave, label = _conversation(rng, pool, seconds)
            soundfile.write(folder / f"{i:05d}.wav", wave, 16000, subtype="PCM_16")
            rows.append({"file_name": f"{i:05d}.wav", "label": label})
        with open(folder / "metadata.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["file_name", "label"])
            writer.writeheader()
            writer.writerows(rows)
    (root / "stamp.json").write_text(json.dumps(stamp))
    return root


# ----------------------------------------------------------------------------------------------------- training
def _train(data: Path, output: Path, model: str, args, processes: int) -> dict:
    """Runs `elasticast.training` (under `accelerate launch` for several processes); returns its summary."""
    common = [
        "--dataset", str(data), "--output-dir", str(output), "--model", model, "--epochs", str(args.epochs),
        "--hidden-size", str(args.hidden_size), "--num-layers", str(args.num_layers),
        "--num-heads", str(args.num_heads), "--learning-rate", str(args.learning_rate), "--warmup-epochs", "1",
        "--tokens-per-batch", "6144", "--max-tokens-per-row", "2048", "--freq-mask", "24", "--time-mask", "0.2",
        "--seed", str(args.seed), "--save-steps", "0", "--report-to", "tensorboard",
    ]
    common += ["--mode", "fixed", "--fixed-frames", "1024"] if model == "ast" else ["--mode", "native"]
    # Threads × processes = cores (an OMP_NUM_THREADS already set wins: on a shared machine 1 is much faster).
    env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes)), **os.environ}
    if processes > 1:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        import torch

        if not torch.cuda.is_available():
            env["ACCELERATE_USE_CPU"] = "true"
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(port), "-m", "elasticast.training", *common]
    else:
        command = [sys.executable, "-m", "elasticast.training", *common]
    subprocess.run(command, check=True, env=env)
    return json.loads((output / "metrics.json").read_text())["summary"]


# --------------------------------------------------------------------------------------------------- evaluation
def _test_clips(data: Path):
    import soundfile
    import torch

    with open(data / "test" / "metadata.csv") as f:
        rows = list(csv.DictReader(f))
    waves = [torch.from_numpy(soundfile.read(data / "test" / r["file_name"], dtype="float32")[0]) for r in rows]
    return waves, [r["label"] for r in rows]


def evaluate_models(data: Path, folders: list[Path], lengths, output: Path) -> dict[str, dict[int, float]]:
    """Accuracy of the trained checkpoints at each length with `elasticast evaluate`'s protocols (ElasticAST: clips
    cut to L only when longer; AST: input cut/padded to L with its position grid resized as the original AST code
    does — `ast-paper` — and cut/padded to its own 1024 frames — `ast-own`); also fills the ElasticAST card."""
    from .evaluation import evaluate_checkpoints, load_checkpoint, write_outputs
    from .hub import write_card
    from .data import DataArguments

    checkpoints = [load_checkpoint(str(folder), 4096, "frame_shift") for folder in folders]
    rows = evaluate_checkpoints(checkpoints, DataArguments(dataset=str(data)), "test",
                                [("length", frames) for frames in lengths], batch_size=32)
    write_outputs(rows, output / "elasticity")
    for checkpoint in checkpoints:
        if not checkpoint.is_ast:
            for produced in (output / "elasticity").glob("elasticity_*"):
                shutil.copy(produced, Path(checkpoint.path) / produced.name)
            write_card(checkpoint.path)
    names = {"elasticast": "ElasticAST (native)", "ast-paper": "AST (1024 frames, grid resized to L)",
             "ast-own": "AST (1024 frames, cut/pad to 1024)"}
    results: dict[str, dict[int, float]] = {}
    for row in rows:
        results.setdefault(names[row["curve"]], {})[int(row["x"])] = row["value"]
    return results


def evaluate_baseline(data: Path, waves, labels, lengths) -> dict[int, float]:
    """Log-mel mean and std per mel bin + logistic regression, trained on whole training clips."""
    import numpy as np
    import soundfile
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from . import ElasticASTFeatureExtractor

    fe = ElasticASTFeatureExtractor()

    def features(batch):
        stats = [torch.cat([m.mean(0), m.std(0)]) for m in fe.fbank(batch, [1.0] * len(batch))]
        return torch.stack(stats).numpy()

    with open(data / "train" / "metadata.csv") as f:
        rows = list(csv.DictReader(f))
    train = [torch.from_numpy(soundfile.read(data / "train" / r["file_name"], dtype="float32")[0]) for r in rows]
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    classifier.fit(features(train), [r["label"] for r in rows])
    accuracy = {}
    for frames in lengths:  # each test clip's first `frames` frames
        predicted = classifier.predict(features([w[: fe.num_samples(frames)] for w in waves]))
        accuracy[frames] = float(np.mean(predicted == np.array(labels)))
    return accuracy


# ------------------------------------------------------------------------------------------------------- report
def write_results(folder: Path, results: dict[str, dict[int, float]], lengths) -> str:
    """results.csv, results.md and results.png (accuracy against evaluation length); returns the markdown table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frames", "seconds", *results])
        for frames in lengths:
            writer.writerow([frames, frames / 100, *(f"{results[m][frames]:.4f}" for m in results)])
    header = "| frames | seconds | " + " | ".join(results) + " |"
    lines = [header, "|" + "---|" * (len(results) + 2)]
    lines += [f"| {frames} | {frames / 100:.2f} | " + " | ".join(f"{results[m][frames]:.3f}" for m in results) + " |"
              for frames in lengths]
    table = "\n".join(lines)
    (folder / "results.md").write_text(table + "\n")
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for name, values in results.items():
        axis.plot(list(lengths), [values[frames] for frames in lengths], marker="o", label=name)
    axis.axvline(1024, color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("evaluation length (frames, 10 ms each)")
    axis.set_ylabel("accuracy (who speaks most)")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(folder / "results.png", dpi=120)
    plt.close(figure)
    return table


def run(args) -> int:
    if args.quick:
        args.train_clips, args.test_clips, args.epochs = 48, 24, 1
        args.hidden_size, args.num_layers, args.num_heads = 32, 1, 2
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    lengths = [int(x) for x in args.lengths.split(",")]
    processes = args.processes or (2 if (os.cpu_count() or 1) >= 2 else 1)
    timings = {}
    start = time.perf_counter()
    data = build_dataset(output / "data", args.train_clips, args.test_clips, args.seed)
    timings["dataset"] = time.perf_counter() - start
    summaries = {}
    for model in ("elasticast", "ast"):
        began = time.perf_counter()
        summaries[model] = _train(data, output / model, model, args, processes)
        timings[f"train {model}"] = time.perf_counter() - began
    began = time.perf_counter()
    waves, labels = _test_clips(data)
    results = {
        **evaluate_models(data, [output / "elasticast", output / "ast"], lengths, output),
        "log-mel stats + LR": evaluate_baseline(data, waves, labels, lengths),
    }
    timings["evaluation"] = time.perf_counter() - began
    table = write_results(output, results, lengths)
    timings["total"] = time.perf_counter() - start
    (output / "timings.json").write_text(json.dumps({**timings, "processes": processes}, indent=2))
    print(f"\nWho speaks most? {len(SPEAKERS)} espeak-ng speakers, {args.train_clips} training / {args.test_clips} "
          f"test clips of 1-30 s (chance {1 / len(SPEAKERS):.3f}); accuracy against evaluation length:\n")
    print(table)
    print("\n" + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()) + f" ({processes} process(es))")
    print(f"results.csv, results.md, results.png and both models in {output}")
    return 0
