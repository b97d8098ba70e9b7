"""Training: labels, token plan, batcher, augmentations, resume, multi-process equivalence, export, baseline.

Runs of the training command use tiny models (hidden 32, 1 layer) on generated tone datasets and one thread per
process, so that their results are deterministic and comparable bit for bit.
"""

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from datasets import Audio, ClassLabel, Dataset, Features, List, Value

from elasticast import ElasticASTFeatureExtractor, pack_segments
from elasticast.training import build_parser
from elasticast.training.augment import drop_tokens, mask_patches, mask_spectrograms, mixup
from elasticast.training.batching import Augmentation, FixedCollator, PackedCollator, TokenBudgetBatcher
from elasticast.data import LabelSpace, infer_labels
from elasticast.training.data import Clip, ClipSource, ClipTransform, SourceState, ordered_clips, slot_stream
from elasticast.token_usage import sequential_fill


CLASSES = {"low": 300.0, "mid": 700.0, "high": 1100.0}
TINY_RUN = [
    "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--learning-rate", "1e-3",
    "--mixed-precision", "no", "--report-to", "none", "--no-progress", "--shuffle-buffer", "8",
    "--max-tokens-per-row", "256", "--tokens-per-batch", "512",
]


def tone(seconds: float, hz: float, rate: int, rng) -> np.ndarray:
    t = np.arange(max(int(seconds * rate), 1)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def write_audiofolder(root: Path, count: int, broken: int = 0, seed: int = 0) -> Path:
    """train/ and test/ splits of tones (3 classes by pitch, 0.3-4 s, 16 or 22.05 kHz), string labels in
    metadata.csv; `broken` undecodable .wav files in train/."""
    rng = np.random.default_rng(seed)
    names = list(CLASSES)
    for split, n in (("train", count), ("test", max(count // 2, 3))):
        folder = root / split
        folder.mkdir(parents=True)
        rows = []
        for i in range(n):
            rate = 16000 if i % 2 else 22050
            label = names[i % 3]
            soundfile.write(folder / f"{i:04d}.wav", tone(rng.uniform(0.3, 4.0), CLASSES[label], rate, rng), rate)
            rows.append({"file_name": f"{i:04d}.wav", "label": label})
        if split == "train":
            for b in range(broken):
                (folder / f"broken{b}.wav").write_bytes(b"RIFF....not audio at all")
                rows.append({"file_name": f"broken{b}.wav", "label": names[b % 3]})
        with open(folder / "metadata.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["file_name", "label"])
            writer.writeheader()
            writer.writerows(rows)
    return root


def wav_bytes(wave: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format="WAV")
    return buffer.getvalue()


def write_arrow_shards(root: Path, count: int, shards: int, seed: int = 1) -> list[str]:
    """Tones as embedded wav bytes in `shards` Arrow files (a multi-shard stream for DataLoader workers; Arrow
    rather than Parquet because datasets' Parquet streams sleep 5 s at their end)."""
    rng = np.random.default_rng(seed)
    names = list(CLASSES)
    audio = [{"bytes": wav_bytes(tone(rng.uniform(0.3, 4.0), CLASSES[names[i % 3]], 16000, rng), 16000),
              "path": f"{i}.wav"} for i in range(count)]
    features = Features({"audio": Audio(), "label": ClassLabel(names=names)})
    dataset = Dataset.from_dict({"audio": audio, "label": [i % 3 for i in range(count)]}, features=features)
    dataset.save_to_disk(str(root), num_shards=shards)
    return sorted(str(p) for p in root.glob("data-*.arrow"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_command(argv: list[str], env_extra: dict | None = None, check: bool = True,
                timeout: float = 240) -> subprocess.CompletedProcess:
    """Runs `argv` in its own process group (one thread per process); on a timeout the whole group is killed, so
    no training rank outlives the test."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"{' '.join(argv)} timed out:\n{stdout[-3000:]}\n{stderr[-5000:]}") from None
    result = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-5000:]}")
    return result


def train_cli(args: list[str], **kwargs):
    return run_command([sys.executable, "-m", "elasticast.training", *args], **kwargs)


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = load_weights(a), load_weights(b)
    assert wa.keys() == wb.keys()
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)


@pytest.fixture
def in_process():
    """Runs the trainer in this process (one thread), resetting Accelerate's singleton state afterwards."""
    from accelerate.state import AcceleratorState

    from elasticast.training.loop import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def run(argv: list[str]) -> dict:
        AcceleratorState._reset_state(reset_partial_state=True)
        return train(build_parser().parse_args(argv))

    yield run
    AcceleratorState._reset_state(reset_partial_state=True)
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------------- labels
def test_labels_from_classlabel_strings_integers_and_lists():
    classlabel = Dataset.from_dict({"label": [1, 0, 1]}, features=Features({"label": ClassLabel(names=["b", "a"])}))
    space, count = infer_labels(classlabel.to_iterable_dataset(), "label")
    assert (space.names, space.multi_label, count) == (["b", "a"], False, None)

    strings = Dataset.from_dict({"label": ["dog", "cat", "dog", "bird"]}).to_iterable_dataset()
    space, count = infer_labels(strings, "label")
    assert (space.names, count) == (["bird", "cat", "dog"], 4)  # sorted, saved into config.id2label
    encode = space.encoder(strings.features["label"])
    assert [encode(v) for v in ("bird", "dog")] == [0, 2]
    with pytest.raises(ValueError, match="not among the 3 training classes"):
        encode("horse")

    integers = Dataset.from_dict({"label": [3, 0, 2]}).to_iterable_dataset()
    assert infer_labels(integers, "label")[0].names == ["0", "1", "2", "3"]

    lists = Dataset.from_dict({"label": [["speech", "music"], ["music"], []]},
                              features=Features({"label": List(Value("string"))})).to_iterable_dataset()
    space, _ = infer_labels(lists, "label")
    assert space.multi_label and space.names == ["music", "speech"]
    assert space.encoder(lists.features["label"])(["speech", "music"]) == [0, 1]

    # An evaluation split whose ClassLabel orders names differently is mapped by name.
    assert LabelSpace(["b", "a"]).encoder(ClassLabel(names=["a", "b"]))(0) == 1

    fixed, _ = infer_labels(strings, "label", names=["dog", "cat", "bird"])
    assert fixed.encoder(None)("dog") == 0
    with pytest.raises(ValueError, match="single-label"):
        infer_labels(strings, "label")[0].encoder(None)(["dog", "cat"])
    with pytest.raises(ValueError, match="Label column 'tag' not found"):
        infer_labels(strings, "tag")


# ---------------------------------------------------------------------------------------------- token planning
@pytest.mark.parametrize("mode,compressions", [("native", (1.0,)), ("mixed", (1.0, 1.2, 2.6, 4.0)),
                                               ("avgpool", (1.0, 2.0, 3.0, 4.0))])
def test_token_plan_matches_feature_extractor(mode, compressions):
    """The batcher's token count of each window equals what the feature extractor lays out."""
    fe = ElasticASTFeatureExtractor()
    transform = ClipTransform(mode, fe, max_seconds=None, compressions=compressions)
    collator = PackedCollator(fe, transform, num_labels=2, max_tokens_per_row=512)  # windows of ≤ 64 time patches
    rng = np.random.default_rng(0)
    for samples in (1, 300, 401, 2960, 3120, 16000, 170000, 480000):
        for c in compressions:
            clip = Clip(key=(0, 0), label=0, wave=torch.from_numpy(rng.standard_normal(samples).astype(np.float32)),
                        compression=c)
            if mode == "avgpool" and transform.frames(samples, 1.0) < c:
                continue  # the mode never draws such a C (see ClipTransform); the extractor cannot pool it
            out = fe([clip.wave], sampling_rate=16000, compression=c, compression_method=transform.compression_method,
                     packing=True, max_tokens_per_row=512, return_tensors="pt")
            lengths = torch.unique_consecutive(
                out["segment_ids"].flatten()[out["segment_ids"].flatten() > 0] + 0, return_counts=True)[1]
            per_row = [(out["segment_ids"][r] == s).sum().item() for r in range(out["segment_ids"].shape[0])
                       for s in range(1, int(out["segment_ids"][r].max()) + 1)]
            assert sorted(per_row) == sorted(collator.segments(clip)), (samples, c)
            assert lengths.sum().item() == sum(collator.segments(clip))


def test_modes_transform_clips():
    fe = ElasticASTFeatureExtractor()
    rng = np.random.default_rng(0)
    wave = torch.randn(16000 * 12)
    native = ClipTransform("native", fe, max_seconds=5.0)
    cut, c, full, audio = native(wave, rng)
    assert cut.numel() == 80000 and c == 1.0 and full == 1198 and audio == 498  # cut only when longer
    assert native(wave[:16000], rng)[0].numel() == 16000
    mixed = ClipTransform("mixed", fe, compressions=(1.0, 1.2, 4.0))
    assert {mixed(wave, np.random.default_rng(s))[1] for s in range(30)} == {1.0, 1.2, 4.0}
    assert ClipTransform("mixed", fe, compressions=(1.0, 4.0), eval_compression=2.0,
                         train=False)(wave, rng)[1] == 2.0
    fixed = ClipTransform("fixed", fe, fixed_frames=1024)
    short, _, full, audio = fixed(wave[:32000], rng)
    assert fixed.frames(short.numel(), 1.0) == 1024 and audio == full == 198  # zero-padded to 1024 frames
    assert fixed.frames(fixed(wave, rng)[0].numel(), 1.0) == 1024  # cut
    avgpool = ClipTransform("avgpool", fe, compressions=(1, 2, 3, 4))
    assert avgpool(wave[:500], rng)[1] == 1.0  # a 1-frame clip cannot be pooled by C > 1
    with pytest.raises(ValueError, match="integers"):
        ClipTransform("avgpool", fe, compressions=(1.5,))


# ------------------------------------------------------------------------------------------------------- batcher
def long_tailed_clips(n: int, seed: int = 0) -> list[Clip]:
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.lognormal(np.log(6), 0.8, n), 1, 30)
    return [Clip(key=(0, i), label=0, wave=torch.zeros(int(s * 16000)), audio_frames=int(s * 100),
                 full_frames=int(s * 100)) for i, s in enumerate(seconds)]


def test_batcher_budget_order_and_padding_against_sequential_fill():
    fe = ElasticASTFeatureExtractor()
    collator = PackedCollator(fe, ClipTransform("native", fe), 2, max_tokens_per_row=2048)
    clips = long_tailed_clips(300)
    batcher = TokenBudgetBatcher(collator.segments, tokens_per_batch=8192, max_tokens_per_row=2048, lookahead=4)
    batches = list(batcher(iter(clips)))
    emitted = [c.key for b in batches for c in b]
    assert sorted(emitted) == [c.key for c in clips]  # every clip exactly once
    rows = 0
    for batch in batches:
        lengths = [n for c in batch for n in collator.segments(c)]
        packed = pack_segments(lengths, 2048)
        assert len(packed) <= 4 and sum(lengths) <= 8192  # the token budget: ≤ 4 rows of ≤ 2048 tokens
        rows += len(packed)
    tokens = sum(n for c in clips for n in collator.segments(c))
    sequential = len(sequential_fill([sum(collator.segments(c)) for c in clips], 2048))
    useful, useful_sequential = tokens / (rows * 2048), tokens / (sequential * 2048)
    assert useful > useful_sequential and useful > 0.95, (useful, useful_sequential)
    # No clip waits long: the oldest buffered clip always goes out with the next batch.
    waits = [emitted.index(c.key) - i for i, c in enumerate(clips)]
    assert max(waits) < 4 * 8192 / 100


def test_collated_batch_runs_the_model_and_reports_stats(tiny_config):
    from elasticast import ElasticASTForAudioClassification

    fe = ElasticASTFeatureExtractor()
    transform = ClipTransform("native", fe, max_seconds=3.0)
    collator = PackedCollator(fe, transform, 3, 512, Augmentation(freq_mask=24, time_mask=0.2, token_dropout=0.3))
    rng = np.random.default_rng(0)
    clips = []
    for i, seconds in enumerate((0.5, 2.0, 4.5, 1.2)):
        wave, c, full, audio = transform(torch.randn(int(seconds * 16000)), rng)
        clips.append(Clip((0, i), label=i % 3, wave=wave, compression=c, full_frames=full, audio_frames=audio))
    batch = collator(clips, np.random.default_rng(1), train=True)
    assert batch.targets.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]
    assert batch.stats["clips"] == 4 and 0 < batch.stats["useful"] <= batch.stats["slots"]
    assert batch.stats["full_frames"] > batch.stats["audio_frames"]  # the 4.5 s clip was cut to 3 s
    model = ElasticASTForAudioClassification(tiny_config(num_labels=3)).eval()
    assert model(**batch.inputs).logits.shape == (4, 3)

    fixed = FixedCollator(fe, ClipTransform("fixed", fe, fixed_frames=256, pad=False), 3, 256,
                          Augmentation(freq_mask=24, time_mask=0.2))
    batch = fixed(clips, np.random.default_rng(1), train=True)
    assert batch.inputs["input_values"].shape == (4, 256, 128)
    pad_value = -fe.mean / (2 * fe.std)
    padding = batch.inputs["input_values"][0, 60:]  # 0.5 s = 48 frames: the rest is padding (or freq-masked)
    assert torch.isclose(padding, torch.tensor(pad_value)).logical_or(padding == 0).all()


# ------------------------------------------------------------------------------------------------- augmentation
def test_spec_augment_masks_inside_each_segment_scaled_to_its_length():
    fe = ElasticASTFeatureExtractor()
    waves = [torch.randn(16000 * s) for s in (1, 4)]
    inputs = fe(waves, sampling_rate=16000, packing=True, max_tokens_per_row=2048, return_tensors="pt").data
    original = inputs["input_values"].clone()
    rng = np.random.default_rng(3)
    mask_patches(inputs, rng, freq_mask=32, time_mask=0.25, patch_size=16)
    changed = (inputs["input_values"] != original) & (inputs["input_values"] == 0)
    assert changed.any() and not changed[inputs["segment_ids"] == 0].any()
    for clip, frames in ((1, 96), (2, 384)):
        tokens = inputs["clip_ids"] == clip
        patches = inputs["input_values"][tokens].reshape(-1, 16, 16)  # [tokens, freq, time]
        time_index = inputs["time_ids"][tokens][:, None] * 16 + torch.arange(16)
        masked_time = (patches == 0).all(dim=1)  # a whole column of a patch
        assert len(set(time_index[masked_time].tolist())) <= 0.25 * frames

    spectrograms = torch.randn(2, 100, 128)
    mask_spectrograms(spectrograms, [40, 100], np.random.default_rng(0), freq_mask=0, time_mask=0.5)
    masked_frames = (spectrograms == 0).all(dim=2).sum(dim=1)
    assert masked_frames[0] <= 20 and masked_frames[1] <= 50
    assert not (spectrograms[0, 40:] == 0).all(dim=1).any()  # never in the padding past the clip


def test_token_dropout_keeps_segments_contiguous(tiny_config):
    from elasticast import ElasticASTForAudioClassification

    fe = ElasticASTFeatureExtractor()
    inputs = fe([torch.randn(16000 * s) for s in (1, 2, 3)], sampling_rate=16000, packing=True,
                max_tokens_per_row=1024, return_tensors="pt").data
    dropped = drop_tokens(inputs, np.random.default_rng(0), p=0.5)
    before, after = (inputs["segment_ids"] > 0).sum(), (dropped["segment_ids"] > 0).sum()
    assert 0.35 * before < after < 0.65 * before
    assert {1, 2, 3} <= set(dropped["clip_ids"].unique().tolist())  # every clip keeps tokens
    model = ElasticASTForAudioClassification(tiny_config(num_labels=2)).eval()
    assert model(**dropped).logits.shape == (3, 2)  # PackedLayout accepts it: segments still contiguous


def test_mixup_mixes_waves_and_targets():
    waves = [torch.ones(100), -torch.ones(40)]
    targets = torch.eye(2)
    mixed, new = mixup(waves, targets, np.random.default_rng(0), p=1.0, alpha=10.0)
    assert mixed[0].shape == (100,) and mixed[1].shape == (40,)
    assert torch.allclose(new.sum(1), torch.ones(2)) and (new > 0).all()
    lam = new[0, 0].item()
    assert torch.allclose(mixed[0], torch.full((100,), 2 * lam - 1))


# ------------------------------------------------------------------------------------------- streams and resume
def test_stream_replays_exactly_with_dataloader_workers(tmp_path):
    """Two workers over a 4-shard stream: the order is the same run to run, and a stream resumed from a saved
    batcher state yields exactly the batches the uninterrupted one yields next."""
    from datasets import load_dataset

    files = write_arrow_shards(tmp_path / "arrow", 24, shards=4)
    stream = load_dataset("arrow", data_files={"train": files}, streaming=True)["train"]
    stream = stream.cast_column("audio", Audio(decode=False))
    fe = ElasticASTFeatureExtractor()
    transform = ClipTransform("mixed", fe, compressions=(1.0, 2.0, 3.0))
    collator = PackedCollator(fe, transform, 3, 256)
    space = infer_labels(stream, "label")[0]

    def batches(state=None, stop=None):
        batcher = TokenBudgetBatcher(collator.segments, 512, 256, lookahead=2)
        if state:
            batcher.load_state_dict(state)
        source = ClipSource(slot_stream(stream, 0, 1, epoch=1, seed=5, shuffle_buffer=4), "audio", "label",
                            space.encoder(stream.features["label"]), transform, 5, 1, 0,
                            SourceState(dict(batcher.pulled), batcher.replay()))
        out = []
        for batch in batcher(ordered_clips(source, num_workers=2)):
            out.append([(c.key, c.compression, c.wave.numel()) for c in batch])
            if stop is not None and len(out) == stop:
                return out, json.loads(json.dumps(batcher.state_dict()))
        return out, None

    full, _ = batches()
    assert full == batches()[0]
    assert {key[0] for b in full for key, _, _ in b} == {0, 1}  # both workers contributed
    head, state = batches(stop=3)
    assert state["buffer"]  # the packer buffer was not empty at the interruption
    tail, _ = batches(state=state)
    assert head + tail == full


def kill_when_checkpointed(argv: list[str], checkpoint: Path, timeout: float = 240.0) -> int:
    """Runs `argv` in its own process group and SIGKILLs the whole group (DataLoader workers included) as soon as
    `checkpoint` is complete (a checkpoint folder appears by an atomic rename, once everything is written)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    log_path = checkpoint.parent.parent.with_name("killed.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while not (checkpoint / "trainer_state.json").exists():
                if process.poll() is not None:
                    raise AssertionError(f"the run ended ({process.returncode}) before writing {checkpoint.name}:\n"
                                         + log_path.read_text()[-3000:])
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {checkpoint.name} within {timeout} s")
                time.sleep(0.01)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            returncode = process.wait()
    return returncode


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    """SIGKILL from outside once the step-4 checkpoint exists (checkpoints every 2 steps, mid-epoch), resume from
    the latest checkpoint: the final weights equal an uninterrupted run's exactly (tolerance 0: same batches, same
    single-threaded arithmetic)."""
    files = write_arrow_shards(tmp_path / "arrow", 40, shards=2)
    common = ["--dataset", "arrow", "--data-files", *files, "--epochs", "2", "--num-workers", "2",
              "--mode", "mixed", "--mixup", "0.5", "--token-dropout", "0.1", "--eval-split", "none", *TINY_RUN,
              "--tokens-per-batch", "256", "--max-tokens-per-row", "128", "--packing-lookahead", "2"]
    train_cli([*common, "--output-dir", str(tmp_path / "straight"), "--save-steps", "0"])
    resumed_dir = tmp_path / "resumed"
    launch = [sys.executable, "-m", "elasticast.training", *common, "--output-dir", str(resumed_dir),
              "--save-steps", "2"]
    assert kill_when_checkpointed(launch, resumed_dir / "checkpoints" / "step_00000004") == -signal.SIGKILL
    assert not (resumed_dir / "model.safetensors").exists()  # killed before the end
    checkpoint = max((resumed_dir / "checkpoints").glob("step_*"))  # what --resume picks
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    data_state = json.loads((checkpoint / "data_state_0.json").read_text())
    assert state["epoch"] == 0 and 0 < state["consumed"] < 40 and data_state[0]["buffer"]  # mid-epoch, buffered
    train_cli([*common, "--output-dir", str(resumed_dir), "--save-steps", "2", "--resume"])
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())["summary"]
    resumed = json.loads((resumed_dir / "metrics.json").read_text())["summary"]
    assert resumed["steps"] == straight["steps"] > state["step"]
    assert max_weight_diff(tmp_path / "straight", resumed_dir) == 0.0


def test_two_processes_match_one_process_over_the_same_global_batches(tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo) against 1 process with 2 accumulation micro-batches: the
    data slots give both the same global batches; the ranks end with identical weights and match the single
    process to 1e-6 (measured: 0.0 — sums of two terms are order-independent)."""
    data = write_audiofolder(tmp_path / "tones", 30)
    common = ["--dataset", str(data), "--epochs", "2", "--eval-split", "none", "--freq-mask", "24", *TINY_RUN]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port()), "-m", "elasticast.training"]
    run_command([*launch, *common, "--output-dir", str(tmp_path / "ddp")], env_extra={"ACCELERATE_USE_CPU": "true"})
    train_cli([*common, "--output-dir", str(tmp_path / "single"), "--gradient-accumulation-steps", "2"])
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert (ddp["summary"]["processes"], single["summary"]["processes"]) == (2, 1)
    assert ddp["summary"]["max_weight_diff_across_processes"] == 0.0  # both ranks hold the same weights
    assert ddp["summary"]["steps"] == single["summary"]["steps"] and ddp["summary"]["clips"] == 60
    # One slot ran dry before the other (uneven packed batches): weight-0 dummy steps kept the ranks in step.
    assert ddp["summary"]["idle_micro_batches"] == single["summary"]["idle_micro_batches"] > 0
    assert [h["train_loss"] for h in ddp["history"]] == pytest.approx([h["train_loss"] for h in single["history"]],
                                                                      abs=1e-6)
    assert max_weight_diff(tmp_path / "ddp", tmp_path / "single") <= 1e-6


# ------------------------------------------------------------------------------------- runs, export, baseline
def exported_logits(out: Path, files: list[Path]) -> torch.Tensor:
    """`[N, C]` logits of the exported model for `files`, decoded as training decodes them, one clip at a time."""
    from elasticast import ElasticASTForAudioClassification
    from elasticast.data import decode_audio

    model = ElasticASTForAudioClassification.from_pretrained(out).eval()
    fe = ElasticASTFeatureExtractor.from_pretrained(out)
    with torch.no_grad():
        return torch.cat([model(**fe(decode_audio({"path": str(f)}, 16000), sampling_rate=16000,
                                     return_tensors="pt")).logits for f in files])


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """By hand (no ties): the mean, over the positives, of the precision among the clips ranked down to each."""
    hits = positives[np.argsort(-scores)].astype(bool)
    return float(np.mean(np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)))


def test_undecodable_file_is_skipped_counted_and_the_export_loads(tmp_path, in_process):
    from transformers import AutoModelForAudioClassification, pipeline

    data = write_audiofolder(tmp_path / "tones", 12, broken=1)
    out = tmp_path / "run"
    summary = in_process(["--dataset", str(data), "--output-dir", str(out), "--epochs", "2", *TINY_RUN[:-4],
                          "--report-to", "tensorboard"])
    assert summary["skipped"] == 2 and summary["clips"] == 24  # the broken file, once per epoch
    metrics = json.loads((out / "metrics.json").read_text())
    assert "broken0.wav" in metrics["history"][0]["skipped_examples"][0]
    assert metrics["best_eval"]["clips"] == 6  # the whole test split, gathered once
    with open(data / "test" / "metadata.csv") as f:
        rows = list(csv.DictReader(f))
    logits = exported_logits(out, [data / "test" / r["file_name"] for r in rows])
    names = ["high", "low", "mid"]  # the exported id2label (checked below)
    correct = sum(names[i] == r["label"] for i, r in zip(logits.argmax(-1).tolist(), rows))
    assert metrics["best"]["metric"] == "accuracy"
    assert metrics["best_eval"]["accuracy"] == pytest.approx(correct / len(rows), abs=1e-12)
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")  # the package's card, filled at the end of training
    result = card.data.to_dict()["model-index"][0]["results"][0]
    assert result["metrics"][0]["value"] == metrics["best"]["value"] and result["dataset"]["split"] == "test"
    assert "custom_code" in card.data.tags and card.data.pipeline_tag == "audio-classification"

    model = AutoModelForAudioClassification.from_pretrained(out)
    assert model.config.id2label == {0: "high", 1: "low", 2: "mid"}  # string labels, mapping saved
    result = pipeline("audio-classification", model=str(out))(str(data / "test" / "0000.wav"))
    assert {r["label"] for r in result} == {"high", "low", "mid"}


def test_multi_label_run_reports_map(tmp_path, in_process):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        folder = tmp_path / "ml" / split
        folder.mkdir(parents=True)
        with open(folder / "metadata.jsonl", "w") as f:
            for i in range(9):
                present = [name for j, name in enumerate(CLASSES) if (i >> j) & 1] or ["low"]
                wave = sum(tone(1.5, CLASSES[name], 16000, rng) for name in present)
                soundfile.write(folder / f"{i}.wav", wave, 16000)
                f.write(json.dumps({"file_name": f"{i}.wav", "tags": present}) + "\n")
    out = tmp_path / "run"
    summary = in_process(["--dataset", str(tmp_path / "ml"), "--label-column", "tags", "--output-dir", str(out),
                          "--epochs", "1", *TINY_RUN])
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(out)
    assert config.problem_type == "multi_label_classification" and len(config.id2label) == 3
    rows = [json.loads(line) for line in (tmp_path / "ml" / "test" / "metadata.jsonl").read_text().splitlines()]
    scores = exported_logits(out, [tmp_path / "ml" / "test" / r["file_name"] for r in rows]).numpy()
    names = [config.id2label[i] for i in range(3)]
    positives = np.array([[name in r["tags"] for name in names] for r in rows])
    by_hand = np.mean([average_precision(scores[:, c], positives[:, c]) for c in range(3)])
    assert summary["best"]["metric"] == "mean_average_precision"
    assert summary["best"]["value"] == pytest.approx(by_hand, abs=1e-9)


def test_ast_baseline_trains_at_fixed_length_and_loads_with_pipeline(tmp_path, in_process):
    from transformers import ASTForAudioClassification, pipeline

    data = write_audiofolder(tmp_path / "tones", 9)
    out = tmp_path / "ast"
    summary = in_process(["--dataset", str(data), "--output-dir", str(out), "--model", "ast", "--mode", "fixed",
                          "--fixed-frames", "256", "--epochs", "1", *TINY_RUN[:-4], "--tokens-per-batch", "512"])
    model = ASTForAudioClassification.from_pretrained(out)
    assert (model.config.frequency_stride, model.config.time_stride, model.config.max_length) == (16, 16, 256)
    assert summary["steps"] >= 2 and summary["cut_pct"] > 0  # clips up to 4 s cut to 2.56 s
    assert len(pipeline("audio-classification", model=str(out))(str(data / "test" / "0001.wav"))) == 3
    card = (out / "README.md").read_text()  # the one card renderer, AST template
    assert "cut or padded to 256 frames" in card and "| accuracy |" in card and "trust_remote_code" not in card
    with pytest.raises(ValueError, match="--mode fixed"):
        in_process(["--dataset", str(data), "--output-dir", str(out), "--model", "ast"])


def test_push_to_hub_uploads_the_export_in_one_commit(tmp_path, in_process, monkeypatch):
    from huggingface_hub import HfApi

    calls = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("repo", repo_id))
    monkeypatch.setattr(HfApi, "create_commit", lambda self, repo_id, operations, **kw: calls.setdefault(
        "files", sorted(op.path_in_repo for op in operations)))
    data = write_audiofolder(tmp_path / "tones", 6)
    in_process(["--dataset", str(data), "--output-dir", str(tmp_path / "run"), "--epochs", "1", "--eval-split", "none",
                "--save-steps", "1", "--push-to-hub", "--hub-model-id", "me/tones", *TINY_RUN])
    assert calls["repo"] == "me/tones"
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "modeling_elasticast.py", "README.md",
            "metrics.json"} <= set(calls["files"])
    assert not any(f.startswith(("checkpoints", "logs")) for f in calls["files"])
    with pytest.raises(ValueError, match="--hub-model-id"):
        in_process(["--dataset", str(data), "--output-dir", str(tmp_path / "x"), "--push-to-hub"])


@pytest.mark.parametrize("kind", ["elasticast", "ast"])
def test_fine_tuning_starts_from_pretrained_weights_with_a_new_head(tmp_path, in_process, kind):
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, AutoModelForAudioClassification

    from elasticast import ElasticASTConfig, ElasticASTForAudioClassification

    start = tmp_path / "pretrained"
    size = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=5)
    if kind == "ast":
        ASTForAudioClassification(ASTConfig(**size, patch_size=16, frequency_stride=16, time_stride=16,
                                            max_length=256, num_mel_bins=128)).save_pretrained(start)
        ASTFeatureExtractor(max_length=256, num_mel_bins=128).save_pretrained(start)
        extra = ["--model", "ast", "--mode", "fixed", "--fixed-frames", "256"]
    else:
        ElasticASTForAudioClassification(ElasticASTConfig(**size)).save_pretrained(start)
        ElasticASTFeatureExtractor().save_pretrained(start)
        extra = []
    data = write_audiofolder(tmp_path / "tones", 6)
    out = tmp_path / "tuned"
    in_process(["--dataset", str(data), "--output-dir", str(out), "--model-name-or-path", str(start), "--epochs", "1",
                "--max-steps", "1", "--eval-split", "none", *TINY_RUN, "--learning-rate", "1e-9", *extra])
    tuned = AutoModelForAudioClassification.from_pretrained(out)
    assert tuned.config.num_labels == 3 and tuned.config.id2label[0] == "high"
    before, after = load_weights(start), load_weights(out)
    encoder = [k for k in before if "classifier" not in k]
    assert encoder and max((before[k] - after[k]).abs().max().item() for k in encoder) < 1e-6
    wrong = ["--model", "elasticast"] if kind == "ast" else ["--model", "ast", "--mode", "fixed"]
    with pytest.raises(ValueError, match="pass --model"):
        in_process(["--dataset", str(data), "--output-dir", str(tmp_path / "x"), "--model-name-or-path", str(start),
                    *TINY_RUN, *wrong])


def test_every_mode_gets_the_native_steps_by_default_and_input_budget_gives_fewer(tmp_path, in_process):
    """The native budget (default) groups the same clips in every mode: mixed, avgpool and the fixed-length AST run
    exactly the native run's optimiser steps; counting the tokens the mode feeds the model makes fuller, fewer batches
    in mixed mode. metrics.json records steps, clips and tokens per epoch and in total."""
    data = write_audiofolder(tmp_path / "tones", 24)
    runs = {
        "native": ["--mode", "native"],
        "mixed": ["--mode", "mixed"],
        "avgpool": ["--mode", "avgpool"],
        "ast": ["--model", "ast", "--mode", "fixed", "--fixed-frames", "256"],
        "mixed-input": ["--mode", "mixed", "--batch-budget", "input"],
    }
    summaries, metrics = {}, {}
    for name, extra in runs.items():
        out = tmp_path / name
        summaries[name] = in_process(["--dataset", str(data), "--output-dir", str(out), "--epochs", "2",
                                      "--eval-split", "none", *TINY_RUN, *extra])
        metrics[name] = json.loads((out / "metrics.json").read_text())
    native = summaries["native"]
    assert native["steps"] >= 6
    for name in ("mixed", "avgpool", "ast"):
        assert summaries[name]["steps"] == native["steps"], name
        assert summaries[name]["total_clips"] == native["total_clips"] == 2 * 24
        assert summaries[name]["total_native_tokens"] == native["total_native_tokens"]
        assert [h["steps"] for h in metrics[name]["history"]] == [h["steps"] for h in metrics["native"]["history"]]
    # compressed clips feed fewer tokens per step; counted as fed, they fill batches with more clips: fewer steps
    assert summaries["mixed"]["total_tokens"] < native["total_tokens"] == native["total_native_tokens"]
    assert summaries["mixed-input"]["steps"] < native["steps"]
    assert metrics["mixed"]["summary"]["batch_budget"] == "native"
    for name in runs:  # the learning curves, redrawn at every epoch end, beside the tensorboard logs
        assert (tmp_path / name / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = metrics["mixed"]["history"]
    assert sum(h["steps"] for h in history) == summaries["mixed"]["steps"]
    assert sum(h["tokens"] for h in history) == summaries["mixed"]["total_tokens"]


def test_compute_stats_normalises_with_the_training_split_and_every_consumer_loads_them(tmp_path, in_process):
    """--compute-stats: the training split's log-mel mean/std (checked against a direct computation over every
    training clip) go into the exported preprocessor_config.json, and evaluation, the pipeline, the classifier and the
    ONNX feature graph all normalise with them."""
    from transformers import pipeline

    from elasticast.data import decode_audio
    from elasticast.evaluation import load_checkpoint
    from elasticast.inference import ElasticASTClassifier

    data = write_audiofolder(tmp_path / "tones", 9, broken=1)
    out = tmp_path / "run"
    in_process(["--dataset", str(data), "--output-dir", str(out), "--epochs", "1", "--eval-split", "none",
                "--compute-stats", "--stats-clips", "100", *TINY_RUN])
    fe = ElasticASTFeatureExtractor()
    values = [fe.fbank([decode_audio({"path": str(p)}, 16000)], [1.0])[0].double().flatten()
              for p in sorted((data / "train").glob("0*.wav"))]
    everything = torch.cat(values)
    mean, std = float(everything.mean()), float(everything.std(unbiased=False))
    assert abs(mean - fe.mean) > 0.5  # tones are not AudioSet: the statistics really change
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["feature_stats"]["clips"] == 9 and metrics["feature_stats"]["skipped"] == 1
    saved = json.loads((out / "preprocessor_config.json").read_text())
    assert saved["mean"] == pytest.approx(mean, rel=1e-9) and saved["std"] == pytest.approx(std, rel=1e-9)

    consumers = {
        "classifier": ElasticASTClassifier.from_pretrained(str(out)).fe,
        "evaluation": load_checkpoint(str(out), 4096, "frame_shift").fe,
        "pipeline": pipeline("audio-classification", model=str(out)).feature_extractor,
    }
    for name, extractor in consumers.items():
        assert (extractor.mean, extractor.std) == (saved["mean"], saved["std"]), name
    wave = decode_audio({"path": str(data / "test" / "0001.wav")}, 16000)
    expected = consumers["classifier"](wave, sampling_rate=16000)["input_values"][0]
    default = fe(wave, sampling_rate=16000)["input_values"][0]
    assert np.abs(expected - default).max() > 0.05
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from elasticast.onnx_export import export_onnx
    from elasticast.onnx_runtime import OnnxAudioClassifier

    export_onnx(out, tmp_path / "onnx", compressions=(1.0,), progress=None)
    onnx_values = OnnxAudioClassifier(tmp_path / "onnx").features(wave.numpy())[0]
    assert np.abs(onnx_values - np.asarray(expected)).max() <= 2e-4

