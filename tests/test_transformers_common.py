"""transformers' own common tests (ModelTesterMixin, ConfigTester, SequenceFeatureExtractionTestMixin) run against
ElasticAST, one clip per row and packed rows.

The test modules come from the PyPI sdist of the installed transformers version, fetched and extracted by
`scripts/transformers_tests.py` into ~/.cache/elasticast/transformers-tests/<version>/ (outside the repository; no
test code is copied into the project). Without network to PyPI (and no cached copy) every test here is skipped with
that reason.

Stubs (modules the sdist lacks, `scripts/transformers_tests.STUBS`, each with its reason there):
- `tests/exporters/test_export.py: ExportTesterMixin` -- an empty base class of ModelTesterMixin; its RUN_SLOW export
  tests are absent (not passed). `test_packed_forward_compiles_fullgraph_and_exports` below covers export.
- `tests/generation/test_utils.py: GenerationTesterMixin` -- used only in `issubclass` checks; ElasticAST cannot
  generate.
- `tests/utils/test_configuration_utils.py: config_common_kwargs` -- non-default values of PreTrainedConfig's common
  arguments for `ConfigTester.check_config_arguments_init`.

Set-up a model inside the library gets from transformers' own files:
- `MODEL_MAPPING_NAMES` / `MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES` gain "elasticast" for these tests (restored
  after): the mixin finds base models and heads by these name tables (models/auto/modeling_auto.py), where a model
  contributed to transformers is listed; ElasticAST registers with the Auto classes at run time instead.

Hooks and overrides (each with its reason):
- `_prepare_for_class` (a hook, not a test): labels are per clip (`[N]`, N = clips), not per row.
- `test_model_get_set_embeddings`: no token vocabulary; the input embedding is the patch projection (`nn.Linear`),
  so the check is the one transformers' AST test makes (any `nn.Module`), not `nn.Embedding`.
- Packed rows only, `test_batching_equivalence`: the mixin cuts the batch to its first row, but a packed row holds
  parts of several clips whose other windows lie in other rows; cutting rows apart changes what each clip's output
  is. Replaced by the same check one level up: each clip alone equals the clip inside the packed batch.
"""

import os
import sys
import unittest

import numpy as np
import pytest
import torch

from elasticast import (
    ElasticASTConfig,
    ElasticASTFeatureExtractor,
    ElasticASTForAudioClassification,
    ElasticASTModel,
)
from scripts.transformers_tests import FetchError, common_tests_path


try:
    sys.path.insert(0, str(common_tests_path()))
except FetchError as error:
    pytest.skip(f"transformers' common tests unavailable: {error}", allow_module_level=True)

from transformers.models.auto import modeling_auto  # noqa: E402

from hf_common_tests.test_configuration_common import ConfigTester  # noqa: E402
from hf_common_tests.test_modeling_common import ModelTesterMixin  # noqa: E402
from hf_common_tests.test_sequence_feature_extraction_common import SequenceFeatureExtractionTestMixin  # noqa: E402


TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, max_time_patches=8,
            num_labels=3, attention_probs_dropout_prob=0.1, hidden_dropout_prob=0.1)


def _waves(durations: list[float], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in durations]


class ElasticASTModelTester:
    """Builds a tiny config and real extractor inputs: `packed=False` one clip per row (7 clips), `packed=True` 14
    clips packed into rows of ≤ 40 tokens (≥ 7 rows, so that tests needing a batch of 7 rows slice, never pad)."""

    def __init__(self, parent, packed: bool):
        self.parent = parent
        self.packed = packed
        self.is_training = True
        self.hidden_size = TINY["hidden_size"]
        self.num_hidden_layers = TINY["num_hidden_layers"]
        self.num_attention_heads = TINY["num_attention_heads"]
        fe = ElasticASTFeatureExtractor(max_time_patches=TINY["max_time_patches"])
        if packed:  # 1 to 4 time patches (8 to 32 tokens) each; windows of longer clips split across rows
            durations = [0.17, 0.35, 0.5, 0.66, 0.2, 0.45, 0.6, 0.3, 0.66, 0.17, 0.52, 0.4, 0.25, 0.64]
            self.features = fe(_waves(durations, 0), sampling_rate=16000, packing=True, max_tokens_per_row=40,
                               return_tensors="pt")
        else:
            durations = [0.17, 0.35, 0.5, 0.66, 0.2, 0.45, 0.3]
            self.features = fe(_waves(durations, 1), sampling_rate=16000, return_tensors="pt")
        self.num_clips = len(durations)
        self.batch_size, self.seq_length = self.features["segment_ids"].shape
        assert self.batch_size >= 7, "the eager/sdpa tests take 7 rows"

    def get_config(self):
        return ElasticASTConfig(**TINY)

    def prepare_config_and_inputs_for_common(self):
        return self.get_config(), {k: v.clone() for k, v in self.features.items()}


class _ElasticASTCommonTests(ModelTesterMixin):
    all_model_classes = (ElasticASTModel, ElasticASTForAudioClassification)
    additional_model_inputs = ["segment_ids", "freq_ids", "time_ids", "clip_ids"]
    test_resize_embeddings = False  # no token vocabulary
    # test_can_init_all_missing_weights dates models by a "# Copyright YYYY" header, which our files lack (read as
    # "before 2023", skipped); ElasticAST's `_init_weights` covers every weight, so the test runs.
    test_can_init_all_missing_weights_before_2023 = True
    packed = False

    _NAME_TABLES = {"MODEL_MAPPING_NAMES": "ElasticASTModel",
                    "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES": "ElasticASTForAudioClassification"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for table, name in cls._NAME_TABLES.items():
            getattr(modeling_auto, table)[ElasticASTConfig.model_type] = name

    @classmethod
    def tearDownClass(cls):
        for table in cls._NAME_TABLES:
            getattr(modeling_auto, table).pop(ElasticASTConfig.model_type, None)
        super().tearDownClass()

    def setUp(self):
        self.model_tester = ElasticASTModelTester(self, packed=self.packed)
        config_kwargs = {k: v for k, v in TINY.items() if k != "num_labels"}  # serialised as id2label, not itself
        self.config_tester = ConfigTester(self, config_class=ElasticASTConfig, has_text_modality=False,
                                          **config_kwargs)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if return_labels and model_class is ElasticASTForAudioClassification:
            inputs_dict["labels"] = torch.zeros(self.model_tester.num_clips, dtype=torch.long)
        return inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model_get_set_embeddings(self):
        # Override (audio input, as transformers' AST test): the input embedding is a patch projection, not a table.
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), torch.nn.Module)
            output = model.get_output_embeddings()
            self.assertTrue(output is None or isinstance(output, torch.nn.Linear))


class ElasticASTRowsCommonTest(_ElasticASTCommonTests, unittest.TestCase):
    """One clip per row (what the stock pipeline feeds)."""


class ElasticASTPackedCommonTest(_ElasticASTCommonTests, unittest.TestCase):
    """Packed rows with `clip_ids`."""

    packed = True

    def test_batching_equivalence(self):
        # Override (packing): slicing packed rows cuts clips apart; compare each clip alone with the packed batch.
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        fe = ElasticASTFeatureExtractor(max_time_patches=TINY["max_time_patches"])
        durations = [0.17, 0.35, 0.5, 0.66, 0.2, 0.45, 0.6, 0.3, 0.66, 0.17, 0.52, 0.4, 0.25, 0.64]
        for model_class in self.all_model_classes:
            model = model_class(config).eval()
            with torch.no_grad():
                batched = model(**inputs)
                alone = [model(**fe(w, sampling_rate=16000, return_tensors="pt")) for w in _waves(durations, 0)]
            key = "logits" if model_class is ElasticASTForAudioClassification else "pooler_output"
            torch.testing.assert_close(batched[key], torch.cat([a[key] for a in alone]), atol=1e-5, rtol=1e-5)


class FeatExtractTester:
    """As transformers' AST feature-extraction tester: raw float lists of increasing length, feature_size P*P."""

    def __init__(self, batch_size=7, min_seq_length=400, max_seq_length=2000):
        self.batch_size = batch_size
        self.min_seq_length = min_seq_length
        self.max_seq_length = max_seq_length
        self.seq_length_diff = (max_seq_length - min_seq_length) // (batch_size - 1)
        self.feature_size = 256

    def prepare_feat_extract_dict(self):
        return {"sampling_rate": 16000, "num_mel_bins": 128, "patch_size": 16, "padding_value": 0.0,
                "do_normalize": True, "max_time_patches": 192}

    def prepare_inputs_for_common(self, equal_length=False, numpify=False):
        rng = np.random.default_rng(0)
        lengths = ([self.max_seq_length] * self.batch_size if equal_length else
                   range(self.min_seq_length, self.max_seq_length, self.seq_length_diff))
        inputs = [rng.random((n, self.feature_size)).astype(np.float32) for n in lengths]
        return inputs if numpify else [x.tolist() for x in inputs]


class ElasticASTFeatureExtractionTest(SequenceFeatureExtractionTestMixin, unittest.TestCase):
    feature_extraction_class = ElasticASTFeatureExtractor

    def setUp(self):
        self.feat_extract_tester = FeatExtractTester()


# ------------------------------------------------------------------------------------------------ compile / export
def _packed_inputs():
    tester = ElasticASTModelTester(None, packed=True)
    return tester.get_config(), tester.features


def test_packed_forward_compiles_fullgraph_and_exports():
    config, features = _packed_inputs()
    model = ElasticASTForAudioClassification(config).eval()
    layout = model.packed_layout(features["segment_ids"], features["freq_ids"], features["time_ids"],
                                 features["clip_ids"])
    with torch.no_grad():
        eager = model(**features).logits
        compiled = torch.compile(model, fullgraph=True, backend="eager")(**features, layout=layout).logits
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)

    class Packed(torch.nn.Module):  # the layout (data-dependent sizes) built beforehand, as `packed_layout` says
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_values, segment_ids, freq_ids, time_ids, clip_ids):
            return self.model(input_values, segment_ids, freq_ids, time_ids, clip_ids, layout=layout).logits

    args = tuple(features[k] for k in ("input_values", "segment_ids", "freq_ids", "time_ids", "clip_ids"))
    exported = torch.export.export(Packed(), args)
    torch.testing.assert_close(exported.module()(*args), eager, atol=1e-5, rtol=1e-5)


def test_packed_forward_without_a_layout_still_checks_its_inputs():
    config, features = _packed_inputs()
    model = ElasticASTModel(config)
    bad = dict(features, freq_ids=features["freq_ids"] + 100)
    with pytest.raises(ValueError, match="freq_ids"):
        model.packed_layout(bad["segment_ids"], bad["freq_ids"], bad["time_ids"], bad["clip_ids"])
    with pytest.raises(ValueError, match="freq_ids"):
        model(**bad)


def test_window_forward_exports_with_dynamic_window_and_token_counts():
    # The packed forward's export specialises on its layout (segment lengths decide the attention grouping); whole
    # windows of one length (`window_logits`, what the ONNX export uses) export with dynamic B and L.
    config, _ = _packed_inputs()
    model = ElasticASTForAudioClassification(config).eval()

    class Windows(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_values, freq_ids, time_ids):
            return self.model.window_logits(input_values, freq_ids, time_ids)

    def example(windows, time_patches):
        freq = torch.arange(8).repeat_interleave(time_patches)
        return torch.randn(windows, 8 * time_patches, 256), freq, torch.arange(time_patches).repeat(8)

    batch, tokens = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("tokens", min=2, max=4096)
    exported = torch.export.export(Windows(), example(3, 4),
                                   dynamic_shapes=({0: batch, 1: tokens}, {0: tokens}, {0: tokens}))
    for windows, time_patches in ((1, 2), (5, 7)):
        args = example(windows, time_patches)
        with torch.no_grad():
            torch.testing.assert_close(exported.module()(*args), model.window_logits(*args), atol=1e-5, rtol=1e-5)
