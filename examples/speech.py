"""Offline speech synthesis with Debian's espeak-ng, for demos and tests (no network, no downloaded data)."""

import shutil
import subprocess
from pathlib import Path


def synthesize(text: str, path: str | Path, voice: str = "en", speed: int = 160, pitch: int = 50) -> Path:
    """Speaks `text` into a 16-bit mono .wav at espeak-ng's native 22.05 kHz and returns its path."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed: run `apt-get install -y espeak-ng` (scripts/setup.sh does).")
    path = Path(path)
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text],
        check=True,
        capture_output=True,
    )
    return path
