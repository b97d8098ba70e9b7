"""The documentation site builds with `mkdocs build --strict`, and the code blocks of Getting started and the guides
run, in page order, in a working folder holding the fixtures of `doc_fixtures.py`.

The runner is our own (about 60 lines) rather than pytest-examples or mktestdocs: pytest-examples runs Python only,
and mktestdocs runs each block alone; the docs need Python blocks of one page to share a namespace, bash blocks to
run with `bash -e` beside them in the same folder, and blocks marked `<!-- no-run: reason -->` to be skipped with
their reason reported.
"""

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from doc_fixtures import build_fixtures

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>python|bash)[^\n]*\n(?P<code>.*?)^(?P=indent)```", re.M | re.S)
NO_RUN = re.compile(r"<!--\s*no-run:\s*(?P<reason>.+?)\s*-->\s*$")


def code_blocks(page: Path) -> list[dict]:
    """`{"lang", "code", "line", "skip"}` for each fenced python/bash block of `page`, in order; `skip` is the
    reason of a `<!-- no-run: reason -->` line right above the block, else None."""
    text = page.read_text()
    blocks = []
    for match in BLOCK.finditer(text):
        before = text[:match.start()].rstrip("\n").splitlines()
        previous = before[-1] if before else ""
        skip = NO_RUN.search(previous)
        blocks.append({"lang": match["lang"], "code": textwrap.dedent(match["code"]),
                       "line": text.count("\n", 0, match.start()) + 1, "skip": skip["reason"] if skip else None})
    return blocks


def pages() -> list[Path]:
    return [DOCS / "getting-started.md", *sorted((DOCS / "guides").glob("*.md"))]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Path:
    return build_fixtures(tmp_path_factory.mktemp("doc-fixtures"))


def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-5000:]
    assert (tmp_path / "site" / "api" / "models" / "index.html").is_file()


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_code_blocks_run(page, fixtures, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(fixtures, work)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    namespace: dict = {"__name__": "__docs__"}
    skipped, ran = [], 0
    cwd = os.getcwd()
    os.chdir(work)
    try:
        for block in code_blocks(page):
            where = f"{page.relative_to(ROOT)}:{block['line']}"
            if block["skip"]:
                skipped.append(f"{where} ({block['skip']})")
                continue
            if block["lang"] == "python":
                exec(compile(block["code"], where, "exec"), namespace)
            else:
                done = subprocess.run(["bash", "-e", "-c", block["code"]], cwd=work, env=env, capture_output=True,
                                      text=True, timeout=600)
                assert done.returncode == 0, f"{where} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            ran += 1
    finally:
        os.chdir(cwd)
    print(f"{page.name}: {ran} block(s) ran; not run: {skipped or 'none'}")
    assert ran or skipped, f"{page.name} has no code block"


def test_no_run_markers_are_reported():
    blocks = code_blocks(DOCS / "guides" / "distributed.md")
    assert any(b["skip"] for b in blocks) and any(not b["skip"] for b in blocks)
