"""The benchmark and reproduction pages are generated from the records: the committed pages equal a fresh
generation, every record renders, and a record in the generic shape of HELPERS.md renders without changes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import pages

ROOT = Path(__file__).resolve().parent.parent


def test_committed_pages_equal_a_fresh_generation():
    stale = pages.differences()
    assert not stale, f"docs/benchmarks is out of date for {stale}: run `python -m benchmarks.pages`"


def test_check_command_passes_on_the_committed_pages():
    assert subprocess.run([sys.executable, "-m", "benchmarks.pages", "--check"], cwd=ROOT).returncode == 0


def test_every_record_has_its_page_with_command_date_machine_and_table():
    for path in sorted(pages.RECORDS.glob("*.json")):
        record = json.loads(path.read_text())
        page = (pages.PAGES / f"{path.stem}.md").read_text()
        assert record["command"] in page and record["date"] in page and "GEMM" in page
        assert pages._table(record["table"]) in page
        for figure in record.get("figures", []):
            assert f"figures/{figure}" in page and (pages.PAGES / "figures" / figure).is_file()
        assert f"({path.stem}.md)" in (pages.PAGES / "index.md").read_text()


def test_demo_pages_hold_the_demo_records_tables():
    for name in ("demo_length", "demo_resolution"):
        record = json.loads((pages.RECORDS / f"{name}.json").read_text())
        assert record["command"].startswith(("elasticast demo", "python -m examples.demo"))
        assert record["machine"]["gemm_gflops"] > 0 and record["wall_seconds"] > 0
        assert record["table"] in (pages.PAGES / f"{name}.md").read_text()


def test_a_new_record_in_the_generic_shape_renders(tmp_path):
    from benchmarks.machine import cpu_info

    records = tmp_path / "records"
    records.mkdir()
    (records / "plot.png").write_bytes(b"\x89PNG fake")
    machine = {"cpus": 2, "threads": 1, "gemm_n": 2048, "gemm_gflops": 95.5, "load_average": [1.5, 1.0, 0.5],
               "torch": "2.13.0+cpu", "transformers": "5.25.0", "cpu": cpu_info(), "packages": {"numpy": "2.3.0"},
               "date": "2026-12-06T05:00:00+00:00"}
    (records / "new_thing.json").write_text(json.dumps({
        "title": "A new measurement", "command": "python -m benchmarks.new_thing --out records/new_thing.json",
        "date": machine["date"], "machine": machine, "table": "| a | b |\n|---|---|\n| 1 | 2 |",
        "figures": ["plot.png"], "notes": ["Goal met."]}))
    pages.generate(tmp_path / "out", records)
    page = (tmp_path / "out" / "new_thing.md").read_text()
    for text in ("# A new measurement", "python -m benchmarks.new_thing", "96 GFLOP/s", "1.5", "| 1 | 2 |",
                 "figures/plot.png", "- Goal met.", "numpy 2.3.0"):
        assert text in page, text
    assert (tmp_path / "out" / "figures" / "plot.png").is_file()


def test_a_record_without_its_fields_gets_an_error_that_says_what_to_add(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"command": "x", "date": "d", "table": "t"}))
    with pytest.raises(ValueError, match="lacks title"):
        pages.generate(tmp_path / "out", tmp_path)
