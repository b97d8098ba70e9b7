"""transformers' `ASTForAudioClassification` as the paper's fixed-length baseline, in one place: its patch grid, its
fixed-length input computed with our Kaldi fbank, its position table adapted to another input length, and the
feature extractors that go with an ElasticAST or AST checkpoint.

Training (`elasticast.training`), `elasticast evaluate` and the benchmarks all feed AST through these functions.
"""

import copy

import torch
from transformers import ASTFeatureExtractor, ASTForAudioClassification

from .feature_extraction_elasticast import ElasticASTFeatureExtractor
from .modeling_elasticast import ElasticASTForAudioClassification


def ast_grid(model) -> tuple[int, int]:
    """(frequency, time) patch grid of an `ASTModel` / `ASTForAudioClassification`: transformers' own
    `ASTEmbeddings.get_shape` for the model's config (strides and input length)."""
    embeddings = getattr(model, "audio_spectrogram_transformer", model).embeddings
    return embeddings.get_shape(model.config)


def ast_input(
    fe: ElasticASTFeatureExtractor,
    waves: list[torch.Tensor],
    frames: int,
    compression: float = 1.0,
    compression_method: str = "frame_shift",
    available: int | None = None,
) -> torch.Tensor:
    """AST's fixed-length input `[B, frames, num_mel_bins]`: each clip's Kaldi log-mel (our fbank at compression C),
    its first `available` frames (all when None), cut or padded with log-mel 0 to `frames`, then normalised with
    `fe.normalize` — what `ASTFeatureExtractor` does, on the same fbank ElasticAST gets."""
    shift_compression = compression if compression_method == "frame_shift" else 1.0
    log_mels = fe.fbank(waves, [shift_compression] * len(waves))
    out = torch.zeros((len(waves), frames, fe.num_mel_bins))
    for i, log_mel in enumerate(log_mels):
        if compression_method == "avg_pool":
            log_mel = fe.average_pool(log_mel, int(compression))
        n = min(frames, log_mel.shape[0], available or frames)
        out[i, :n] = log_mel[:n]
    return fe.normalize(out)


def resize_ast_positions(model: ASTForAudioClassification, frames: int) -> ASTForAudioClassification:
    """A copy of a fixed-length AST for `frames`-frame input: its (frequency × time) position grid centre-cropped
    (fewer time patches) or bilinearly interpolated (more), as the original AST code adapts to a new length."""
    config = copy.deepcopy(model.config)
    config.max_length = frames
    resized = ASTForAudioClassification(config).eval()
    state = model.state_dict()
    key = "audio_spectrogram_transformer.embeddings.position_embeddings"
    table = state[key]  # [1, 2 + f*t, D]: cls, distillation, then the grid frequency-major
    f_old, t_old = ast_grid(model)
    f_new, t_new = ast_grid(resized)
    grid = table[:, 2:].reshape(1, f_old, t_old, -1).permute(0, 3, 1, 2)  # [1, D, f, t]
    if t_new <= t_old:
        start = t_old // 2 - t_new // 2
        grid = grid[:, :, :, start : start + t_new]
    else:
        grid = torch.nn.functional.interpolate(grid, size=(f_old, t_new), mode="bilinear")
    if f_new != f_old:
        raise ValueError(f"Frequency grid changed from {f_old} to {f_new}; only the time axis can be resized.")
    state[key] = torch.cat([table[:, :2], grid.permute(0, 2, 3, 1).reshape(1, f_new * t_new, -1)], dim=1)
    resized.load_state_dict(state)
    return resized


def feature_extractor_from_pretrained(path, model) -> ElasticASTFeatureExtractor:
    """The ElasticAST feature extractor that feeds `model` (loaded from `path`): its own for ElasticAST; for AST, ours
    with the statistics of the saved `ASTFeatureExtractor` (AST trains and evaluates on our Kaldi fbank)."""
    if isinstance(model, ElasticASTForAudioClassification):
        return ElasticASTFeatureExtractor.from_pretrained(path)
    ast_fe = ASTFeatureExtractor.from_pretrained(path)
    if model.config.frequency_stride != model.config.patch_size or model.config.time_stride != model.config.patch_size:
        raise ValueError(
            "The AST baseline trains 16×16 patches at stride 16 (the paper's AST); this checkpoint uses strides "
            f"{model.config.frequency_stride}/{model.config.time_stride}."
        )
    return ElasticASTFeatureExtractor(
        sampling_rate=ast_fe.sampling_rate, num_mel_bins=ast_fe.num_mel_bins, mean=ast_fe.mean, std=ast_fe.std,
        do_normalize=ast_fe.do_normalize,
    )


def export_feature_extractor(model, fe: ElasticASTFeatureExtractor, fixed_frames: int):
    """The feature extractor saved beside the model: ours for ElasticAST, `ASTFeatureExtractor` for the baseline
    (`fixed_frames` long, our statistics), so that the stock AST pipeline loads it."""
    if isinstance(model, ASTForAudioClassification):
        return ASTFeatureExtractor(
            sampling_rate=fe.sampling_rate, num_mel_bins=fe.num_mel_bins, max_length=fixed_frames, mean=fe.mean,
            std=fe.std, do_normalize=fe.do_normalize,
        )
    return fe


__all__ = ["ast_grid", "ast_input", "export_feature_extractor", "feature_extractor_from_pretrained",
           "resize_ast_positions"]
