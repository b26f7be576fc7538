"""The README stays true: its embedded-engine table is the validator's, its Quick start is CI's."""

from __future__ import annotations

import re
from pathlib import Path

from controller.api.serving_embedded import embedded_rules_markdown

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_embedded_rules_table_matches_the_validator() -> None:
    m = re.search(r"<!-- embedded-rules:start -->\n(.*?)\n<!-- embedded-rules:end -->", README, re.S)
    assert m, "README lost its embedded-rules markers"
    assert m.group(1).strip() == embedded_rules_markdown().strip(), (
        "README's table differs from controller/api/serving_embedded.py: regenerate it"
    )


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_second() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    commands = [ln for ln in block.strip().splitlines() if ln.strip()]
    assert commands == ["./dev up", "./dev test"]
    assert "./dev test" in (REPO / ".ci" / "run").read_text()
