"""Weight import: official ElasticAST checkpoints, transformers' AST, ViT/DeiT (ImageNet) and SSAST → ElasticAST.

Python API (each returns a ready [`ElasticASTForAudioClassification`]):

- `convert_official_state_dict(state_dict, loss=... or dataset=...)`: a released ElasticAST `.pth`
  (JiuFengSC/ElasticAST, saved from `nn.DataParallel`). `module.` is stripped, `to_kv` split (keys first, then
  values), the config is read off the shapes, `attention_scale=1.0` (the official attention is unscaled) and
  `problem_type` comes from the loss the weights were trained with (BCE: AudioSet, VGGSound → multi-label;
  CE: VoxCeleb → single-label).
- `convert_ast(model_or_folder)`: transformers' `ASTForAudioClassification` / `ASTModel`. Encoder and head copied, the
  16×16 patch kernel reused with a non-overlapping stride, the 1-D position table (cls, dist, f×t grid) turned into
  factorised frequency/time tables; `layer_norm_eps` and the attention scale stay those of the source, so every layer
  computes what AST's layer computes.
- `convert_vit(model_or_folder_or_file)`: transformers' `ViTModel` / `DeiTModel` (and their classification classes)
  or a timm ViT/DeiT state dict, as the paper's ImageNet initialisation: RGB kernels summed, the 14×14 grid cropped
  or interpolated, then averaged per axis.
- `convert_ssast(state_dict)`: SSAST checkpoints with 16×16 patches (`module.v.*` timm-DeiT layout, 8×64 grid).

Position tables (ast, vit, ssast): the source's 2-D grid `[D, H, W]` (H = frequency) is resized to
`(num_mel_bins / 16, max_time_patches)`, then `freq = mean over time`, `time = mean over frequency`
(`resize_position_grid`, `factorise_position_grid`). `"crop"` is the official ImageNet rule (centre-crop an axis
when the target is not longer, else interpolate it bilinearly); `"interpolate"` always interpolates (the official
SSAST rule, and the default for AST, whose stride-10 grid covers the same spectrogram as the stride-16 one).

The attention pool (ast, vit, ssast) starts from the mean of the blocks' attention projections. The official
`transfer_ImageNetWeights`/`transfer_SSAST` count every "attn" tensor (6 per block) and so divide the sum by 72 for
12 blocks: their pool starts at 1/6 of the mean. We divide by the number of blocks.

Nothing is dropped silently: each source tensor is either mapped, or left out for a stated reason (class tokens,
other heads, pre-training layers), which is logged; any other key, a missing key or a wrong shape raises a
`ValueError` that lists them. `convert(...)` and `elasticast convert` also write the feature-extractor config so
that the folder loads with `from_pretrained` and the stock pipeline.
"""

import csv
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, PreTrainedModel
from transformers.utils import logging

from .ast_baseline import ast_grid
from .configuration_elasticast import ElasticASTConfig
from .feature_extraction_elasticast import ElasticASTFeatureExtractor
from .modeling_elasticast import ElasticASTForAudioClassification


logger = logging.get_logger(__name__)

# Loss of each released checkpoint and the fbank statistics of its recipe (egs/*/ElasticAST.sh). Epic-Sounds weights
# are out of scope: they need the Epic front-end (librosa magnitude mel at 24 kHz), not the Kaldi fbank.
OFFICIAL_DATASETS = {
    "audioset": {"loss": "bce", "mean": -4.414, "std": 4.905},
    "vggsound": {"loss": "bce", "mean": -5.08, "std": 4.453},
    "voxceleb": {"loss": "ce", "mean": -5.842545, "std": 3.88305},
}
LOSS_PROBLEM_TYPE = {"bce": "multi_label_classification", "ce": "single_label_classification"}

# Per-block parameters: ElasticAST module → (source module, (chunk, chunks) of a fused projection, or None).
_OFFICIAL_LAYER = {
    "layernorm_before": ("norm1", None),
    "attention.q_proj": ("attn.to_q", None),
    "attention.k_proj": ("attn.to_kv", (0, 2)),  # to_kv: keys first, then values
    "attention.v_proj": ("attn.to_kv", (1, 2)),
    "attention.o_proj": ("attn.proj", None),
    "layernorm_after": ("norm2", None),
    "mlp.fc1": ("mlp.fc1", None),
    "mlp.fc2": ("mlp.fc2", None),
}
_LAYER_MODULES = {
    "official": _OFFICIAL_LAYER,
    "timm": {**_OFFICIAL_LAYER, **{f"attention.{p}_proj": ("attn.qkv", (i, 3)) for i, p in enumerate("qkv")}},
    "transformers": {name: (name, None) for name in _OFFICIAL_LAYER},
}
_BLOCK_PREFIX = {"official": "blocks.modules_list.{}.", "timm": "blocks.{}.", "transformers": "layers.{}."}
_ATTENTION_PARAMETERS = [f"attention.{p}_proj.{w}" for p in "qkvo" for w in ("weight", "bias")]
_CLASS_TOKENS = "class/distillation/mask tokens (ElasticAST has none: it pools with attention)"


@dataclass
class ConversionReport:
    """What a conversion did with the source: tensors left out (by reason) and ElasticAST parameters not taken from
    it (freshly initialised)."""

    source: str
    left_out: dict[str, list[str]] = field(default_factory=dict)
    initialised: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"Converted {self.source}."]
        for reason, keys in self.left_out.items():
            lines.append(f"  left out {len(keys)} tensor(s), {reason}: {_short_list(keys)}")
        if self.initialised:
            lines.append(f"  freshly initialised: {_short_list(self.initialised)}")
        return "\n".join(lines)


def _short_list(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


class _SourceTensors:
    """A source state dict with bookkeeping: every key ends up taken, left out for a reason, or reported."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], name: str):
        self.tensors = dict(tensors)
        self.name = name
        self.taken: set[str] = set()
        self.missing: list[str] = []
        self.left_out: dict[str, list[str]] = defaultdict(list)

    def take(self, key: str) -> torch.Tensor | None:
        if key not in self.tensors:
            self.missing.append(key)
            return None
        self.taken.add(key)
        return self.tensors[key]

    def peek(self, key: str) -> torch.Tensor:
        """A tensor needed to infer the configuration: a clear error when the source is not of the expected kind."""
        if key not in self.tensors:
            raise ValueError(
                f"{self.name}: no tensor {key!r}, so this is not the expected kind of checkpoint "
                f"(its keys begin {_short_list(list(self.tensors), 5)})."
            )
        return self.tensors[key]

    def leave_out(self, pattern: str, reason: str):
        for key in self.tensors:
            if key not in self.taken and re.fullmatch(pattern, key):
                self.left_out[reason].append(key)

    def block_count(self, layout: str) -> int:
        pattern = re.escape(_BLOCK_PREFIX[layout]).replace(r"\{\}", r"(\d+)")
        indices = {int(m.group(1)) for key in self.tensors if (m := re.match(pattern, key))}
        if not indices:
            raise ValueError(f"{self.name}: found no transformer blocks ({_BLOCK_PREFIX[layout].format('N')}…).")
        return max(indices) + 1

    def modules(
        self, prefix: str, modules: Mapping[str, tuple[str, tuple[int, int] | None]], qkv_bias: bool = True
    ) -> dict[str, torch.Tensor | None]:
        """`{our module: (source module, (chunk, chunks) or None)}` under `prefix` → `{our module.param: tensor}`,
        fused projections split along their output rows."""
        out = {}
        for module, (source_module, part) in modules.items():
            for param in ("weight", "bias"):
                if param == "bias" and not qkv_bias and module[-6:] in ("q_proj", "k_proj", "v_proj"):
                    continue
                tensor = self.take(f"{prefix}{source_module}.{param}")
                if tensor is not None and part is not None:
                    tensor = tensor.chunk(part[1], dim=0)[part[0]]
                out[f"{module}.{param}"] = tensor
        return out

    def layers(self, layout: str, depth: int, qkv_bias: bool) -> dict[str, torch.Tensor | None]:
        """Block tensors under ElasticAST names (`layers.{i}.…`)."""
        out = {}
        for i in range(depth):
            block = self.modules(_BLOCK_PREFIX[layout].format(i), _LAYER_MODULES[layout], qkv_bias)
            out.update({f"layers.{i}.{name}": tensor for name, tensor in block.items()})
        return out

    def finish(self) -> dict[str, list[str]]:
        """Raises on missing or unmapped keys; returns the left-out keys by reason."""
        left_out = {key for keys in self.left_out.values() for key in keys}
        unknown = sorted(set(self.tensors) - self.taken - left_out)
        problems = []
        if self.missing:
            problems.append(f"missing tensors: {_short_list(set(self.missing), 20)}")
        if unknown:
            problems.append(f"tensors that map to nothing in ElasticAST: {_short_list(unknown, 20)}")
        if problems:
            raise ValueError(
                f"Cannot convert {self.name}: " + "; ".join(problems) + ". Check that --from names the checkpoint's "
                "kind (official, ast, vit, ssast) and that it is unmodified."
            )
        return dict(self.left_out)


# ----------------------------------------------------------------------------------------------- position tables
def resize_position_grid(grid: torch.Tensor, size: tuple[int, int], mode: str = "interpolate") -> torch.Tensor:
    """`[D, H, W]` position grid (H = frequency, W = time) → `[D, size[0], size[1]]`.

    `mode="crop"`: per axis, centre-crop when the target is not longer than the source, else interpolate bilinearly
    (the AST / official ElasticAST rule for ImageNet grids). `mode="interpolate"`: bilinear on every axis whose size
    differs (the official SSAST rule). Bilinear resizing is separable, so resizing the axes one at a time equals the
    official two-step calls.
    """
    if mode not in ("crop", "interpolate"):
        raise ValueError(f"position resize mode must be 'crop' or 'interpolate', got {mode!r}.")
    for axis, target in ((2, size[1]), (1, size[0])):
        current = grid.shape[axis]
        if mode == "crop" and target <= current:
            grid = grid.narrow(axis, current // 2 - target // 2, target)
        elif target != current:
            new_size = list(grid.shape[1:])
            new_size[axis - 1] = target
            grid = torch.nn.functional.interpolate(grid[None].float(), size=new_size, mode="bilinear")[0]
    return grid


def factorise_position_grid(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`[D, F, T]` grid → frequency table `[F, D]` (mean over time) and time table `[T, D]` (mean over frequency)."""
    return grid.mean(dim=2).T.contiguous(), grid.mean(dim=1).T.contiguous()


# -------------------------------------------------------------------------------------------------- assembling
def _label_kwargs(labels: int | Sequence[str] | None, num_labels: int | None = None) -> dict:
    """Config kwargs for `labels` (a count or names); `num_labels` is the source head's size, when it has one."""
    if labels is None:
        return {} if num_labels is None else {"num_labels": num_labels}
    count = labels if isinstance(labels, int) else len(labels)
    if num_labels is not None and count != num_labels:
        raise ValueError(
            f"Got {count} labels but the checkpoint's head has {num_labels} classes; pass exactly "
            f"{num_labels} label names (in the head's order) or none."
        )
    if isinstance(labels, int):
        return {"num_labels": labels}
    names = [str(name) for name in labels]
    return {"id2label": dict(enumerate(names)), "label2id": {name: i for i, name in enumerate(names)}}


def _assemble(
    config: ElasticASTConfig, tensors: dict[str, torch.Tensor], report: ConversionReport
) -> ElasticASTForAudioClassification:
    """Builds the model (in eval mode) and loads `tensors` (ElasticAST names relative to the model). Every parameter
    must come from `tensors` except the pooling query and the classifier, which keep their initialisation when
    absent."""
    model = ElasticASTForAudioClassification(config)
    expected = model.state_dict()
    wrong = [
        f"{key}: expected {list(expected[key].shape)}, got {list(tensor.shape)}"
        for key, tensor in tensors.items()
        if key in expected and tensor.shape != expected[key].shape
    ]
    if wrong:
        raise ValueError(
            f"Cannot convert {report.source}: tensors whose shapes do not fit the config read off the checkpoint "
            f"(ElasticAST name: expected, got): {_short_list(wrong, 20)}."
        )
    missing = sorted(set(expected) - set(tensors))
    not_optional = [key for key in missing if not (key == "elasticast.pooler.query" or key.startswith("classifier."))]
    if not_optional or set(tensors) - set(expected):  # a bug in this module rather than in the checkpoint
        raise RuntimeError(f"Conversion of {report.source} does not cover ElasticAST's parameters: {not_optional}.")
    model.load_state_dict(tensors, strict=False)
    report.initialised = missing
    logger.warning(str(report))
    return model.eval()  # as from_pretrained returns it


def _finish_initialisation(
    tensors: dict[str, torch.Tensor],
    position_grid: torch.Tensor,
    config: ElasticASTConfig,
    position_resize: str,
):
    """In place: the conv kernel `[D, C, P, P]` → summed over input channels and flattened (frequency, time) to
    `[D, P*P]`; the position grid → factorised tables; the attention pool → mean of the blocks' attention."""
    kernel = tensors["elasticast.embeddings.patch_embeddings.weight"]
    tensors["elasticast.embeddings.patch_embeddings.weight"] = kernel.sum(dim=1).reshape(kernel.shape[0], -1)
    grid = resize_position_grid(position_grid, (config.num_freq_patches, config.max_time_patches), position_resize)
    freq, time = factorise_position_grid(grid)
    tensors["elasticast.embeddings.freq_position_embeddings"] = freq
    tensors["elasticast.embeddings.time_position_embeddings"] = time
    for name in _ATTENTION_PARAMETERS:
        if f"elasticast.layers.0.{name}" in tensors:  # q/k/v biases are absent with qkv_bias=False
            blocks = [tensors[f"elasticast.layers.{i}.{name}"] for i in range(config.num_hidden_layers)]
            tensors[f"elasticast.pooler.{name}"] = torch.stack(blocks).mean(dim=0)


def _heads(hidden_size: int, num_attention_heads: int | None) -> int:
    if num_attention_heads is not None:
        return num_attention_heads
    if hidden_size % 64:
        raise ValueError(
            f"The checkpoint does not store the head count and hidden size {hidden_size} is not a multiple of 64 "
            "(the ViT/ElasticAST head width); pass num_attention_heads (--heads)."
        )
    return hidden_size // 64


def _square_patch(kernel: torch.Tensor, name: str) -> int:
    if kernel.dim() != 4 or kernel.shape[2] != kernel.shape[3]:
        raise ValueError(
            f"{name}: the patch kernel has shape {list(kernel.shape)}; ElasticAST needs square patches "
            "(e.g. SSAST frame models with 128×2 patches cannot be converted)."
        )
    return kernel.shape[2]


# ---------------------------------------------------------------------------------------------------- official
def convert_official_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    loss: str | None = None,
    dataset: str | None = None,
    labels: int | Sequence[str] | None = None,
    num_attention_heads: int | None = None,
) -> ElasticASTForAudioClassification:
    """A released ElasticAST state dict (with or without the `module.` prefix) → ElasticAST.

    Args:
        loss: `"bce"` (→ multi-label) or `"ce"` (→ single-label), the loss the weights were trained with.
        dataset: `"audioset"`, `"vggsound"` (BCE) or `"voxceleb"` (CE), instead of or consistent with `loss`.
        labels: Class names in head order (e.g. AudioSet's 527 display names), or None for LABEL_i.
        num_attention_heads: Not stored in the checkpoint; default hidden_size / 64 (12 for the released ones).
    """
    problem_type = LOSS_PROBLEM_TYPE[_official_loss(loss, dataset)]
    if all(key.startswith("module.") for key in state_dict):
        state_dict = {key[len("module.") :]: value for key, value in state_dict.items()}
    src = _SourceTensors(state_dict, "the official ElasticAST checkpoint")
    patch = src.peek("patch_embed.0.weight")  # [D, P*P]
    patch_size = math.isqrt(patch.shape[1])
    if patch_size**2 != patch.shape[1]:
        raise ValueError(f"patch_embed.0.weight has {patch.shape[1]} inputs, not a square patch (one channel).")
    hidden_size = patch.shape[0]
    num_classes = src.peek("head.weight").shape[0]
    config = ElasticASTConfig(
        hidden_size=hidden_size,
        num_hidden_layers=src.block_count("official"),
        num_attention_heads=_heads(hidden_size, num_attention_heads),
        intermediate_size=src.peek("blocks.modules_list.0.mlp.fc1.weight").shape[0],
        layer_norm_eps=1e-6,
        patch_size=patch_size,
        num_mel_bins=src.peek("pos_embed_freq").shape[0] * patch_size,
        max_time_patches=src.peek("pos_embed_time").shape[0],
        attention_scale=1.0,
        qkv_bias=True,
        problem_type=problem_type,
        **_label_kwargs(labels, num_classes),
    )
    renames = {
        "embeddings.patch_embeddings.weight": "patch_embed.0.weight",
        "embeddings.patch_embeddings.bias": "patch_embed.0.bias",
        "embeddings.freq_position_embeddings": "pos_embed_freq",
        "embeddings.time_position_embeddings": "pos_embed_time",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
        "pooler.query": "attn_pool_queries",
    }
    tensors = {f"elasticast.{ours}": src.take(theirs) for ours, theirs in renames.items()}
    tensors.update({f"elasticast.{k}": v for k, v in src.layers("official", config.num_hidden_layers, True).items()})
    pool_modules = {
        module: (source[len("attn.") :], part)
        for module, (source, part) in _LAYER_MODULES["official"].items()
        if source.startswith("attn.")
    }
    tensors.update({f"elasticast.pooler.{k}": v for k, v in src.modules("attn_pool.", pool_modules).items()})
    for ours, theirs in (("layernorm", "mlp_norm"), ("dense", "head")):
        for param in ("weight", "bias"):
            tensors[f"classifier.{ours}.{param}"] = src.take(f"{theirs}.{param}")
    report = ConversionReport("the official ElasticAST checkpoint", src.finish())
    return _assemble(config, tensors, report)


def _official_loss(loss: str | None, dataset: str | None) -> str:
    if dataset is not None:
        if dataset.lower() not in OFFICIAL_DATASETS:
            raise ValueError(
                f"Unknown dataset {dataset!r}: use one of {sorted(OFFICIAL_DATASETS)} (Epic-Sounds weights need the "
                "Epic front-end, which this package does not implement), or give loss='bce'/'ce' instead."
            )
        implied = OFFICIAL_DATASETS[dataset.lower()]["loss"]
        if loss is not None and loss != implied:
            raise ValueError(f"{dataset} weights were trained with {implied.upper()}, not {loss.upper()}.")
        return implied
    if loss not in LOSS_PROBLEM_TYPE:
        raise ValueError(
            "The official checkpoints do not record their loss, which decides sigmoid vs softmax outputs: pass "
            "loss='bce' (AudioSet, VGGSound) or loss='ce' (VoxCeleb), or dataset=... (--loss / --dataset)."
        )
    return loss


# ------------------------------------------------------------------------------------- ViT-style sources (shared)
def _convert_vit_like(
    src: _SourceTensors,
    *,
    layout: str,
    patch_kernel: str,
    position_table: str,
    final_norm: str,
    grid: tuple[int, int],
    hidden_act: str,
    layer_norm_eps: float,
    qkv_bias: bool,
    num_attention_heads: int | None,
    num_mel_bins: int,
    max_time_patches: int,
    position_resize: str,
    attention_scale: float | None,
    label_kwargs: dict,
    problem_type: str | None,
    head: Mapping[str, str],
    left_out: Mapping[str, str],
) -> ElasticASTForAudioClassification:
    """The common path of AST, ViT/DeiT and SSAST sources.

    `grid`: (frequency, time) size of the source's patch grid; the position table holds `prefix + H·W` rows, class
    tokens first. `head`: ElasticAST classifier parameter → source key (copied). `left_out`: regex → reason.
    """
    kernel = src.peek(f"{patch_kernel}.weight")
    patch_size = _square_patch(kernel, src.name)
    hidden_size = kernel.shape[0]
    config = ElasticASTConfig(
        hidden_size=hidden_size,
        num_hidden_layers=src.block_count(layout),
        num_attention_heads=_heads(hidden_size, num_attention_heads),
        intermediate_size=src.peek(f"{_BLOCK_PREFIX[layout].format(0)}mlp.fc1.weight").shape[0],
        hidden_act=hidden_act,
        layer_norm_eps=layer_norm_eps,
        patch_size=patch_size,
        num_mel_bins=num_mel_bins,
        max_time_patches=max_time_patches,
        attention_scale=attention_scale,
        qkv_bias=qkv_bias,
        problem_type=problem_type,
        **label_kwargs,
    )
    tensors = {
        "elasticast.embeddings.patch_embeddings.weight": src.take(f"{patch_kernel}.weight"),
        "elasticast.embeddings.patch_embeddings.bias": src.take(f"{patch_kernel}.bias"),
        "elasticast.layernorm.weight": src.take(f"{final_norm}.weight"),
        "elasticast.layernorm.bias": src.take(f"{final_norm}.bias"),
        **{f"elasticast.{k}": v for k, v in src.layers(layout, config.num_hidden_layers, qkv_bias).items()},
        **{ours: src.take(theirs) for ours, theirs in head.items()},
    }
    positions = src.take(position_table)
    for pattern, reason in left_out.items():
        src.leave_out(pattern, reason)
    report = ConversionReport(src.name, src.finish())

    table = positions.reshape(-1, hidden_size)  # [prefix + H·W, D]
    prefix = table.shape[0] - grid[0] * grid[1]
    if prefix not in (0, 1, 2):
        raise ValueError(
            f"{src.name}: the position table has {table.shape[0]} rows, which is not a {grid[0]}×{grid[1]} patch grid "
            "plus up to two class tokens. A model trained on overlapping patches (AST's stride 10) converts through "
            "its transformers version with --from ast."
        )
    if prefix:
        report.left_out.setdefault(_CLASS_TOKENS, []).append(f"{position_table} (first {prefix} row(s))")
    position_grid = table[prefix:].T.reshape(hidden_size, *grid)  # flattened frequency-major, as the patches
    _finish_initialisation(tensors, position_grid, config, position_resize)
    return _assemble(config, tensors, report)


def _problem_type(loss: str | None, default: str | None = None) -> str | None:
    if loss is None:
        return default
    if loss not in LOSS_PROBLEM_TYPE:
        raise ValueError(f"loss must be 'bce' (multi-label) or 'ce' (single-label), got {loss!r}.")
    return LOSS_PROBLEM_TYPE[loss]


def _transformers_model(source: PreTrainedModel | str | Path, model_types: Sequence[str]) -> PreTrainedModel:
    """A transformers model instance, or a saved folder / Hub id loaded with the class it was saved as."""
    if isinstance(source, PreTrainedModel):
        model = source
    else:
        import transformers

        config = AutoConfig.from_pretrained(source)
        architecture = (config.architectures or ["AutoModel"])[0]
        model = getattr(transformers, architecture, transformers.AutoModel).from_pretrained(source)
    if model.config.model_type not in model_types:
        raise ValueError(
            f"Expected a transformers model of type {' or '.join(model_types)}, got {model.config.model_type!r} "
            f"({type(model).__name__}); pick the matching --from."
        )
    return model


def _transformers_source(model: PreTrainedModel, name: str) -> _SourceTensors:
    """The model's state dict with the base-model prefix removed (heads keep their names)."""
    prefix = f"{model.base_model_prefix}."
    tensors = {key.removeprefix(prefix): value for key, value in model.state_dict().items()}
    return _SourceTensors(tensors, name)


_TRANSFORMERS_LEFT_OUT = {
    r"embeddings\.(cls_token|distillation_token|mask_token)": _CLASS_TOKENS,
    r"pooler\..*": "the source's tanh pooler (ElasticAST pools with attention)",
    r"(classifier|cls_classifier|distillation_classifier)\..*": "the source's classifier (other classes)",
}


# --------------------------------------------------------------------------------------------------------- AST
def convert_ast(
    source: PreTrainedModel | str | Path,
    max_time_patches: int | None = None,
    labels: int | Sequence[str] | None = None,
    loss: str | None = None,
    position_resize: str = "interpolate",
) -> ElasticASTForAudioClassification:
    """transformers' `ASTForAudioClassification` / `ASTModel` (instance, folder or Hub id) → ElasticAST.

    The kernel `[D, 1, 16, 16]` is reused with stride 16 (AST-base uses stride 10: its 12×101 grid spans the same
    spectrogram, so by default it is interpolated to `(num_mel_bins/16, max_time_patches)`; `position_resize="crop"`
    applies AST's own crop-or-interpolate rule instead). Layer-norm eps, activation and 1/√d attention scaling stay
    those of AST. The head is copied when the source has one and `labels` (if given) has as many classes.

    Args:
        max_time_patches: Time-table size; default the AST input length in 16-frame patches (1024 → 64).
        loss: `"bce"` / `"ce"` sets `problem_type`; default the source's (single-label when unset).
    """
    model = _transformers_model(source, ("audio-spectrogram-transformer",))
    cfg = model.config
    src = _transformers_source(model, f"transformers' {type(model).__name__}")
    grid = ast_grid(model)
    has_head = "classifier.dense.weight" in src.tensors
    head = {f"classifier.{m}.{p}": f"classifier.{m}.{p}" for m in ("layernorm", "dense") for p in ("weight", "bias")}
    label_kwargs = _label_kwargs(labels, cfg.num_labels if has_head else None)
    if has_head and labels is None:
        label_kwargs = {"id2label": dict(cfg.id2label), "label2id": dict(cfg.label2id)}
    return _convert_vit_like(
        src,
        layout="transformers",
        patch_kernel="embeddings.patch_embeddings.projection",
        position_table="embeddings.position_embeddings",
        final_norm="layernorm",
        grid=grid,
        hidden_act=cfg.hidden_act,
        layer_norm_eps=cfg.layer_norm_eps,
        qkv_bias=cfg.qkv_bias,
        num_attention_heads=cfg.num_attention_heads,
        num_mel_bins=cfg.num_mel_bins,
        max_time_patches=max_time_patches or cfg.max_length // cfg.patch_size,
        position_resize=position_resize,
        attention_scale=None,
        label_kwargs=label_kwargs,
        problem_type=_problem_type(loss, cfg.problem_type),
        head=head if has_head else {},
        left_out=_TRANSFORMERS_LEFT_OUT,
    )


# ----------------------------------------------------------------------------------------------------- ViT/DeiT
def convert_vit(
    source: PreTrainedModel | str | Path | Mapping[str, torch.Tensor],
    max_time_patches: int | None = None,
    labels: int | Sequence[str] | None = None,
    loss: str | None = None,
    num_mel_bins: int = 128,
    position_resize: str = "crop",
    attention_scale: float | None = None,
    num_attention_heads: int | None = None,
) -> ElasticASTForAudioClassification:
    """An ImageNet ViT/DeiT → ElasticAST initialisation, as the paper (timm `vit_base_patch16_224`).

    `source`: a transformers `ViTModel`/`DeiTModel` (or their image-classification classes; instance, folder or Hub
    id), or a timm ViT/DeiT state dict (`patch_embed.proj`, `pos_embed`, `blocks.N.attn.qkv`, ...). The RGB kernels
    are summed, the grid is centre-cropped/interpolated (`position_resize="crop"`, the official rule) to
    `(num_mel_bins/16, max_time_patches)` and averaged per axis; the ImageNet head is left out and the classifier
    starts fresh (`labels` classes; none → a backbone to load with `num_labels=`).

    Args:
        max_time_patches: Time-table size (default 192, `ElasticASTConfig`'s; the AudioSet recipe used 64).
        attention_scale: None keeps the source's 1/√d; the official recipe imported ViT into an unscaled (1.0) model.
        num_attention_heads: Only for timm state dicts (default hidden_size / 64).
    """
    common = {
        "num_mel_bins": num_mel_bins,
        "max_time_patches": max_time_patches or ElasticASTConfig.max_time_patches,
        "position_resize": position_resize,
        "attention_scale": attention_scale,
        "label_kwargs": _label_kwargs(labels if labels is not None else 0),
        "problem_type": _problem_type(loss),
        "head": {},
    }
    if isinstance(source, Mapping):
        return _convert_timm(_SourceTensors(source, "the timm ViT/DeiT state dict"), num_attention_heads, **common)
    model = _transformers_model(source, ("vit", "deit"))
    cfg = model.config
    side = cfg.image_size // cfg.patch_size
    return _convert_vit_like(
        _transformers_source(model, f"transformers' {type(model).__name__}"),
        layout="transformers",
        patch_kernel="embeddings.patch_embeddings.projection",
        position_table="embeddings.position_embeddings",
        final_norm="layernorm",
        grid=(side, side),
        hidden_act=cfg.hidden_act,
        layer_norm_eps=cfg.layer_norm_eps,
        qkv_bias=cfg.qkv_bias,
        num_attention_heads=cfg.num_attention_heads,
        left_out=_TRANSFORMERS_LEFT_OUT,
        **common,
    )


_TIMM_LEFT_OUT = {
    r"cls_token|dist_token|mask_embed": _CLASS_TOKENS,
    r"(head|head_dist|mlp_head)\..*": "the source's classifier (other classes)",
    r"(cpredlayer|gpredlayer)\..*": "SSAST pre-training prediction layers",
}


def _convert_timm(
    src: _SourceTensors, num_attention_heads: int | None, grid: tuple[int, int] | None = None, **kwargs
) -> ElasticASTForAudioClassification:
    """timm ViT/DeiT layout (also SSAST's `v.` module). `grid` defaults to the square grid the table implies."""
    rows = src.peek("pos_embed").reshape(-1, src.peek("pos_embed").shape[-1]).shape[0]
    if grid is None:
        prefix = 1 + ("dist_token" in src.tensors)
        side = math.isqrt(rows - prefix)
        if side * side != rows - prefix:
            raise ValueError(f"{src.name}: pos_embed has {rows} rows, not {prefix} class token(s) plus a square grid.")
        grid = (side, side)
    return _convert_vit_like(
        src,
        layout="timm",
        patch_kernel="patch_embed.proj",
        position_table="pos_embed",
        final_norm="norm",
        grid=grid,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias="blocks.0.attn.qkv.bias" in src.tensors,
        num_attention_heads=num_attention_heads,
        left_out=_TIMM_LEFT_OUT,
        **kwargs,
    )


# -------------------------------------------------------------------------------------------------------- SSAST
def convert_ssast(
    state_dict: Mapping[str, torch.Tensor],
    max_time_patches: int | None = None,
    labels: int | Sequence[str] | None = None,
    loss: str | None = None,
    num_mel_bins: int = 128,
    position_resize: str = "interpolate",
    attention_scale: float | None = None,
    num_attention_heads: int | None = None,
) -> ElasticASTForAudioClassification:
    """An SSAST checkpoint with 16×16 patches (e.g. SSAST-Base-Patch-400: `module.v.*` timm-DeiT encoder, position
    table of cls + dist + 8×64) → ElasticAST, as the official `transfer_SSAST`: grid interpolated to
    `(num_mel_bins/16, max_time_patches)` and averaged per axis, the final norm also copied to the classifier's
    LayerNorm; pre-training layers are left out.

    Args:
        max_time_patches: Time-table size; default the SSAST pre-training grid's (64; the VoxCeleb recipe used 192).
        attention_scale: None keeps SSAST's 1/√d; the official recipe fine-tuned it unscaled (1.0).
    """
    tensors = {key.removeprefix("module.").removeprefix("v."): value for key, value in state_dict.items()}
    src = _SourceTensors(tensors, "the SSAST checkpoint")
    kernel = src.peek("patch_embed.proj.weight")
    patch_size = _square_patch(kernel, src.name)
    if "p_input_fdim" in src.tensors and "p_input_tdim" in src.tensors:  # stored by SSAST pre-training
        grid = (int(src.take("p_input_fdim")) // patch_size, int(src.take("p_input_tdim")) // patch_size)
    else:
        rows = src.peek("pos_embed").reshape(-1, kernel.shape[0]).shape[0] - 1 - ("dist_token" in src.tensors)
        grid = (num_mel_bins // patch_size, rows // (num_mel_bins // patch_size))
    return _convert_timm(
        src,
        num_attention_heads,
        grid=grid,
        num_mel_bins=num_mel_bins,
        max_time_patches=max_time_patches or grid[1],
        position_resize=position_resize,
        attention_scale=attention_scale,
        label_kwargs=_label_kwargs(labels if labels is not None else 0),
        problem_type=_problem_type(loss),
        head={"classifier.layernorm.weight": "norm.weight", "classifier.layernorm.bias": "norm.bias"},
    )


# ------------------------------------------------------------------------------------------- files and folders
def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or a torch pickle (`.pth`/`.pt`/`.bin`, loaded with `weights_only=True`);
    a state dict nested under `model_state`, `state_dict` or `model` is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is not a file; pass a .pth/.pt/.bin/.safetensors checkpoint.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model_state", "state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors).")
    return dict(loaded)


def _is_file(source) -> bool:
    return isinstance(source, (str, Path)) and Path(source).is_file()


CONVERTERS = {
    "official": lambda source, **kw: convert_official_state_dict(load_state_dict(source), **kw),
    "ast": convert_ast,
    "vit": lambda source, **kw: convert_vit(load_state_dict(source) if _is_file(source) else source, **kw),
    "ssast": lambda source, **kw: convert_ssast(load_state_dict(source), **kw),
}


def convert(
    kind: str,
    source,
    output_dir: str | Path,
    mean: float | None = None,
    std: float | None = None,
    **options,
) -> ElasticASTForAudioClassification:
    """Converts `source` (see `CONVERTERS`) and writes model + `ElasticASTFeatureExtractor` config to `output_dir`.

    The feature extractor matches the model (mel bins, patch size, time table) and uses `mean`/`std` if given, else
    the official recipe's statistics for `dataset=`, else those of an AST source's feature extractor, else the
    defaults (AudioSet's, as transformers' AST).
    """
    if kind not in CONVERTERS:
        raise ValueError(f"Unknown source kind {kind!r}: use one of {sorted(CONVERTERS)}.")
    model = CONVERTERS[kind](source, **options)
    stats = _normalisation(kind, source, options.get("dataset"))
    if mean is not None:
        stats["mean"] = mean
    if std is not None:
        stats["std"] = std
    config = model.config
    feature_extractor = ElasticASTFeatureExtractor(
        num_mel_bins=config.num_mel_bins,
        patch_size=config.patch_size,
        max_time_patches=config.max_time_patches,
        **stats,
    )
    model.save_pretrained(output_dir)
    feature_extractor.save_pretrained(output_dir)
    return model


def _normalisation(kind: str, source, dataset: str | None) -> dict[str, float]:
    if dataset is not None:
        return {k: OFFICIAL_DATASETS[dataset.lower()][k] for k in ("mean", "std")}
    if kind == "ast" and isinstance(source, (str, Path)):
        from transformers import ASTFeatureExtractor

        try:
            settings, _ = ASTFeatureExtractor.get_feature_extractor_dict(source)
        except OSError:  # no preprocessor_config.json next to the weights
            return {}
        return {key: settings[key] for key in ("mean", "std") if key in settings}
    return {}


# ------------------------------------------------------------------------------------------------------------ CLI
def read_labels(spec: str) -> int | list[str]:
    """`--labels`: a count (`527`), comma-separated names, a text file (one name per line) or a CSV with a
    `display_name`, `label` or `name` column (AudioSet's class_labels_indices.csv)."""
    path = Path(spec)
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            if path.suffix == ".csv":
                rows = list(csv.DictReader(f))
                column = next((c for c in ("display_name", "label", "name") if rows and c in rows[0]), None)
                if column is None:
                    raise ValueError(f"{path}: no display_name, label or name column.")
                return [row[column] for row in rows]
            return [line.strip() for line in f if line.strip()]
    if spec.isdigit():
        return int(spec)
    return [name.strip() for name in spec.split(",") if name.strip()]


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "convert",
        help="import official ElasticAST, transformers AST, ViT/DeiT or SSAST weights into an ElasticAST folder",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--from", dest="kind", required=True, choices=sorted(CONVERTERS), help="source kind")
    parser.add_argument("source", help="a .pth/.bin/.safetensors file, or a transformers folder/Hub id (ast, vit)")
    parser.add_argument("output_dir", help="folder to write (loads with from_pretrained)")
    parser.add_argument("--labels", type=read_labels, help="class count, comma-separated names, or a .txt/.csv file")
    parser.add_argument("--loss", choices=sorted(LOSS_PROBLEM_TYPE), help="bce → multi-label, ce → single-label")
    parser.add_argument("--dataset", choices=sorted(OFFICIAL_DATASETS), help="official: the checkpoint's dataset")
    parser.add_argument("--heads", type=int, help="attention heads (official, timm, SSAST; default hidden/64)")
    parser.add_argument("--time-patches", type=int, help="time-position table size (ast, vit, ssast)")
    parser.add_argument("--position-resize", choices=["crop", "interpolate"], help="grid resize rule (ast, vit, ssast)")
    parser.add_argument("--attention-scale", type=float, help="vit/ssast: e.g. 1.0 as the official recipe")
    parser.add_argument("--mean", type=float, help="fbank normalisation mean for the feature extractor")
    parser.add_argument("--std", type=float, help="fbank normalisation std for the feature extractor")
    parser.set_defaults(func=run)


_VIT_OPTIONS = {
    "labels": "labels",
    "loss": "loss",
    "heads": "num_attention_heads",
    "time_patches": "max_time_patches",
    "position_resize": "position_resize",
    "attention_scale": "attention_scale",
}
_OPTIONS = {  # CLI argument → keyword of the converter, per source kind
    "official": {"labels": "labels", "loss": "loss", "dataset": "dataset", "heads": "num_attention_heads"},
    "ast": {name: _VIT_OPTIONS[name] for name in ("labels", "loss", "time_patches", "position_resize")},
    "vit": _VIT_OPTIONS,
    "ssast": _VIT_OPTIONS,
}


def run(args) -> int:
    given = {name for name in ("dataset", *_VIT_OPTIONS) if getattr(args, name) is not None}
    unsupported = sorted(given - set(_OPTIONS[args.kind]))
    if unsupported:
        flags = ", ".join("--" + name.replace("_", "-") for name in unsupported)
        raise SystemExit(f"elasticast convert --from {args.kind}: {flags} does not apply to this source kind.")
    options = {_OPTIONS[args.kind][name]: getattr(args, name) for name in given}
    try:
        model = convert(args.kind, args.source, args.output_dir, mean=args.mean, std=args.std, **options)
    except ValueError as error:
        raise SystemExit(f"elasticast convert: {error}") from error
    from .loading import WeightsMismatchError, from_pretrained_strict

    try:  # the output check: the written folder loads back with every weight in place
        from_pretrained_strict(type(model), args.output_dir)
    except WeightsMismatchError as error:
        raise SystemExit(f"elasticast convert: the written folder does not load back: {error}") from error
    config = model.config
    print(
        f"Wrote {args.output_dir}: ElasticAST with {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
        f"{config.num_labels} labels ({config.problem_type}), time table {config.max_time_patches}, "
        f"attention scale {config.attention_scale if config.attention_scale is not None else '1/sqrt(d)'}."
    )
    return 0
