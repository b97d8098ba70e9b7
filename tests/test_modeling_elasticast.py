import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification
from transformers.testing_utils import CaptureLogger

from elasticast import (
    ElasticASTConfig,
    ElasticASTFeatureExtractor,
    ElasticASTForAudioClassification,
    ElasticASTModel,
)


@pytest.fixture
def fe():
    return ElasticASTFeatureExtractor()


def logits_of(model, features):
    with torch.no_grad():
        return model(**features).logits


def test_rows_and_packed_give_the_same_logits_in_input_order(tiny_config, fe, clips):
    model = ElasticASTForAudioClassification(tiny_config()).eval()
    waves = [clips[3.0], clips[27.0], clips[0.4]]
    rows = logits_of(model, fe(waves, sampling_rate=16000, return_tensors="pt"))
    packed = logits_of(model, fe(waves, sampling_rate=16000, packing=True, max_tokens_per_row=2048,
                                 return_tensors="pt"))
    assert rows.shape == (3, 5)
    torch.testing.assert_close(packed, rows, atol=1e-5, rtol=0)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_a_clip_gives_the_same_logits_alone_or_beside_any_clips(tiny_config, fe, clips, implementation):
    model = ElasticASTForAudioClassification(tiny_config(attn_implementation=implementation)).eval()
    names = [0.2, 0.4, 1.0, 3.0, 7.5, 27.0, 60.0]
    rng = np.random.default_rng(0)
    for packing, limit in ((False, 2048), (True, 2048), (True, 600)):
        # rows narrower than the time table split long clips into narrower windows, alone and packed alike
        alone = torch.cat([
            logits_of(model, fe(clips[s], sampling_rate=16000, packing=packing, max_tokens_per_row=limit,
                                return_tensors="pt"))
            for s in names
        ])
        for _ in range(3):
            order = rng.permutation(len(names))
            got = logits_of(model, fe([clips[names[i]] for i in order], sampling_rate=16000, packing=packing,
                                      max_tokens_per_row=limit, return_tensors="pt"))
            torch.testing.assert_close(got, alone[order], atol=1e-5, rtol=0)


def test_eager_sdpa_and_flex_agree(tiny_config, fe, clips):
    waves = [clips[s] for s in (0.4, 3.0, 7.5, 27.0)]
    features = fe(waves, sampling_rate=16000, packing=True, max_tokens_per_row=1024, return_tensors="pt")
    model = ElasticASTForAudioClassification(tiny_config(attn_implementation="eager")).eval()
    eager = logits_of(model, features)
    model.set_attn_implementation("sdpa")
    torch.testing.assert_close(logits_of(model, features), eager, atol=1e-5, rtol=0)
    from transformers.utils import is_torch_flex_attn_available

    if not is_torch_flex_attn_available():  # old torch: transformers refuses flex, with its own error
        with pytest.raises((ImportError, ValueError)):
            model.set_attn_implementation("flex_attention")
        return
    model.set_attn_implementation("flex_attention")  # expected to work here: any error fails the test
    torch.testing.assert_close(logits_of(model, features), eager, atol=1e-5, rtol=0)


def test_gradients_are_finite_with_padding_only_rows_and_empty_clips(tiny_config, fe, clips):
    model = ElasticASTForAudioClassification(tiny_config())
    rows = fe([clips[1.0], clips[3.0], clips[0.2]], sampling_rate=16000, return_tensors="pt")
    rows["segment_ids"][2] = 0  # row 2 becomes padding only: its clip has no tokens
    out = model(**rows, labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    assert torch.isfinite(out.logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad()
    packed = fe([clips[1.0], clips[3.0]], sampling_rate=16000, packing=True, return_tensors="pt")
    packed["clip_ids"][packed["clip_ids"] == 2] = 3  # clip 2 has no segment
    out = model(**packed, labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    assert out.logits.shape == (3, 5) and torch.isfinite(out.logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_long_audio_windows_are_combined_per_clip(tiny_config, clips):
    fe = ElasticASTFeatureExtractor(max_time_patches=16)  # 256-frame windows: 7.5 s → 3 windows
    for problem_type, how in (("single_label_classification", "mean"), ("multi_label_classification", "max")):
        model = ElasticASTForAudioClassification(tiny_config(max_time_patches=16, problem_type=problem_type)).eval()
        features = fe([clips[7.5], clips[1.0]], sampling_rate=16000, return_tensors="pt")
        assert int(features["segment_ids"][0].max()) == 3
        logits = logits_of(model, features)
        with torch.no_grad():
            base = model.elasticast(**features)
            per_window = model.classifier(base.segment_pooler_output)
        assert base.segment_clip_ids.tolist() == [0, 0, 0, 1]
        combined = per_window[:3].mean(0) if how == "mean" else per_window[:3].amax(0)
        torch.testing.assert_close(logits[0], combined)
        torch.testing.assert_close(logits[1], per_window[3])
        torch.testing.assert_close(base.pooler_output[0], base.segment_pooler_output[:3].mean(0))


@pytest.mark.parametrize("policy", ["interpolate", "clamp"])
def test_time_positions_beyond_the_table_never_raise(tiny_config, fe, clips, policy):
    model = ElasticASTForAudioClassification(tiny_config(max_time_patches=8, time_position_policy=policy)).eval()
    features = fe([clips[7.5], clips[1.0]], sampling_rate=16000, return_tensors="pt")  # 46 and 6 time patches
    assert int(features["time_ids"].max()) > 8
    logits = logits_of(model, features)
    assert torch.isfinite(logits).all()
    short = logits_of(model, fe(clips[1.0], sampling_rate=16000, return_tensors="pt"))
    torch.testing.assert_close(logits[1:], short, atol=1e-5, rtol=0)  # within the table: plain lookup
    embeddings = model.elasticast.embeddings
    table = embeddings.time_position_embeddings.detach()
    layout_features = fe(clips[7.5], sampling_rate=16000, return_tensors="pt")
    from elasticast import PackedLayout

    layout = PackedLayout(layout_features["segment_ids"])
    time_ids = layout_features["time_ids"].reshape(-1)[layout.token_index]
    with torch.no_grad():
        positions = embeddings.time_positions(time_ids, layout)
    size, count = table.shape[0], int(time_ids.max()) + 1  # 8 table rows, 46 time patches
    if policy == "clamp":  # patches inside the table read their own row, later ones the last row
        expected = torch.stack([table[min(t, size - 1)] for t in time_ids.tolist()])
    else:  # time patch t reads the table at t·(size-1)/(count-1), linearly interpolated (numpy, per dimension)
        where = time_ids.numpy() * (size - 1) / (count - 1)
        expected = torch.from_numpy(np.stack([np.interp(where, np.arange(size), table[:, d].numpy())
                                              for d in range(table.shape[1])], axis=-1)).to(table.dtype)
        assert ((where % 1 > 0.1) & (where % 1 < 0.9)).any()  # interior points between two table rows are checked
    torch.testing.assert_close(positions, expected, atol=1e-6, rtol=0)


def test_outputs_hidden_states_and_attentions(tiny_config, fe, clips):
    model = ElasticASTModel(tiny_config(attn_implementation="eager")).eval()
    features = fe([clips[1.0], clips[0.4]], sampling_rate=16000, packing=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**features, output_hidden_states=True, output_attentions=True)
    rows, length = features["segment_ids"].shape
    assert out.last_hidden_state.shape == (rows, length, 32)
    assert out.pooler_output.shape == (2, 32)
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (rows, length, 32)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (rows, 4, length, length)
    segments = features["segment_ids"][0]
    weights = out.attentions[0][0]
    same = segments[:, None] == segments[None, :]  # padding tokens attend among themselves
    assert (weights[:, ~same] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, length))
    assert (out.last_hidden_state[features["segment_ids"] == 0] == 0).all()
    assert all((h[features["segment_ids"] == 0] == 0).all() for h in out.hidden_states)
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        plain = model(**features)
    torch.testing.assert_close(out.pooler_output, plain.pooler_output, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.last_hidden_state, plain.last_hidden_state, atol=1e-5, rtol=0)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    with CaptureLogger(hf_logging.get_logger("elasticast.modeling_elasticast")) as captured, torch.no_grad():
        fallback = model(**features, output_attentions=True)  # sdpa gives no weights: this call runs eager
    assert "eager" in captured.out
    for got, expected in zip(fallback.attentions, out.attentions):
        torch.testing.assert_close(got, expected)
    as_tuple = model(**features, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[1], model(**features).pooler_output)


def test_recorded_hidden_states_and_attentions_are_on_the_autograd_path(tiny_config, fe, clips):
    model = ElasticASTForAudioClassification(tiny_config(attn_implementation="eager"))
    features = fe([clips[1.0], clips[0.4], clips[3.0]], sampling_rate=16000, packing=True, max_tokens_per_row=600,
                  return_tensors="pt")
    out = model(**features, output_hidden_states=True, output_attentions=True)
    for tensor in (*out.hidden_states, *out.attentions):
        tensor.retain_grad()
    out.logits.sum().backward()
    real = features["segment_ids"] > 0
    for h in out.hidden_states:
        assert h.grad is not None and h.grad[real].abs().sum() > 0
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in out.attentions)


def test_losses_follow_problem_type(tiny_config, fe, clips):
    features = fe([clips[1.0], clips[3.0]], sampling_rate=16000, return_tensors="pt")
    single = ElasticASTForAudioClassification(tiny_config())
    assert single.config.problem_type == "single_label_classification"
    out = single(**features, labels=torch.tensor([1, 4]))
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([1, 4])))
    multi = ElasticASTForAudioClassification(tiny_config(problem_type="multi_label_classification"))
    targets = torch.tensor([[1.0, 0, 1, 0, 0], [0, 0, 0, 0, 1]])
    out = multi(**features, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets))


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config, fe, clips):
    features = fe([clips[1.0], clips[3.0], clips[0.4]], sampling_rate=16000, packing=True, return_tensors="pt")
    labels = torch.tensor([0, 1, 2])
    model = ElasticASTForAudioClassification(tiny_config()).train()
    model(**features, labels=labels).loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.elasticast.layers[0].gradient_checkpointing
    model(**features, labels=labels).loss.backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, reference[name], atol=1e-6, rtol=1e-5)


def test_bad_model_inputs_raise(tiny_config, fe, clips):
    model = ElasticASTForAudioClassification(tiny_config()).eval()
    features = fe([clips[1.0]], sampling_rate=16000, return_tensors="pt")
    split = {k: v.clone() for k, v in features.items()}
    split["segment_ids"][0, 3] = 2  # segment 1 now appears on both sides of segment 2
    with pytest.raises(ValueError, match="contiguous"):
        model(**split)
    wrong = {k: v.clone() for k, v in features.items()}
    wrong["freq_ids"][0, 0] = 9
    with pytest.raises(ValueError, match="freq_ids"):
        model(**wrong)


def test_save_load_round_trip_and_auto_classes(tiny_config, fe, clips, tmp_path):
    model = ElasticASTForAudioClassification(tiny_config(attention_scale=1.0, layer_norm_eps=1e-12)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    features = fe([clips[3.0], clips[0.4]], sampling_rate=16000, return_tensors="pt")
    loaded = AutoModelForAudioClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is ElasticASTForAudioClassification
    assert loaded.config.attention_scale == 1.0 and loaded.config.layer_norm_eps == 1e-12
    torch.testing.assert_close(logits_of(loaded, features), logits_of(model, features), atol=0, rtol=0)
    assert type(AutoConfig.for_model("elasticast")) is ElasticASTConfig
    assert type(AutoModel.from_pretrained(tmp_path)) is ElasticASTModel
    fe.save_pretrained(tmp_path)
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is ElasticASTFeatureExtractor
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForAudioClassification"}


def test_saved_folder_loads_with_remote_code_where_elasticast_is_absent(tiny_config, fe, clips, tmp_path):
    model = ElasticASTForAudioClassification(tiny_config(id2label={i: f"c{i}" for i in range(5)})).eval()
    model.save_pretrained(tmp_path / "model")
    fe.save_pretrained(tmp_path / "model")
    for name in ("modeling_elasticast.py", "configuration_elasticast.py", "feature_extraction_elasticast.py"):
        assert (tmp_path / "model" / name).exists()
    np.save(tmp_path / "wave.npy", clips[3.0])
    expected = logits_of(model, fe(clips[3.0], sampling_rate=16000, return_tensors="pt"))
    script = textwrap.dedent(f"""
        import sys
        sys.modules["elasticast"] = None  # any `import elasticast` now fails
        try:
            import elasticast
            raise SystemExit("elasticast is importable")
        except ImportError:
            pass
        import numpy as np, torch
        from transformers import AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification
        folder = {str(tmp_path / "model")!r}
        fe = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
        model = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
        base = AutoModel.from_pretrained(folder, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(base).__name__ == "ElasticASTModel"
        features = fe(np.load({str(tmp_path / "wave.npy")!r}), sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            print(model(**features).logits.tolist())
    """)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.tensor(json.loads(result.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


class _WindowLogits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_values, freq_ids, time_ids):
        return self.model.window_logits(input_values, freq_ids, time_ids)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_window_logits_equal_forward_per_window_and_export_with_dynamic_shapes(tiny_config, clips, implementation):
    fe = ElasticASTFeatureExtractor(max_time_patches=16)  # 27 s → windows of 16 time patches, the last shorter
    model = ElasticASTForAudioClassification(tiny_config(max_time_patches=16, attn_implementation=implementation))
    model.eval()
    features = fe(clips[27.0], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        per_window = model.classifier(model.elasticast(**features).segment_pooler_output)
    segments = features["segment_ids"][0]
    patches, freq_ids, time_ids = (features[k][0] for k in ("input_values", "freq_ids", "time_ids"))
    lengths = torch.bincount(segments)[1:]  # tokens per window: the near-equal windows differ by one time patch
    batches = []  # (windows of one length as [B, L, P*P], their freq_ids [L], time_ids [L], their forward logits)
    for length in lengths.unique():
        chosen = (lengths == length).nonzero().squeeze(1) + 1
        first = segments == chosen[0]
        windows = torch.stack([patches[segments == s] for s in chosen])
        batches.append((windows, freq_ids[first], time_ids[first], per_window[chosen - 1]))
    assert len(batches) == 2 and max(len(b[0]) for b in batches) > 1
    with torch.no_grad():
        for windows, window_freq, window_time, expected in batches:
            torch.testing.assert_close(model.window_logits(windows, window_freq, window_time), expected, atol=1e-5,
                                       rtol=0)
            pooled = model.elasticast.window_pooled(windows, window_freq, window_time)
            assert pooled.shape == (len(windows), 32)

    # One graph for any number of windows and any window length (no data-dependent Python in the path).
    batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens")
    windows, window_freq, window_time, _ = batches[0]
    exported = torch.export.export(
        _WindowLogits(model), (windows, window_freq, window_time),
        dynamic_shapes=({0: batch, 1: tokens}, {0: tokens}, {0: tokens}),
    ).module()
    with torch.no_grad():
        for windows, window_freq, window_time, expected in batches:
            for inputs in ((windows, window_freq, window_time), (windows[:1], window_freq, window_time)):
                torch.testing.assert_close(exported(*inputs), model.window_logits(*inputs), atol=1e-6, rtol=0)


def test_window_logits_interpolate_time_positions_beyond_the_table_like_forward(tiny_config, clips):
    model = ElasticASTForAudioClassification(tiny_config(max_time_patches=8)).eval()  # table shorter than the clip
    features = ElasticASTFeatureExtractor()(clips[3.0], sampling_rate=16000, return_tensors="pt")
    assert int(features["time_ids"].max()) >= 8 and int(features["segment_ids"].max()) == 1
    with torch.no_grad():
        expected = model(**features).logits
        got = model.window_logits(features["input_values"], features["freq_ids"][0], features["time_ids"][0])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def _reference_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None):
    """CPU stand-in for torch's `varlen_attn` kernel, same signature and layout: `(total, H, d)` tensors, int32
    offsets, python-int maxima; softmax attention within each segment, looping over the offsets."""
    assert query.dim() == key.dim() == 3 and query.shape[1:] == key.shape[1:] == value.shape[1:]
    assert cu_seq_q.dtype == cu_seq_k.dtype == torch.int32 and cu_seq_q.shape == cu_seq_k.shape
    starts_q, starts_k = cu_seq_q.tolist(), cu_seq_k.tolist()
    assert starts_q[0] == starts_k[0] == 0 and starts_q[-1] == len(query) and starts_k[-1] == len(key)
    assert isinstance(max_q, int) and max_q == max(b - a for a, b in zip(starts_q, starts_q[1:]))
    assert isinstance(max_k, int) and max_k == max(b - a for a, b in zip(starts_k, starts_k[1:]))
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    pieces = []
    for q0, q1, k0, k1 in zip(starts_q, starts_q[1:], starts_k, starts_k[1:]):
        q, k, v = query[q0:q1].transpose(0, 1), key[k0:k1].transpose(0, 1), value[k0:k1].transpose(0, 1)
        weights = torch.softmax(q @ k.transpose(1, 2) * scale, dim=-1)
        pieces.append((weights @ v).transpose(0, 1))
    return torch.cat(pieces)


def _reference_varlen_attn_without_scale(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k):
    """The same kernel as torch < 2.10 offers it: no `scale` argument, always 1/√d."""
    return _reference_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k)


def _reference_flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                                      softmax_scale=None, causal=False):
    """The same kernel under the flash-attn package's `flash_attn_varlen_func` signature."""
    assert not causal and dropout_p == 0.0
    return _reference_varlen_attn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale=softmax_scale)


@pytest.mark.parametrize("route", ["torch_varlen", "torch_varlen without scale", "flash-attn package"])
def test_varlen_path_equals_sdpa_forward_and_gradients(tiny_config, fe, clips, monkeypatch, route):
    """The varlen code path on CPU: offsets from `PackedLayout.varlen_kwargs`, self-attention and pooling each one
    call over all tokens, through the function "torch_varlen" registers (with a CPU kernel in place of torch's CUDA
    one) or through transformers' own flash-attention integration (with the kernel in place of flash-attn's)."""
    from transformers import AttentionInterface
    from transformers import modeling_flash_attention_utils as flash_utils
    from transformers.integrations.flash_attention import flash_attention_forward

    from elasticast import modeling_elasticast

    if route == "flash-attn package":
        function = flash_attention_forward
        process = flash_utils._lazy_define_process_function(_reference_flash_attn_varlen_func)
        monkeypatch.setattr(flash_utils, "lazy_import_flash_attention", lambda *args, **kwargs: (
            (None, _reference_flash_attn_varlen_func, None, None, None), (process, dict)))
    else:
        function = modeling_elasticast.torch_varlen_attention_forward
        kernel = _reference_varlen_attn if route == "torch_varlen" else _reference_varlen_attn_without_scale
        monkeypatch.setattr(modeling_elasticast, "_torch_varlen_attn", lambda: kernel)
    AttentionInterface.register("reference_varlen", function)
    monkeypatch.setattr(modeling_elasticast, "VARLEN_IMPLEMENTATIONS",
                        modeling_elasticast.VARLEN_IMPLEMENTATIONS | {"reference_varlen"})
    calls, varlen_attention = [], modeling_elasticast.varlen_attention
    monkeypatch.setattr(modeling_elasticast, "varlen_attention",
                        lambda *args, **kwargs: calls.append(args[5]) or varlen_attention(*args, **kwargs))
    # mixed lengths, a long clip cut into windows, packed rows; unscaled attention as the official checkpoints
    small = ElasticASTFeatureExtractor(max_time_patches=16)
    features = small([clips[s] for s in (0.4, 3.0, 7.5, 1.0)], sampling_rate=16000, packing=True,
                     max_tokens_per_row=512, return_tensors="pt")
    labels = torch.tensor([0, 1, 2, 3])
    model = ElasticASTForAudioClassification(tiny_config(max_time_patches=16, attention_scale=1.0))
    results = {}
    for implementation in ("sdpa", "reference_varlen"):
        model.set_attn_implementation(implementation)
        model.zero_grad()
        out = model(**features, labels=labels)
        out.loss.backward()
        results[implementation] = out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}
    assert calls == [False, False, True]  # 2 layers, then pooling: each ONE call over all tokens
    (logits, grads), (varlen_logits, varlen_grads) = results["sdpa"], results["reference_varlen"]
    torch.testing.assert_close(varlen_logits, logits, atol=1e-5, rtol=0)
    for name, grad in grads.items():
        torch.testing.assert_close(varlen_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_torch_varlen_is_the_default_where_cuda_is_and_falls_back_to_grouped_sdpa(tiny_config, fe, clips,
                                                                                   monkeypatch):
    features = fe([clips[1.0], clips[3.0]], sampling_rate=16000, packing=True, return_tensors="pt")
    sdpa = ElasticASTForAudioClassification(tiny_config()).eval()
    assert sdpa.config._attn_implementation == "sdpa"  # no CUDA here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    model = ElasticASTForAudioClassification(tiny_config())
    assert model.config._attn_implementation == "torch_varlen"
    model.load_state_dict(sdpa.state_dict())
    model.eval()
    # CPU fp32 tensors: torch's kernel cannot run them, the grouped SDPA path does
    torch.testing.assert_close(logits_of(model, features), logits_of(sdpa, features), atol=0, rtol=0)
    assert ElasticASTForAudioClassification(tiny_config(attn_implementation="sdpa")).config._attn_implementation \
        == "sdpa"


def test_inference_encodes_in_slices_with_the_same_outputs(tiny_config, fe, clips):
    model = ElasticASTForAudioClassification(tiny_config(inference_max_tokens=None)).eval()
    features = fe([clips[s] for s in (60.0, 0.4, 7.5, 27.0)], sampling_rate=16000, packing=True,
                  max_tokens_per_row=1024, return_tensors="pt")
    with torch.no_grad():
        whole = model(**features)
        base = model.elasticast(**features)
    calls = []
    model.elasticast.embeddings.register_forward_hook(lambda module, args, out: calls.append(len(out)))
    for budget in (700, 1):  # whole segments per slice; a budget below one segment gives one segment per slice
        model.config.inference_max_tokens = budget
        calls.clear()
        with torch.no_grad():
            sliced = model(**features)
            sliced_base = model.elasticast(**features)
        assert max(calls) <= max(budget, max(torch.bincount(features["segment_ids"].flatten())[1:]))
        assert len(calls) > 2 * 2
        torch.testing.assert_close(sliced.logits, whole.logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(sliced_base.last_hidden_state, base.last_hidden_state, atol=1e-5, rtol=0)
        torch.testing.assert_close(sliced_base.segment_pooler_output, base.segment_pooler_output, atol=1e-5, rtol=0)
    calls.clear()
    model(**features).logits.sum().backward()  # with gradients: one pass over everything
    assert len(calls) == 1
