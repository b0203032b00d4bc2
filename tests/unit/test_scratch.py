"""Scratch folders of processes that died without cleaning up (SIGKILL at a hard time limit,
the OOM killer) are removed by the next process that makes one beside them; a living
process's folder is never touched, whatever its age."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.workspace.scratch import Scratch

ROOT = Path(__file__).resolve().parents[2]
# A process that makes its scratch folder, puts a file in it, says where, and lives until its
# stdin closes (or it is killed). With FORK set it forks once its folder is made and exits at
# once, and its child makes a folder of its own and does the rest.
HOLDER = """
import os, sys
from pathlib import Path
from services.workspace.scratch import Scratch
scratch = Scratch(Path(sys.argv[1]))
scratch.root
if os.environ.get("FORK") and os.fork() != 0:
    os._exit(0)
(scratch.root / "kept-source").write_bytes(b"x" * 1000)
print(scratch.root, flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        assert process.stdin is not None
        process.stdin.close()  # ends a forked child too, which shares the pipe
        process.kill()
        process.wait(timeout=10)


def hold(
    parent: Path, holders: list[subprocess.Popen[str]], **env: str
) -> tuple[subprocess.Popen[str], Path]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(parent)],
        cwd=ROOT,
        env=os.environ | env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    holders.append(process)
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


def test_a_killed_process_s_folder_goes_and_a_living_one_s_stays(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    killed, killed_root = hold(tmp_path, holders)
    _, living_root = hold(tmp_path, holders)
    killed.kill()
    killed.wait(timeout=10)
    assert (killed_root / "kept-source").is_file()  # nothing removes it on its own

    mine = Scratch(tmp_path).root

    assert not killed_root.exists()
    assert (living_root / "kept-source").is_file()
    assert sorted(tmp_path.iterdir()) == sorted([living_root, mine])


def test_a_forked_child_keeps_its_folder_and_its_parent_s(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    """The child holds the lock it inherited as well as its own: its parent's folder, which it
    may still read, goes only once the child is gone too."""
    _, child_root = hold(tmp_path, holders, FORK="1")
    [parent_root] = [root for root in tmp_path.iterdir() if root != child_root]

    mine = Scratch(tmp_path).root

    assert (child_root / "kept-source").is_file()
    assert parent_root.is_dir()
    assert mine.is_dir()


def test_a_process_removes_its_own_folder_at_exit(tmp_path: Path) -> None:
    scratch = Scratch(tmp_path)
    (scratch.root / "file").write_bytes(b"x")
    scratch.remove()
    assert list(tmp_path.iterdir()) == []
