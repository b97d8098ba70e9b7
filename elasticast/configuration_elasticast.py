"""ElasticAST configuration: a pre-LN ViT-style encoder over 16×16 spectrogram patches with factorised
(frequency, time) position tables and a masked attention-pooling head."""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


# How logits become scores, by `problem_type` — the one home of this fact. The names are those of the stock
# audio-classification pipeline's `function_to_apply` (transformers 5.25 picks them from `problem_type` the same way),
# and the ONNX export writes them into its manifest for the torch-free runtime.
SCORE_FUNCTIONS = {
    "single_label_classification": "softmax",
    "multi_label_classification": "sigmoid",
    "regression": "none",
}


def score_function(problem_type: str | None) -> str:
    """The function that turns a model's logits into the scores users see.

    Args:
        problem_type: A config's `problem_type`; `None` (a config that never set it) counts as single-label, as in
            the audio-classification pipeline.

    Returns:
        `"softmax"` (single-label), `"sigmoid"` (multi-label) or `"none"` (regression: the raw outputs).
    """
    if problem_type is None:
        return "softmax"
    if problem_type not in SCORE_FUNCTIONS:
        raise ValueError(f"Unknown problem_type {problem_type!r}: use one of {sorted(SCORE_FUNCTIONS)}.")
    return SCORE_FUNCTIONS[problem_type]


def apply_score_function(logits, function: str):
    """Scores from `logits` `[..., num_labels]` (a torch tensor) with a function named by `score_function`."""
    if function == "softmax":
        return logits.softmax(-1)
    if function == "sigmoid":
        return logits.sigmoid()
    if function == "none":
        return logits
    raise ValueError(f"Unknown score function {function!r}: use softmax, sigmoid or none.")


@strict
class ElasticASTConfig(PreTrainedConfig):
    r"""
    Configuration of an [`ElasticASTModel`] / [`ElasticASTForAudioClassification`].

    Defaults describe ElasticAST-base as released with the paper (ViT-B/16 encoder, 128 mel bins, a time table of 192
    patches = 3072 frames = 30.7 s at a 10 ms frame shift), except `attention_scale`.

    Args:
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, hidden_act:
            Encoder shape, as in ViT/AST.
        hidden_dropout_prob, attention_probs_dropout_prob: Dropout rates (0 in the paper).
        initializer_range: Std of the normal initialiser for linear layers, position tables and the pooling query.
        layer_norm_eps: LayerNorm epsilon (1e-6 as timm ViT and the official ElasticAST; HF AST uses 1e-12).
        patch_size: Side of the square, non-overlapping spectrogram patches.
        num_mel_bins: Mel bins of the input; the frequency table has `num_mel_bins // patch_size` rows.
        max_time_patches: Rows of the learned time-position table (192 = 3072 frames).
        time_position_policy: What a segment longer than the time table gets: `"interpolate"` resamples the table
            linearly to the segment's length (as AST does for another input length); `"clamp"` reuses the last row.
            The feature extractor splits long audio into windows that fit the table, so this only matters for
            hand-made inputs.
        qkv_bias: Bias in the query/key/value projections.
        attention_scale: Multiplier of q·kᵀ. `None` means 1/√head_dim; the official checkpoints were trained
            with unscaled attention and need `1.0`.
        window_aggregation: How the logits of several windows (segments) of one clip are combined: `"mean"`,
            `"max"`, or `"auto"` (max for multi-label, mean otherwise).
        inference_max_tokens: Without gradients, the model encodes the segments (windows) of its input in slices of
            at most this many tokens (whole segments; the same results), so memory for a long clip is bounded by the
            slice. `None` encodes everything at once.
        class_thresholds: Multi-label models: the decision threshold of each class, `{label: threshold}`, written by
            `elasticast calibrate` (classes missing from it use 0.5). `None`: 0.5 for every class. The classifier,
            `elasticast classify`, the web app and the ONNX runtime apply them unless a threshold is passed.
        min_confidence: Single-label models: windows whose top softmax score is below it are labelled "unknown" in
            timelines and events (written by `elasticast calibrate`). `None`: every window keeps its top label.
    """

    model_type = "elasticast"

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-6
    patch_size: int = 16
    num_mel_bins: int = 128
    max_time_patches: int = 192
    time_position_policy: Literal["interpolate", "clamp"] = "interpolate"
    qkv_bias: bool = True
    attention_scale: float | None = None
    window_aggregation: Literal["auto", "mean", "max"] = "auto"
    inference_max_tokens: int | None = 16384
    class_thresholds: dict[str, float] | None = None
    min_confidence: float | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.problem_type is None:
            # Set explicitly: transformers' loss otherwise guesses it from the label dtype on first use and the
            # audio-classification pipeline picks softmax vs sigmoid from it.
            self.problem_type = "regression" if self.num_labels == 1 else "single_label_classification"

    def validate_architecture(self):
        super().validate_architecture()
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})."
            )
        if self.num_mel_bins % self.patch_size:
            raise ValueError(f"num_mel_bins ({self.num_mel_bins}) must be a multiple of patch_size ({self.patch_size}).")

    @property
    def num_freq_patches(self) -> int:
        return self.num_mel_bins // self.patch_size

    @property
    def score_function(self) -> str:
        """How logits become scores for this head (see `score_function`): softmax, sigmoid or none."""
        return score_function(self.problem_type)

    @property
    def resolved_window_aggregation(self) -> str:
        if self.window_aggregation != "auto":
            return self.window_aggregation
        return "max" if self.problem_type == "multi_label_classification" else "mean"


__all__ = ["ElasticASTConfig", "apply_score_function", "score_function"]
