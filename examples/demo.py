"""`python -m examples.demo` (`make demo`): the main job, offline on a CPU machine.

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

import argparse
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
COMPRESSIONS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
_WORDS = {
    "subject": "the farmer|a small child|my neighbour|the old captain|our teacher|a tired doctor|the baker|her brother"
               "|the young pilot|a quiet student|the mayor|his grandmother",
    "verb": "painted|carried|found|sold|repaired|described|borrowed|watched|cleaned|remembered|ordered|counted",
    "object": "a red bicycle|the wooden boat|seven apples|an old map|the broken clock|a blue umbrella|the heavy box"
              "|twelve letters|a silver key|the garden gate|a warm blanket|the longest bridge",
    "place": "near the station|after dinner|in the morning|by the river|before the storm|at the market|on sunday"
             "|under the bridge|behind the school|during the festival|in the kitchen|next to the church",
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m examples.demo",
        description="main job: speech dataset, train ElasticAST and AST, accuracy against evaluation length",
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
    parser.add_argument("--axis", choices=("length", "resolution"), default="length",
                        help="length: accuracy against evaluation length (the main job); resolution: ElasticAST "
                             "trained with mixed resolution and with average pooling beside the native ElasticAST "
                             "and the AST, accuracy and compute against compression C (reuses the length run's "
                             "models found in --output-dir)")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="evaluation lengths in frames")
    parser.add_argument("--compressions", default=",".join(map(str, COMPRESSIONS)),
                        help="resolution axis: compressions C (frame shift 10·C ms; avg-pool at the integer ones)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the whole path in about a minute")
    return parser


# ----------------------------------------------------------------------------------------------------- dataset
def _sentence(rng) -> str:
    parts = [rng.choice(_WORDS[k].split("|")) for k in ("subject", "verb", "object", "place")]
    return " ".join(parts).capitalize() + "."


def _utterances(rng, sentences: list[str], work: Path) -> dict[str, list]:
    """Every speaker reads every sentence once → float32 waveforms at 16 kHz."""
    import numpy as np
    import soundfile
    import soxr

    from examples.speech import synthesize

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
    stamp = json.loads(json.dumps(stamp))  # as read back (tuples become lists), or the comparison never holds
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
def _train(data: Path, output: Path, model: str, args, processes: int, mode: str = "native") -> dict:
    """Runs `elasticast.training` (under `accelerate launch` for several processes); returns its summary (with
    `"reused": True` when the folder already held this training). `model` "ast" trains the fixed-length AST;
    "elasticast" an ElasticAST in `mode` (native, mixed or avgpool)."""
    common = [
        "--dataset", str(data), "--output-dir", str(output), "--model", model, "--epochs", str(args.epochs),
        "--hidden-size", str(args.hidden_size), "--num-layers", str(args.num_layers),
        "--num-heads", str(args.num_heads), "--learning-rate", str(args.learning_rate), "--warmup-epochs", "1",
        "--tokens-per-batch", "6144", "--max-tokens-per-row", "2048", "--freq-mask", "24", "--time-mask", "0.2",
        "--seed", str(args.seed), "--save-steps", "0", "--report-to", "tensorboard",
    ]
    common += ["--mode", "fixed", "--fixed-frames", "1024"] if model == "ast" else ["--mode", mode]
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
    # A model already trained here with the same settings (e.g. by the length run, for the resolution run) is reused.
    stamp = {"arguments": common[4:], "processes": processes, "data": json.loads((data / "stamp.json").read_text())}
    if (output / "metrics.json").is_file() and (output / "demo_training.json").is_file() \
            and json.loads((output / "demo_training.json").read_text()) == stamp:
        print(f"reusing {output} (trained with the same settings)")
        reused = True
    else:
        subprocess.run([*command, "--overwrite-output-dir"], check=True, env=env)  # other settings: train anew
        (output / "demo_training.json").write_text(json.dumps(stamp, indent=2))
        reused = False
    return {**json.loads((output / "metrics.json").read_text())["summary"], "reused": reused}


def _training_record(summary: dict) -> dict:
    """What a demo record keeps of a training summary (its own wall time also when the model was reused)."""
    keys = ("seconds", "epochs", "steps", "processes", "best", "reused", "batch_budget", "tokens_per_batch",
            "total_clips", "total_tokens", "total_native_tokens")
    return {key: summary[key] for key in keys if key in summary}


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
    from elasticast.evaluation import evaluate_checkpoints, load_checkpoint, write_outputs
    from elasticast.hub import write_card
    from elasticast.data import DataArguments

    checkpoints = [load_checkpoint(str(folder), 4096, "frame_shift") for folder in folders]
    rows = evaluate_checkpoints(checkpoints, DataArguments(dataset=str(data)), "test",
                                [("length", frames) for frames in lengths], batch_size=32)
    write_outputs(rows, output / "elasticity", chance=1 / len(SPEAKERS))
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


def evaluate_baseline(data: Path, waves, labels, lengths=(), compressions=()) -> dict[float, float]:
    """Log-mel mean and std per mel bin + logistic regression, trained on whole training clips at C = 1; accuracy
    of the test clips cut to each of `lengths` frames, or whole at each compression C of `compressions`."""
    import numpy as np
    import soundfile
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from elasticast import ElasticASTFeatureExtractor

    fe = ElasticASTFeatureExtractor()

    def features(batch, compression=1.0):
        stats = [torch.cat([m.mean(0), m.std(0)]) for m in fe.fbank(batch, [compression] * len(batch))]
        return torch.stack(stats).numpy()

    with open(data / "train" / "metadata.csv") as f:
        rows = list(csv.DictReader(f))
    train = [torch.from_numpy(soundfile.read(data / "train" / r["file_name"], dtype="float32")[0]) for r in rows]
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    classifier.fit(features(train), [r["label"] for r in rows])
    accuracy = lambda x: float(np.mean(classifier.predict(x) == np.array(labels)))  # noqa: E731
    return {
        # each test clip's first `frames` frames
        **{frames: accuracy(features([w[: fe.num_samples(frames)] for w in waves])) for frames in lengths},
        **{c: accuracy(features(waves, c)) for c in compressions},
    }


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


# ---------------------------------------------------------------------------------------------- resolution axis
RESOLUTION_MODELS = {"elasticast": "native", "ast": "fixed", "elasticast-mixed": "mixed", "elasticast-avgpool": "avgpool"}
RESOLUTION_CURVES = {  # (checkpoint folder, evaluate's curve) → column name
    ("elasticast", "elasticast"): "ElasticAST native (trained at C = 1)",
    ("elasticast-mixed", "elasticast"): "ElasticAST mixed (C 1-4, frame shift)",
    ("elasticast-avgpool", "elasticast"): "ElasticAST avg-pool (C 1-4, integer)",
    ("ast", "ast-paper"): "AST (1024/C frames, grid resized)",
    ("ast", "ast-own"): "AST (cut/pad to 1024 frames)",
}
COST_CLIPS = 64  # test clips timed for the cost table (accuracy uses all of them)


def evaluate_resolution(data: Path, output: Path, compressions: list[float], repeats: int = 3
                        ) -> tuple[dict, list[dict]]:
    """Accuracy of the four models at each compression C with `elasticast evaluate`'s protocols (ElasticAST: whole
    clip, frame shift 10·C ms — the avg-pool model: C frames averaged, integer C only; AST: `ast-paper` the first
    1024/C frames at C with its grid resized, `ast-own` the clip at C cut/padded to 1024 frames), and the compute
    of each setting on the first `COST_CLIPS` test clips (`measure_cost`, best of `repeats`). Returns ({column: {C: accuracy}}, cost
    rows with the accuracy of the model they time)."""
    from elasticast.data import DataArguments
    from elasticast.evaluation import evaluate_checkpoints, load_checkpoint, measure_cost, write_outputs

    arguments = DataArguments(dataset=str(data))
    shifted = [load_checkpoint(str(output / name), 4096, "frame_shift") for name in ("elasticast", "elasticast-mixed", "ast")]
    pooled = load_checkpoint(str(output / "elasticast-avgpool"), 4096, "avg_pool")
    integers = [c for c in compressions if c == int(c)]
    rows = evaluate_checkpoints(shifted, arguments, "test", [("compression", c) for c in compressions], batch_size=32)
    rows += evaluate_checkpoints([pooled], arguments, "test", [("compression", c) for c in integers], batch_size=32)
    write_outputs(rows, output / "elasticity" / "resolution_evaluate", chance=1 / len(SPEAKERS))
    results: dict[str, dict[float, float]] = {}
    for row in rows:
        results.setdefault(RESOLUTION_CURVES[(row["checkpoint"], row["curve"])], {})[row["x"]] = row["value"]
    waves = _test_clips(data)[0][:COST_CLIPS]
    cost = measure_cost(shifted[1], waves, compressions, repeats) + measure_cost(pooled, waves, integers, repeats)
    cost += measure_cost(shifted[2], waves, [1.0], repeats)
    timed = {"elasticast-mixed": "ElasticAST mixed (C 1-4, frame shift)",
             "elasticast-avgpool": "ElasticAST avg-pool (C 1-4, integer)", "ast": "AST (cut/pad to 1024 frames)"}
    for row in cost:
        row["accuracy"] = results[timed[row["checkpoint"]]][row["compression"]]
    return results, cost


def write_resolution(folder: Path, results: dict[str, dict[float, float]], cost: list[dict],
                     compressions: list[float]) -> str:
    """`elasticity_resolution.json/png` (card format: accuracy against C, y from 0 to 1 with chance drawn),
    `resolution.csv`, `resolution.md` (accuracy table and cost table) and `resolution_cost.png` (accuracy against
    compute: the Pareto curve of the ElasticAST's C, the AST a fixed point) in `folder`; returns the markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    chance = 1 / len(SPEAKERS)
    cell = lambda name, c: f"{results[name][c]:.3f}" if c in results[name] else "–"  # noqa: E731
    lines = ["| C | frame shift (ms) | " + " | ".join(results) + " |", "|" + "---|" * (len(results) + 2)]
    lines += [f"| {c:g} | {10 * c:g} | " + " | ".join(cell(name, c) for name in results) + " |" for c in compressions]
    accuracy_table = "\n".join(lines)
    lines = ["| timed model | method | C | tokens per s of audio | fbank ms per s of audio | forward ms per s of audio "
             "| accuracy |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['checkpoint']} | {r['method']} | {r['compression']:g} | {r['tokens_per_audio_s']:.1f} | "
              f"{r['features_ms_per_audio_s']:.2f} | {r['forward_ms_per_audio_s']:.2f} | {r['accuracy']:.3f} |"
              for r in cost]
    cost_table = "\n".join(lines)
    (folder / "resolution.md").write_text(accuracy_table + "\n\n" + cost_table + "\n")
    with open(folder / "resolution.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["compression", *results])
        for c in compressions:
            writer.writerow([c, *(f"{results[name][c]:.4f}" if c in results[name] else "" for name in results)])
    card_models = [name for name in results if not name.startswith("log-mel")]
    description = (
        "Accuracy against temporal compression C: frames every 10·C ms (the avg-pool model: C frames averaged, "
        "integer C), whole clips, never padded. `mixed` was trained with C drawn per clip from 1.0, 1.2, …, 4.0, "
        "`avg-pool` with C ∈ {1, 2, 3, 4}, `native` at C = 1 only. The AST (trained at 1024 frames, C = 1) gets the "
        "paper's input — the first 1024/C frames at C, its position grid resized — and the clip at C cut or padded "
        "to its own 1024 frames. Compute per C (tokens and measured times per second of audio, "
        f"{cost[0]['audio_seconds']:.0f} s of test audio):\n\n{cost_table}\n\nAccuracy:"
    )
    (folder / "elasticity_resolution.json").write_text(json.dumps({
        "axis": "resolution", "metric": "accuracy", "description": description,
        "rows": [{"model": name, "x": c, "value": results[name][c]} for name in card_models for c in compressions
                 if c in results[name]],
    }, indent=2))

    figure, axis = plt.subplots(figsize=(7, 4.2))
    for name, values in results.items():
        points = sorted(values.items())
        axis.plot(*zip(*points), marker="o", markersize=4, label=name, linestyle="--" if "log-mel" in name else "-")
    axis.axhline(chance, color="grey", linestyle=":", linewidth=1, label=f"chance ({chance:.3f})")
    axis.set_xlabel("temporal compression C (frame shift 10·C ms)")
    axis.set_ylabel("accuracy (who speaks most)")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(folder / "elasticity_resolution.png", dpi=120)
    plt.close(figure)

    figure, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for axis, key, label in ((axes[0], "tokens_per_audio_s", "tokens per second of audio"),
                             (axes[1], "forward_ms_per_audio_s", "forward ms per second of audio (measured)")):
        for method, marker in (("frame_shift", "o"), ("avg_pool", "s"), ("fixed length", "*")):
            selected = [r for r in cost if r["method"] == method]
            if not selected:
                continue
            axis.plot([r[key] for r in selected], [r["accuracy"] for r in selected], marker=marker,
                      markersize=12 if marker == "*" else 5, linestyle="none" if marker == "*" else "-",
                      label=f"{selected[0]['checkpoint']} ({method})")
            for r in selected:
                axis.annotate(f"C={r['compression']:g}", (r[key], r["accuracy"]), fontsize=7,
                              textcoords="offset points", xytext=(3, 4))
        axis.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
        axis.set_xlabel(label)
        axis.set_xlim(left=0)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (who speaks most)")
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=7, loc="lower right")
    figure.suptitle("accuracy against compute (lower C: more tokens, more accuracy)", fontsize=9)
    figure.tight_layout()
    figure.savefig(folder / "resolution_cost.png", dpi=120)
    plt.close(figure)
    return accuracy_table + "\n\n" + cost_table


def run_resolution(args, output: Path, data: Path, processes: int, timings: dict) -> tuple[dict, str, list, dict]:
    """Trains what is missing (the length run's native ElasticAST and AST are reused), evaluates against C, writes
    the files of `write_resolution` into `output/elasticity` and the resolution section into each ElasticAST card."""
    from elasticast.hub import write_card

    compressions = [float(x) for x in args.compressions.split(",")]
    trainings = {}
    for name, mode in RESOLUTION_MODELS.items():
        began = time.perf_counter()
        trainings[name] = _training_record(
            _train(data, output / name, "ast" if name == "ast" else "elasticast", args, processes, mode))
        timings[f"train {name}"] = time.perf_counter() - began
    began = time.perf_counter()
    results, cost = evaluate_resolution(data, output, compressions, repeats=1 if args.quick else 3)
    waves, labels = _test_clips(data)
    results["log-mel stats + LR"] = evaluate_baseline(data, waves, labels, compressions=compressions)
    timings["evaluation and cost"] = time.perf_counter() - began
    table = write_resolution(output / "elasticity", results, cost, compressions)
    for name, mode in RESOLUTION_MODELS.items():
        if mode != "fixed":
            for suffix in ("json", "png"):
                shutil.copy(output / "elasticity" / f"elasticity_resolution.{suffix}", output / name)
            write_card(output / name)
    return results, table, cost, trainings


def _command(args) -> str:
    """The `python -m examples.demo` command line that repeats this run (every setting explicit)."""
    options = {key: value for key, value in vars(args).items() if key not in ("func", "command", "quick")}
    parts = ["python", "-m", "examples.demo"] + (["--quick"] if args.quick else [])
    for key, value in options.items():
        if value is not None:
            parts += [f"--{key.replace('_', '-')}", str(value)]
    return " ".join(parts)


def write_record(output: Path, axis: str, args, machine: dict, began: float, timings: dict, results: dict,
                 table: str, processes: int, **extra) -> Path:
    """`record_<axis>.json`: the command, the machine (cores, fp32 GEMM rate at start and end), the date, the wall
    time of each stage and the results — what README tables are made from."""
    from benchmarks.machine import gemm_gflops

    record = {
        "command": _command(args), "axis": axis, "date": machine["date"], "machine": machine,
        "gemm_gflops_at_end": round(gemm_gflops(machine["gemm_n"]), 1), "processes": processes,
        "wall_seconds": round(time.perf_counter() - began, 1),
        "timings_seconds": {key: round(value, 1) for key, value in timings.items()},
        "chance": 1 / len(SPEAKERS), "results": results, "table": table, **extra,
    }
    path = output / f"record_{axis}.json"
    path.write_text(json.dumps(record, indent=2))
    return path


def run(args) -> int:
    from benchmarks.machine import machine_record

    if args.quick:
        args.train_clips, args.test_clips, args.epochs = 48, 24, 1
        args.hidden_size, args.num_layers, args.num_heads = 32, 1, 2
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    lengths = [int(x) for x in args.lengths.split(",")]
    processes = args.processes or (2 if (os.cpu_count() or 1) >= 2 else 1)
    machine = machine_record()
    timings = {}
    start = time.perf_counter()
    data = build_dataset(output / "data", args.train_clips, args.test_clips, args.seed)
    timings["dataset"] = time.perf_counter() - start
    if args.axis == "resolution":
        results, table, cost, trainings = run_resolution(args, output, data, processes, timings)
        timings["total"] = time.perf_counter() - start
        record = write_record(output, "resolution", args, machine, start, timings, results, table, processes,
                              trainings=trainings, cost=cost)
        print(f"\nWho speaks most? {len(SPEAKERS)} espeak-ng speakers (chance {1 / len(SPEAKERS):.3f}); accuracy and "
              f"compute against temporal compression C:\n")
        print(table)
        print("\n" + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
              + f" ({processes} process(es), fp32 GEMM {machine['gemm_gflops']:.0f} GFLOP/s)")
        print(f"resolution.md/csv, elasticity_resolution.json/png, resolution_cost.png in {output / 'elasticity'}; "
              f"{record.name} in {output}")
        return 0
    trainings = {}
    for model in ("elasticast", "ast"):
        began = time.perf_counter()
        trainings[model] = _training_record(_train(data, output / model, model, args, processes))
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
    record = write_record(output, "length", args, machine, start, timings, results, table, processes,
                          trainings=trainings)
    print(f"\nWho speaks most? {len(SPEAKERS)} espeak-ng speakers, {args.train_clips} training / {args.test_clips} "
          f"test clips of 1-30 s (chance {1 / len(SPEAKERS):.3f}); accuracy against evaluation length:\n")
    print(table)
    print("\n" + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
          + f" ({processes} process(es), fp32 GEMM {machine['gemm_gflops']:.0f} GFLOP/s)")
    print(f"results.csv, results.md, results.png, {record.name} and both models in {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
