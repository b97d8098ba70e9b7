"""ElasticAST: an Audio Spectrogram Transformer for any length and temporal resolution (Feng et al., Interspeech 2024).

Data path: packed rows from `ElasticASTFeatureExtractor` (`input_values [R, L, P*P]`, `segment_ids`, `freq_ids`,
`time_ids`, optional `clip_ids`, all `[R, L]`; see its module docstring) → the Σ real tokens, padding dropped
(`PackedLayout`) → patch embedding + factorised frequency/time positions → pre-LN encoder whose attention is confined
to each segment → final LayerNorm → masked attention pooling (one learned query per segment, no residual) → segment
vectors combined per clip → LayerNorm + linear head. Nothing is computed for padding tokens.

Attention backends, all through transformers' `ALL_ATTENTION_FUNCTIONS`:
- eager, sdpa (and any other registered function): one call per group of equal-length segments, no mask needed;
  this is the fast exact path on CPU (a boolean block-diagonal mask costs more than dense attention there).
- flex_attention: one call over all tokens with a document `BlockMask` from `masking_utils`.
- flash_attention_*: one varlen call with `cu_seq_lens_q/k`; flash kernels ignore masks, so none is passed.
"""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.generic import can_return_tuple

from .configuration_elasticast import ElasticASTConfig


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


def aggregate_segments(values: torch.Tensor, segment_clip: torch.Tensor, num_clips: int, how: str) -> torch.Tensor:
    """Combines per-segment rows `[S, ...]` into per-clip rows `[num_clips, ...]` by `how` ("mean" or "max")."""
    index = segment_clip.view(-1, *([1] * (values.dim() - 1))).expand_as(values)
    out = values.new_zeros((num_clips, *values.shape[1:]))
    return out.scatter_reduce(0, index, values, reduce="amax" if how == "max" else "mean", include_self=False)


class PackedLayout:
    """Where the real tokens of `[R, L]` rows are and how they group into segments and clips.

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
        self.shape = tuple(segment_ids.shape)
        rows, length = self.shape
        flat_segments = segment_ids.reshape(-1)
        self.token_index = torch.nonzero(flat_segments > 0).squeeze(1)
        row_of_token = torch.div(self.token_index, length, rounding_mode="floor")
        key = row_of_token * (length + 1) + flat_segments[self.token_index]
        unique_keys, counts = torch.unique_consecutive(key, return_counts=True)
        if torch.unique(unique_keys).numel() != unique_keys.numel():
            raise ValueError("Each segment's tokens must be contiguous within its row; got a segment id split apart.")
        self.segment_lengths = counts.tolist()
        self.segment_start = torch.cumsum(counts, 0) - counts
        self.token_segment = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        first_token = self.token_index[self.segment_start]
        if clip_ids is None:
            self.segment_clip = torch.div(first_token, length, rounding_mode="floor")
            self.num_clips = rows
        else:
            token_clip = clip_ids.reshape(-1)[self.token_index] - 1
            self.segment_clip = token_clip[self.segment_start]
            if bool((token_clip < 0).any()) or not torch.equal(token_clip, self.segment_clip[self.token_segment]):
                raise ValueError("clip_ids must be ≥ 1 on every real token and constant within each segment.")
            self.num_clips = int(clip_ids.max()) if clip_ids.numel() else 0
        self._flex_masks = {}

    @property
    def num_segments(self) -> int:
        return len(self.segment_lengths)

    @cached_property
    def length_groups(self) -> list[list[int]]:
        """Segment numbers grouped by segment length (one list per distinct length)."""
        by_length = defaultdict(list)
        for segment, n in enumerate(self.segment_lengths):
            by_length[n].append(segment)
        return list(by_length.values())

    def varlen_kwargs(self, pooling: bool) -> dict:
        """Flash-attention varlen offsets over the Σ tokens; with `pooling`, one query per segment."""
        device = self.segment_start.device
        lengths = torch.tensor(self.segment_lengths, device=device, dtype=torch.int32)
        keys = nn.functional.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
        queries = torch.arange(self.num_segments + 1, device=device, dtype=torch.int32) if pooling else keys
        longest = max(self.segment_lengths, default=0)
        return {"cu_seq_lens_q": queries, "cu_seq_lens_k": keys, "max_length_q": 1 if pooling else longest,
                "max_length_k": longest}

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

    def to_rows(self, tokens: torch.Tensor) -> torch.Tensor:
        """`[Σ, ...]` → `[R, L, ...]` with zeros at padding positions."""
        out = tokens.new_zeros((self.shape[0] * self.shape[1], *tokens.shape[1:]))
        return out.index_copy(0, self.token_index, tokens).view(*self.shape, *tokens.shape[1:])

    def attention_weights_to_rows(self, groups_weights: list[torch.Tensor]) -> torch.Tensor:
        """Per-group self-attention weights `[n, H, l, l]` → dense row weights `[R, H, L, L]` (0 across segments)."""
        if not groups_weights:
            return None
        rows, length = self.shape
        dense = groups_weights[0].new_zeros((rows, length, length, groups_weights[0].shape[1]))
        for segments, weights in zip(self.length_groups, groups_weights):
            starts = self.segment_start[segments]
            position = self.token_index[starts[:, None] + torch.arange(weights.shape[-1], device=starts.device)]
            row = torch.div(position, length, rounding_mode="floor")
            column = position % length
            dense[row[:, :, None], column[:, :, None], column[:, None, :]] = weights.permute(0, 2, 3, 1)
        return dense.permute(0, 3, 1, 2)


class ElasticASTEmbeddings(nn.Module):
    """Patch projection plus factorised learned frequency and time position embeddings."""

    def __init__(self, config: ElasticASTConfig):
        super().__init__()
        self.config = config
        self.patch_embeddings = nn.Linear(config.patch_size**2, config.hidden_size)
        self.freq_position_embeddings = nn.Parameter(torch.zeros(config.num_freq_patches, config.hidden_size))
        self.time_position_embeddings = nn.Parameter(torch.zeros(config.max_time_patches, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def time_positions(self, time_ids: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        """Time embeddings `[Σ, D]`; segments longer than the table follow `config.time_position_policy`."""
        table = self.time_position_embeddings
        size = table.shape[0]
        if self.config.time_position_policy == "clamp":
            return table[time_ids.clamp(max=size - 1)]
        # "interpolate": a segment of T > size time patches reads the table at t·(size-1)/(T-1), linearly
        # interpolated; shorter segments get scale 1 and therefore exactly table[t].
        segment_time = time_ids.new_zeros(layout.num_segments).scatter_reduce(
            0, layout.token_segment, time_ids, reduce="amax", include_self=False
        )
        token_time = (segment_time + 1)[layout.token_segment].to(table.dtype)
        scale = torch.where(token_time > size, (size - 1) / (token_time - 1).clamp(min=1), torch.ones_like(token_time))
        position = time_ids.to(table.dtype) * scale
        low = position.floor().long().clamp(max=size - 1)
        high = (low + 1).clamp(max=size - 1)
        fraction = (position - low.to(table.dtype)).unsqueeze(-1)
        return table[low] * (1 - fraction) + table[high] * fraction

    def forward(self, patches, freq_ids, time_ids, layout: PackedLayout) -> torch.Tensor:
        """`patches [Σ, P*P]`, `freq_ids`/`time_ids [Σ]` → `[Σ, D]`."""
        if freq_ids.numel() and (int(freq_ids.max()) >= self.config.num_freq_patches or int(freq_ids.min()) < 0):
            raise ValueError(
                f"freq_ids must lie in [0, {self.config.num_freq_patches}) for num_mel_bins="
                f"{self.config.num_mel_bins}; extract features with a matching ElasticASTFeatureExtractor."
            )
        if time_ids.numel() and int(time_ids.min()) < 0:
            raise ValueError("time_ids must be ≥ 0.")
        embeddings = self.patch_embeddings(patches)
        embeddings = embeddings + self.freq_position_embeddings[freq_ids] + self.time_positions(time_ids, layout)
        return self.dropout(embeddings)


def _batch(parts: tuple[torch.Tensor, ...], segments: list[int]) -> torch.Tensor:
    """The given segments' `[l, H, d]` parts as one `[n, l, H, d]` batch (a view when n = 1, no copy)."""
    return parts[segments[0]][None] if len(segments) == 1 else torch.stack([parts[s] for s in segments])


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

    def forward(
        self, queries: torch.Tensor, tokens: torch.Tensor, layout: PackedLayout, pooling: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """`queries [Σ or S, D]` attend within their segment of `tokens [Σ, D]` → `[Σ or S, D]`, group weights.

        With `pooling`, query s belongs to segment s; otherwise query i is token i.
        """
        q = self.q_proj(queries).view(queries.shape[0], self.num_heads, self.head_dim)
        k = self.k_proj(tokens).view(tokens.shape[0], self.num_heads, self.head_dim)
        v = self.v_proj(tokens).view(tokens.shape[0], self.num_heads, self.head_dim)
        implementation = self.config._attn_implementation
        interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        dropout = self.attention_dropout if self.training else 0.0

        if implementation == "flex_attention" or "flash" in implementation:
            # One call over all Σ tokens (batch of 1): a BlockMask for flex, varlen offsets for flash (whose kernels
            # ignore masks).
            if "flash" in implementation:
                mask, extra = None, layout.varlen_kwargs(pooling)
            else:
                mask, extra = layout.flex_mask(self.config, queries, tokens, pooling), {}
            output, _ = interface(
                self, *(x.transpose(0, 1)[None] for x in (q, k, v)), mask, scaling=self.scaling, dropout=dropout,
                **extra,
            )
            output, weights = output[0], None
        else:
            # Split into segments and stack each group of equal-length segments into one batch: cheaper than
            # index gathers, whose backward zero-fills a gradient of all tokens per group.
            q_parts = q.split(1) if pooling else q.split(layout.segment_lengths)  # [1 or l, H, d] each
            k_parts, v_parts = k.split(layout.segment_lengths), v.split(layout.segment_lengths)
            outputs, weights = [None] * layout.num_segments, []
            for segments in layout.length_groups:
                group_out, group_weights = interface(
                    self,
                    _batch(q_parts, segments).transpose(1, 2),  # [n, H, 1 or l, d]
                    _batch(k_parts, segments).transpose(1, 2),  # [n, H, l, d]
                    _batch(v_parts, segments).transpose(1, 2),
                    None,
                    scaling=self.scaling,
                    dropout=dropout,
                )
                for segment, segment_out in zip(segments, group_out.unbind(0)):  # [1 or l, H, d]
                    outputs[segment] = segment_out
                weights.append(group_weights)
            output = torch.cat(outputs) if outputs else q
            if any(w is None for w in weights):
                weights = None
        return self.o_proj(output.reshape(queries.shape[0], -1)), weights


class ElasticASTMLP(nn.Module):
    def __init__(self, config: ElasticASTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class ElasticASTLayer(GradientCheckpointingLayer):
    """Pre-LN transformer block over the Σ real tokens."""

    def __init__(self, config: ElasticASTConfig):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = ElasticASTAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = ElasticASTMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, layout: PackedLayout):
        normed = self.layernorm_before(hidden_states)
        attention_output, weights = self.attention(normed, normed, layout)
        hidden_states = hidden_states + self.dropout(attention_output)
        hidden_states = hidden_states + self.dropout(self.mlp(self.layernorm_after(hidden_states)))
        return hidden_states, weights


class ElasticASTPooler(nn.Module):
    """Masked attention pooling: a learned query attends to each segment's tokens → one vector per segment."""

    def __init__(self, config: ElasticASTConfig):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(config.hidden_size))
        self.attention = ElasticASTAttention(config)

    def forward(self, hidden_states: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        """`[Σ, D]` → `[S, D]`."""
        queries = self.query.expand(layout.num_segments, -1)
        pooled, _ = self.attention(queries, hidden_states, layout, pooling=True)
        return pooled


@dataclass
class ElasticASTModelOutput(BaseModelOutputWithPooling):
    r"""
    last_hidden_state (`[R, L, D]`): final-LayerNorm token states in the input's row layout, zeros at padding.
    pooler_output (`[N, D]`): one pooled vector per clip, in input order (mean over a clip's windows).
    hidden_states (tuple of `[R, L, D]`): embeddings and every layer's output, when requested.
    attentions (tuple of `[R, H, L, L]`): self-attention weights per layer (eager only), 0 across segments.
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

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor,
        segment_ids: torch.Tensor,
        freq_ids: torch.Tensor,
        time_ids: torch.Tensor,
        clip_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> ElasticASTModelOutput:
        r"""
        input_values (`[R, L, P*P]`): flattened 16×16 patches from [`ElasticASTFeatureExtractor`].
        segment_ids (`[R, L]`): 1..n per segment of a row, 0 = padding.
        freq_ids, time_ids (`[R, L]`): patch coordinates (frequency, time).
        clip_ids (`[R, L]`, optional): 1 + input index of each token's clip (packed input); without it, row = clip.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        layout = PackedLayout(segment_ids, clip_ids)
        tokens = layout.token_index
        hidden_states = self.embeddings(
            input_values.reshape(-1, input_values.shape[-1])[tokens],
            freq_ids.reshape(-1)[tokens],
            time_ids.reshape(-1)[tokens],
            layout,
        )
        all_hidden_states = (layout.to_rows(hidden_states),) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, layout)
            if output_hidden_states:
                all_hidden_states += (layout.to_rows(hidden_states),)
            if output_attentions:
                if weights is None:
                    raise ValueError(
                        "output_attentions needs attention weights, which only attn_implementation='eager' returns; "
                        "load the model with attn_implementation='eager'."
                    )
                all_attentions += (layout.attention_weights_to_rows(weights),)
        hidden_states = self.layernorm(hidden_states)
        segment_pooled = self.pooler(hidden_states, layout)
        return ElasticASTModelOutput(
            last_hidden_state=layout.to_rows(hidden_states),
            pooler_output=aggregate_segments(segment_pooled, layout.segment_clip, layout.num_clips, "mean"),
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            segment_pooler_output=segment_pooled,
            segment_clip_ids=layout.segment_clip,
        )


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
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        r"""
        Inputs as [`ElasticASTModel.forward`]. `labels`: `[N]` class indices (single-label), `[N, C]` multi-hot
        floats (multi-label) or `[N]` floats (regression), in input (clip) order. Extra kwargs such as
        `num_items_in_batch` go to the loss.
        """
        outputs = self.elasticast(
            input_values,
            segment_ids,
            freq_ids,
            time_ids,
            clip_ids=clip_ids,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
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


__all__ = ["ElasticASTForAudioClassification", "ElasticASTModel", "ElasticASTPreTrainedModel", "PackedLayout"]
