"""Write the README's ansible-core support table from a `make matrix` run (pytest's JUnit XML).

Usage: python tools/support_table.py README JUNIT_XML... Each supported core (tests/fixtures/compat.py)
gets one row: the Python it ran on and how many of its tests passed; a core the run did not reach says so.
A test in a later file (a rerun of one core) replaces its result from an earlier one.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ElementTree
from collections import Counter
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.compat import CORES  # noqa: E402

BEGIN = "<!-- ansible-core support: written by `make matrix` (tools/support_table.py) -->"
END = "<!-- end of ansible-core support -->"
CORE_OF_CASE = re.compile(r"\[(\d+\.\d+)\]$")


def outcomes(junits: list[Path]) -> dict[str, Counter[str]]:
    """Per core: passed and failed test counts."""
    passed: dict[tuple[str, str], bool] = {}
    for junit in junits:
        for case in ElementTree.parse(junit).iter("testcase"):
            name = case.get("name", "")
            if CORE_OF_CASE.search(name):
                passed[(case.get("classname", ""), name)] = not any(
                    child.tag in ("failure", "error", "skipped") for child in case)
    counts: dict[str, Counter[str]] = {}
    for (_, name), ok in passed.items():
        core = CORE_OF_CASE.search(name).group(1)  # type: ignore[union-attr]
        counts.setdefault(core, Counter())["passed" if ok else "failed"] += 1
    return counts


def table(counts: dict[str, Counter[str]], day: str) -> str:
    rows = ["| ansible-core | Python | integration tests (%s) |" % day, "|---|---|---|"]
    for version, core in CORES.items():
        pinned = next(pin.split("==")[1] for pin in core.pins if pin.startswith("ansible-core=="))
        got = counts.get(version)
        if got is None:
            result = "not run"
        elif got["failed"]:
            result = "**%d of %d failed**" % (got["failed"], got["failed"] + got["passed"])
        else:
            result = "all %d passed" % got["passed"]
        rows.append("| %s | %s | %s |" % (pinned, core.python, result))
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 1
    readme = Path(argv[0])
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print("%s has no %s ... %s block to write into" % (readme, BEGIN, END), file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    written = table(outcomes([Path(a) for a in argv[1:]]), date.today().isoformat())
    readme.write_text("%s%s\n%s\n%s%s" % (head, BEGIN, written, END, tail))
    print("%s: support table written from %s" % (readme, ", ".join(argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
