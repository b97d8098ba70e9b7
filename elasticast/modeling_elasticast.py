"""ElasticAST: an Audio Spectrogram Transformer for any length and temporal resolution (Feng et al., Interspeech 2024).

Data path: packed rows from `ElasticASTFeatureExtractor` (`input_values [R, L, P*P]`, `segment_ids`, `freq_ids`,
`time_ids`, optional `clip_ids`, all `[R, L]`; see its module docstring) → the Σ real tokens, padding dropped
(`PackedLayout`) → patch embedding + factorised frequency/time positions → pre-LN encoder whose attention is confined
to each segment → final LayerNorm → masked attention pooling (one learned query per segment, no residual) → segment
vectors combined per clip → LayerNorm + linear head. Nothing is computed for padding tokens. In inference (no grad)
the segments are encoded in slices of at most `config.inference_max_tokens` tokens, so memory for a long clip is
bounded by the slice, not by the clip.

`window_logits` / `window_pooled` run the same modules on `[B, L, P*P]` whole windows of one shape (`WindowLayout`):
no padding and no data-dependent Python, for `torch.export` / ONNX.

Attention backends (`ElasticASTAttention`, one function per family, all through transformers' `AttentionInterface`):
- eager, sdpa (and any other registered function): one call per group of equal-length segments, no mask needed;
  this is the fast exact path on CPU (a boolean block-diagonal mask costs more than dense attention there).
- flex_attention: one call over all tokens with a document `BlockMask` from `masking_utils`.
- varlen (`VARLEN_IMPLEMENTATIONS`: "torch_varlen" = `torch.nn.attention.varlen.varlen_attn`, flash_attention_2/3):
  one call over the Σ tokens with `cu_seq_lens_q/k` from `PackedLayout.varlen_kwargs`, self-attention and pooling
  alike; no mask. "torch_varlen" is the default where CUDA is available (`get_correct_attn_implementation`); on
  tensors its kernel cannot take (CPU, fp32) it falls back to the grouped SDPA path. The flash-attn package's
  functions get exactly the same call (transformers' flash kwargs). The tests run this path on CPU both ways, with
  a reference kernel in place of torch's and of flash-attn's; neither CUDA kernel runs in the test suite.
- `WindowLayout`: one batched call over `[B, H, L, d]`, no mask (varlen and flex implementations use SDPA there).

Hidden states and attentions are recorded by transformers' `capture_outputs` hooks (`_can_record_outputs`). When any
is requested, the layers run on the `[R, L, D]` rows with a block-diagonal mask (`RowLayout`), so the recorded
tensors are the ones the outputs are computed from (`retain_grad()` works, as in every transformers encoder); the
packed path above is what runs otherwise. `output_attentions=True` with a backend that returns no weights runs that
call with eager attention, with a warning.
"""

import functools
import inspect
import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple


try:
    from transformers.utils.output_capturing import OutputRecorder, capture_outputs
except ImportError:  # earlier transformers 5.x releases keep both in utils.generic, under the decorator's old name
    from transformers.utils.generic import OutputRecorder
    from transformers.utils.generic import check_model_inputs as capture_outputs

from .configuration_elasticast import ElasticASTConfig


logger = logging.get_logger(__name__)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`[B, H, Lq, d]` queries against `[B, H, Lk, d]` keys → output `[B, Lq, H, d]`, weights `[B, H, Lq, Lk]`."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _torch_varlen_attn() -> Callable | None:
    """torch's flash varlen kernel (`torch.nn.attention.varlen.varlen_attn`, CUDA only), or None in older torch."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


@functools.cache
def _takes_scale(function: Callable) -> bool:
    return "scale" in inspect.signature(function).parameters


def torch_varlen_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: None,
    scaling: float,
    dropout: float = 0.0,
    *,
    cu_seq_lens_q: torch.Tensor,
    cu_seq_lens_k: torch.Tensor,
    max_length_q: int,
    max_length_k: int,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """`varlen_attn` behind transformers' flash-attention calling convention, so that one code path serves both.

    `query [1, H, Σq, d]`, `key`/`value [1, H, Σk, d]` (one "batch" of all tokens), int32 offsets `cu_seq_lens_q/k
    [N+1]` and python-int maxima → output `[1, Σq, H, d]`, no weights. `varlen_attn` wants `(total, H, d)`, which
    `query[0].transpose(0, 1)` gives back as the contiguous projection view the varlen path started from.
    """
    if dropout:
        raise ValueError(
            "attn_implementation='torch_varlen' has no attention dropout; set attention_probs_dropout_prob=0 "
            "(as the paper) or use attn_implementation='sdpa' for training with attention dropout."
        )
    varlen_attn = _torch_varlen_attn()
    if varlen_attn is None:
        raise ImportError(
            f"attn_implementation='torch_varlen' needs torch.nn.attention.varlen (torch ≥ 2.9), not in torch "
            f"{torch.__version__}; upgrade torch or load the model with attn_implementation='sdpa'."
        )
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # (total, H, d)
    if _takes_scale(varlen_attn):
        out = varlen_attn(q, k, v, cu_seq_lens_q, cu_seq_lens_k, max_length_q, max_length_k, scale=scaling)
    else:  # early releases of varlen_attn have no `scale` and always use 1/√d: fold our scale into the queries
        out = varlen_attn(q * (scaling * q.shape[-1] ** 0.5), k, v, cu_seq_lens_q, cu_seq_lens_k, max_length_q,
                          max_length_k)
    return out[None], None


AttentionInterface.register("torch_varlen", torch_varlen_attention_forward)

# Implementations that take the varlen path: one call over the Σ real tokens with `cu_seq_lens_q/k` and
# `max_length_q/k`, transformers' flash-attention kwargs. Tests add the name of their own CPU reference function.
VARLEN_IMPLEMENTATIONS = {"torch_varlen", "flash_attention_2", "flash_attention_3"}


def _runs_varlen(implementation: str, tensor: torch.Tensor) -> bool:
    """Whether `implementation` takes the varlen path for `tensor`: "torch_varlen" only where its kernel runs (CUDA,
    fp16/bf16); elsewhere it falls back to the grouped path with SDPA."""
    if implementation == "torch_varlen":
        return tensor.is_cuda and tensor.dtype in (torch.float16, torch.bfloat16)
    return implementation in VARLEN_IMPLEMENTATIONS


def aggregate_segments(values: torch.Tensor, segment_clip: torch.Tensor, num_clips: int, how: str) -> torch.Tensor:
    """Combines per-segment rows `[S, ...]` into per-clip rows `[num_clips, ...]` by `how` ("mean" or "max")."""
    index = segment_clip.view(-1, *([1] * (values.dim() - 1))).expand_as(values)
    out = values.new_zeros((num_clips, *values.shape[1:]))
    return out.scatter_reduce(0, index, values, reduce="amax" if how == "max" else "mean", include_self=False)


class PackedLayout:
    """Where the real tokens of `[R, L]` rows are and how they group into segments and clips.

    Tokens flow through the encoder as `[Σ, D]` (padding dropped, row-major order).

    Attributes:
        shape: `(R, L)`.
        token_index `[Σ]`: flat positions `row * L + column` of the non-padding tokens, row-major.
        token_segment `[Σ]`: segment number (0..S-1) of each token.
        segment_lengths: token count of each segment (python list, S entries).
        segment_start `[S]`: offset of each segment's first token in the Σ tokens.
        segment_clip `[S]`: input index of the clip each segment belongs to.
        num_clips: N, the number of outputs.
    """

    def __init__(self, segment_ids: torch.Tensor, clip_ids: torch.Tensor | None = None):
        if segment_ids.dim() != 2:
            raise ValueError(f"segment_ids must be [rows, tokens], got shape {tuple(segment_ids.shape)}.")
        if bool((segment_ids < 0).any()):
            raise ValueError("segment_ids must be ≥ 0 (0 = padding, 1..n = segments of the row).")
        rows, length = segment_ids.shape
        flat_segments = segment_ids.reshape(-1)
        token_index = torch.nonzero(flat_segments > 0).squeeze(1)
        row_of_token = torch.div(token_index, length, rounding_mode="floor")
        key = row_of_token * (length + 1) + flat_segments[token_index]
        unique_keys, counts = torch.unique_consecutive(key, return_counts=True)
        if torch.unique(unique_keys).numel() != unique_keys.numel():
            raise ValueError("Each segment's tokens must be contiguous within its row; got a segment id split apart.")
        segment_start = torch.cumsum(counts, 0) - counts
        first_token = token_index[segment_start]
        if clip_ids is None:
            segment_clip = torch.div(first_token, length, rounding_mode="floor")
            num_clips = rows
        else:
            token_clip = clip_ids.reshape(-1)[token_index] - 1
            segment_clip = token_clip[segment_start]
            segment_of_token = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
            if bool((token_clip < 0).any()) or not torch.equal(token_clip, segment_clip[segment_of_token]):
                raise ValueError("clip_ids must be ≥ 1 on every real token and constant within each segment.")
            num_clips = int(clip_ids.max()) if clip_ids.numel() else 0
        self._set(tuple(segment_ids.shape), token_index, counts, segment_clip, num_clips)

    def _set(self, shape, token_index, counts, segment_clip, num_clips):
        self.shape = shape
        self.token_index = token_index
        self.segment_lengths = counts.tolist()
        self.segment_start = torch.cumsum(counts, 0) - counts
        self.token_segment = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        self.segment_clip = segment_clip
        self.num_clips = num_clips
        self._flex_masks, self._varlen_kwargs = {}, {}

    @property
    def num_segments(self) -> int:
        return len(self.segment_lengths)

    @property
    def num_tokens(self) -> int:
        return self.token_index.numel()

    def slices(self, max_tokens: int | None) -> list[tuple[slice, "PackedLayout"]]:
        """Consecutive runs of whole segments of at most `max_tokens` tokens (a longer segment alone), each as
        `(its range of the Σ tokens, its own layout)`; `[(all tokens, self)]` when everything fits."""
        if max_tokens is None or self.num_tokens <= max_tokens:
            return [(slice(0, self.num_tokens), self)]
        runs, first, tokens = [], 0, 0
        for segment, n in enumerate(self.segment_lengths):
            if tokens and tokens + n > max_tokens:
                runs.append((first, segment))
                first, tokens = segment, 0
            tokens += n
        runs.append((first, self.num_segments))
        counts = torch.tensor(self.segment_lengths, device=self.segment_start.device)
        offsets = [0, *itertools.accumulate(self.segment_lengths)]
        out = []
        for first, end in runs:
            part = PackedLayout.__new__(PackedLayout)
            tokens = slice(offsets[first], offsets[end])
            part._set(self.shape, self.token_index[tokens], counts[first:end], self.segment_clip[first:end],
                      self.num_clips)
            out.append((tokens, part))
        return out

    @functools.cached_property
    def length_groups(self) -> list[list[int]]:
        """Segment numbers grouped by segment length (one list per distinct length)."""
        by_length = defaultdict(list)
        for segment, n in enumerate(self.segment_lengths):
            by_length[n].append(segment)
        return list(by_length.values())

    def varlen_kwargs(self, pooling: bool) -> dict:
        """The one place that builds varlen offsets: transformers' flash-attention kwargs over the Σ tokens.

        `cu_seq_lens_k [S+1]` int32 offsets of each segment's tokens, `max_length_k` the longest segment (python
        int); queries are the tokens themselves, or with `pooling` one query per segment (`cu_seq_lens_q = 0..S`,
        `max_length_q = 1`).
        """
        if pooling not in self._varlen_kwargs:
            device = self.segment_start.device
            lengths = torch.tensor(self.segment_lengths, device=device, dtype=torch.int32)
            keys = nn.functional.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
            queries = torch.arange(self.num_segments + 1, device=device, dtype=torch.int32) if pooling else keys
            longest = max(self.segment_lengths, default=0)
            self._varlen_kwargs[pooling] = {
                "cu_seq_lens_q": queries, "cu_seq_lens_k": keys, "max_length_q": 1 if pooling else longest,
                "max_length_k": longest,
            }
        return self._varlen_kwargs[pooling]

    def flex_mask(self, config, queries: torch.Tensor, tokens: torch.Tensor, pooling: bool):
        """Document BlockMask (built once per layout and kind): a query sees only its own segment's tokens."""
        if pooling not in self._flex_masks:
            token_segment = self.token_segment
            query_segment = torch.arange(self.num_segments, device=tokens.device) if pooling else token_segment

            def same_segment(batch_idx, head_idx, q_idx, kv_idx):
                return query_segment[q_idx] == token_segment[kv_idx]

            self._flex_masks[pooling] = create_bidirectional_mask(
                config=config,
                inputs_embeds=queries[None],
                attention_mask=None,
                encoder_hidden_states=tokens[None] if pooling else None,
                and_mask_function=same_segment,
            )
        return self._flex_masks[pooling]

    def segment_max(self, values: torch.Tensor) -> torch.Tensor:
        """`[Σ]` per-token values → `[Σ]`, each token's segment maximum."""
        per_segment = values.new_zeros(self.num_segments).scatter_reduce(
            0, self.token_segment, values, reduce="amax", include_self=False
        )
        return per_segment[self.token_segment]

    def pooling_queries(self, query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The pooling query `[D]` once per segment → `[S, D]`."""
        return query.expand(self.num_segments, -1)

    def finish(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """What a layer's output needs before the next layer: nothing for packed tokens."""
        return hidden_states

    def to_rows(self, tokens: torch.Tensor) -> torch.Tensor:
        """`[Σ, ...]` → `[R, L, ...]` with zeros at padding positions."""
        out = tokens.new_zeros((self.shape[0] * self.shape[1], *tokens.shape[1:]))
        return out.index_copy(0, self.token_index, tokens).view(*self.shape, *tokens.shape[1:])


class WindowLayout:
    """`B` whole windows (segments) of the same `L` tokens each, no padding: tokens flow as `[B, L, D]`.

    The layout `window_pooled` / `window_logits` use; everything it computes follows from tensor shapes, so a graph
    traced with it holds for any B and L (no data-dependent Python).
    """

    def segment_max(self, values: torch.Tensor) -> torch.Tensor:
        """`[L]` per-token values shared by every window → `[L]`, the window maximum."""
        return values.amax(-1, keepdim=True).expand_as(values)

    def pooling_queries(self, query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The pooling query `[D]` once per window → `[B, 1, D]`."""
        return query.expand(tokens.shape[0], 1, -1)

    def finish(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """What a layer's output needs before the next layer: nothing for whole windows."""
        return hidden_states


class RowLayout:
    """The input's own `[R, L]` rows as the encoder's tokens (`[R, L, D]`), with a dense block-diagonal mask.

    Used only when hidden states or attention weights are recorded: then every layer consumes the rows the previous
    one returned, so the returned `[R, L, D]` hidden states and `[R, H, L, L]` weights lie on the autograd path to the
    outputs (`retain_grad()` works on them), as in any transformers encoder. It costs O(R·L²) attention instead of
    Σ l², hence only for recording. Padding tokens attend among themselves (no NaN) and are zeroed after every layer.

    Attributes:
        packed: the `PackedLayout` of the same input (pooling runs on its Σ tokens).
        real `[R, L, 1]`: True on real tokens.
        attentions: whether attention weights are requested (only eager attention returns them).
    """

    def __init__(self, packed: "PackedLayout", segment_ids: torch.Tensor, attentions: bool):
        self.packed = packed
        self.real = (segment_ids > 0).unsqueeze(-1)
        self.same_segment = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]  # [R, 1, L, L]
        self.attentions = attentions

    def mask(self, dtype: torch.dtype) -> torch.Tensor:
        """Additive mask `[R, 1, L, L]`: 0 within a segment, the dtype's minimum across segments."""
        zero = torch.zeros((), dtype=dtype, device=self.real.device)
        return torch.where(self.same_segment, zero, torch.finfo(dtype).min)

    def finish(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Zeros at padding, on the autograd path."""
        return hidden_states * self.real.to(hidden_states.dtype)

    def to_tokens(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`[R, L, D]` → the Σ real tokens `[Σ, D]` (a differentiable gather)."""
        return hidden_states.reshape(-1, hidden_states.shape[-1])[self.packed.token_index]


class ElasticASTEmbeddings(nn.Module):
    """Patch projection plus factorised learned frequency and time position embeddings."""

    def __init__(self, config: ElasticASTConfig):
        super().__init__()
        self.config = config
        self.patch_embeddings = nn.Linear(config.patch_size**2, config.hidden_size)
        self.freq_position_embeddings = nn.Parameter(torch.zeros(config.num_freq_patches, config.hidden_size))
        self.time_position_embeddings = nn.Parameter(torch.zeros(config.max_time_patches, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def check_ids(self, freq_ids: torch.Tensor, time_ids: torch.Tensor) -> None:
        """Raises a ValueError naming the fix when patch coordinates lie outside what the tables can embed."""
        if freq_ids.numel() and (int(freq_ids.max()) >= self.config.num_freq_patches or int(freq_ids.min()) < 0):
            raise ValueError(
                f"freq_ids must lie in [0, {self.config.num_freq_patches}) for num_mel_bins="
                f"{self.config.num_mel_bins}; extract features with a matching ElasticASTFeatureExtractor."
            )
        if time_ids.numel() and int(time_ids.min()) < 0:
            raise ValueError("time_ids must be ≥ 0.")

    def time_positions(self, time_ids: torch.Tensor, layout: PackedLayout | WindowLayout) -> torch.Tensor:
        """Time embeddings `[..., D]` for `time_ids [...]`; segments longer than the table follow
        `config.time_position_policy`."""
        table = self.time_position_embeddings
        size = table.shape[0]
        if self.config.time_position_policy == "clamp":
            return table[time_ids.clamp(max=size - 1)]
        # "interpolate": a segment of T > size time patches reads the table at t·(size-1)/(T-1), linearly
        # interpolated; shorter segments get scale 1 and therefore exactly table[t].
        token_time = (layout.segment_max(time_ids) + 1).to(table.dtype)
        scale = torch.where(token_time > size, (size - 1) / (token_time - 1).clamp(min=1), torch.ones_like(token_time))
        position = time_ids.to(table.dtype) * scale
        low = position.floor().long().clamp(max=size - 1)
        high = (low + 1).clamp(max=size - 1)
        fraction = (position - low.to(table.dtype)).unsqueeze(-1)
        return table[low] * (1 - fraction) + table[high] * fraction

    def forward(self, patches, freq_ids, time_ids, layout: PackedLayout | WindowLayout) -> torch.Tensor:
        """`patches [Σ, P*P]`, `freq_ids`/`time_ids [Σ]` → `[Σ, D]` (windows: `[B, L, P*P]`, `[L]` → `[B, L, D]`)."""
        embeddings = self.patch_embeddings(patches)
        embeddings = embeddings + self.freq_position_embeddings[freq_ids] + self.time_positions(time_ids, layout)
        return self.dropout(embeddings)


# One function per attention family. Each takes the projected `query [Σq, H, d]`, `key`/`value [Σ, H, d]` (windows:
# `[B, Lq, H, d]`, `[B, L, H, d]`), the layout, whether this is pooling (query s = segment s) and the attention
# function to call, and returns the output in the query's layout plus the weights, if the function gives them.


def _batch(parts: tuple[torch.Tensor, ...], segments: list[int]) -> torch.Tensor:
    """The given segments' `[l, H, d]` parts as one `[n, l, H, d]` batch (a view when n = 1, no copy)."""
    return parts[segments[0]][None] if len(segments) == 1 else torch.stack([parts[s] for s in segments])


def grouped_attention(module, query, key, value, layout: PackedLayout, pooling: bool, interface: Callable, **kwargs):
    """One call per group of equal-length segments, each group stacked into a batch `[n, H, l, d]`, no mask.

    Splitting and stacking is cheaper than index gathers, whose backward zero-fills a gradient of all tokens per
    group. Weights: one `[n, H, lq, l]` tensor per group (in `layout.length_groups` order), or None.
    """
    q_parts = query.split(1) if pooling else query.split(layout.segment_lengths)  # [1 or l, H, d] each
    k_parts, v_parts = key.split(layout.segment_lengths), value.split(layout.segment_lengths)
    outputs, weights = [None] * layout.num_segments, []
    for segments in layout.length_groups:
        group_out, group_weights = interface(
            module,
            _batch(q_parts, segments).transpose(1, 2),  # [n, H, 1 or l, d]
            _batch(k_parts, segments).transpose(1, 2),  # [n, H, l, d]
            _batch(v_parts, segments).transpose(1, 2),
            None,
            **kwargs,
        )
        for segment, segment_out in zip(segments, group_out.unbind(0)):  # [1 or l, H, d]
            outputs[segment] = segment_out
        weights.append(group_weights)
    output = torch.cat(outputs) if outputs else query
    return output, None if any(w is None for w in weights) else weights


def flex_attention(module, query, key, value, layout: PackedLayout, pooling: bool, interface: Callable, **kwargs):
    """One call over all Σ tokens (a batch of 1) with a document `BlockMask`."""
    mask = layout.flex_mask(module.config, query.flatten(1), key.flatten(1), pooling)
    output, _ = interface(module, *(x.transpose(0, 1)[None] for x in (query, key, value)), mask, **kwargs)
    return output[0], None


def varlen_attention(module, query, key, value, layout: PackedLayout, pooling: bool, interface: Callable, **kwargs):
    """One call over all Σ tokens (a batch of 1) with the layout's `cu_seq_lens_q/k`; varlen kernels take no mask."""
    output, _ = interface(
        module, *(x.transpose(0, 1)[None] for x in (query, key, value)), None, **kwargs,
        **layout.varlen_kwargs(pooling),
    )
    return output[0], None


def window_attention(module, query, key, value, layout: WindowLayout, pooling: bool, interface: Callable, **kwargs):
    """Whole windows of one length: one batched call over `[B, H, L, d]`, no mask."""
    return interface(module, query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), None, **kwargs)


def row_attention(module, query, key, value, layout: RowLayout, pooling: bool, interface: Callable, **kwargs):
    """The rows `[R, L, H, d]` with the dense block-diagonal mask: one batched call; weights `[R, H, L, L]`."""
    mask = layout.mask(query.dtype)
    return interface(module, query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), mask, **kwargs)


class ElasticASTAttention(nn.Module):
    """Multi-head attention where each query sees only the tokens of its own segment.

    Used for self-attention (queries = tokens) and for pooling (one query per segment).
    """

    def __init__(self, config: ElasticASTConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = config.attention_scale if config.attention_scale is not None else self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = False
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def backend(self, layout: PackedLayout | WindowLayout, query: torch.Tensor) -> tuple[Callable, str]:
        """The attention family function and the implementation name it calls, for this layout and tensor."""
        implementation = self.config._attn_implementation
        needs_layout = implementation in VARLEN_IMPLEMENTATIONS or implementation == "flex_attention"
        if isinstance(layout, RowLayout):
            if layout.attentions and implementation != "eager":
                logger.warning_once(
                    f"attn_implementation={implementation!r} returns no attention weights: ElasticAST runs calls with "
                    "output_attentions=True with eager attention. Load the model with attn_implementation='eager' to "
                    "make that the default."
                )
                return row_attention, "eager"
            # Varlen and flex functions take no dense mask; SDPA computes the same attention with it.
            return row_attention, "sdpa" if needs_layout or implementation == "torch_varlen" else implementation
        if isinstance(layout, WindowLayout):
            # Equal-length windows need neither a mask nor offsets; functions that require one use SDPA here.
            return window_attention, "sdpa" if needs_layout else implementation
        if _runs_varlen(implementation, query):
            return varlen_attention, implementation
        if implementation == "flex_attention":
            return flex_attention, implementation
        return grouped_attention, "sdpa" if implementation == "torch_varlen" else implementation

    def forward(
        self,
        queries: torch.Tensor,
        tokens: torch.Tensor,
        layout: PackedLayout | WindowLayout,
        pooling: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, list[torch.Tensor] | torch.Tensor | None]:
        """`queries [Σ or S, D]` attend within their segment of `tokens [Σ, D]` → `[Σ or S, D]`, weights if given.

        With `pooling`, query s belongs to segment s; otherwise query i is token i. Windows: `[B, L or 1, D]`
        against `[B, L, D]`.
        """
        q = self.q_proj(queries).unflatten(-1, (self.num_heads, self.head_dim))
        k = self.k_proj(tokens).unflatten(-1, (self.num_heads, self.head_dim))
        v = self.v_proj(tokens).unflatten(-1, (self.num_heads, self.head_dim))
        attend, implementation = self.backend(layout, q)
        interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        output, weights = attend(
            self, q, k, v, layout, pooling, interface, scaling=self.scaling,
            dropout=self.attention_dropout if self.training else 0.0, **kwargs,
        )
        return self.o_proj(output.flatten(-2)), weights


class ElasticASTMLP(nn.Module):
    def __init__(self, config: ElasticASTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class ElasticASTLayer(GradientCheckpointingLayer):
    """Pre-LN transformer block over the tokens of a layout."""

    def __init__(self, config: ElasticASTConfig):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = ElasticASTAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = ElasticASTMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, hidden_states: torch.Tensor, layout: PackedLayout | WindowLayout, **kwargs: Unpack[TransformersKwargs]
    ) -> torch.Tensor:
        normed = self.layernorm_before(hidden_states)
        attention_output, _ = self.attention(normed, normed, layout, **kwargs)
        hidden_states = hidden_states + self.dropout(attention_output)
        return layout.finish(hidden_states + self.dropout(self.mlp(self.layernorm_after(hidden_states))))


class ElasticASTPooler(nn.Module):
    """Masked attention pooling: a learned query attends to each segment's tokens → one vector per segment."""

    def __init__(self, config: ElasticASTConfig):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(config.hidden_size))
        self.attention = ElasticASTAttention(config)

    def forward(
        self, hidden_states: torch.Tensor, layout: PackedLayout | WindowLayout, **kwargs: Unpack[TransformersKwargs]
    ) -> torch.Tensor:
        """`[Σ, D]` → `[S, D]` (windows: `[B, L, D]` → `[B, D]`)."""
        queries = layout.pooling_queries(self.query, hidden_states)
        pooled, _ = self.attention(queries, hidden_states, layout, pooling=True, **kwargs)
        return pooled.reshape(-1, pooled.shape[-1])


@dataclass
class ElasticASTEncoderOutput(ModelOutput):
    r"""
    What `ElasticASTModel.encode` gives for the tokens of one layout, before they go back to rows.

    last_hidden_state (`[Σ, D]`; windows `[B, L, D]`): final-LayerNorm token states.
    pooler_output (`[S, D]`; windows `[B, D]`): one pooled vector per segment.
    hidden_states (tuple of `[R, L, D]`): embeddings and every layer's output, when requested (rows: `RowLayout`).
    attentions (tuple of `[R, H, L, L]`, one per layer): attention weights, when requested.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple | None = None


@dataclass
class ElasticASTModelOutput(BaseModelOutputWithPooling):
    r"""
    last_hidden_state (`[R, L, D]`): final-LayerNorm token states in the input's row layout, zeros at padding.
    pooler_output (`[N, D]`): one pooled vector per clip, in input order (mean over a clip's windows).
    hidden_states (tuple of `[R, L, D]`): embeddings and every layer's output, when requested.
    attentions (tuple of `[R, H, L, L]`): self-attention weights per layer (computed with eager attention), 0
        across segments; padding tokens attend among themselves.
    segment_pooler_output (`[S, D]`): one pooled vector per segment (window).
    segment_clip_ids (`[S]`): input index of the clip each segment belongs to.
    """

    segment_pooler_output: torch.FloatTensor | None = None
    segment_clip_ids: torch.LongTensor | None = None


class ElasticASTPreTrainedModel(PreTrainedModel):
    config: ElasticASTConfig
    config_class = ElasticASTConfig
    base_model_prefix = "elasticast"
    main_input_name = "input_values"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["ElasticASTEmbeddings", "ElasticASTLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # Recorded by transformers' hooks over the tokens of a layout (`[Σ, D]`); `ElasticASTModel.forward` puts them
    # back into rows. Only the encoder layers' attention weights count, not the pooler's.
    _can_record_outputs = {
        "hidden_states": ElasticASTLayer,
        "attentions": OutputRecorder(ElasticASTAttention, index=1, layer_name="layers"),
    }

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        """transformers picks sdpa when no `attn_implementation` is given; ElasticAST picks "torch_varlen" where
        CUDA and torch's `varlen_attn` are available (it runs varlen for CUDA fp16/bf16 tensors and the grouped SDPA
        path for anything else, so the choice is safe before the model's device and dtype are known)."""
        if requested_attention is None and torch.cuda.is_available() and _torch_varlen_attn() is not None:
            requested_attention = "torch_varlen"
        return super().get_correct_attn_implementation(requested_attention, is_init_check)

    def packed_layout(
        self,
        segment_ids: torch.Tensor,
        freq_ids: torch.Tensor,
        time_ids: torch.Tensor,
        clip_ids: torch.Tensor | None = None,
    ) -> PackedLayout:
        """Checks the inputs (segment and clip ids, patch coordinates) and builds their `PackedLayout`.

        Every check and size here needs the tensors' values, so it runs eagerly; pass the result to `forward` as
        `layout=` to keep it out of a compiled or exported region. Raises ValueError naming the fix on bad input.
        """
        layout = PackedLayout(segment_ids, clip_ids)
        tokens = layout.token_index
        self.base_model.embeddings.check_ids(freq_ids.reshape(-1)[tokens], time_ids.reshape(-1)[tokens])
        layout.length_groups  # noqa: B018 -- computed (and cached) now, not inside a traced forward
        return layout

    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, ElasticASTEmbeddings):
            init.trunc_normal_(module.freq_position_embeddings, std=std)
            init.trunc_normal_(module.time_position_embeddings, std=std)
        elif isinstance(module, ElasticASTPooler):
            init.trunc_normal_(module.query, std=std)

    def save_pretrained(self, *args, **kwargs):
        # transformers writes only the saving class into `auto_map`; list every auto class so that both AutoModel
        # and AutoModelForAudioClassification load the folder with trust_remote_code=True.
        if getattr(type(self), "_auto_class", None) is not None:
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoConfig": "configuration_elasticast.ElasticASTConfig",
                "AutoModel": "modeling_elasticast.ElasticASTModel",
                "AutoModelForAudioClassification": "modeling_elasticast.ElasticASTForAudioClassification",
            }
        return super().save_pretrained(*args, **kwargs)

    def push_to_hub(self, repo_id: str, *, feature_extractor=None, **kwargs):
        """Uploads weights, config, code, the feature-extractor config and a model card in one commit.

        Goes through `elasticast.hub.push` (the same path as `elasticast push`); where only this remote code is
        available, without the `elasticast` package, it falls back to transformers' model-only upload.
        """
        try:
            from elasticast.hub import push
        except ImportError:
            return super().push_to_hub(repo_id, **kwargs)
        return push(self, repo_id, feature_extractor=feature_extractor, **kwargs)


class ElasticASTModel(ElasticASTPreTrainedModel):
    def __init__(self, config: ElasticASTConfig):
        super().__init__(config)
        self.embeddings = ElasticASTEmbeddings(config)
        self.layers = nn.ModuleList([ElasticASTLayer(config) for _ in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ElasticASTPooler(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    @capture_outputs(tie_last_hidden_states=False)
    def encode(
        self,
        patches: torch.Tensor,
        freq_ids: torch.Tensor,
        time_ids: torch.Tensor,
        layout: PackedLayout | WindowLayout,
        rows: RowLayout | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ElasticASTEncoderOutput:
        """The encoder over the tokens of one layout: `patches [Σ, P*P]`, `freq_ids`/`time_ids [Σ]` (windows:
        `[B, L, P*P]`, `[L]`) → embeddings → layers → LayerNorm → pooling.

        With `rows` (recording hidden states or attention weights) the layers run on the `[R, L, D]` rows instead and
        transformers' `capture_outputs` hooks record exactly the row tensors that flow on (see `RowLayout`); pooling
        still runs on the Σ tokens gathered from the last rows.
        """
        hidden_states = self.embeddings(patches, freq_ids, time_ids, layout)
        encoder_layout = layout
        if rows is not None:
            hidden_states, encoder_layout = rows.packed.to_rows(hidden_states), rows
        for layer in self.layers:
            hidden_states = layer(hidden_states, encoder_layout, **kwargs)
        hidden_states = encoder_layout.finish(self.layernorm(hidden_states))
        tokens = hidden_states if rows is None else rows.to_tokens(hidden_states)
        return ElasticASTEncoderOutput(
            last_hidden_state=hidden_states, pooler_output=self.pooler(tokens, layout, **kwargs)
        )

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor,
        segment_ids: torch.Tensor,
        freq_ids: torch.Tensor,
        time_ids: torch.Tensor,
        clip_ids: torch.Tensor | None = None,
        layout: PackedLayout | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ElasticASTModelOutput:
        r"""
        input_values (`[R, L, P*P]`): flattened 16×16 patches from [`ElasticASTFeatureExtractor`].
        segment_ids (`[R, L]`): 1..n per segment of a row, 0 = padding.
        freq_ids, time_ids (`[R, L]`): patch coordinates (frequency, time).
        clip_ids (`[R, L]`, optional): 1 + input index of each token's clip (packed input); without it, row = clip.
        layout (optional): `model.packed_layout(segment_ids, freq_ids, time_ids, clip_ids)` of these inputs, built
            beforehand. Every check that needs the inputs' values (`.any()`, `.max()`, `.tolist()`) runs there, so
            that the forward itself has no data-dependent Python: `torch.compile(model, fullgraph=True)` compiles it
            for that layout (a new layout recompiles). Without it, the forward builds and checks the layout itself.
        kwargs: `output_hidden_states`, `output_attentions` and the like, passed on to the layers and the attention
            functions as in transformers models. Segment offsets come from `segment_ids`, never from kwargs.

        Without gradients, segments are encoded in slices of at most `config.inference_max_tokens` tokens (whole
        segments; same results). Recording hidden states or attention weights runs the layers on the `[R, L, D]`
        rows with a block-diagonal mask instead (`RowLayout`): the returned tensors are the ones the outputs are
        computed from, so `retain_grad()` works on them. Attention weights need eager attention: with any other
        implementation such a call runs eager attention, with a warning, as transformers models do.
        """
        given_offsets = sorted({"cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k"} & kwargs.keys())
        if given_offsets:
            raise ValueError(
                f"ElasticAST builds varlen offsets from segment_ids; remove {given_offsets} and mark segments with "
                "segment_ids (and clip_ids for packed rows)."
            )
        if layout is None:
            layout = self.packed_layout(segment_ids, freq_ids, time_ids, clip_ids)
        tokens = layout.token_index
        patches = input_values.reshape(-1, input_values.shape[-1])[tokens]
        freq_ids, time_ids = freq_ids.reshape(-1)[tokens], time_ids.reshape(-1)[tokens]
        wanted = {k: kwargs.get(f"output_{k}", getattr(self.config, f"output_{k}")) for k in ("hidden_states",
                                                                                           "attentions")}
        if any(wanted.values()):  # recorded outputs are rows on the autograd path: run the layers on the rows
            encoded = self.encode(patches, freq_ids, time_ids, layout, RowLayout(layout, segment_ids,
                                                                                 bool(wanted["attentions"])),
                                  **kwargs, return_dict=True)
            last_hidden_state = encoded.last_hidden_state
        else:
            budget = None if torch.is_grad_enabled() else self.config.inference_max_tokens
            parts = [
                self.encode(patches[span], freq_ids[span], time_ids[span], part, **kwargs, return_dict=True)
                for span, part in layout.slices(budget)
            ]
            encoded = parts[0]
            if len(parts) > 1:
                encoded = ElasticASTEncoderOutput(
                    last_hidden_state=torch.cat([p.last_hidden_state for p in parts]),
                    pooler_output=torch.cat([p.pooler_output for p in parts]),
                )
            last_hidden_state = layout.to_rows(encoded.last_hidden_state)
        segment_pooled = encoded.pooler_output
        return ElasticASTModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=aggregate_segments(segment_pooled, layout.segment_clip, layout.num_clips, "mean"),
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            segment_pooler_output=segment_pooled,
            segment_clip_ids=layout.segment_clip,
        )

    def window_pooled(self, input_values: torch.Tensor, freq_ids: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
        r"""Pooled vectors of B whole windows of the same L tokens: `input_values [B, L, P*P]`, `freq_ids`/`time_ids
        [L]` (shared by every window) → `[B, D]`.

        The same modules and weights as `forward`, over a `WindowLayout`: no padding, no data-dependent Python, so
        `torch.export` / `torch.onnx.export(dynamo=True)` trace it with dynamic B and L. Each row equals `forward`'s
        `segment_pooler_output` for that window. Coordinates are not range-checked here (that needs their values).
        """
        return self.encode(input_values, freq_ids, time_ids, WindowLayout(), return_dict=True).pooler_output


class ElasticASTClassificationHead(nn.Module):
    def __init__(self, config: ElasticASTConfig):
        super().__init__()
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dense = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.dense(self.layernorm(pooled))


class ElasticASTForAudioClassification(ElasticASTPreTrainedModel):
    """ElasticAST with a LayerNorm + linear head on the pooled segment vectors; windows of one clip are combined
    by `config.window_aggregation` over their logits."""

    def __init__(self, config: ElasticASTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.elasticast = ElasticASTModel(config)
        self.classifier = ElasticASTClassificationHead(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor,
        segment_ids: torch.Tensor,
        freq_ids: torch.Tensor,
        time_ids: torch.Tensor,
        clip_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        layout: PackedLayout | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutput:
        r"""
        Inputs (and `layout`) as [`ElasticASTModel.forward`]. `labels`: `[N]` class indices (single-label), `[N, C]`
        multi-hot floats (multi-label) or `[N]` floats (regression), in input (clip) order. kwargs go to the model
        and the loss (e.g. `output_hidden_states`, `num_items_in_batch`).
        """
        outputs = self.elasticast(input_values, segment_ids, freq_ids, time_ids, clip_ids=clip_ids, layout=layout,
                                  **kwargs)
        segment_logits = self.classifier(outputs.segment_pooler_output)
        logits = aggregate_segments(
            segment_logits,
            outputs.segment_clip_ids,
            outputs.pooler_output.shape[0],
            self.config.resolved_window_aggregation,
        )
        loss = self.loss_function(labels, logits, self.config, **kwargs) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def window_logits(self, input_values: torch.Tensor, freq_ids: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
        r"""Logits of B whole windows of the same L tokens: `input_values [B, L, P*P]`, `freq_ids`/`time_ids [L]` →
        `[B, num_labels]`, one row per window (not aggregated). As [`ElasticASTModel.window_pooled`]: exportable with
        dynamic B and L, equal to the per-window logits of `forward`."""
        return self.classifier(self.elasticast.window_pooled(input_values, freq_ids, time_ids))


__all__ = [
    "VARLEN_IMPLEMENTATIONS",
    "ElasticASTForAudioClassification",
    "ElasticASTModel",
    "ElasticASTPreTrainedModel",
    "PackedLayout",
    "RowLayout",
    "WindowLayout",
]
