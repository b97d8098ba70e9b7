"""The model the training loop builds: ElasticAST, or transformers' AST as the paper's fixed-length baseline, fresh
or from `--model-name-or-path`, with the feature extractor that feeds it."""

from transformers import ASTConfig, ASTForAudioClassification, AutoModelForAudioClassification

from ..ast_baseline import feature_extractor_from_pretrained
from ..configuration_elasticast import ElasticASTConfig
from ..data import LabelSpace
from ..feature_extraction_elasticast import ElasticASTFeatureExtractor
from ..modeling_elasticast import ElasticASTForAudioClassification


def build_model(args, labels: LabelSpace):
    """`(model, ElasticAST feature extractor)`: from `--model-name-or-path`, or a fresh model of the given size.

    The feature extractor always computes our Kaldi fbank; for the AST baseline it only supplies the log-mel
    spectrogram, cut or padded to `--fixed-frames` by the collator (as `ASTFeatureExtractor` does).
    """
    label_kwargs = {
        "num_labels": labels.num_labels,
        "id2label": dict(enumerate(labels.names)),
        "label2id": {name: i for i, name in enumerate(labels.names)},
        "problem_type": "multi_label_classification" if labels.multi_label else "single_label_classification",
    }
    attention = {"attn_implementation": args.attn_implementation} if args.attn_implementation else {}
    if args.model_name_or_path:
        model = AutoModelForAudioClassification.from_pretrained(
            args.model_name_or_path, ignore_mismatched_sizes=True, **label_kwargs, **attention
        )
        is_ast = isinstance(model, ASTForAudioClassification)
        if is_ast != (args.model == "ast"):
            raise ValueError(f"{args.model_name_or_path} holds a {type(model).__name__}: pass --model "
                             f"{'ast --mode fixed' if is_ast else 'elasticast'}.")
        if is_ast and model.config.max_length != args.fixed_frames:
            raise ValueError(f"This AST checkpoint takes {model.config.max_length} frames: pass --fixed-frames "
                             f"{model.config.max_length}.")
        return model, feature_extractor_from_pretrained(args.model_name_or_path, model)
    size = {
        "hidden_size": args.hidden_size,
        "num_hidden_layers": args.num_layers,
        "num_attention_heads": args.num_heads,
        "intermediate_size": args.intermediate_size or 4 * args.hidden_size,
    }
    fe = ElasticASTFeatureExtractor()
    if args.model == "ast":
        # The paper's AST: 16×16 patches at stride 16 (a 8 × T/16 grid), as the official egs/*/AST.sh.
        config = ASTConfig(
            **size, **label_kwargs, patch_size=16, frequency_stride=16, time_stride=16,
            max_length=args.fixed_frames, num_mel_bins=fe.num_mel_bins,
        )
        model = ASTForAudioClassification._from_config(config, **attention)
    else:
        config = ElasticASTConfig(**size, **label_kwargs)
        model = ElasticASTForAudioClassification._from_config(config, **attention)
    return model, fe


__all__ = ["build_model"]
