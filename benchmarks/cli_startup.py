"""Start-up time of the `elasticast` console script: `elasticast --help` and `elasticast <cmd> --help` for every
command of the table, against `python -c "import elasticast"` (what the command line cost before it was lazy: every
sub-command imported, with torch and transformers), each the median of several fresh processes.

    python -m benchmarks.cli_startup --repeats 5 --out records/cli_startup.json

Goal (docs issue §5): every help under 1 s on this kind of machine. Wall times depend on the machine's load, so the
record holds the machine (GEMM rate, load average) of the same run.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from elasticast_cli import COMMANDS

from .machine import machine_record

GOAL_S = 1.0


def _median_seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def measure(repeats: int = 5) -> dict:
    """Median wall seconds per case. Runs what the console script's wrapper runs (pyproject's `elasticast =
    "elasticast_cli:main"`), so an older installed wrapper does not change the figure."""
    base = [sys.executable, "-c", "import sys; from elasticast_cli import main; sys.exit(main())"]
    cases = {"elasticast --help": base + ["--help"]}
    for name in dict.fromkeys(c.name for c in COMMANDS):
        cases[f"elasticast {name} --help"] = base + [name, "--help"]
    results = {label: _median_seconds(cmd, repeats) for label, cmd in cases.items()}
    results["python -c 'import elasticast' (reference)"] = _median_seconds(
        [sys.executable, "-c", "import elasticast"], repeats)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="records/cli_startup.json")
    args = parser.parse_args(argv)
    machine = machine_record()
    results = measure(args.repeats)
    rows = ["| command | median s | goal | met |", "|---|---|---|---|"]
    for label, seconds in results.items():
        reference = "reference" in label
        met = "" if reference else ("yes" if seconds < GOAL_S else "**no**")
        rows.append(f"| `{label}` | {seconds:.2f} | {'' if reference else '< 1 s'} | {met} |")
    record = {
        "title": "Command-line start-up",
        "command": f"python -m benchmarks.cli_startup --repeats {args.repeats} --out {args.out}",
        "date": machine["date"],
        "machine": machine,
        "repeats": args.repeats,
        "seconds": results,
        "table": "\n".join(rows),
        "notes": [f"Median of {args.repeats} fresh processes per command; load average "
                  f"{machine['load_average'][0]:.1f} at the start."],
    }
    Path(args.out).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(record["table"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
