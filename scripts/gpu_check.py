"""Correctness checks for a GPU, in one go: attention backends, packed rows, gradients, bf16 training, fbank.

    python scripts/gpu_check.py --device cuda --size base --out gpu_check.json   # on the GPU machine
    python scripts/gpu_check.py --device cpu --size tiny                         # dry run (CI runs it)

Prints one JSON line per check and, with `--out`, a record holding the command, date, device name, library versions
and every check. Exit status 1 when a check fails. Needs only torch, transformers and numpy (no datasets, torchcodec,
accelerate, soundfile or espeak-ng: the GPU machine has none of them); clips are generated tones and chirps, or the
1-D float32 16 kHz waveform given with `--speech speech.npy`.

Checks:
- `backend`: every attention backend — `eager` and `sdpa` (one call per group of equal-length segments),
  `flex_attention` (one call with a document BlockMask; transformers runs it through `torch.compile`) and
  `torch_varlen` (one `varlen_attn` call over the Σ real tokens; CUDA only, bf16 — in fp32 the model falls back to
  grouped sdpa, recorded as `path`) — forward and backward on packed rows,
  in fp32 and under bf16 autocast, against the fp32 eager reference. Errors are relative norms
  ‖x − ref‖ / ‖ref‖ of the logits and of all parameter gradients concatenated. Tolerances: fp32 ≤ 1e-4 (TF32
  off); bf16 ≤ 3e-2 (logits) and ≤ 5e-2 (gradients) — bf16 keeps 8 mantissa bits (≈ 4e-3 per rounding), and the
  error grows through the layers; the bf16 eager run is recorded beside the others as the floor. Also: packed rows
  == one clip per row (same backend and precision, ≤ the same tolerance as against the reference, 1e-5 in fp32)
  and every gradient finite. Backends that cannot run on the device are listed under `skipped` with the reason
  (on CPU: `torch_varlen` is CUDA only, flex attention has no backward on CPU, and its CPU kernel fails in bf16
  where torch 2.13 was tried — the error is recorded).
- `training`: 40 AdamW steps on a tone task (3 pitches, 0.5–4 s clips) through the training collators
  (`elasticast.training.batching`, SpecAugment on) learn — last loss < half the first — for ElasticAST (default
  attention) and for transformers' AST baseline (16×16 patches, stride 16, 512 frames); bf16 autocast on CUDA,
  fp32 on CPU (the precision `--mixed-precision auto` picks there).
- `fbank`: the feature extractor on the device against CPU (float32 on accelerators vs float64 on CPU: ≤ 1e-3 on
  the normalised log-mel frames, as float32 reaches 5e-4 on tonal clips) and, where torchaudio loads, against
  `torchaudio.compliance.kaldi.fbank` (≤ 1e-3).
"""

import argparse
import datetime
import json
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from elasticast import ElasticASTConfig, ElasticASTFeatureExtractor, ElasticASTForAudioClassification  # noqa: E402
from elasticast import modeling_elasticast  # noqa: E402


SIZES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
BACKENDS = ("eager", "sdpa", "torch_varlen", "flex_attention")  # flex last: it compiles (slow) per shape and dtype
TOLERANCES = {"fp32": {"logits": 1e-4, "grads": 1e-4, "rows": 1e-5}, "bf16": {"logits": 3e-2, "grads": 5e-2,
                                                                              "rows": 3e-2}}
CLIP_SECONDS = (0.3, 1.0, 2.0, 2.0, 7.5, 27.0, 45.0)  # equal lengths form a group; 45 s spans two windows
TRAINING_STEPS = 40


class Record:
    """Collects the checks, prints each as one JSON line, rewrites the record file after each (so that a time limit
    keeps what was done), and knows whether all passed."""

    def __init__(self, argv: list[str], device: torch.device, size: str, out: str | None):
        self.out = out
        self.data = {
            "command": "python scripts/gpu_check.py " + " ".join(argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(device),
            "size": size,
            "tolerances": TOLERANCES,
            "checks": [],
            "skipped": [],
        }

    def check(self, name: str, ok: bool | None = None, **values):
        entry = {"check": name, **values, **({} if ok is None else {"ok": bool(ok)})}
        self.data["checks"].append(entry)
        self.save(entry)

    def skip(self, name: str, reason: str):
        entry = {"check": name, "skipped": reason}
        self.data["skipped"].append(entry)
        self.save(entry)

    def save(self, entry: dict | None = None):
        if entry is not None:
            print(json.dumps(entry), flush=True)
        self.data["passed"] = not self.failures
        if self.out:
            Path(self.out).write_text(json.dumps(self.data, indent=2) + "\n")

    @property
    def failures(self) -> list[dict]:
        return [c for c in self.data["checks"] if c.get("ok") is False]


def machine(device: torch.device) -> dict:
    found = {"device": str(device), "platform": platform.platform(), "python": platform.python_version(),
             "torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        found.update(gpu=properties.name, capability=[properties.major, properties.minor], cuda=torch.version.cuda,
                     gpu_memory_gib=properties.total_memory / 2**30)
    return found


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    return float((x.float() - reference.float()).norm() / reference.float().norm().clamp_min(1e-30))


def test_waves(speech: np.ndarray | None, seconds=CLIP_SECONDS, seed: int = 0) -> list[np.ndarray]:
    """Clips of the given lengths: tiled `speech` when given, else rising chirps; plus faint noise."""
    rng = np.random.default_rng(seed)
    waves = []
    for i, s in enumerate(seconds):
        n = int(16000 * s)
        if speech is None:
            t = np.arange(n) / 16000
            wave = 0.3 * np.sin(2 * np.pi * (150 + 100 * i + 60 * t) * t)
        else:
            wave = np.resize(np.roll(speech, 1000 * i), n)
        waves.append((wave + 0.003 * rng.standard_normal(n)).astype(np.float32))
    return waves


def unavailable(implementation: str, device: torch.device) -> str | None:
    """Why a backend cannot run here at all (None when it can)."""
    if implementation == "torch_varlen":
        if "torch_varlen" not in getattr(modeling_elasticast, "VARLEN_IMPLEMENTATIONS", ()):
            return "this checkout's model has no torch_varlen attention"
        if device.type != "cuda":
            return "torch.nn.attention.varlen.varlen_attn is CUDA only"
    return None


# ---------------------------------------------------------------------------------------------------- backends
def run_backend(model, implementation: str, packed: dict, rows: dict, labels, device, precision: str,
                backward: bool) -> dict:
    """Logits on packed rows and on one clip per row, and (with `backward`) the flat parameter gradient."""
    model.set_attn_implementation(implementation)
    model.zero_grad(set_to_none=True)
    with autocast(device, precision), (nullcontext() if backward else torch.no_grad()):
        out = model(**packed, labels=labels)
    grad = None
    if backward:
        out.loss.backward()
        grad = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
    with autocast(device, precision), torch.no_grad():
        by_rows = model(**rows).logits
    return {"logits": out.logits.detach().float(), "rows": by_rows.float(), "grad": grad}


def check_backends(record: Record, device: torch.device, size: str, waves: list[np.ndarray]):
    fe = ElasticASTFeatureExtractor()
    packed = fe(waves, sampling_rate=16000, packing=True, return_tensors="pt", device=device).data
    rows = fe(waves, sampling_rate=16000, return_tensors="pt", device=device).data
    labels = torch.arange(len(waves), device=device) % 5
    torch.manual_seed(0)
    config = ElasticASTConfig(**SIZES[size], num_labels=5, attn_implementation="eager")
    model = ElasticASTForAudioClassification(config).to(device).eval()
    tokens = int((packed["segment_ids"] > 0).sum())
    record.check("inputs", clips=len(waves), seconds=[len(w) / 16000 for w in waves], tokens=tokens,
                 packed_rows=list(packed["segment_ids"].shape), one_clip_rows=list(rows["segment_ids"].shape))
    reference = run_backend(model, "eager", packed, rows, labels, device, "fp32", backward=True)
    for precision in ("fp32", "bf16"):
        tolerance = TOLERANCES[precision]
        for implementation in BACKENDS:
            name = f"{implementation}/{precision}"
            reason = unavailable(implementation, device)
            if reason:
                record.skip(f"backend {name}", reason)
                continue
            backward = not (implementation == "flex_attention" and device.type == "cpu")
            try:
                start = time.perf_counter()
                got = run_backend(model, implementation, packed, rows, labels, device, precision, backward)
                seconds = time.perf_counter() - start
            except Exception as error:  # report and go on: one backend failing must not hide the others
                message = f"{type(error).__name__}: {error}"[:500]
                if implementation == "flex_attention" and device.type == "cpu" and precision == "bf16":
                    # Flex attention targets GPUs; torch's CPU inductor kernel for it has failed in bf16 here
                    # (torch 2.13: an index-out-of-bounds in the generated C++). Recorded, not counted as a pass.
                    record.skip(f"backend {name}", f"flex attention in bf16 fails on CPU: {message}")
                    continue
                record.check("backend", False, backend=implementation, precision=precision,
                             error=message)
                continue
            values = {
                "logits_error": relative_error(got["logits"], reference["logits"]),
                "packed_vs_rows_error": relative_error(got["logits"], got["rows"]),
                "logits_finite": bool(torch.isfinite(got["logits"]).all()),
            }
            ok = (values["logits_error"] <= tolerance["logits"] and values["logits_finite"]
                  and values["packed_vs_rows_error"] <= tolerance["rows"])
            if backward:
                values["grad_error"] = relative_error(got["grad"], reference["grad"])
                values["grads_finite"] = bool(torch.isfinite(got["grad"]).all())
                ok = ok and values["grad_error"] <= tolerance["grads"] and values["grads_finite"]
            else:
                record.skip(f"backend {name} backward", "FlexAttention has no backward on CPU")
            if implementation == "flex_attention":
                values["compiled"] = True  # transformers calls flex_attention through torch.compile
            if implementation == "torch_varlen":  # the kernel takes fp16/bf16; the model falls back to grouped sdpa
                values["path"] = "varlen_attn" if precision == "bf16" else "grouped sdpa fallback (fp32)"
            record.check("backend", ok, backend=implementation, precision=precision, seconds=seconds, **values)


# ---------------------------------------------------------------------------------------------------- training
def tone_clips(n: int, transform, seed: int = 0) -> list:
    from elasticast.training.data import Clip

    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        t = np.arange(int(rng.uniform(0.5, 4.0) * 16000)) / 16000
        wave = torch.from_numpy((0.3 * np.sin(2 * np.pi * (300 + 400 * (i % 3)) * t)
                                 + 0.05 * rng.standard_normal(t.size)).astype(np.float32))
        wave, c, full, audio = transform(wave, rng)
        clips.append(Clip((0, i), label=i % 3, wave=wave, compression=c, full_frames=full, audio_frames=audio))
    return clips


def train_steps(model, batches, device, precision: str, inputs_of) -> dict:
    """`TRAINING_STEPS` AdamW steps cycling over `batches`: mean loss of the first and last three, seconds/step."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses, start = [], time.perf_counter()
    for step in range(TRAINING_STEPS):
        batch = batches[step % len(batches)]
        with autocast(device, precision):
            logits = model(**inputs_of(batch)).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), batch.targets.to(device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    first, last = float(np.mean(losses[:3])), float(np.mean(losses[-3:]))
    return {"first_loss": first, "last_loss": last, "finite": bool(np.isfinite(losses).all()),
            "seconds_per_step": (time.perf_counter() - start) / TRAINING_STEPS}


def check_training(record: Record, device: torch.device):
    from transformers import ASTConfig, ASTForAudioClassification

    from elasticast.training.batching import Augmentation, FixedCollator, PackedCollator
    from elasticast.training.data import ClipTransform

    precision = "bf16" if device.type == "cuda" else "fp32"
    fe = ElasticASTFeatureExtractor()
    rng = np.random.default_rng(1)
    augment = Augmentation(freq_mask=24, time_mask=0.2)
    transform = ClipTransform("native", fe, max_seconds=30.0)
    clips = tone_clips(48, transform)
    packed = PackedCollator(fe, transform, 3, 1024, augment)
    batches = [packed(clips[i : i + 12], rng, train=True) for i in range(0, 48, 12)]

    def on_device(batch):
        return {k: v.to(device) for k, v in batch.inputs.items()}

    torch.manual_seed(0)
    model = ElasticASTForAudioClassification(ElasticASTConfig(**SIZES["tiny"], num_labels=3))
    found = train_steps(model, batches, device, precision, on_device)
    record.check("training", found["finite"] and found["last_loss"] < 0.5 * found["first_loss"], model="elasticast",
                 attention=model.config._attn_implementation, precision=precision, steps=TRAINING_STEPS, **found)

    fixed = FixedCollator(fe, ClipTransform("fixed", fe, fixed_frames=512, pad=False), 3,
                          512, augment)
    ast_batches = [fixed(clips[i : i + 12], rng, train=True) for i in range(0, 48, 12)]
    torch.manual_seed(0)
    ast = ASTForAudioClassification(ASTConfig(**SIZES["tiny"], num_labels=3, patch_size=16, frequency_stride=16,
                                              time_stride=16, max_length=512, num_mel_bins=128))
    found = train_steps(ast, ast_batches, device, precision,
                        lambda batch: {"input_values": batch.inputs["input_values"].to(device)})
    record.check("training", found["finite"] and found["last_loss"] < 0.5 * found["first_loss"], model="ast_stride16",
                 attention=ast.config._attn_implementation, precision=precision, steps=TRAINING_STEPS, **found)


# ------------------------------------------------------------------------------------------------------- fbank
def check_fbank(record: Record, device: torch.device, waves: list[np.ndarray]):
    fe = ElasticASTFeatureExtractor()
    if device.type == "cpu":
        record.skip("fbank device vs cpu", "the device is the CPU")
    else:
        here = fe(waves, sampling_rate=16000, return_tensors="pt", device=device)["input_values"].cpu()
        cpu = fe(waves, sampling_rate=16000, return_tensors="pt")["input_values"]
        error = float((here - cpu).abs().max())
        record.check("fbank_device_vs_cpu", error <= 1e-3, max_abs_diff=error, tolerance=1e-3)
    try:
        import torchaudio.compliance.kaldi as kaldi
    except (ImportError, OSError) as error:  # torchaudio missing, or its native library fails to load
        record.skip("fbank vs torchaudio", f"torchaudio does not load here: {type(error).__name__}: {error}"[:300])
        return
    wave = torch.from_numpy(waves[2])
    ours = fe.normalize(fe.fbank([wave.to(device)], [1.0])[0].cpu().float())
    reference = kaldi.fbank((wave - wave.mean())[None], htk_compat=True, sample_frequency=16000, use_energy=False,
                            window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    reference = fe.normalize(reference)
    error = float((ours - reference).abs().max())
    record.check("fbank_vs_torchaudio_kaldi", error <= 1e-3, max_abs_diff=error, tolerance=1e-3)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python scripts/gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="base", help="model of the backend checks")
    parser.add_argument("--speech", help="a 1-D float32 16 kHz waveform (.npy) to cut the clips from")
    parser.add_argument("--only", nargs="+", choices=("fbank", "training", "backends"),
                        default=["fbank", "training", "backends"], help="steps to run (the slowest last)")
    parser.add_argument("--out", help="write the JSON record here")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU here; run with --device cpu for a dry run.")
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # fp32 checks compare true fp32 matmuls (no TF32)
        torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.fp32_precision = "ieee"
    else:  # torch before 2.9
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    record = Record(argv, device, args.size, args.out)
    speech = None if args.speech is None else np.load(args.speech).astype(np.float32)
    record.data["audio"] = args.speech or "generated chirps"
    record.data["steps"] = args.only
    record.save()
    waves = test_waves(speech)
    steps = {"backends": lambda: check_backends(record, device, args.size, waves),
             "training": lambda: check_training(record, device),
             "fbank": lambda: check_fbank(record, device, waves)}
    for name in args.only:
        start = time.perf_counter()
        steps[name]()
        record.data.setdefault("seconds", {})[name] = time.perf_counter() - start
        record.save()  # `seconds` lists the steps that finished
    print(json.dumps({"passed": record.data["passed"], "failures": len(record.failures),
                      "skipped": [s["check"] for s in record.data["skipped"]]}), flush=True)
    return record.data


if __name__ == "__main__":
    sys.exit(0 if main()["passed"] else 1)
