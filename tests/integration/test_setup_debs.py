"""`make debs` on a machine where another apt run (unattended-upgrades on a fresh VM) holds the apt and dpkg
locks: it says so, waits with a bound, and goes on once they are free.

Real apt-get and make, on an apt root of the test's own (APT_OPTIONS), whose locks a second process holds;
the package asked for exists nowhere, so once past the locks apt-get stops at "Unable to locate package".
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

REPO = Path(__file__).resolve().parents[2]
ABSENT = "redis-storm-test-absent-package"
HOLDER = """
import fcntl, sys
locks = [open(path, "w") for path in sys.argv[1:]]
for lock in locks:
    fcntl.lockf(lock, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def apt_root(tmp_path: Path) -> Dict[str, Path]:
    """An empty apt root: no sources, an empty dpkg status; its lock files."""
    for folder in ("state/lists/partial", "cache/archives/partial", "dpkg", "sources.list.d"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "dpkg" / "status").touch()
    return {"root": tmp_path, "lists": tmp_path / "state" / "lists" / "lock",
            "frontend": tmp_path / "dpkg" / "lock-frontend"}


def apt_options(root: Path) -> str:
    return " ".join("-o %s=%s" % item for item in (
        ("Dir::State", root / "state"), ("Dir::State::status", root / "dpkg" / "status"),
        ("Dir::Cache", root / "cache"), ("Dir::Etc::sourcelist", "/dev/null"),
        ("Dir::Etc::sourceparts", root / "sources.list.d")))


@pytest.fixture
def hold_locks() -> Iterator[List[subprocess.Popen[str]]]:
    holders: List[subprocess.Popen[str]] = []
    yield holders
    for holder in holders:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


def hold(holders: List[subprocess.Popen[str]], *locks: Path) -> subprocess.Popen[str]:
    """A process holding ``locks`` (fcntl, as apt and dpkg take them) until its stdin closes."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, *map(str, locks)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    holders.append(holder)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def make_debs(root: Path, timeout: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["make", "--no-print-directory", "debs", "DEBS=%s" % ABSENT, "APT_LOCK_TIMEOUT=%d" % timeout,
         "APT_OPTIONS=%s" % apt_options(root)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def read_until(process: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """The output up to the first line holding ``marker``; fails with what was read after ``timeout``."""
    assert process.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([process.stdout], [], [], left)[0]:
            pytest.fail("no %r within %.0f s; output so far:\n%s" % (marker, timeout, seen))
        line = process.stdout.readline()
        if not line:
            pytest.fail("make ended (rc %s) without %r:\n%s" % (process.wait(), marker, seen))
        seen += line
    return seen


def finish(process: subprocess.Popen[str], timeout: float = 60) -> str:
    try:
        rest, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.communicate()
        pytest.fail("make debs did not end within %.0f s" % timeout)
    return rest


def test_waits_for_another_apt_run_then_goes_on(apt_root: Dict[str, Path],
                                                hold_locks: List[subprocess.Popen[str]]) -> None:
    holder = hold(hold_locks, apt_root["lists"], apt_root["frontend"])
    make = make_debs(apt_root["root"], timeout=120)
    said = read_until(make, "waiting up to 120s", timeout=60)
    assert "It is held by process %d" % holder.pid in said, said
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(10)
    rest = finish(make)
    assert make.returncode != 0
    # Past both locks: apt-get looked for the package.
    assert "Unable to locate package %s" % ABSENT in rest, said + rest
    assert "still holds" not in rest


def test_gives_up_after_its_bound_with_what_to_do(apt_root: Dict[str, Path],
                                                  hold_locks: List[subprocess.Popen[str]]) -> None:
    holder = hold(hold_locks, apt_root["frontend"])
    make = make_debs(apt_root["root"], timeout=2)
    said = read_until(make, "waiting up to 2s", timeout=60) + finish(make)
    assert make.returncode != 0
    assert "held by process %d" % holder.pid in said
    assert "still holds its lock after 2s" in said and "raise APT_LOCK_TIMEOUT" in said, said
    assert "Unable to locate package" not in said
