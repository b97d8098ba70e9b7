"""ElasticAST feature extractor: waveform → Kaldi log-mel fbank → 16×16 patches → rows of segments.

Data contract (what `ElasticASTFeatureExtractor.__call__` returns and `ElasticASTModel.forward` takes), for R rows of
L tokens each, P = patch_size (16):

- `input_values` float `[R, L, P*P]`: one flattened spectrogram patch per token, flattened (frequency, time) inside
  the patch; a clip's patches come frequency-major (all time patches of mel band 0, then band 1, ...), as the
  official ElasticAST code.
- `segment_ids` int64 `[R, L]`: 1..n numbers the segments of a row, 0 marks padding. A segment is a contiguous run
  of tokens that attend only to each other and are pooled into one vector: one clip, or one window of a clip longer
  than the time-position table.
- `freq_ids`, `time_ids` int64 `[R, L]`: frequency and time patch index of each token (time restarts at 0 in every
  window; 0 on padding).
- `clip_ids` int64 `[R, L]` (packed mode only): 1 + the input index of the clip the token belongs to, 0 on padding.
  Without it a row is one clip, so the model's outputs follow the rows. This is what keeps the transformers
  pipeline working: it feeds one clip at a time and pads every key along dim 1 (integer keys with 0).

Unpacked mode (default) gives one row per clip; packed mode (`packing=True`) places the segments of all clips into
as few rows of at most `max_tokens_per_row` tokens as a best-fit-decreasing packer finds, and the model restores the
input order from `clip_ids`.

Front-end (the paper's and the official recipe, `torchaudio.compliance.kaldi.fbank` settings): waveform mean removed,
25 ms frames every 10·C ms (C = `compression`), per-frame DC removal, pre-emphasis 0.97, periodic=False Hann window,
512-point FFT, power spectrum, 128 triangular Kaldi mel filters from 20 Hz to Nyquist, natural log floored at float32
epsilon, then `(x - mean) / (2 * std)`. Frames are counted as Kaldi does with `snip_edges=True`.

Lengths: the frame count is cut to `max_length` only when longer (never padded), then floored to a multiple of P (up
to 15 trailing frames dropped, as the official code). A clip shorter than one patch (under 16 frames ≈ 0.175 s,
including clips under one 25 ms frame) is padded with `padding_value` (the normalised dataset mean) up to one patch
column so that it still yields tokens.
"""

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import logging


logger = logging.get_logger(__name__)

# Lowest input sampling rate accepted: below it a clip is almost surely a mistake (a rate in kHz, a damaged header),
# and resampling it would blow it up (1 Hz → 16 kHz is 16000 times the samples).
MIN_SAMPLING_RATE = 1000


def check_sampling_rate(sampling_rate) -> int:
    """`sampling_rate` as an int, or ValueError/TypeError saying what is wrong: it must be a whole number of Hz
    ≥ `MIN_SAMPLING_RATE` (an integral float such as 16000.0 is accepted)."""
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, float, np.integer, np.floating)):
        raise TypeError(f"sampling_rate must be a whole number of Hz such as 16000, got {sampling_rate!r} "
                        f"({type(sampling_rate).__name__}); pass e.g. sampling_rate=int(rate).")
    if not math.isfinite(sampling_rate) or sampling_rate != int(sampling_rate):
        raise ValueError(f"sampling_rate must be a whole number of Hz, got {sampling_rate!r}.")
    if sampling_rate < MIN_SAMPLING_RATE:
        raise ValueError(f"sampling_rate {sampling_rate} Hz is below {MIN_SAMPLING_RATE} Hz: it is probably wrong (kHz "
                         "instead of Hz?); pass the audio's real rate in Hz.")
    return int(sampling_rate)

_FLOAT32_MAX = torch.finfo(torch.float32).max  # larger float64 samples become Inf in float32
_LOG_FLOOR = float(np.finfo(np.float32).eps)  # Kaldi's log floor
_INT_SCALE = {np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31, np.dtype(np.int8): 2.0**7}


def pack_segments(lengths: Sequence[int], max_tokens_per_row: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing: item indices grouped into rows whose lengths sum to ≤ `max_tokens_per_row`.

    Items are placed longest first, each into the open row it fills most tightly; a new row is opened only when no
    row has room. Rows come back in the order they were opened, items inside a row in input order.
    """
    if any(n > max_tokens_per_row for n in lengths):
        raise ValueError(f"A segment of {max(lengths)} tokens does not fit max_tokens_per_row={max_tokens_per_row}.")
    rows: list[list[int]] = []
    free: list[int] = []
    for item in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        fitting = [r for r, space in enumerate(free) if space >= lengths[item]]
        if fitting:
            row = min(fitting, key=free.__getitem__)
        else:
            rows.append([])
            free.append(max_tokens_per_row)
            row = len(rows) - 1
        rows[row].append(item)
        free[row] -= lengths[item]
    return [sorted(row) for row in rows]


class ElasticASTFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Turns raw mono waveforms of any length into ElasticAST patch tokens (see the module docstring for the contract).

    Args:
        sampling_rate: Rate the model expects. Audio at another rate is resampled with soxr (pass `sampling_rate`).
        num_mel_bins: Mel filters (128 in the paper).
        frame_length_ms, frame_shift_ms: Analysis window and hop at compression 1 (25 ms / 10 ms).
        preemphasis: Pre-emphasis coefficient (0.97, Kaldi).
        mean, std: Dataset statistics of the log-mel values, applied as `(x - mean) / (2 * std)`. The defaults are
            AudioSet's, the same as transformers' `ASTFeatureExtractor`; the official VoxCeleb recipe uses
            -5.842545 / 3.88305.
        do_normalize: Apply the normalisation above.
        patch_size: Patch side P (16).
        max_time_patches: Longest segment in time patches; longer clips are split into near-equal windows, each a
            segment of its own with time positions restarting at 0. Keep it equal to the model's time table.
        max_length: Optional cap in frames, applied after compression; clips are cut only when longer.
        padding_value: Value of padding tokens and of the frames added to clips shorter than one patch.
        fbank_dtype: `"float64"`, `"float32"` or None (float64 on CPU, float32 on accelerators); see `fbank`.
        compression, compression_method: Default temporal compression C and method of `__call__` (1.0,
            "frame_shift"), saved with the extractor: `ElasticASTFeatureExtractor.from_pretrained(path, compression=2)`
            passed to `pipeline("audio-classification", model=path, feature_extractor=...)` runs the model at C = 2
            (about half the tokens).
    """

    model_input_names = ["input_values", "segment_ids", "freq_ids", "time_ids", "clip_ids"]

    def __init__(
        self,
        sampling_rate: int = 16000,
        num_mel_bins: int = 128,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        preemphasis: float = 0.97,
        mean: float = -4.2677393,
        std: float = 4.5689974,
        do_normalize: bool = True,
        patch_size: int = 16,
        max_time_patches: int = 192,
        max_length: int | None = None,
        padding_value: float = 0.0,
        fbank_dtype: str | None = None,
        compression: float = 1.0,
        compression_method: str = "frame_shift",
        **kwargs,
    ):
        kwargs.pop("feature_size", None)
        super().__init__(
            feature_size=patch_size * patch_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs
        )
        if num_mel_bins % patch_size:
            raise ValueError(f"num_mel_bins ({num_mel_bins}) must be a multiple of patch_size ({patch_size}).")
        self.num_mel_bins = num_mel_bins
        self.frame_length_ms = frame_length_ms
        self.frame_shift_ms = frame_shift_ms
        self.preemphasis = preemphasis
        self.mean = mean
        self.std = std
        self.do_normalize = do_normalize
        self.patch_size = patch_size
        self.max_time_patches = max_time_patches
        self.max_length = max_length
        if fbank_dtype not in (None, "float32", "float64"):
            raise ValueError(f"fbank_dtype must be 'float32', 'float64' or None, got {fbank_dtype!r}.")
        self.fbank_dtype = fbank_dtype
        self.check_compression(compression, compression_method)
        self.compression = compression
        self.compression_method = compression_method
        self.frame_length = int(round(sampling_rate * frame_length_ms / 1000))
        self.fft_length = 1 << (self.frame_length - 1).bit_length()  # Kaldi round_to_power_of_two
        with warnings.catch_warnings():
            # With 128 bins over a 512-point FFT the lowest Kaldi filters are empty, exactly as in Kaldi itself.
            warnings.simplefilter("ignore", UserWarning)
            self.mel_filters = mel_filter_bank(  # [fft_length // 2 + 1, num_mel_bins], float64
                num_frequency_bins=self.fft_length // 2 + 1,
                num_mel_filters=num_mel_bins,
                min_frequency=20.0,
                max_frequency=sampling_rate / 2,
                sampling_rate=sampling_rate,
                norm=None,
                mel_scale="kaldi",
                triangularize_in_mel_space=True,
            )

    # ---------------------------------------------------------------------------------------------------- inputs
    def _to_waveforms(self, raw_speech, sampling_rate: int | None, device) -> list[torch.Tensor]:
        """Checks and converts the input to a list of 1-D float tensors at `self.sampling_rate`."""
        if raw_speech is None or isinstance(raw_speech, (str, bytes, dict)):
            raise TypeError(
                f"Got {type(raw_speech).__name__} instead of audio: pass a 1-D waveform (numpy array, torch tensor or "
                "list of floats) or a list of them; decode files first (or use `ElasticASTClassifier`, which takes "
                "paths)."
            )
        if isinstance(raw_speech, (np.ndarray, torch.Tensor)) and raw_speech.ndim != 1:
            raise ValueError(
                f"Got an array of shape {tuple(raw_speech.shape)}; each clip must be a 1-D mono waveform. Pass a batch "
                "as a list of 1-D arrays, and down-mix multi-channel audio first (e.g. `audio.mean(axis=0)`)."
            )
        clips = [raw_speech] if isinstance(raw_speech, (np.ndarray, torch.Tensor)) else list(raw_speech)
        if clips and not isinstance(clips[0], (np.ndarray, torch.Tensor, list, tuple)):
            clips = [raw_speech]  # a single clip given as a list of floats
        if not clips:
            raise ValueError("Got an empty batch: pass at least one waveform.")
        if sampling_rate is None:
            logger.warning_once(
                f"No `sampling_rate` passed to {type(self).__name__}; assuming {self.sampling_rate} Hz. Pass it to "
                "have audio at other rates resampled instead of silently misread."
            )
            sampling_rate = self.sampling_rate
        sampling_rate = check_sampling_rate(sampling_rate)
        waveforms = []
        for index, clip in enumerate(clips):
            wave = clip if isinstance(clip, torch.Tensor) else torch.from_numpy(self._as_float_array(clip, index))
            if wave.ndim != 1:
                raise ValueError(
                    f"Clip {index} has shape {tuple(wave.shape)}; each clip must be a 1-D mono waveform. Down-mix "
                    "multi-channel audio first (e.g. `audio.mean(axis=0)`)."
                )
            if not wave.is_floating_point():
                wave = torch.from_numpy(self._as_float_array(wave.cpu().numpy(), index)).to(wave.device)
            if wave.numel() == 0:
                raise ValueError(f"Clip {index} is empty (0 samples); drop it or pass audio.")
            low, high = torch.aminmax(wave)  # one pass: NaN makes both NaN, and every comparison with NaN is False
            if not (bool(low >= -_FLOAT32_MAX) and bool(high <= _FLOAT32_MAX)):
                raise ValueError(f"Clip {index} contains NaN or Inf samples (or float64 samples beyond float32's range, "
                                 "which become Inf); clean or drop it before extraction.")
            if sampling_rate != self.sampling_rate:
                wave = self._resample(wave, sampling_rate)
            waveforms.append(wave.to(device) if device is not None else wave)
        return waveforms

    @staticmethod
    def _as_float_array(clip, index: int) -> np.ndarray:
        """Float waveform from a list or array; integer PCM is scaled to [-1, 1) (int8/16/32, and uint8 around 128)."""
        array = np.asarray(clip)
        if array.dtype in _INT_SCALE:
            return (array / _INT_SCALE[array.dtype]).astype(np.float32)
        if array.dtype == np.uint8:
            return ((array.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(
                f"Clip {index} has dtype {array.dtype}; expected float samples or int8/int16/int32/uint8 PCM."
            )
        array = array if array.dtype in (np.float32, np.float64) else array.astype(np.float32)
        return np.require(array, requirements="W")  # torch.from_numpy needs a writable buffer

    def _resample(self, wave: torch.Tensor, sampling_rate: int) -> torch.Tensor:
        # soxr: a maintained, high-quality resampler (the one transformers' audio extras use); runs on CPU numpy.
        import soxr

        resampled = soxr.resample(wave.detach().cpu().numpy(), sampling_rate, self.sampling_rate)
        return torch.from_numpy(np.ascontiguousarray(resampled)).to(wave.device)

    # --------------------------------------------------------------------------------------------------- lengths
    @staticmethod
    def check_compression(compression: float, compression_method: str = "frame_shift") -> None:
        """Raises a `ValueError` that says the fix unless `compression` suits `compression_method`.

        Args:
            compression: Temporal compression C: any real C ≥ 1 for `"frame_shift"`, an integer C ≥ 1 for
                `"avg_pool"`.
            compression_method: `"frame_shift"` or `"avg_pool"`.
        """
        if compression_method not in ("frame_shift", "avg_pool"):
            raise ValueError(f"compression_method must be 'frame_shift' or 'avg_pool', got {compression_method!r}.")
        if not compression >= 1 or (compression_method == "avg_pool" and compression != int(compression)):
            raise ValueError(f"Invalid compression {compression} ({compression_method!r}): use C ≥ 1 with "
                             "'frame_shift' (frame shift 10·C ms), or an integer C ≥ 1 with 'avg_pool'.")

    def seconds_per_patch(self, compression: float = 1.0, compression_method: str = "frame_shift") -> float:
        """Seconds of audio one time patch (`patch_size` frames) covers at compression C (0.16 s at C = 1)."""
        if compression_method == "avg_pool":
            return self.patch_size * self.frame_shift() * compression / self.sampling_rate
        return self.patch_size * self.frame_shift(compression) / self.sampling_rate

    def frame_shift(self, compression: float = 1.0) -> int:
        """Hop in samples at compression C (rounded, so that e.g. C = 1.2 gives exactly 192 samples at 16 kHz)."""
        return int(round(self.sampling_rate * self.frame_shift_ms * compression / 1000))

    def raw_frames(self, num_samples: int, compression: float = 1.0, compression_method: str = "frame_shift") -> int:
        """Frames of a clip's whole spectrogram (Kaldi framing with snip_edges, after compression)."""
        shift = self.frame_shift(compression if compression_method == "frame_shift" else 1.0)
        frames = 1 + (num_samples - self.frame_length) // shift if num_samples >= self.frame_length else 0
        return frames // int(compression) if compression_method == "avg_pool" else frames

    def num_samples(self, num_frames: int, compression: float = 1.0) -> int:
        """Fewest samples that give `num_frames` ≥ 1 Kaldi frames at compression C (frame shift): `raw_frames`'s
        inverse, e.g. to cut a waveform to its first `num_frames` frames."""
        return self.frame_length + (max(num_frames, 1) - 1) * self.frame_shift(compression)

    def num_frames(
        self, num_samples: int, compression: float = 1.0, compression_method: str = "frame_shift",
        max_length: int | None = None,
    ) -> int:
        """Frames the model gets from a clip of `num_samples`: `raw_frames`, cut to `max_length`, floored to whole
        patches (at least one). Equals what `__call__` produces."""
        frames = self.raw_frames(num_samples, compression, compression_method)
        if max_length is not None:
            frames = min(frames, max_length)
        return max(frames // self.patch_size, 1) * self.patch_size

    def max_window_patches(self, max_tokens_per_row: int | None = None) -> int:
        """Widest window in time patches: the time table, narrowed so that one window fits a packed row."""
        if max_tokens_per_row is None:
            return self.max_time_patches
        widest = min(self.max_time_patches, max_tokens_per_row // (self.num_mel_bins // self.patch_size))
        if widest < 1:
            raise ValueError(f"max_tokens_per_row={max_tokens_per_row} is smaller than one patch column.")
        return widest

    @staticmethod
    def window_bounds(num_time_patches: int, max_window_patches: int) -> list[int]:
        """Start/end time patches of the near-equal windows that split a clip: `[0, ..., num_time_patches]`."""
        num_windows = math.ceil(num_time_patches / max_window_patches)
        return [round(i * num_time_patches / num_windows) for i in range(num_windows + 1)]

    def segment_lengths(
        self, num_samples: int, compression: float = 1.0, compression_method: str = "frame_shift",
        max_length: int | None = None, max_tokens_per_row: int | None = None,
    ) -> list[int]:
        """Tokens of each segment (window) a clip of `num_samples` becomes — without computing any features.

        Pass `max_tokens_per_row` for packed mode. Training batchers and token-usage statistics use this.
        """
        n_time = self.num_frames(num_samples, compression, compression_method, max_length) // self.patch_size
        bounds = self.window_bounds(n_time, self.max_window_patches(max_tokens_per_row))
        n_freq = self.num_mel_bins // self.patch_size
        return [n_freq * (end - start) for start, end in zip(bounds[:-1], bounds[1:])]

    # ---------------------------------------------------------------------------------------------------- fbank
    # Frames per FFT call: bounds the fbank's working memory (frames, spectrum and power of one block, about 30 MB in
    # float64) whatever the clip's length, at no measurable cost in speed.
    fbank_block_frames = 4096

    def _fbank_dtype(self, device: torch.device) -> torch.dtype:
        if self.fbank_dtype is not None:
            return getattr(torch, self.fbank_dtype)
        return torch.float64 if device.type == "cpu" else torch.float32

    def _frames(self, wave: torch.Tensor, compression: float) -> torch.Tensor:
        """Kaldi frames of a waveform, snip_edges (only whole frames): a view `[T, frame_length]`."""
        if wave.numel() < self.frame_length:
            return wave.new_zeros((0, self.frame_length))
        return wave.unfold(0, self.frame_length, self.frame_shift(compression))

    def _log_mel(self, frames: torch.Tensor) -> torch.Tensor:
        """`[T, frame_length]` raw frames → `[T, num_mel_bins]` float32 log-mel (DC removal, pre-emphasis, window,
        power spectrum, mel, log), in blocks of `fbank_block_frames`."""
        if torch.compiler.is_exporting():
            # torch.export (ONNX export of this code, `elasticast export-onnx`) cannot trace a loop over a dynamic
            # number of frames: one block, which the exported graph's runtime computes as a whole.
            return self._log_mel_block(frames).to(torch.float32)
        out = torch.empty((frames.shape[0], self.num_mel_bins), dtype=torch.float32, device=frames.device)
        for start in range(0, frames.shape[0], self.fbank_block_frames):
            block = frames[start : start + self.fbank_block_frames]
            out[start : start + len(block)] = self._log_mel_block(block)
        return out

    def _log_mel_block(self, block: torch.Tensor) -> torch.Tensor:
        """`_log_mel` of one block of frames `[B, frame_length]` → `[B, num_mel_bins]` in the frames' dtype."""
        dtype, (count, length) = block.dtype, block.shape
        window = torch.hann_window(self.frame_length, periodic=False, dtype=dtype, device=block.device)
        # The FFT needs float64 on the CPU (a float32 FFT's noise floor shows between a tone's harmonics, up to 5e-4
        # after normalisation); nothing after it does: the power and the mel product work on non-negative values
        # with non-negative weights, so float32 keeps each band's relative error near 1e-7 (≤ 3e-7 after
        # normalisation, tested against transformers' float64 numpy path) at half the cost of float64.
        after_fft = torch.float32 if dtype == torch.float64 and not torch.compiler.is_exporting() else dtype
        filters = torch.as_tensor(self.mel_filters, dtype=after_fft, device=block.device)
        # DC removal, pre-emphasis and window written straight into the FFT's zero-padded input (no padding copy):
        # with the frame mean m removed first, y[n] = x[n] - a·x[n-1] - (1 - a)·m for n ≥ 1 and
        # y[0] = (1 - a)·(x[0] - m).
        a = self.preemphasis
        padded = block.new_empty((count, self.fft_length))
        padded[:, length:] = 0
        frame = padded[:, :length]
        torch.sub(block[:, 1:], block[:, :-1], alpha=a, out=frame[:, 1:])
        torch.mul(block[:, :1], 1 - a, out=frame[:, :1])
        frame.sub_((1 - a) * block.mean(dim=-1, keepdim=True)).mul_(window)
        spectrum = torch.fft.rfft(padded).to(after_fft.to_complex())  # [B, fft_length // 2 + 1]
        power = spectrum.real.square() + spectrum.imag.square()
        return (power @ filters).clamp_min(_LOG_FLOOR).log()

    def fbank(self, waveforms: list[torch.Tensor], compression: Sequence[float]) -> list[torch.Tensor]:
        """Kaldi log-mel fbank of each whole waveform → list of `[T_i, num_mel_bins]` float32.

        The frames of all clips go through the FFT together, `fbank_block_frames` at a time, so a long clip never
        has its whole FFT in memory. Precision: `fbank_dtype`, by default float64 on CPU (equal to transformers'
        float64 numpy path within float32 rounding) and float32 on accelerators. float32 on CPU is about 3x faster
        and what torchaudio's Kaldi code computes; measured against the float64 path after normalisation: speech
        ≤ 4e-5, noise ≤ 1.1e-4, chords ≤ 1.3e-4, but pure tones up to 5e-4 (the float32 FFT noise floor between
        harmonics).
        """
        dtype = self._fbank_dtype(waveforms[0].device)
        views = []
        for wave, c in zip(waveforms, compression):
            wave = wave.to(dtype)
            # Kaldi's whole-waveform mean removal; the per-frame DC removal in `_log_mel` makes it a no-op beyond
            # float rounding, which is why `fbank_frames` (streaming) can skip it.
            views.append(self._frames(wave - wave.mean(), c))
        counts = [len(view) for view in views]
        if len(views) == 1 or sum(counts) > self.fbank_block_frames:
            # Long input: one clip at a time, never a concatenated copy of all frames.
            return [self._log_mel(view) for view in views]
        return list(self._log_mel(torch.cat(views)).split(counts))  # short clips: one FFT call for the batch

    def fbank_frames(self, samples: torch.Tensor, compression: float = 1.0) -> torch.Tensor:
        """Log-mel of every whole frame of a piece of a recording: `[n]` samples → `[raw_frames(n, C), num_mel_bins]`.

        For streaming: the piece must start on a frame boundary of the recording (a multiple of
        `frame_shift(compression)` samples); feed the next piece from the first frame not yet computed, i.e. keep
        the last `frame_length - frame_shift` samples (or more) as overlap. The frames equal `fbank`'s frames of the
        whole recording (float rounding of the skipped whole-clip mean aside, ≤ 1e-6 after normalisation).
        """
        return self._log_mel(self._frames(samples.to(self._fbank_dtype(samples.device)), compression))

    def normalize(self, log_mel):
        """The dataset normalisation `(log_mel - mean) / (2 * std)` (AST's), for a tensor or array of any shape."""
        return (log_mel - self.mean) / (2 * self.std)

    @staticmethod
    def average_pool(log_mel: torch.Tensor, factor: int) -> torch.Tensor:
        """Averages every `factor` consecutive frames: `[T, F]` → `[T // factor, F]` (a trailing remainder dropped)."""
        if factor == 1:
            return log_mel
        frames = log_mel.shape[0] // factor
        return log_mel[: frames * factor].reshape(frames, factor, log_mel.shape[1]).mean(1)

    def spectrogram(
        self, log_mel: torch.Tensor, compression: float = 1.0, method: str = "frame_shift", max_length: int | None = None
    ) -> torch.Tensor:
        """Compress (pooling), cut, floor to whole patches, normalise: `[T, F]` log-mel → `[T', F]`, T' % P == 0
        (a clip shorter than one patch padded to one). Streaming applies it to each window's frames."""
        if method == "avg_pool":
            log_mel = self.average_pool(log_mel, int(compression))
        if max_length is not None:
            log_mel = log_mel[:max_length]
        if self.do_normalize:
            log_mel = self.normalize(log_mel)
        p = self.patch_size
        if log_mel.shape[0] < p:
            pad = log_mel.new_full((p - log_mel.shape[0], log_mel.shape[1]), self.padding_value)
            return torch.cat([log_mel, pad])
        return log_mel[: log_mel.shape[0] // p * p]

    # --------------------------------------------------------------------------------------------------- patches
    def window_tokens(self, spectrogram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One window (segment) of a spectrogram `[T, F]`, T a multiple of P → `(patches [n, P*P], freq_ids [n],
        time_ids [n])`, n = (F/P)·(T/P) tokens, frequency-major, time positions starting at 0."""
        p = self.patch_size
        n_freq, n_time = spectrogram.shape[1] // p, spectrogram.shape[0] // p
        # [T, F] → [F/P, P, T/P, P] (freq patch, freq in patch, time patch, time in patch) → [F/P, T/P, P*P]
        patches = spectrogram.T.reshape(n_freq, p, n_time, p).permute(0, 2, 1, 3).reshape(-1, p * p)
        freq_ids = torch.arange(n_freq, device=spectrogram.device).repeat_interleave(n_time)
        time_ids = torch.arange(n_time, device=spectrogram.device).repeat(n_freq)
        return patches, freq_ids, time_ids

    def _segments(self, spectrogram: torch.Tensor, max_window_patches: int):
        """`[T, F]` → list of windows `(patches [n, P*P], freq_ids [n], time_ids [n])`, each ≤ max_window_patches wide."""
        p = self.patch_size
        bounds = self.window_bounds(spectrogram.shape[0] // p, max_window_patches)
        return [self.window_tokens(spectrogram[start * p : end * p]) for start, end in zip(bounds[:-1], bounds[1:])]

    def __call__(
        self,
        raw_speech,
        sampling_rate: int | None = None,
        compression: float | Sequence[float] | None = None,
        compression_method: str | None = None,
        max_length: int | None = None,
        packing: bool = False,
        max_tokens_per_row: int = 2048,
        return_tensors: str | None = None,
        device: str | torch.device | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            raw_speech: One waveform or a list of them (1-D numpy arrays, torch tensors — on any device — or lists of
                floats). Integer PCM is scaled to [-1, 1).
            sampling_rate: Rate of `raw_speech`; other rates than `self.sampling_rate` are resampled with soxr.
            compression: Temporal compression C, one value or one per clip (default: `self.compression`).
                `"frame_shift"` multiplies the 10 ms frame shift by C (any real C ≥ 1, e.g. 1.2); `"avg_pool"`
                average-pools C frames (integer C). `compression_method` defaults to `self.compression_method`.
            max_length: Cap in frames (after compression), overriding `self.max_length`; cut only when longer.
            packing: Pack all segments into rows of ≤ `max_tokens_per_row` tokens (adds `clip_ids`).
            return_tensors: `"pt"`, `"np"` or None (numpy).
            device: Where to compute the fbank (defaults to where torch inputs live, else CPU).
        """
        compression = self.compression if compression is None else compression
        compression_method = compression_method or self.compression_method
        if compression_method not in ("frame_shift", "avg_pool"):
            raise ValueError(f"compression_method must be 'frame_shift' or 'avg_pool', got {compression_method!r}.")
        waveforms = self._to_waveforms(raw_speech, sampling_rate, device)
        compressions = [float(compression)] * len(waveforms) if np.isscalar(compression) else list(compression)
        if len(compressions) != len(waveforms):
            raise ValueError(f"Got {len(compressions)} compression values for {len(waveforms)} clips.")
        for c in compressions:
            self.check_compression(c, compression_method)
        max_length = max_length if max_length is not None else self.max_length
        max_window_patches = self.max_window_patches(max_tokens_per_row if packing else None)

        if compression_method == "frame_shift":
            log_mels = self.fbank(waveforms, compressions)
        else:
            log_mels = self.fbank(waveforms, [1.0] * len(waveforms))
        clips = [
            self._segments(self.spectrogram(log_mel, c, compression_method, max_length), max_window_patches)
            for log_mel, c in zip(log_mels, compressions)
        ]

        features = self.layout(clips, packing, max_tokens_per_row)
        if return_tensors is None:
            return_tensors = "np"
        if return_tensors == "np":
            features = {k: v.cpu().numpy() for k, v in features.items()}
        return BatchFeature(features, tensor_type=return_tensors)

    def layout(self, clips, packing: bool, max_tokens_per_row: int = 2048) -> dict[str, torch.Tensor]:
        """Lays out clips, each a list of windows `(patches, freq_ids, time_ids)` as `window_tokens` returns, as the
        model's input tensors: one row per clip, or (`packing`) best-fit packed rows with `clip_ids`."""
        segments = [(clip_index, *window) for clip_index, windows in enumerate(clips) for window in windows]
        if packing:
            rows = pack_segments([len(s[1]) for s in segments], max_tokens_per_row)
        else:
            rows, start = [], 0
            for windows in clips:
                rows.append(list(range(start, start + len(windows))))
                start += len(windows)
        return self._rows([[segments[i] for i in row] for row in rows], with_clip_ids=packing)

    def _rows(self, rows, with_clip_ids: bool) -> dict[str, torch.Tensor]:
        """Lays out rows of `(clip_index, patches, freq_ids, time_ids)` segments as right-padded tensors."""
        length = max(sum(len(s[1]) for s in row) for row in rows)
        reference = rows[0][0][1]
        input_values = reference.new_empty((len(rows), length, reference.shape[-1]))  # padding filled per row below
        ids = {
            key: torch.zeros((len(rows), length), dtype=torch.long, device=reference.device)
            for key in ("segment_ids", "freq_ids", "time_ids", "clip_ids")
        }
        for r, row in enumerate(rows):
            start = 0
            for segment_number, (clip_index, patches, freq_ids, time_ids) in enumerate(row, start=1):
                end = start + len(patches)
                input_values[r, start:end] = patches
                ids["segment_ids"][r, start:end] = segment_number
                ids["freq_ids"][r, start:end] = freq_ids
                ids["time_ids"][r, start:end] = time_ids
                ids["clip_ids"][r, start:end] = clip_index + 1
                start = end
            input_values[r, start:] = self.padding_value
        if not with_clip_ids:
            del ids["clip_ids"]
        return {"input_values": input_values, **ids}


__all__ = ["ElasticASTFeatureExtractor", "pack_segments"]
