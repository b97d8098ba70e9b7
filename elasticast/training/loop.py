"""The training loop: Accelerate over streamed, packed token-budget batches, resumable, multi-process.

Data slots. The stream is split into `world_size × gradient_accumulation_steps` slots (`split_dataset_by_node`);
process r draws micro-batch j of every step from slot `r·k + j`, each slot with its own packer. A step's global
batch therefore depends only on the product, so 2 processes × 1 micro-batch and 1 process × 2 micro-batches train
on the same batches (what the multi-process test checks).

Loss. Processes hold different numbers of clips per packed batch, so each micro-batch's summed loss is divided by
the global number of clips N of the step (one all-reduce before the backward passes) and multiplied by the world
size (DDP averages gradients): the update is that of the mean loss over all N clips. A slot that has run dry feeds
a silent dummy clip with weight 0, so every process steps until all slots are exhausted: the epoch ends together.

Budget. `--tokens-per-batch` counts, by default (`--batch-budget native`), each clip's tokens at native resolution
(C = 1, cut to `--max-seconds`) whatever the mode: the batcher plans the same batches of clips in native, mixed,
avg-pool and fixed (AST) mode, and the collator then lays the chosen clips out at the mode's resolution. So
`--epochs` means the same number of optimiser steps in every mode (the paper's fixed clips per batch, for a stream
of clips of any length); a compressed step just holds fewer tokens.

Learning rate. A pure function of training progress in epochs (clips consumed / clips per epoch), so it needs no
scheduler state and agrees on every process. With the native budget an epoch is the same number of steps in every
mode, so warm-up and decay follow the optimiser steps alike.

Checkpoints. `Accelerator.save_state` (model, optimiser, RNGs) into a temporary folder, plus per-process packer
states and a `trainer_state.json`, renamed into place once complete. Resume replays the epoch's stream with its
seed, skips the consumed examples before decoding and re-decodes only the clips that sat in the packer buffer.
"""

import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object, set_seed
from transformers import ASTForAudioClassification
from transformers.utils import logging as transformers_logging

from ..ast_baseline import export_feature_extractor
from ..precision import bf16_supported
from ..data import DataArguments, LabelSpace, infer_labels, load_split, resolve_eval_split
from ..hub import export, push
from ..metrics import load_metric, task_metric
from .arguments import build_parser, clear_run, validate
from .batching import STAT_KEYS, Augmentation, Batch, FixedCollator, PackedCollator, TokenBudgetBatcher, summarize_stats
from .curves import FILENAME as CURVES
from .curves import write_learning_curves
from .data import Clip, ClipSource, ClipTransform, SourceState, ordered_clips, slot_stream
from .models import build_model
from .stats import compute_feature_stats


logger = transformers_logging.get_logger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"


# ------------------------------------------------------------------------------------------------------ components
def learning_rate(args, progress: float) -> float:
    """LR at `progress` epochs: linear warm-up, then cosine to 0 at `--epochs`, step decay, or constant."""
    if args.warmup_epochs > 0 and progress < args.warmup_epochs:
        return args.learning_rate * progress / args.warmup_epochs
    if args.lr_schedule == "cosine":
        span = max(args.epochs - args.warmup_epochs, 1e-9)
        return args.learning_rate * 0.5 * (1 + math.cos(math.pi * min((progress - args.warmup_epochs) / span, 1.0)))
    if args.lr_schedule == "step":
        return args.learning_rate * args.lr_step_gamma ** math.floor(progress / args.lr_step_epochs)
    return args.learning_rate


def loss_sum(logits: torch.Tensor, targets: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Summed loss over clips: soft-target cross-entropy (one-hot or mixup targets), or BCE averaged over classes."""
    logits = logits.float()
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / logits.shape[-1]
    return -(targets * logits.log_softmax(-1)).sum()


def forward(model, batch: Batch, device) -> torch.Tensor:
    inputs = {k: v.to(device, non_blocking=True) for k, v in batch.inputs.items()}
    if isinstance(_unwrap(model), ASTForAudioClassification):
        return model(input_values=inputs["input_values"]).logits
    return model(**inputs).logits


def _unwrap(model):
    return getattr(model, "module", model)


def make_transform(args, fe, train: bool) -> ClipTransform:
    return ClipTransform(
        mode=args.mode, fe=fe, max_seconds=args.max_seconds, fixed_frames=args.fixed_frames,
        compressions=tuple(args.compressions), eval_compression=args.eval_compression, pad=args.model != "ast",
        train=train,
    )


def make_collator(args, fe, transform: ClipTransform, labels: LabelSpace, augment: Augmentation | None = None):
    if args.model == "ast":
        return FixedCollator(fe, transform, labels.num_labels, args.fixed_frames, augment,
                             budget_row_tokens=min(args.max_tokens_per_row, args.tokens_per_batch))
    return PackedCollator(fe, transform, labels.num_labels, args.max_tokens_per_row, augment)


class SlotPipeline:
    """One data slot for one epoch: stream → clips → token-budget batches → collated `Batch`es."""

    def __init__(self, args, stream, encode_label, collator, epoch: int, slot: int, num_slots: int, train: bool,
                 state: dict | None = None):
        self.args, self.collator, self.epoch, self.slot, self.train = args, collator, epoch, slot, train
        if args.batch_budget == "native":  # the same grouping of clips in every mode (see `native_segments`)
            counted, row_tokens = collator.native_segments, collator.budget_row_tokens
        else:
            counted, row_tokens = collator.segments, collator.max_tokens_per_row
        self.batcher = TokenBudgetBatcher(counted, args.tokens_per_batch, row_tokens,
                                          args.packing_lookahead if train else 1)
        if state is not None:
            self.batcher.load_state_dict(state)
        shuffle = args.shuffle_buffer if train else None
        source = ClipSource(
            slot_stream(stream, slot, num_slots, epoch, args.seed, shuffle), args.audio_column, args.label_column,
            encode_label, collator.transform, args.seed, epoch, slot,
            SourceState(start=dict(self.batcher.pulled), replay=self.batcher.replay()),
        )
        self._batches = self.batcher(ordered_clips(source, args.num_workers))

    def next(self) -> Batch | None:
        clips = next(self._batches, None)
        if clips is None:
            return None
        rng = np.random.default_rng([self.args.seed, self.epoch, self.slot, self.batcher.emitted])
        return self.collator(clips, rng, self.train)


def predict(model, pipeline: SlotPipeline, device) -> list[tuple]:
    """`(key, logits, label)` for every clip of an evaluation pipeline, model in eval mode, no gradients."""
    model.eval()
    records = []
    with torch.no_grad():
        while (batch := pipeline.next()) is not None:
            logits = forward(model, batch, device).float().cpu()
            records += [(key, row.tolist(), label) for key, row, label in zip(batch.keys, logits, batch.labels)]
    return records


def score(records: list[tuple], labels: LabelSpace) -> dict:
    """Metric (accuracy or mAP, through the shipped `evaluate` modules) and mean loss of `(key, logits, label)`."""
    metric = load_metric(task_metric(labels.multi_label))
    logits = torch.tensor([r[1] for r in records])
    targets = torch.zeros_like(logits)
    for i, (_, _, label) in enumerate(records):
        targets[i, label] = 1.0
    result = {"loss": float(loss_sum(logits, targets, labels.multi_label)) / len(records), "clips": len(records)}
    if labels.multi_label:
        result.update(metric.compute(predictions=logits.tolist(), references=targets.int().tolist()))
    else:
        result.update(metric.compute(predictions=logits.argmax(-1).tolist(), references=[r[2] for r in records]))
    return result


def evaluate_on(accelerator, model, args, stream, encode_label, collator, labels: LabelSpace) -> dict | None:
    """Evaluates on every process's share of `stream`; gathers without duplicates; the metrics on every process."""
    pipeline = SlotPipeline(args, stream, encode_label, collator, epoch=0, slot=accelerator.process_index,
                            num_slots=accelerator.num_processes, train=False)
    records = predict(accelerator.unwrap_model(model), pipeline, accelerator.device)
    records = [((accelerator.process_index, *key), logits, label) for key, logits, label in records]
    gathered = {r[0]: r for r in gather_object(records)}  # keyed by (process, worker, position): no duplicates
    result = [score(list(gathered.values()), labels) if accelerator.is_main_process and gathered else None]
    broadcast_object_list(result)
    return result[0]


# ----------------------------------------------------------------------------------------------------- checkpoints
def latest_checkpoint(output_dir: Path) -> Path | None:
    root = output_dir / CHECKPOINTS
    done = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file()) if root.is_dir() else []
    return done[-1] if done else None


def save_checkpoint(accelerator, output_dir: Path, step: int, state: dict, slot_states: list[dict], limit: int):
    """Atomic: everything goes to `.tmp-step_N`, renamed to `step_N` once every process has written its part."""
    root = output_dir / CHECKPOINTS
    final, staging = root / f"step_{step:08d}", root / f".tmp-step_{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    (staging / f"data_state_{accelerator.process_index}.json").write_text(json.dumps(slot_states))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (staging / STATE_FILE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        kept = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file())
        for old in kept[: max(len(kept) - max(limit, 1), 0)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


# ------------------------------------------------------------------------------------------------------------ train
def _accelerator(args, output_dir: Path) -> Accelerator:
    has_accelerator = torch.accelerator.is_available()
    precision = args.mixed_precision
    if precision == "auto":
        precision = "bf16" if _bf16_supported(has_accelerator) else "no"
    # cpu=True only without an accelerator: it forces CPU, and it is what makes several CPU processes one group.
    return Accelerator(cpu=not has_accelerator, mixed_precision=precision,
                       log_with=None if args.report_to == "none" else args.report_to, project_dir=str(output_dir))


def _bf16_supported(has_accelerator: bool) -> bool:
    # bf16 in hardware only (elasticast.precision): CUDA's own check, or a CPU with AVX512-BF16/AMX-BF16, where
    # emulated bf16 would run several times slower than fp32.
    if has_accelerator:
        return torch.cuda.is_available() and bf16_supported("cuda")
    return bf16_supported("cpu")


class Trainer:
    """One training run (see the module docstring); `run()` returns the end summary."""

    def __init__(self, args):
        self.args = args = validate(args)
        torch.set_flush_denormal(True)  # denormals slow early CPU steps about 10x
        transformers_logging.disable_progress_bar()  # our own bar only (no "Writing model shards" bars)
        self.output_dir = Path(args.output_dir)
        self.acc = acc = _accelerator(args, self.output_dir)
        if getattr(args, "overwrite_output_dir", False) and acc.is_main_process:  # the old run's files go before anything is written
            removed = clear_run(self.output_dir)
            if removed:
                print(f"--overwrite-output-dir: removed {', '.join(removed)} from {self.output_dir}", flush=True)
        acc.wait_for_everyone()
        set_seed(args.seed)
        self.rank, self.world, self.k = acc.process_index, acc.num_processes, args.gradient_accumulation_steps
        self.num_slots = self.world * self.k
        data = DataArguments(args.dataset, args.dataset_config, args.data_dir, args.data_files, args.eval_data_files,
                             args.train_split, args.eval_split, args.audio_column, args.label_column)

        self.resume_dir = self._resume_dir()
        state = json.loads((self.resume_dir / STATE_FILE).read_text()) if self.resume_dir else {}
        if state and state["num_slots"] != self.num_slots:
            raise ValueError(
                f"The checkpoint was written with {state['num_slots']} data slots (processes × accumulation steps); "
                f"this run has {self.world} × {self.k}. Resume with the same numbers."
            )
        self.train_stream = load_split(data, data.train_split, data.data_files)
        if state:
            self.labels, self.num_examples = LabelSpace(state["labels"], state["multi_label"]), state["examples"]
        else:
            self.labels, self.num_examples = infer_labels(self.train_stream, args.label_column, args.labels,
                                                          args.multi_label)
            if self.num_examples is None:
                self.num_examples = sum(1 for _ in self.train_stream.select_columns([args.label_column]))
        eval_split = resolve_eval_split(data)
        self.eval_split = eval_split
        self.eval_stream = load_split(data, eval_split, data.eval_data_files) if eval_split else None

        model, self.fe = build_model(args, self.labels)
        self.feature_stats = state.get("feature_stats")
        if args.compute_stats and self.feature_stats is None:
            self.feature_stats = self._compute_stats()
        if self.feature_stats is not None:  # the run normalises (and exports) with its data's own statistics
            self.fe.mean, self.fe.std = self.feature_stats["mean"], self.feature_stats["std"]
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=args.learning_rate, betas=tuple(args.adam_betas),
        )
        self.model, self.optimizer = acc.prepare(model, optimizer)
        if self.resume_dir:
            acc.load_state(str(self.resume_dir))
        if args.report_to != "none":
            acc.init_trackers("logs", config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                              for k, v in vars(args).items() if k != "func"})

        augment = Augmentation(args.freq_mask, args.time_mask, args.mixup, args.mixup_alpha, args.token_dropout)
        self.collator = make_collator(args, self.fe, make_transform(args, self.fe, train=True), self.labels, augment)
        self.eval_collator = make_collator(args, self.fe, make_transform(args, self.fe, train=False), self.labels)
        self.encode_train = self.labels.encoder(_label_feature(self.train_stream, args.label_column))
        self.encode_eval = (self.labels.encoder(_label_feature(self.eval_stream, args.label_column))
                            if self.eval_stream is not None else None)
        self.dummy = _dummy_batch(self.collator, self.labels)

        self.step, self.epoch, self.consumed = state.get("step", 0), state.get("epoch", 0), state.get("consumed", 0)
        self.best, self.history = state.get("best"), state.get("history", [])
        self.totals = state.get("totals", dict.fromkeys((*STAT_KEYS, "idle", "skipped"), 0.0))
        self.slot_states = (json.loads((self.resume_dir / f"data_state_{self.rank}.json").read_text())
                            if self.resume_dir else [None] * self.k)
        self.seen = {"clips": 0, "tokens": 0, "start": time.perf_counter()}

    def _compute_stats(self) -> dict:
        """The training split's log-mel mean/std (`compute_feature_stats`), measured by process 0, sent to all."""
        result = [None]
        if self.acc.is_main_process:
            stats = compute_feature_stats(self.train_stream, self.args.audio_column, self.fe, self.args.stats_clips,
                                          self.args.max_seconds)
            print(f"dataset statistics of {stats['clips']} training clips ({stats['frames']} frames): log-mel mean "
                  f"{stats['mean']:.4f}, std {stats['std']:.4f} (defaults {self.fe.mean:.4f}, {self.fe.std:.4f})",
                  flush=True)
            result = [stats]
        broadcast_object_list(result)
        return result[0]

    def _resume_dir(self) -> Path | None:
        if not self.args.resume:
            return None
        path = latest_checkpoint(self.output_dir) if self.args.resume == "latest" else Path(self.args.resume)
        if path is None or not (path / STATE_FILE).is_file():
            raise ValueError(f"--resume: no complete checkpoint at {self.args.resume!r} (looked under "
                             f"{self.output_dir / CHECKPOINTS}); start without --resume.")
        return path

    # ------------------------------------------------------------------------------------------------- loop
    def run(self) -> dict:
        args = self.args
        bar = self._progress_bar()
        while self.epoch < args.epochs and not self._out_of_steps():
            pipelines = [
                SlotPipeline(args, self.train_stream, self.encode_train, self.collator, self.epoch,
                             self.rank * self.k + j, self.num_slots, True, self.slot_states[j])
                for j in range(self.k)
            ]
            self.slot_states = [None] * self.k
            stats = dict.fromkeys((*STAT_KEYS, "loss", "idle"), 0.0)
            self.model.train()
            finished = self._train_epoch(pipelines, stats, bar)
            self._end_epoch(pipelines, stats)
            if finished:
                self.epoch, self.consumed = self.epoch + 1, 0
                self._checkpoint([None] * self.k)
        if bar is not None:
            bar.close()
        summary = self._finish()
        self.acc.wait_for_everyone()
        # Free the DDP wrapper first: its Reducer holds the process group, and a gloo group destroyed from the
        # Reducer's destructor joins its worker threads while holding the GIL — a deadlock when a worker still
        # has to release a Python tensor (seen under load). Destroyed by `end_training`, the group releases it.
        self.model = self.optimizer = None
        self.acc.free_memory()
        self.acc.end_training()
        return summary

    def _out_of_steps(self) -> bool:
        return self.args.max_steps is not None and self.step >= self.args.max_steps

    def _train_epoch(self, pipelines, stats: dict, bar) -> bool:
        """Steps until every slot of every process is dry (True) or `--max-steps` is reached (False)."""
        acc, args, device = self.acc, self.args, self.acc.device
        while True:
            batches = [p.next() for p in pipelines]
            local = torch.tensor([sum(len(b) for b in batches if b), sum(b is not None for b in batches)],
                                 dtype=torch.float64, device=device)
            clips, live = acc.reduce(local, "sum").tolist()
            if live == 0:
                return True
            lr = learning_rate(args, self.epoch + (self.consumed + clips) / self.num_examples)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            step_sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss, tokens
            for j, batch in enumerate(batches):
                used = batch if batch is not None else self.dummy
                with acc.no_sync(self.model) if j < self.k - 1 else nullcontext():
                    summed = loss_sum(forward(self.model, used, device), used.targets.to(device),
                                      self.labels.multi_label)
                    acc.backward(summed * (self.world / clips if batch is not None else 0.0))
                if batch is None:
                    stats["idle"] += 1  # this slot ran dry before the others: a weight-0 dummy step
                    continue
                step_sums += torch.tensor([summed.item(), batch.stats["tokens"]], dtype=torch.float64, device=device)
                for key in STAT_KEYS:
                    stats[key] += batch.stats[key]
            if args.max_grad_norm > 0:
                acc.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.consumed += int(clips)
            stats["loss"] += step_sums[0].item()  # local: summed over processes at the end of the epoch
            loss, tokens = acc.reduce(step_sums, "sum").tolist()
            self._log_step(bar, loss / clips, int(clips), tokens, lr)
            if args.save_steps and self.step % args.save_steps == 0 or self._out_of_steps():
                self._checkpoint([p.batcher.state_dict() for p in pipelines])
            if self._out_of_steps():
                return False

    def _log_step(self, bar, loss: float, clips: int, tokens: float, lr: float) -> None:
        self.seen["clips"] += clips
        self.seen["tokens"] += tokens
        elapsed = time.perf_counter() - self.seen["start"]
        rates = {"clips_per_s": self.seen["clips"] / elapsed, "tokens_per_s": self.seen["tokens"] / elapsed}
        if bar is not None:
            bar.update(clips)
            bar.set_postfix(epoch=self.epoch, loss=f"{loss:.4f}", lr=f"{lr:.2e}",
                            clips_s=f"{rates['clips_per_s']:.1f}", tokens_s=f"{rates['tokens_per_s']:.0f}")
        if self.args.report_to != "none" and self.step % self.args.logging_steps == 0:
            self.acc.log({"train/loss": loss, "train/lr": lr, **{f"train/{k}": v for k, v in rates.items()}},
                         step=self.step)

    def _end_epoch(self, pipelines, stats: dict) -> None:
        """Reduces the epoch's batch statistics, evaluates, reports, and exports the best model."""
        acc = self.acc
        skipped = sum(p.batcher.skipped for p in pipelines)
        keys = (*STAT_KEYS, "loss", "idle", "skipped")
        values = [stats[key] for key in keys[:-1]] + [skipped]
        totals = dict(zip(keys, acc.reduce(torch.tensor(values, dtype=torch.float64, device=acc.device), "sum")
                          .tolist()))
        for key in self.totals:
            self.totals[key] += totals[key]
        errors = [e for errs in gather_object([[e for p in pipelines for e in p.batcher.errors]]) for e in errs]
        steps = self.step - (self.history[-1]["step"] if self.history else 0)
        record = {"epoch": self.epoch, "step": self.step, "steps": steps, "train_loss": totals["loss"] / max(totals["clips"], 1),
                  "clips": int(totals["clips"]), "tokens": int(totals["tokens"]),
                  "native_tokens": int(totals["native_tokens"]), "skipped": int(totals["skipped"]),
                  "idle_micro_batches": int(totals["idle"]), **summarize_stats(totals),
                  "skipped_examples": errors[:5]}
        if self.eval_stream is not None:
            record["eval"] = evaluate_on(acc, self.model, self.args, self.eval_stream, self.encode_eval,
                                         self.eval_collator, self.labels)
        self.history.append(record)
        self._report(record)
        self._plot_curves()
        evaluation = record.get("eval")
        if evaluation is not None:
            metric = task_metric(self.labels.multi_label)
            value = evaluation[metric]
            if self.best is None or value > self.best["value"]:
                self.best = {"metric": metric, "value": value, "epoch": self.epoch,
                             "step": self.step}
                self._export({"best_eval": evaluation, "best": self.best})

    def _report(self, record: dict) -> None:
        if not self.acc.is_main_process:
            return
        line = (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, {record['clips']} clips, useful "
                f"{record['useful_pct']:.1f} %, padding {record['padding_pct']:.1f} %, cut {record['cut_pct']:.1f} %")
        if record["skipped"]:
            line += f", skipped {record['skipped']} undecodable"
        evaluation = record.get("eval") or {}
        if evaluation:
            line += "; eval " + ", ".join(f"{k} {v:.4f}" for k, v in evaluation.items() if isinstance(v, float))
        print(line, flush=True)
        if self.args.report_to != "none":
            values = {f"epoch/{k}": v for k, v in record.items() if isinstance(v, (int, float))}
            values.update({f"eval/{k}": v for k, v in evaluation.items()})
            self.acc.log(values, step=self.step)

    def _plot_curves(self) -> None:
        """Main process: `learning_curves.png` in `--output-dir`, redrawn from the history (atomic replace)."""
        if not self.acc.is_main_process:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        final = self.output_dir / CURVES
        staging = final.with_name(f".{CURVES}.tmp.png")
        title = f"{self.args.model} --mode {self.args.mode} ({self.args.batch_budget} budget)"
        write_learning_curves(self.history, staging, title)
        os.replace(staging, final)

    # ------------------------------------------------------------------------------------------ persistence
    def _checkpoint(self, slot_states: list) -> None:
        state = {"step": self.step, "epoch": self.epoch, "consumed": self.consumed, "num_slots": self.num_slots,
                 "labels": self.labels.names, "multi_label": self.labels.multi_label, "examples": self.num_examples,
                 "best": self.best, "history": self.history, "totals": self.totals,
                 "feature_stats": self.feature_stats,
                 "args": {k: v for k, v in vars(self.args).items() if k != "func"}}
        save_checkpoint(self.acc, self.output_dir, self.step, state, slot_states, self.args.save_total_limit)

    def _export(self, metrics: dict) -> None:
        """Main process: model + feature extractor + metrics + best evaluation + card into `--output-dir`."""
        if self.acc.is_main_process:
            model = self.acc.unwrap_model(self.model)
            epochs = len({record["epoch"] for record in self.history})
            metrics = {**metrics, "epochs": epochs, "steps": self.step, "history": self.history}
            if self.feature_stats is not None:
                metrics["feature_stats"] = self.feature_stats
            results = None
            if self.best is not None:  # the card's headline result and model-index metadata
                results = {"dataset_id": self.args.dataset, "split": self.eval_split, "metric": self.best["metric"],
                           "value": self.best["value"]}
            export(self.output_dir, model, export_feature_extractor(model, self.fe, self.args.fixed_frames), metrics,
                   results)
        self.acc.wait_for_everyone()

    def _finish(self) -> dict:
        elapsed = time.perf_counter() - self.seen["start"]
        summary = {
            "epochs": self.epoch, "steps": self.step, "processes": self.world, "seconds": elapsed,
            "clips": self.seen["clips"], "batch_budget": self.args.batch_budget,
            "tokens_per_batch": self.args.tokens_per_batch,
            "total_clips": int(self.totals["clips"]), "total_tokens": int(self.totals["tokens"]),
            "total_native_tokens": int(self.totals["native_tokens"]),
            "clips_per_s": self.seen["clips"] / max(elapsed, 1e-9),
            "tokens_per_s": self.seen["tokens"] / max(elapsed, 1e-9), "skipped": int(self.totals["skipped"]),
            "idle_micro_batches": int(self.totals["idle"]),
            **summarize_stats(self.totals), "best": self.best, "output_dir": str(self.output_dir),
            "labels": self.labels.names,
        }
        summary["max_weight_diff_across_processes"] = self._weight_spread()
        if summary["max_weight_diff_across_processes"] > 0 and self.acc.is_main_process:
            logger.warning(
                f"The processes' weights differ by up to {summary['max_weight_diff_across_processes']:.3g} after "
                "training: the ranks fell out of step (a parameter outside DDP's gradient sync, or a rank that "
                "stepped differently). The export holds process 0's weights; check the run before using it."
            )
        if self.best is None:  # no evaluation split: the last weights are the result
            self._export({})
        if self.acc.is_main_process:
            path = self.output_dir / "metrics.json"
            metrics = {**json.loads(path.read_text()), "history": self.history,  # every epoch, not up to the best
                       "epochs": len({record["epoch"] for record in self.history}), "summary": summary}
            path.write_text(json.dumps(metrics, indent=2) + "\n")
            _print_summary(summary, self.history)
            if self.args.push_to_hub:
                commit = push(self.output_dir, self.args.hub_model_id, private=self.args.hub_private)
                summary["hub_commit"] = str(commit)
        self.acc.wait_for_everyone()
        return summary

    def _weight_spread(self) -> float:
        """Largest |difference| between any process's weights and process 0's (0.0 when they are in sync): DDP keeps
        ranks identical only if every step syncs every gradient, so the end summary reports it and a non-zero value
        is warned about, since only process 0's weights are exported."""
        spread = torch.zeros((), dtype=torch.float64, device=self.acc.device)
        if self.world > 1:
            for parameter in self.acc.unwrap_model(self.model).parameters():
                reference = parameter.detach().clone()
                torch.distributed.broadcast(reference, src=0)
                spread = torch.maximum(spread, (parameter.detach() - reference).abs().max().double())
            spread = self.acc.reduce(spread, "max")
        return spread.item()

    def _progress_bar(self):
        if not self.acc.is_main_process or self.args.no_progress:
            return None
        from tqdm.auto import tqdm

        done = self.epoch * self.num_examples + self.consumed
        return tqdm(total=self.num_examples * self.args.epochs, initial=done, unit="clip", dynamic_ncols=True)


def _label_feature(stream, column: str):
    return stream.features[column] if stream.features is not None else None


def _dummy_batch(collator, labels: LabelSpace) -> Batch:
    """A 0.5 s silent clip, fed with loss weight 0 by processes whose slot has run dry."""
    clip = Clip(key=(-1, -1), label=[] if labels.multi_label else 0, native_samples=collator.fe.sampling_rate // 2)
    rng = np.random.default_rng(0)
    clip.wave, clip.compression, clip.full_frames, clip.audio_frames = collator.transform(
        torch.zeros(collator.fe.sampling_rate // 2), rng)
    return collator([clip], rng, train=False)


def _print_summary(summary: dict, history: list) -> None:
    minutes, seconds = divmod(summary["seconds"], 60)
    lines = [
        f"Training done in {int(minutes)}m{seconds:04.1f}s: {summary['epochs']} epochs, {summary['steps']} steps, "
        f"{summary['clips']} clips ({summary['clips_per_s']:.1f} clips/s, {summary['tokens_per_s']:.0f} tokens/s)",
        f"  in all epochs: {summary['total_clips']} clips, {summary['total_tokens']} tokens into the model "
        f"({summary['total_native_tokens']} at native resolution); budget {summary['tokens_per_batch']} "
        f"{summary['batch_budget']} tokens per micro-batch and process",
        f"  batches: useful {summary['useful_pct']:.1f} %, padding {summary['padding_pct']:.1f} %, "
        f"cut {summary['cut_pct']:.1f} %; undecodable clips skipped: {summary['skipped']}",
    ]
    if summary["processes"] > 1:
        lines.append(f"  {summary['processes']} processes; largest weight difference from process 0: "
                     f"{summary['max_weight_diff_across_processes']:.3g}")
    examples = [e for h in history for e in h.get("skipped_examples", [])]
    if examples:
        lines.append(f"  first skipped: {examples[0]}")
    if summary["best"]:
        best = summary["best"]
        lines.append(f"  best {best['metric']} {best['value']:.4f} (epoch {best['epoch']}, step {best['step']})")
    lines.append(f"  model, feature extractor, metrics.json and README.md in {summary['output_dir']}")
    print("\n".join(lines), flush=True)


def train(args) -> dict:
    """Runs a whole training from parsed arguments; returns the end summary."""
    return Trainer(args).run()


def main(argv: list[str] | None = None) -> int:
    train(build_parser("python -m elasticast.training").parse_args(argv))
    return 0
