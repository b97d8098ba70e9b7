"""The README is a user's page: short, every link resolves, the command table is complete and each headline number
comes from the record it links."""

import json
import re
from pathlib import Path

from elasticast_cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_is_at_most_12000_characters():
    assert len(README) <= 12_000, f"README.md has {len(README)} characters; move details into docs/"


def test_readme_links_resolve():
    local = [link for link in LINK.findall(README) if not link.startswith(("http://", "https://", "#"))]
    assert local
    for link in local:
        assert (ROOT / link.split("#")[0]).exists(), f"README links to {link}, which does not exist"


def test_command_tables_list_every_command():
    for text in (README, (ROOT / "docs" / "cli.md").read_text()):
        for command in COMMANDS:
            assert f"| `elasticast {command.name}` |" in text, command.name


def test_headline_numbers_come_from_their_records():
    section = README.split("## Results", 1)[1].split("\n## ", 1)[0]
    bullets = [b for b in section.split("\n- ")[1:]]
    assert 3 <= len(bullets) <= 5
    for bullet in bullets:
        records = re.findall(r"\((records/[^)]+\.json)\)", bullet)
        assert len(records) == 1, bullet
        record_text = json.dumps(json.loads((ROOT / records[0]).read_text()), ensure_ascii=False)
        for number in re.findall(r"\d+\.\d+", bullet.split("[Page]")[0]):
            assert number in record_text, f"{number} is not in {records[0]}"
