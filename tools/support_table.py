"""Write the README's ansible-core support table from a `make matrix` run (pytest's JUnit XML).

Usage: python tools/support_table.py JUNIT_XML [README]. Each supported core (tests/fixtures/compat.py)
gets one row: the Python it ran on and how many of its tests passed; a core the run did not reach says so.
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


def outcomes(junit: Path) -> dict[str, Counter[str]]:
    """Per core: passed and failed test counts."""
    counts: dict[str, Counter[str]] = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        found = CORE_OF_CASE.search(case.get("name", ""))
        if not found:
            continue
        failed = any(child.tag in ("failure", "error") for child in case)
        skipped = any(child.tag == "skipped" for child in case)
        counts.setdefault(found.group(1), Counter())["failed" if failed or skipped else "passed"] += 1
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
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 1
    readme = Path(argv[1]) if len(argv) > 1 else REPO / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print("%s has no %s ... %s block to write into" % (readme, BEGIN, END), file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    readme.write_text("%s%s\n%s\n%s%s" % (head, BEGIN, table(outcomes(Path(argv[0])), date.today().isoformat()),
                                          END, tail))
    print("README support table written from %s" % argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
