"""The locks are what a fresh machine installs: they must pin every direct requirement at the
version requirements*.txt names, hash every package, and agree with each other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def direct_pins(path: Path) -> dict[str, str]:
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            pins |= direct_pins(path.parent / line.removeprefix("-r ").strip())
            continue
        match = PIN.match(line)
        assert match, f"{path.name}: {raw!r} is not pinned with =="
        pins[canonical(match[1])] = match[2]
    return pins


def locked(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of every package in a lock file."""
    entries: dict[str, tuple[str, int]] = {}
    current = None
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonical(match[1])
            entries[current] = (match[2], 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = entries[current]
            entries[current] = (version, hashes + 1)
    return entries


@pytest.mark.parametrize(
    ("requirements", "lock"),
    [("requirements.txt", "requirements.lock"), ("requirements-dev.txt", "requirements-dev.lock")],
)
def test_the_lock_pins_every_direct_requirement_with_hashes(requirements: str, lock: str) -> None:
    pins, entries = direct_pins(ROOT / requirements), locked(ROOT / lock)
    for name, version in pins.items():
        assert name in entries, f"{lock} lacks {name}: run `make lock`"
        assert entries[name][0] == version, f"{lock} has {name}=={entries[name][0]}, {requirements} {version}"
    unhashed = sorted(name for name, (_, hashes) in entries.items() if hashes == 0)
    assert not unhashed, f"{lock}: no hash for {unhashed}"


def test_the_runtime_and_dev_locks_agree() -> None:
    runtime, dev = locked(ROOT / "requirements.lock"), locked(ROOT / "requirements-dev.lock")
    differing = {name: (v, dev.get(name, ("missing",))[0]) for name, (v, _) in runtime.items()}
    assert {name: pair for name, pair in differing.items() if pair[0] != pair[1]} == {}


@pytest.mark.parametrize("dockerfile", ["Dockerfile.api", "Dockerfile.worker"])
def test_images_install_the_runtime_lock_checking_hashes(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    assert "COPY requirements.lock" in text
    assert "pip install --no-deps --require-hashes -r requirements.lock" in text


def test_the_set_up_installs_the_dev_lock_checking_hashes() -> None:
    text = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "--require-hashes" in text and "-r requirements-dev.lock" in text
