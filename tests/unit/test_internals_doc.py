"""docs/internals.md points only to files that exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEXT = (REPO / "docs" / "internals.md").read_text()
TOP = "plugins|roles|playbooks|src|sandbox|tests|bench|deploy|awx|meta|tools|docs|inventories|extensions"


def test_every_repo_path_it_names_exists() -> None:
    paths = set(re.findall(r"(?<![\w/.<-])((?:%s)/[\w./-]*\w)" % TOP, TEXT))
    assert len(paths) > 20
    roles = list((REPO / "roles").iterdir())
    # a role's own files are named as every role has them (meta/argument_specs.yml)
    assert sorted(p for p in paths if not (REPO / p).exists() and not any((r / p).exists() for r in roles)) == []


def test_every_module_utils_file_in_its_tree_exists() -> None:
    start = TEXT.index("plugins/module_utils/\n")
    tree = TEXT[start:TEXT.index("plugins/modules/ ", start)]
    names = re.findall(r"^  (\w+\.py)\b", tree, re.M)
    assert len(names) > 20
    assert [n for n in names if not (REPO / "plugins" / "module_utils" / n).exists()] == []


def test_it_names_no_design_document_outside_the_repo() -> None:
    assert [name for name in re.findall(r"\b[A-Z]+\.md\b", TEXT) if not (REPO / name).exists()] == []
