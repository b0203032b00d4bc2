"""The README's configuration table is the operators' reference: it must list every setting
the code reads, and nothing the code does not know."""

from __future__ import annotations

import re
from pathlib import Path

from services.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
# Read by boto3 and the process manager, not by Settings.
OUTSIDE_SETTINGS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "FLOWER_BASIC_AUTH"}


def env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names.add(alias if isinstance(alias, str) else name.upper())
    return names


def documented_names() -> set[str]:
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def test_every_setting_is_documented() -> None:
    missing = env_names() - documented_names()
    assert not missing, f"README configuration table lacks {sorted(missing)}"


def test_nothing_undocumented_is_invented() -> None:
    unknown = documented_names() - env_names() - OUTSIDE_SETTINGS
    assert not unknown, f"README documents settings the code does not read: {sorted(unknown)}"
