"""ElasticAST for 🤗 Transformers: one Audio Spectrogram Transformer for every audio length and resolution.

Importing the package registers the model with the Auto classes (in-process) and marks every class for
`save_pretrained` to ship its code, so saved folders load with `trust_remote_code=True` where this package is absent.
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
)

from .configuration_elasticast import ElasticASTConfig
from .data_collator import ElasticASTDataCollator
from .feature_extraction_elasticast import ElasticASTFeatureExtractor, pack_segments
from .modeling_elasticast import (
    ElasticASTForAudioClassification,
    ElasticASTModel,
    ElasticASTPreTrainedModel,
    PackedLayout,
)

__version__ = "0.1.0"

AutoConfig.register(ElasticASTConfig.model_type, ElasticASTConfig, exist_ok=True)
AutoModel.register(ElasticASTConfig, ElasticASTModel, exist_ok=True)
AutoModelForAudioClassification.register(ElasticASTConfig, ElasticASTForAudioClassification, exist_ok=True)
AutoFeatureExtractor.register(ElasticASTConfig, ElasticASTFeatureExtractor, exist_ok=True)

ElasticASTConfig.register_for_auto_class()
ElasticASTModel.register_for_auto_class("AutoModel")
ElasticASTForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")
ElasticASTFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = [
    "ElasticASTConfig",
    "ElasticASTDataCollator",
    "ElasticASTFeatureExtractor",
    "ElasticASTForAudioClassification",
    "ElasticASTModel",
    "ElasticASTPreTrainedModel",
    "PackedLayout",
    "pack_segments",
]
