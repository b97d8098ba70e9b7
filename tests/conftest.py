import os
import tempfile

# Keep every Hugging Face cache and the inductor cache private to the test session (the machine is shared).
_CACHE = tempfile.mkdtemp(prefix="elasticast-tests-")
os.environ.setdefault("HF_HOME", os.path.join(_CACHE, "hf"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(_CACHE, "inductor"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile  # noqa: E402
import soxr  # noqa: E402
import torch  # noqa: E402

from elasticast import ElasticASTConfig  # noqa: E402
from examples.speech import synthesize  # noqa: E402


TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


@pytest.fixture
def tiny_config():
    def make(**overrides):
        return ElasticASTConfig(**{**TINY, "num_labels": 5, **overrides})

    return make


@pytest.fixture(scope="session")
def speech_16k(tmp_path_factory) -> np.ndarray:
    """About 3 s of real synthetic speech (espeak-ng), float32 at 16 kHz."""
    path = synthesize(
        "The quick brown fox jumps over the lazy dog, then sits down by the river.",
        tmp_path_factory.mktemp("speech") / "speech.wav",
    )
    audio, rate = soundfile.read(path, dtype="float32")
    return soxr.resample(audio, rate, 16000).astype(np.float32)


@pytest.fixture(scope="session")
def clips(speech_16k) -> dict[str, np.ndarray]:
    """Clips of many lengths made by tiling real speech plus a little noise (seeded)."""
    rng = np.random.default_rng(0)

    def clip(seconds: float) -> np.ndarray:
        n = max(1, int(seconds * 16000))
        wave = np.resize(speech_16k, n) + 0.003 * rng.standard_normal(n)
        return wave.astype(np.float32)

    return {s: clip(s) for s in (0.2, 0.4, 1.0, 3.0, 7.5, 27.0, 60.0)}


@pytest.fixture(scope="module")
def one_thread():
    """torch at one thread for a module: the same floats as subprocesses started with OMP_NUM_THREADS=1, and no
    OpenMP spinning on a machine shared by several jobs (small ops then run tens of times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
