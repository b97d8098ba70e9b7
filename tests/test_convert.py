"""Weight import (elasticast/convert.py): official ElasticAST, transformers AST, ViT/DeiT, timm ViT and SSAST.

Every source is built here from random weights in its exact key layout; nothing is downloaded.
"""

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import (
    ASTConfig,
    ASTForAudioClassification,
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    DeiTConfig,
    DeiTModel,
    ViTConfig,
    ViTModel,
    pipeline,
)

from elasticast import ElasticASTFeatureExtractor, PackedLayout
from elasticast.cli import main as cli_main
from elasticast.convert import (
    convert,
    convert_ast,
    convert_official_state_dict,
    convert_ssast,
    convert_vit,
    read_labels,
)


DIM, DEPTH, HEADS, TIME_TABLE, CLASSES = 32, 2, 4, 16, 5


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Moves every parameter away from its (often trivial: ones, zeros) initialisation."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


def _linear(sd, name, out_features, in_features):
    sd[f"{name}.weight"] = torch.randn(out_features, in_features) * in_features**-0.5
    sd[f"{name}.bias"] = 0.1 * torch.randn(out_features)


def _layer_norm(sd, name):
    sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(DIM)
    sd[f"{name}.bias"] = 0.1 * torch.randn(DIM)


def official_state_dict() -> dict[str, torch.Tensor]:
    """Random weights in the released checkpoints' layout (anchors B11): DataParallel `module.` prefix, `to_q` +
    `to_kv`, `patch_embed.0` Linear(256, D), factorised tables, attention pool, `mlp_norm`, `head`."""
    sd = {
        "patch_embed.0.weight": torch.randn(DIM, 256) / 16,
        "patch_embed.0.bias": 0.1 * torch.randn(DIM),
        "pos_embed_freq": 0.5 * torch.randn(8, DIM),
        "pos_embed_time": 0.5 * torch.randn(TIME_TABLE, DIM),
        "attn_pool_queries": torch.randn(DIM),
    }
    for i in range(DEPTH):
        block = f"blocks.modules_list.{i}"
        _layer_norm(sd, f"{block}.norm1")
        _linear(sd, f"{block}.attn.to_q", DIM, DIM)
        _linear(sd, f"{block}.attn.to_kv", 2 * DIM, DIM)
        _linear(sd, f"{block}.attn.proj", DIM, DIM)
        _layer_norm(sd, f"{block}.norm2")
        _linear(sd, f"{block}.mlp.fc1", 4 * DIM, DIM)
        _linear(sd, f"{block}.mlp.fc2", DIM, 4 * DIM)
    _layer_norm(sd, "norm")
    _linear(sd, "attn_pool.to_q", DIM, DIM)
    _linear(sd, "attn_pool.to_kv", 2 * DIM, DIM)
    _linear(sd, "attn_pool.proj", DIM, DIM)
    _layer_norm(sd, "mlp_norm")
    _linear(sd, "head", CLASSES, DIM)
    return {f"module.{key}": value for key, value in sd.items()}


def official_reference(state_dict, spectrograms, heads, max_seq_len):
    """The official ElasticAST forward in float64, written from its description (anchors B5-B9): clips packed in
    input order into rows of ≤ max_seq_len tokens, sample-id boolean masks over the padded rows, unscaled attention
    filled with -finfo.max, one pooling query per sample without residual, then mlp_norm and head.

    spectrograms: list of `[1, F, T]` (F, T multiples of 16) → logits `[N, C]` in input order.
    """
    sd = {key.removeprefix("module."): value.double() for key, value in state_dict.items()}
    p = 16
    groups, group, length = [], [], 0
    for spectrogram in spectrograms:
        n = (spectrogram.shape[1] // p) * (spectrogram.shape[2] // p)
        if length + n > max_seq_len:
            groups.append(group)
            group, length = [], 0
        group.append(spectrogram.double())
        length += n
    groups.append(group)

    sequences, positions, sample_ids = [], [], []
    for group in groups:
        seq, pos, ids = [], [], []
        for sample_id, spectrogram in enumerate(group):
            h, w = spectrogram.shape[1] // p, spectrogram.shape[2] // p
            # einops 'c (h p1) (w p2) -> (h w) (c p1 p2)'
            seq.append(spectrogram.reshape(1, h, p, w, p).permute(1, 3, 0, 2, 4).reshape(h * w, p * p))
            grid_h, grid_w = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            pos.append(torch.stack([grid_h.flatten(), grid_w.flatten()], dim=-1))
            ids.append(torch.full((h * w,), sample_id))
        sequences.append(torch.cat(seq))
        positions.append(torch.cat(pos))
        sample_ids.append(torch.cat(ids))

    def pad(tensors, value):
        return torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=value)

    lengths = torch.tensor([len(s) for s in sequences])
    x, positions, sample_ids = pad(sequences, 0.0), pad(positions, 0), pad(sample_ids, -1)
    key_padding = lengths[:, None] <= torch.arange(x.shape[1])[None]
    attn_mask = (sample_ids[:, None, :, None] == sample_ids[:, None, None, :]) & ~key_padding[:, None, None, :]

    def linear(t, name):
        return t @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    def layer_norm(t, name):
        return F.layer_norm(t, t.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)

    def attention(queries, context, name, mask):
        q = linear(queries, f"{name}.to_q")
        k, v = linear(context, f"{name}.to_kv").chunk(2, dim=-1)
        q, k, v = (t.reshape(*t.shape[:2], heads, -1).transpose(1, 2) for t in (q, k, v))
        dots = (q @ k.transpose(-1, -2)).masked_fill(~mask, -torch.finfo(q.dtype).max)  # no 1/sqrt(d)
        out = (dots.softmax(dim=-1) @ v).transpose(1, 2).reshape(*queries.shape[:2], -1)
        return linear(out, f"{name}.proj")

    x = linear(x, "patch_embed.0") + sd["pos_embed_freq"][positions[..., 0]] + sd["pos_embed_time"][positions[..., 1]]
    depth = 1 + max(int(key.split(".")[2]) for key in sd if key.startswith("blocks."))
    for i in range(depth):
        block = f"blocks.modules_list.{i}"
        normed = layer_norm(x, f"{block}.norm1")
        x = x + attention(normed, normed, f"{block}.attn", attn_mask)
        x = x + linear(F.gelu(linear(layer_norm(x, f"{block}.norm2"), f"{block}.mlp.fc1")), f"{block}.mlp.fc2")
    x = layer_norm(x, "norm")

    counts = torch.tensor([len(group) for group in groups])
    max_queries = int(counts.max())
    queries = sd["attn_pool_queries"].expand(x.shape[0], max_queries, -1)
    pool_mask = (torch.arange(max_queries)[:, None] == sample_ids[:, None, :]) & ~key_padding[:, None, :]
    pooled = attention(queries, x, "attn_pool", pool_mask[:, None]).reshape(-1, x.shape[-1])  # no residual
    is_sample = (torch.arange(max_queries)[None] < counts[:, None]).flatten()
    return linear(layer_norm(pooled[is_sample], "mlp_norm"), "head")


# ------------------------------------------------------------------------------------------------------- official
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])  # flex: the model tests show it equals sdpa
def test_official_checkpoint_matches_official_forward_on_packed_mixed_lengths(attn_implementation):
    state_dict = official_state_dict()
    model = convert_official_state_dict(state_dict, loss="bce", num_attention_heads=HEADS)
    model.set_attn_implementation(attn_implementation)
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (DIM, DEPTH, 4 * DIM)
    assert (config.num_mel_bins, config.max_time_patches, config.num_labels) == (128, TIME_TABLE, CLASSES)
    assert config.attention_scale == 1.0 and config.layer_norm_eps == 1e-6
    assert config.problem_type == "multi_label_classification"

    fe = ElasticASTFeatureExtractor(max_time_patches=TIME_TABLE)
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(int(s * 16000)).astype(np.float32) * 0.1 for s in (0.5, 1.3, 2.2, 0.9, 1.7)]
    inputs = fe(waves, sampling_rate=16000, packing=True, max_tokens_per_row=128, return_tensors="pt")
    assert inputs["input_values"].shape[0] < len(waves)  # clips really share rows
    with torch.no_grad():
        logits = model(**inputs).logits

    spectrograms = []
    for log_mel in fe.fbank([torch.from_numpy(w) for w in waves], [1.0] * len(waves)):
        normalised = (log_mel - fe.mean) / (2 * fe.std)
        spectrograms.append(normalised[: normalised.shape[0] // 16 * 16].T[None])  # [1, 128, T]
    reference = official_reference(state_dict, spectrograms, HEADS, max_seq_len=128)

    assert logits.shape == (len(waves), CLASSES)
    assert reference.abs().max() > 0.5  # not a degenerate comparison
    torch.testing.assert_close(logits.double(), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "problem_type"),
    [
        ({"dataset": "audioset"}, "multi_label_classification"),
        ({"dataset": "VGGSound"}, "multi_label_classification"),
        ({"dataset": "voxceleb", "loss": "ce"}, "single_label_classification"),
        ({"loss": "ce"}, "single_label_classification"),
    ],
)
def test_official_problem_type_from_loss_or_dataset(kwargs, problem_type):
    model = convert_official_state_dict(official_state_dict(), num_attention_heads=HEADS, **kwargs)
    assert model.config.problem_type == problem_type


def _without(sd, key):
    return {k: v for k, v in sd.items() if k != key}


@pytest.mark.parametrize(
    ("edit", "kwargs", "message"),
    [
        (lambda sd: sd, {}, "pass loss='bce'"),
        (lambda sd: sd, {"dataset": "epic"}, "Epic front-end"),
        (lambda sd: sd, {"dataset": "audioset", "loss": "ce"}, "trained with BCE"),
        (lambda sd: {**sd, "module.extra.weight": torch.zeros(3)}, {"loss": "ce"}, "extra.weight"),
        (lambda sd: _without(sd, "module.blocks.modules_list.1.attn.to_kv.bias"), {"loss": "ce"}, "to_kv.bias"),
        (
            lambda sd: {**sd, "module.blocks.modules_list.0.attn.to_kv.weight": torch.zeros(DIM, DIM)},
            {"loss": "ce"},
            "layers.0.attention.k_proj.weight: expected [32, 32], got [16, 32]",
        ),
        (lambda sd: sd, {"loss": "ce", "labels": ["a", "b"]}, "head has 5 classes"),
        (lambda sd: _without(sd, "module.head.weight"), {"loss": "ce"}, "'head.weight'"),
    ],
)
def test_official_bad_checkpoints_and_options_raise(edit, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        convert_official_state_dict(edit(official_state_dict()), num_attention_heads=HEADS, **kwargs)


def test_official_folder_via_api_and_cli_loads_with_from_pretrained(tmp_path):
    state_dict = official_state_dict()
    path = tmp_path / "voxceleb.pth"
    torch.save(state_dict, path)
    labels = [f"speaker{i}" for i in range(CLASSES)]
    model = convert("official", path, tmp_path / "vox", dataset="voxceleb", num_attention_heads=HEADS, labels=labels)

    loaded = AutoModelForAudioClassification.from_pretrained(tmp_path / "vox")
    fe = AutoFeatureExtractor.from_pretrained(tmp_path / "vox")
    assert isinstance(fe, ElasticASTFeatureExtractor)
    assert (fe.mean, fe.std, fe.max_time_patches) == (-5.842545, 3.88305, TIME_TABLE)
    assert loaded.config.id2label[3] == "speaker3" and loaded.config.problem_type == "single_label_classification"
    inputs = fe([np.random.default_rng(1).standard_normal(20000).astype(np.float32)], sampling_rate=16000,
                return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, atol=1e-6, rtol=0)

    assert cli_main(["convert", "--from", "official", str(path), str(tmp_path / "as"), "--dataset", "audioset",
                     "--heads", str(HEADS), "--labels", ",".join("abcde")]) == 0
    classifier = pipeline("audio-classification", model=str(tmp_path / "as"))
    scores = classifier(np.random.default_rng(2).standard_normal(16000).astype(np.float32), top_k=None)
    assert sorted(s["label"] for s in scores) == list("abcde")
    assert abs(sum(s["score"] for s in scores) - 1) > 1e-3  # sigmoid (multi-label), not softmax
    assert AutoFeatureExtractor.from_pretrained(tmp_path / "as").mean == -4.414


def test_cli_rejects_options_of_other_source_kinds(tmp_path):
    with pytest.raises(SystemExit, match="--dataset does not apply"):
        cli_main(["convert", "--from", "ast", "some/folder", str(tmp_path / "out"), "--dataset", "audioset"])
    with pytest.raises(SystemExit, match="not a file"):
        cli_main(["convert", "--from", "official", str(tmp_path / "none.pth"), str(tmp_path / "out"), "--loss", "ce"])


# ------------------------------------------------------------------------------------------------------------ AST
def tiny_ast(**overrides) -> ASTForAudioClassification:
    config = ASTConfig(
        **{
            "hidden_size": DIM,
            "num_hidden_layers": DEPTH,
            "num_attention_heads": HEADS,
            "intermediate_size": 64,
            "max_length": 100,
            "num_labels": 3,
            **overrides,
        }
    )
    return _randomise(ASTForAudioClassification(config))


def _layer_outputs_match(source_layers, model, eps):
    """Each converted layer reproduces the source layer on the same hidden states (also at a scale where the
    LayerNorm eps matters)."""
    assert model.config.layer_norm_eps == eps
    layout = PackedLayout(torch.ones(2, 20, dtype=torch.long))
    for source_layer, layer in zip(source_layers, model.elasticast.layers, strict=True):
        for scale in (1.0, 1e-3):
            hidden = scale * torch.randn(2, 20, DIM)
            with torch.no_grad():
                expected = source_layer(hidden)
                ours = layer(hidden.reshape(-1, DIM), layout)
            torch.testing.assert_close(ours.reshape(2, 20, DIM), expected, atol=1e-5 * scale, rtol=0)


def _pool_is_block_mean(model, names=("q_proj.weight", "k_proj.bias", "v_proj.weight", "o_proj.bias")):
    for name in names:
        blocks = torch.stack([layer.attention.get_parameter(name) for layer in model.elasticast.layers])
        torch.testing.assert_close(model.elasticast.pooler.attention.get_parameter(name), blocks.mean(0))


def test_ast_layers_head_and_pool(caplog):
    ast = tiny_ast()
    with caplog.at_level(logging.WARNING):
        model = convert_ast(ast)
    _layer_outputs_match(ast.audio_spectrogram_transformer.layers, model, eps=1e-12)
    assert model.config.attention_scale is None  # 1/sqrt(d), as AST
    for ours, theirs in ((model.classifier, ast.classifier), (model.elasticast.layernorm,
                                                              ast.audio_spectrogram_transformer.layernorm)):
        for name, parameter in theirs.named_parameters():
            assert torch.equal(ours.get_parameter(name), parameter)
    assert model.config.id2label == ast.config.id2label
    _pool_is_block_mean(model)
    assert "cls_token" in caplog.text and "pooler.query" in caplog.text  # left out / fresh: reported


def test_ast_positions_are_interpolated_then_averaged():
    ast = tiny_ast()  # stride 10: a 12×9 grid
    model = convert_ast(ast, max_time_patches=6)
    table = ast.audio_spectrogram_transformer.embeddings.position_embeddings[0, 2:]  # cls, dist first
    grid = table.T.reshape(1, DIM, 12, 9)
    resized = F.interpolate(grid, size=(8, 6), mode="bilinear")[0]
    embeddings = model.elasticast.embeddings
    torch.testing.assert_close(embeddings.freq_position_embeddings, resized.mean(2).T)
    torch.testing.assert_close(embeddings.time_position_embeddings, resized.mean(1).T)
    assert convert_ast(ast).config.max_time_patches == 100 // 16  # default: the AST input length


def test_ast_kernel_is_the_non_overlapping_conv():
    ast = tiny_ast(frequency_stride=16, time_stride=16, max_length=64)  # an 8×4 grid, as the paper's AST
    model = convert_ast(ast)
    spectrogram = torch.randn(1, 64, 128)  # AST input: (time, mel)
    with torch.no_grad():
        expected = ast.audio_spectrogram_transformer.embeddings.patch_embeddings(spectrogram)[0]  # [32, D]
        # the data contract: patches frequency-major, each flattened (frequency, time)
        patches = spectrogram[0].T.reshape(8, 16, 4, 16).permute(0, 2, 1, 3).reshape(32, 256)
        ours = model.elasticast.embeddings.patch_embeddings(patches)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    grid = ast.audio_spectrogram_transformer.embeddings.position_embeddings[0, 2:].T.reshape(DIM, 8, 4)
    torch.testing.assert_close(model.elasticast.embeddings.freq_position_embeddings, grid.mean(2).T)


def test_ast_labels_must_fit_the_head():
    with pytest.raises(ValueError, match="head has 3 classes"):
        convert_ast(tiny_ast(), labels=["a", "b"])
    assert convert_ast(tiny_ast(), labels=["x", "y", "z"], loss="bce").config.problem_type == (
        "multi_label_classification"
    )


# ------------------------------------------------------------------------------------------------------- ViT/DeiT
def tiny_image_model(cls, config_cls):
    config = config_cls(hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=64)
    return _randomise(cls(config))  # 224 / 16: a 14×14 grid


def official_imagenet_grid(grid, f_dim, t_dim):
    """The official transfer_ImageNetWeights resize of a `[1, D, 14, 14]` grid, step by step."""
    hw = grid.shape[-1]
    if t_dim <= hw:
        grid = grid[:, :, :, hw // 2 - t_dim // 2 : hw // 2 - t_dim // 2 + t_dim]
    else:
        grid = F.interpolate(grid, size=(hw, t_dim), mode="bilinear")
    if f_dim <= hw:
        grid = grid[:, :, hw // 2 - f_dim // 2 : hw // 2 - f_dim // 2 + f_dim, :]
    else:
        grid = F.interpolate(grid, size=(f_dim, t_dim), mode="bilinear")
    return grid[0].mean(2).T, grid[0].mean(1).T


@pytest.mark.parametrize(("cls", "config_cls", "prefix"), [(ViTModel, ViTConfig, 1), (DeiTModel, DeiTConfig, 2)])
@pytest.mark.parametrize("time_patches", [6, 20])  # time axis cropped / interpolated; frequency always cropped
def test_vit_initialisation(cls, config_cls, prefix, time_patches):
    source = tiny_image_model(cls, config_cls)
    model = convert_vit(source, max_time_patches=time_patches, labels=["a", "b", "c"])
    assert model.config.num_labels == 3 and model.classifier.dense.out_features == 3
    _layer_outputs_match(source.layers, model, eps=1e-12)
    _pool_is_block_mean(model)

    gray = torch.randn(224, 224)
    with torch.no_grad():  # RGB kernels summed: a gray image in three channels gives the same projection
        expected = source.embeddings.patch_embeddings.projection(gray.expand(1, 3, -1, -1))[0, :, 3, 5]
        ours = model.elasticast.embeddings.patch_embeddings(gray[48:64, 80:96].reshape(256))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)

    grid = source.embeddings.position_embeddings[:, prefix:].transpose(1, 2).reshape(1, DIM, 14, 14)
    freq, time = official_imagenet_grid(grid, 8, time_patches)
    torch.testing.assert_close(model.elasticast.embeddings.freq_position_embeddings, freq)
    torch.testing.assert_close(model.elasticast.embeddings.time_position_embeddings, time)


def test_vit_without_qkv_bias():
    config = ViTConfig(hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=64,
                       qkv_bias=False)
    source = _randomise(ViTModel(config))
    model = convert_vit(source, max_time_patches=8)
    assert model.elasticast.pooler.attention.q_proj.bias is None
    _layer_outputs_match(source.layers, model, eps=1e-12)
    _pool_is_block_mean(model, names=("q_proj.weight", "o_proj.bias"))


def timm_state_dict(vit: ViTModel) -> dict[str, torch.Tensor]:
    """The same weights in timm's `vit_base_patch16_224` layout (fused qkv), with an ImageNet head."""
    sd = {
        "cls_token": vit.embeddings.cls_token,
        "pos_embed": vit.embeddings.position_embeddings,
        "patch_embed.proj.weight": vit.embeddings.patch_embeddings.projection.weight,
        "patch_embed.proj.bias": vit.embeddings.patch_embeddings.projection.bias,
        "norm.weight": vit.layernorm.weight,
        "norm.bias": vit.layernorm.bias,
        "head.weight": torch.randn(10, DIM),
        "head.bias": torch.randn(10),
    }
    for i, layer in enumerate(vit.layers):
        attention = layer.attention
        names = {"norm1": layer.layernorm_before, "attn.proj": attention.o_proj, "norm2": layer.layernorm_after,
                 "mlp.fc1": layer.mlp.fc1, "mlp.fc2": layer.mlp.fc2}
        for name, module in names.items():
            sd[f"blocks.{i}.{name}.weight"], sd[f"blocks.{i}.{name}.bias"] = module.weight, module.bias
        for param in ("weight", "bias"):
            fused = [getattr(getattr(attention, f"{p}_proj"), param) for p in "qkv"]
            sd[f"blocks.{i}.attn.qkv.{param}"] = torch.cat(fused)
    return {key: value.detach().clone().contiguous() for key, value in sd.items()}


def test_timm_file_equals_transformers_vit(tmp_path):
    from safetensors.torch import save_file

    vit = tiny_image_model(ViTModel, ViTConfig)
    save_file(timm_state_dict(vit), tmp_path / "vit.safetensors")
    from_timm = convert("vit", tmp_path / "vit.safetensors", tmp_path / "out", num_attention_heads=HEADS,
                        max_time_patches=10)
    from_transformers = convert_vit(vit, max_time_patches=10)
    assert from_timm.config.layer_norm_eps == 1e-6  # timm's
    fresh = {"elasticast.pooler.query", "classifier.layernorm.weight", "classifier.layernorm.bias"}
    theirs = from_transformers.state_dict()
    for key, value in from_timm.state_dict().items():
        if key not in fresh:
            torch.testing.assert_close(value, theirs[key], atol=1e-6, rtol=0, msg=key)
    assert type(AutoModelForAudioClassification.from_pretrained(tmp_path / "out", num_labels=4)).__name__ == (
        "ElasticASTForAudioClassification"
    )


# ---------------------------------------------------------------------------------------------------------- SSAST
def ssast_state_dict(kernel=(16, 16)) -> dict[str, torch.Tensor]:
    """SSAST pre-training layout (timm DeiT under `module.v.`, cls + dist tokens, 8×10 grid from a 128×160 input,
    prediction layers, mask embedding)."""
    v = {
        "cls_token": torch.randn(1, 1, DIM),
        "dist_token": torch.randn(1, 1, DIM),
        "pos_embed": torch.randn(1, 2 + 8 * 10, DIM),
        "patch_embed.proj.weight": torch.randn(DIM, 1, *kernel) / 16,
        "patch_embed.proj.bias": torch.randn(DIM),
        "head.weight": torch.randn(1000, DIM),
        "head.bias": torch.randn(1000),
        "head_dist.weight": torch.randn(1000, DIM),
        "head_dist.bias": torch.randn(1000),
    }
    for i in range(DEPTH):
        _layer_norm(v, f"blocks.{i}.norm1")
        _linear(v, f"blocks.{i}.attn.qkv", 3 * DIM, DIM)
        _linear(v, f"blocks.{i}.attn.proj", DIM, DIM)
        _layer_norm(v, f"blocks.{i}.norm2")
        _linear(v, f"blocks.{i}.mlp.fc1", 4 * DIM, DIM)
        _linear(v, f"blocks.{i}.mlp.fc2", DIM, 4 * DIM)
    _layer_norm(v, "norm")
    top = {"p_input_fdim": torch.tensor(128), "p_input_tdim": torch.tensor(160), "mask_embed": torch.randn(1, 1, DIM)}
    for layer in ("cpredlayer", "gpredlayer"):
        _linear(top, f"{layer}.0", DIM, DIM)
        _linear(top, f"{layer}.2", 256, DIM)
    return {**{f"module.v.{k}": t for k, t in v.items()}, **{f"module.{k}": t for k, t in top.items()}}


def test_ssast_initialisation(caplog):
    sd = ssast_state_dict()
    with caplog.at_level(logging.WARNING):
        model = convert_ssast(sd, max_time_patches=16, labels=4, num_attention_heads=HEADS)
    assert "SSAST pre-training prediction layers" in caplog.text and "head_dist.weight" in caplog.text
    embeddings = model.elasticast.embeddings
    grid = F.interpolate(sd["module.v.pos_embed"][:, 2:].transpose(1, 2).reshape(1, DIM, 8, 10), size=(8, 16),
                         mode="bilinear")[0]
    torch.testing.assert_close(embeddings.freq_position_embeddings, grid.mean(2).T)
    torch.testing.assert_close(embeddings.time_position_embeddings, grid.mean(1).T)
    assert torch.equal(embeddings.patch_embeddings.weight, sd["module.v.patch_embed.proj.weight"].reshape(DIM, 256))
    qkv = sd["module.v.blocks.1.attn.qkv.weight"]
    attention = model.elasticast.layers[1].attention
    for i, projection in enumerate((attention.q_proj, attention.k_proj, attention.v_proj)):
        assert torch.equal(projection.weight, qkv[i * DIM : (i + 1) * DIM])
    assert torch.equal(model.classifier.layernorm.weight, sd["module.v.norm.weight"])  # as transfer_SSAST
    _pool_is_block_mean(model)
    assert model.config.num_labels == 4 and model.config.max_time_patches == 16
    assert convert_ssast(sd, num_attention_heads=HEADS).config.max_time_patches == 10  # default: SSAST's grid


def test_ssast_unknown_keys_and_frame_models_raise():
    with pytest.raises(ValueError, match="map to nothing in ElasticAST: v_extra.weight"):
        convert_ssast({**ssast_state_dict(), "module.v_extra.weight": torch.zeros(1)}, num_attention_heads=HEADS)
    with pytest.raises(ValueError, match="square patches"):
        convert_ssast(ssast_state_dict(kernel=(128, 2)), num_attention_heads=HEADS)


def test_read_labels(tmp_path):
    csv_path = tmp_path / "class_labels_indices.csv"
    csv_path.write_text('index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/05zppz,"Male speech, man speaking"\n')
    assert read_labels(str(csv_path)) == ["Speech", "Male speech, man speaking"]
    txt_path = tmp_path / "labels.txt"
    txt_path.write_text("dog\ncat\n\n")
    assert read_labels(str(txt_path)) == ["dog", "cat"]
    assert read_labels("527") == 527
    assert read_labels("a, b,c") == ["a", "b", "c"]


@pytest.mark.filterwarnings("ignore:At least one mel filter")  # ASTFeatureExtractor's own 128-bin filter bank
def test_cli_converts_saved_transformers_folders(tmp_path, capsys):
    from transformers import ASTFeatureExtractor, ViTForImageClassification

    tiny_ast().save_pretrained(tmp_path / "ast")
    ASTFeatureExtractor(mean=-5.0, std=3.0).save_pretrained(tmp_path / "ast")
    assert cli_main(["convert", "--from", "ast", str(tmp_path / "ast"), str(tmp_path / "ast_out")]) == 0
    assert AutoFeatureExtractor.from_pretrained(tmp_path / "ast_out").mean == -5.0  # the AST folder's statistics
    assert AutoModelForAudioClassification.from_pretrained(tmp_path / "ast_out").config.num_labels == 3

    config = ViTConfig(hidden_size=DIM, num_hidden_layers=1, num_attention_heads=HEADS, intermediate_size=64)
    ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    assert cli_main(["convert", "--from", "vit", str(tmp_path / "vit"), str(tmp_path / "vit_out"), "--labels", "4",
                     "--time-patches", "64", "--attention-scale", "1.0"]) == 0
    assert "time table 64, attention scale 1.0" in capsys.readouterr().out
    loaded = AutoModelForAudioClassification.from_pretrained(tmp_path / "vit_out")
    assert (loaded.config.num_labels, loaded.config.attention_scale) == (4, 1.0)
    with pytest.raises(ValueError, match="model of type vit or deit"):
        convert("vit", tmp_path / "ast", tmp_path / "wrong")
