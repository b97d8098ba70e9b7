"""The README's long-recording example: a generated multi-speaker recording, classified with a timeline and plotted.

    python scripts/timeline_example.py runs/demo/elasticast runs/timeline

Builds `recording.wav` (16 kHz): turns of the demo's espeak-ng speakers (`examples.demo.SPEAKERS`), each reading a
few generated sentences, with short pauses, and `turns.json` (who speaks when: the truth), then runs
`elasticast classify MODEL recording.wav --timeline --window 3 --hop 1.5 --plot OUT` and prints the segments beside
the true turns.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile
import soxr

from elasticast.cli import main as cli
from examples.demo import SPEAKERS, _sentence
from examples.speech import synthesize


def build(out: Path, turns: int, seed: int) -> tuple[Path, list[dict]]:
    rng = np.random.default_rng(seed)
    names = list(SPEAKERS)
    pieces, truth, clock, previous = [], [], 0.0, None
    for index in range(turns):
        name = rng.choice([n for n in names if n != previous])
        voice, pitch, speed = SPEAKERS[name]
        text = " ".join(_sentence(rng) for _ in range(int(rng.integers(2, 4))))
        path = synthesize(text, out / f"turn{index}.wav", voice=voice, speed=speed, pitch=pitch)
        audio, rate = soundfile.read(path, dtype="float32")
        path.unlink()
        wave = soxr.resample(audio, rate, 16000).astype(np.float32)
        pause = np.zeros(int(rng.uniform(0.3, 1.0) * 16000), np.float32)
        truth.append({"speaker": str(name), "start": round(clock, 2), "end": round(clock + len(wave) / 16000, 2)})
        pieces += [wave, pause]
        clock += (len(wave) + len(pause)) / 16000
        previous = name
    recording = out / "recording.wav"
    soundfile.write(recording, np.concatenate(pieces), 16000, subtype="PCM_16")
    (out / "turns.json").write_text(json.dumps(truth, indent=1) + "\n")
    return recording, truth


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a speaker model, e.g. the `make demo` model runs/demo/elasticast")
    parser.add_argument("out", help="output folder")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recording, truth = build(out, args.turns, args.seed)
    results = out / "results.jsonl"
    results.unlink(missing_ok=True)
    cli(["classify", args.model, str(recording), "--output", str(results), "--timeline", "--window", "3", "--hop",
         "1.5", "--top-k", "3", "--plot", str(out)])
    result = json.loads(results.read_text().splitlines()[0])
    print("true turns:", ", ".join(f"{t['speaker']} {t['start']:.1f}-{t['end']:.1f}" for t in truth))
    print("segments:  ", ", ".join(f"{s['label']} {s['start']:.1f}-{s['end']:.1f}" for s in result["segments"]))


if __name__ == "__main__":
    main()
