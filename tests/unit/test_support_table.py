"""The README's ansible-core table is written from a matrix run's JUnit XML, one row per supported core."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fixtures.compat import CORES

REPO = Path(__file__).resolve().parents[2]
JUNIT = """<testsuites><testsuite>
<testcase classname="t" name="test_collection_runs_on_ansible_core[2.16]"/>
<testcase classname="t" name="test_roles_accept_the_example_inventory_on_ansible_core[2.16]"/>
<testcase classname="t" name="test_collection_runs_on_ansible_core[2.22]"><failure message="x"/></testcase>
<testcase classname="t" name="test_roles_accept_the_example_inventory_on_ansible_core[2.22]"/>
<testcase classname="t" name="test_unrelated"/>
</testsuite></testsuites>"""


def test_table_has_a_row_per_core_with_what_passed(tmp_path: Path) -> None:
    junit, readme = tmp_path / "matrix.xml", tmp_path / "README.md"
    junit.write_text(JUNIT)
    rerun = tmp_path / "rerun.xml"
    rerun.write_text('<testsuite><testcase classname="t" name="test_collection_runs_on_ansible_core[2.22]"/>'
                     '<testcase classname="t" name="test_prometheus_answers_over_tls_on_ansible_core[2.22]">'
                     '<error message="timeout"/></testcase></testsuite>')
    begin, end = ((REPO / "README.md").read_text().split("<!-- ansible-core support")[1].split("\n")[0],
                  "<!-- end of ansible-core support -->")
    readme.write_text("intro\n<!-- ansible-core support%s\nstale\n%s\noutro\n" % (begin, end))
    command = [sys.executable, str(REPO / "tools" / "support_table.py"), str(readme), str(junit), str(rerun)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("%s\noutro\n" % end) and "stale" not in text
    rows = [line for line in text.splitlines() if line.startswith("| 2.")]
    assert len(rows) == len(CORES)
    assert "| all 2 passed |" in rows[0] and rows[0].startswith("| 2.16.")
    # the rerun passed the failed test and failed a new one
    assert "**1 of 3 failed**" in rows[-1] and "| 3.13 |" in rows[-1]
    assert all(row.endswith("| not run |") for row in rows[1:-1])
