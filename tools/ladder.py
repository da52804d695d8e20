"""Write every copy of the rung list from the registry, meta/ladder.yml (`make ladder`).

The copies are those that cannot read the registry where they run: module_utils (shipped inside each
module's payload), the ladder role's vars, the report and scenario JSON schemas, the AWX surveys and
the rung line of docs/internals.md. `--check` writes nothing and exits 1 naming each copy that drifted.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import yaml

REPO = Path(__file__).resolve().parents[1]
REGISTRY = REPO / "meta" / "ladder.yml"
MODULE_UTILS = "plugins/module_utils/ladder.py"
FIELDS = ("name", "stage", "acts_on", "modules")
# The marker comment above each generated YAML list of the mitigation rungs.
SURVEY_MARKER = "# The mitigation rungs, in ladder order (meta/ladder.yml; make ladder writes this list)."


def rungs() -> List[Dict[str, Any]]:
    return list(yaml.safe_load(REGISTRY.read_text())["rungs"])


def names(stage: str = "") -> List[str]:
    return [r["name"] for r in rungs() if not stage or r["stage"] == stage]


def module_utils(_text: str) -> str:
    table = "".join('    {"name": %s, "stage": %s, "acts_on": %s,\n     "modules": %s},\n'
                    % tuple(json.dumps(r[k]) for k in FIELDS) for r in rungs())
    return (
        "# -*- coding: utf-8 -*-\n"
        "# Copyright: fintech SRE\n"
        "# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)\n"
        '"""The ladder\'s rungs in order, written from meta/ladder.yml by tools/ladder.py (make ladder): edit\n'
        'the registry, not this file."""\n\n'
        "from __future__ import annotations\n\n"
        "from typing import Any, Dict, Tuple\n\n"
        "RUNGS: Tuple[Dict[str, Any], ...] = (\n%s)\n"
        "# Rung names in ladder order.\n"
        'LADDER: Tuple[str, ...] = tuple(str(rung["name"]) for rung in RUNGS)\n' % table
    )


def _sub(pattern: str, replacement: Callable[[re.Match[str]], str], flags: int = 0) -> Callable[[str], str]:
    def render(text: str) -> str:
        new, count = re.subn(pattern, replacement, text, flags=flags)
        if count == 0:
            raise SystemExit("tools/ladder.py: the rung list this copy should hold was not found (%s)" % pattern)
        return new
    return render


def _yaml_list(match: re.Match[str]) -> str:
    indent = match.group("indent")
    return "%s%s\n%s" % (indent, SURVEY_MARKER, "".join("%s- %s\n" % (indent, n) for n in names("mitigate")))


def _enum(match: re.Match[str]) -> str:
    return match.group(1) + json.dumps(names())


def _stages(match: re.Match[str]) -> str:
    return "".join("  %s: [%s]\n" % (stage, ", ".join(names(stage))) for stage in ("mitigate", "stabilise"))


def _doc_line(match: re.Match[str]) -> str:
    return textwrap.fill("Rung names, in ladder order: %s, then stabilise: %s." % (
        ", ".join("`%s`" % n for n in names("mitigate")), ", ".join("`%s`" % n for n in names("stabilise"))), 100)


SURVEY_LIST = r"(?P<indent> *)# The mitigation rungs[^\n]*\n(?:(?P=indent)- \w+\n)+"
COPIES: Tuple[Tuple[str, Callable[[str], str]], ...] = (
    (MODULE_UTILS, module_utils),
    ("roles/ladder/vars/main.yml", _sub(r"(?:  (?:mitigate|stabilise): \[[^\]\n]*\]\n)+", _stages)),
    ("src/stormctl/report/schema.json", _sub(r'("rung": \{"enum": )\[[^\]]*\]', _enum)),
    ("src/stormctl/sandbox/scenarios/schema.json",
     _sub(r'("expected_rungs": \{[^{]*"items": \{"enum": )\[[^\]]*\]', _enum)),
    ("awx/vars/job_templates.yml", _sub(SURVEY_LIST, _yaml_list)),
    ("awx/vars/workflows.yml", _sub(SURVEY_LIST, _yaml_list)),
    ("docs/internals.md", _sub(r"Rung names, in ladder order[^`]*`[^.]*\.", _doc_line)),
)


def drifted() -> List[str]:
    """The copies whose rung list is not the registry's."""
    out = []
    for path, render in COPIES:
        file = REPO / path
        text = file.read_text() if file.exists() else ""
        if render(text) != text:
            out.append(path)
    return out


def main(argv: List[str]) -> int:
    if "--check" in argv:
        stale = drifted()
        for path in stale:
            print("%s: its rung list differs from meta/ladder.yml; run make ladder" % path, file=sys.stderr)
        return 1 if stale else 0
    for path, render in COPIES:
        file = REPO / path
        text = file.read_text() if file.exists() else ""
        new = render(text)
        if new != text:
            file.write_text(new)
            print("wrote %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
