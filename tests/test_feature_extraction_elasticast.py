import numpy as np
import pytest
import torch
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from elasticast import ElasticASTFeatureExtractor, pack_segments


def numpy_kaldi_reference(wave: np.ndarray, hop: int = 160) -> np.ndarray:
    """transformers' numpy Kaldi path, as ASTFeatureExtractor runs it without torchaudio: `[T, 128]` log-mel."""
    filters = mel_filter_bank(
        num_frequency_bins=257, num_mel_filters=128, min_frequency=20, max_frequency=8000, sampling_rate=16000,
        norm=None, mel_scale="kaldi", triangularize_in_mel_space=True,
    )
    return spectrogram(
        wave, window_function(400, "hann", periodic=False), frame_length=400, hop_length=hop, fft_length=512,
        power=2.0, center=False, preemphasis=0.97, mel_filters=filters, log_mel="log",
        mel_floor=1.192092955078125e-07, remove_dc_offset=True,
    ).T


def normalise(fe, log_mel):
    return (log_mel - fe.mean) / (2 * fe.std)


@pytest.fixture
def fe():
    return ElasticASTFeatureExtractor()


@pytest.mark.parametrize("hop", [160, 320])
def test_fbank_matches_transformers_numpy_kaldi(fe, speech_16k, hop):
    reference = normalise(fe, numpy_kaldi_reference(speech_16k, hop))
    ours = normalise(fe, fe.fbank([torch.from_numpy(speech_16k)], [hop / 160])[0].numpy())
    assert ours.shape == reference.shape
    # float64 arithmetic throughout; what remains is the float32 output: the log-mel rounded to float32 (|log-mel|
    # ≤ ~16 → ≤ 1e-6, ≤ 1.1e-7 after dividing by 2·std) and normalised values up to ~2 (half an ulp: 1.2e-7).
    # Measured: 1.19e-7. A float32 FFT or mel product would show up to 5e-4 here (see `fbank`'s docstring).
    assert np.abs(ours - reference).max() <= 3e-7


def test_fbank_matches_torchaudio_kaldi_where_it_loads(fe, speech_16k):
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    wave = torch.from_numpy(speech_16k)
    reference = kaldi.fbank(
        (wave - wave.mean())[None], htk_compat=True, sample_frequency=16000, use_energy=False,
        window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10,
    )
    ours = fe.fbank([wave], [1.0])[0]
    assert (normalise(fe, ours) - normalise(fe, reference)).abs().max() <= 1e-3


def test_batched_fbank_equals_one_clip_at_a_time(fe, clips):
    waves = [torch.from_numpy(clips[s]) for s in (0.4, 3.0, 7.5)]
    together = fe.fbank(waves, [1.0, 1.2, 2.0])
    for wave, c, batched in zip(waves, [1.0, 1.2, 2.0], together):
        assert torch.equal(batched, fe.fbank([wave], [c])[0])


def test_output_contract_unpacked(fe, clips):
    out = fe([clips[3.0], clips[0.4]], sampling_rate=16000, return_tensors="pt")
    assert set(out) == {"input_values", "segment_ids", "freq_ids", "time_ids"}
    frames = [1 + (len(clips[s]) - 400) // 160 for s in (3.0, 0.4)]
    tokens = [8 * (n // 16) for n in frames]
    assert out["input_values"].shape == (2, max(tokens), 256)
    assert out["segment_ids"].dtype == torch.long
    for row, n in enumerate(tokens):
        assert (out["segment_ids"][row, :n] == 1).all() and (out["segment_ids"][row, n:] == 0).all()
        n_time = n // 8
        assert torch.equal(out["freq_ids"][row, :n], torch.arange(8).repeat_interleave(n_time))
        assert torch.equal(out["time_ids"][row, :n], torch.arange(n_time).repeat(8))


def test_patches_are_frequency_major_16x16_blocks(fe, clips):
    wave = clips[1.0]
    spectrogram_ = normalise(fe, fe.fbank([torch.from_numpy(wave)], [1.0])[0])  # [T, 128]
    out = fe(wave, sampling_rate=16000, return_tensors="pt")
    n_time = spectrogram_.shape[0] // 16
    for token in (0, 1, n_time, 3 * n_time + 2):
        f, t = token // n_time, token % n_time
        block = spectrogram_[16 * t : 16 * t + 16, 16 * f : 16 * f + 16].T  # (freq, time) inside the patch
        torch.testing.assert_close(out["input_values"][0, token], block.reshape(256).float())


def test_compression_multiplies_frame_shift(fe, clips):
    wave = clips[7.5]
    for c in (1.0, 1.2, 2.0, 3.7, 4.0):
        shift = round(160 * c)
        frames = 1 + (len(wave) - 400) // shift
        out = fe(wave, sampling_rate=16000, compression=c, return_tensors="pt")
        assert int((out["segment_ids"] > 0).sum()) == 8 * (frames // 16)


def test_avg_pool_compression(fe, clips):
    wave = clips[3.0]
    full = normalise(fe, fe.fbank([torch.from_numpy(wave)], [1.0])[0])
    out = fe(wave, sampling_rate=16000, compression=2, compression_method="avg_pool", return_tensors="pt")
    pooled = full[: full.shape[0] // 2 * 2].reshape(-1, 2, 128).mean(1)
    n_time = pooled.shape[0] // 16
    torch.testing.assert_close(out["input_values"][0, 0], pooled[:16, :16].T.reshape(256).float())
    assert int((out["segment_ids"] > 0).sum()) == 8 * n_time
    for samples in (100, 560):  # fewer frames than C: one patch column of padding, as any clip under a patch
        tiny = fe(wave[:samples], sampling_rate=16000, compression=3, compression_method="avg_pool", return_tensors="pt")
        assert tiny["input_values"].shape == (1, 8, 256)
    with pytest.raises(ValueError, match="integer"):
        fe(wave, sampling_rate=16000, compression=1.5, compression_method="avg_pool")
    with pytest.raises(ValueError, match="C ≥ 1"):
        fe(wave, sampling_rate=16000, compression=0.5)


def test_max_length_cuts_only_longer_clips(fe, clips):
    out = fe([clips[7.5], clips[1.0]], sampling_rate=16000, max_length=256, return_tensors="pt")
    lengths = (out["segment_ids"] > 0).sum(1).tolist()
    assert lengths[0] == 8 * 16  # cut to 256 frames
    assert lengths[1] == 8 * ((1 + (16000 - 400) // 160) // 16)  # 1 s = 98 frames → 6 patches, not padded


@pytest.mark.parametrize("samples", [1, 100, 399, 400, 2000])
def test_clips_shorter_than_one_patch_give_one_patch_column(fe, samples):
    wave = np.random.default_rng(1).standard_normal(samples).astype(np.float32) * 0.1
    out = fe(wave, sampling_rate=16000, return_tensors="pt")
    assert out["input_values"].shape == (1, 8, 256)
    assert (out["segment_ids"] == 1).all()
    assert torch.isfinite(out["input_values"]).all()


def test_long_audio_becomes_windows_in_one_row(fe, clips):
    out = fe(clips[60.0], sampling_rate=16000, return_tensors="pt")
    n_time = (1 + (60 * 16000 - 400) // 160) // 16  # 374 patches > 192 → two windows of 187
    assert out["input_values"].shape[0] == 1
    segments = out["segment_ids"][0]
    assert segments.max() == 2 and (segments > 0).sum() == 8 * n_time
    for s in (1, 2):
        times = out["time_ids"][0][segments == s]
        assert times.min() == 0 and times.max() < 192
        assert (segments == s).sum() == 8 * (times.max() + 1)


def test_packing_keeps_every_token_and_restores_order(fe, clips):
    waves = [clips[s] for s in (27.0, 0.4, 3.0, 60.0, 1.0, 7.5)]
    single = [fe(w, sampling_rate=16000, return_tensors="pt") for w in waves]
    packed = fe(waves, sampling_rate=16000, packing=True, max_tokens_per_row=2048, return_tensors="pt")
    assert packed["input_values"].shape[1] <= 2048
    assert set(packed) == {"input_values", "segment_ids", "freq_ids", "time_ids", "clip_ids"}
    for clip, alone in enumerate(single):
        in_clip = packed["clip_ids"] == clip + 1
        assert int(in_clip.sum()) == int((alone["segment_ids"] > 0).sum())
        # the clip's patches, as a multiset of (freq, time, values), are the same in both layouts
        key = lambda f, t: (f * 1000 + t).tolist()  # noqa: E731
        packed_rows = sorted(zip(key(packed["freq_ids"][in_clip], packed["time_ids"][in_clip]),
                                 packed["input_values"][in_clip].sum(-1).tolist()))
        mask = alone["segment_ids"] > 0
        alone_rows = sorted(zip(key(alone["freq_ids"][mask], alone["time_ids"][mask]),
                                alone["input_values"][mask].sum(-1).tolist()))
        assert [k for k, _ in packed_rows] == [k for k, _ in alone_rows]
        np.testing.assert_allclose([v for _, v in packed_rows], [v for _, v in alone_rows], rtol=0, atol=1e-4)
    # a segment never straddles two rows and segment ids are contiguous 1..n per row
    for row in packed["segment_ids"]:
        ids = row[row > 0]
        assert torch.equal(torch.unique_consecutive(ids), torch.arange(1, int(ids.max()) + 1))


def test_packing_splits_windows_to_fit_small_rows(fe, clips):
    packed = fe(clips[27.0], sampling_rate=16000, packing=True, max_tokens_per_row=512, return_tensors="pt")
    assert packed["input_values"].shape[1] <= 512
    assert (packed["time_ids"] < 64).all()


def test_pack_segments_best_fit():
    rng = np.random.default_rng(0)
    for _ in range(50):
        lengths = rng.integers(8, 1537, size=rng.integers(1, 40)).tolist()
        rows = pack_segments(lengths, 2048)
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in row) <= 2048 for row in rows)
        sequential_rows, fill = 1, 0
        for n in lengths:
            if fill + n > 2048:
                sequential_rows, fill = sequential_rows + 1, 0
            fill += n
        assert len(rows) <= sequential_rows
    with pytest.raises(ValueError, match="does not fit"):
        pack_segments([3000], 2048)


def test_bad_input_is_rejected_with_a_clear_message(fe):
    good = np.zeros(1600, dtype=np.float32)
    with pytest.raises(ValueError, match="empty"):
        fe(np.zeros(0, dtype=np.float32), sampling_rate=16000)
    with pytest.raises(ValueError, match="empty batch"):
        fe([], sampling_rate=16000)
    with pytest.raises(ValueError, match="NaN or Inf"):
        fe([good, np.array([0.0, np.nan] * 800, dtype=np.float32)], sampling_rate=16000)
    with pytest.raises(ValueError, match="NaN or Inf"):
        fe(np.array([0.0, np.inf] * 800), sampling_rate=16000)
    with pytest.raises(ValueError, match="(?i)down-mix"):
        fe(np.zeros((2, 1600), dtype=np.float32), sampling_rate=16000)
    with pytest.raises(ValueError, match="(?i)down-mix"):
        fe(torch.zeros(1600, 2), sampling_rate=16000)
    with pytest.raises(ValueError, match="Clip 1 .*Down-mix"):
        fe([good, np.zeros((1600, 2), dtype=np.float32)], sampling_rate=16000)
    with pytest.raises(ValueError, match="dtype"):
        fe(np.array(["a"] * 1600), sampling_rate=16000)
    with pytest.raises(ValueError, match="compression values"):
        fe([good, good], sampling_rate=16000, compression=[1.0])


def test_integer_pcm_is_scaled(fe, speech_16k):
    pcm = np.round(speech_16k * 20000).astype(np.int16)
    as_int = fe(pcm, sampling_rate=16000, return_tensors="pt")["input_values"]
    as_float = fe(pcm.astype(np.float32) / 32768, sampling_rate=16000, return_tensors="pt")["input_values"]
    torch.testing.assert_close(as_int, as_float)
    torch.testing.assert_close(fe(torch.from_numpy(pcm), sampling_rate=16000, return_tensors="pt")["input_values"], as_float)


def test_other_sampling_rates_are_resampled(fe):
    """Against an analytic reference: 300 sinusoids (100 Hz - 6 kHz) sampled directly at 16 kHz are what a perfect
    44.1 → 16 kHz resampler returns. In the mel bands that hold their energy, soxr's features differ by 2.4e-5
    (normalised); linear interpolation, a poor resampler, by 0.16."""
    rng = np.random.default_rng(0)
    freqs, phases, amps = rng.uniform(100, 6000, 300), rng.uniform(0, 2 * np.pi, 300), rng.uniform(0.2, 1, 300) / 30

    def tones(rate: int, seconds: float = 2.0) -> np.ndarray:
        t = np.arange(int(rate * seconds)) / rate
        return (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0).astype(np.float32)

    def spectrogram_of(out) -> torch.Tensor:  # patches [8·T, 256] → [128 mel, 16·T frames]
        values = out["input_values"][0]
        return values.reshape(8, -1, 16, 16).permute(0, 2, 1, 3).reshape(128, -1)

    resampled = spectrogram_of(fe(tones(44100), sampling_rate=44100, return_tensors="pt"))
    analytic = spectrogram_of(fe(tones(16000), sampling_rate=16000, return_tensors="pt"))
    assert resampled.shape == analytic.shape
    peak_hz = torch.from_numpy(fe.mel_filters.argmax(0) * 8000 / 256)  # each mel filter's peak frequency
    band = (peak_hz > 150) & (peak_hz < 5500)  # filled by the tones; outside it only leakage, noisy in log scale
    assert band.sum() > 100
    assert (resampled - analytic)[band][:, 3:-3].abs().max() <= 1e-3  # edge frames: the resampler's start-up


def test_numpy_and_torch_outputs_and_round_trip(fe, clips, tmp_path):
    as_np = fe([clips[1.0], clips[3.0]], sampling_rate=16000)
    assert isinstance(as_np["input_values"], np.ndarray)
    as_pt = fe([torch.from_numpy(clips[1.0]), torch.from_numpy(clips[3.0])], sampling_rate=16000, return_tensors="pt")
    np.testing.assert_allclose(as_np["input_values"], as_pt["input_values"].numpy())
    custom = ElasticASTFeatureExtractor(mean=-5.842545, std=3.88305, max_length=512, max_time_patches=64)
    custom.save_pretrained(tmp_path)
    loaded = ElasticASTFeatureExtractor.from_pretrained(tmp_path)
    assert (loaded.mean, loaded.std, loaded.max_length, loaded.max_time_patches) == (-5.842545, 3.88305, 512, 64)
    assert "mel_filters" not in (tmp_path / "preprocessor_config.json").read_text()
    np.testing.assert_array_equal(loaded(clips[7.5], sampling_rate=16000)["input_values"],
                                  custom(clips[7.5], sampling_rate=16000)["input_values"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fbank_on_gpu_matches_cpu(fe, clips):
    wave = torch.from_numpy(clips[7.5])
    gpu = fe(wave.cuda(), sampling_rate=16000, return_tensors="pt")
    assert gpu["input_values"].device.type == "cuda"
    cpu = fe(wave, sampling_rate=16000, return_tensors="pt")
    assert (gpu["input_values"].cpu() - cpu["input_values"]).abs().max() <= 1e-3


def test_segment_lengths_predict_the_extracted_segments(fe):
    rng = np.random.default_rng(3)
    for _ in range(40):
        samples = int(rng.integers(1, 16000 * 70))
        method = str(rng.choice(["frame_shift", "avg_pool"]))
        compression = float(rng.integers(1, 5)) if method == "avg_pool" else float(rng.choice([1.0, 1.2, 2.6, 4.0]))
        max_length = int(rng.choice([0, 300, 3072])) or None
        packing = bool(rng.integers(2))
        limit = int(rng.choice([256, 1024, 2048]))
        wave = np.zeros(samples, dtype=np.float32)
        out = fe(wave, sampling_rate=16000, compression=compression, compression_method=method, max_length=max_length,
                 packing=packing, max_tokens_per_row=limit, return_tensors="pt")
        ids = out["segment_ids"]
        got = sorted(int((ids[r] == s).sum()) for r in range(ids.shape[0]) for s in range(1, int(ids[r].max()) + 1))
        predicted = fe.segment_lengths(samples, compression, method, max_length, limit if packing else None)
        assert got == sorted(predicted), (samples, method, compression, max_length, packing, limit)


def test_float32_fbank_stays_within_tolerance_on_speech(speech_16k):
    fast = ElasticASTFeatureExtractor(fbank_dtype="float32")
    reference = normalise(fast, numpy_kaldi_reference(speech_16k))
    ours = fast.fbank([torch.from_numpy(speech_16k)], [1.0])[0]
    assert np.abs(normalise(fast, ours.numpy()) - reference).max() <= 2e-4
    with pytest.raises(ValueError, match="fbank_dtype"):
        ElasticASTFeatureExtractor(fbank_dtype="float16")
