"""The ladder's rungs, in order, as the collection's registry (meta/ladder.yml) names them."""

from __future__ import annotations

import yaml

from stormctl.sandbox.state import REPO

RUNGS: tuple[str, ...] = tuple(str(rung["name"]) for rung in yaml.safe_load(
    (REPO / "meta" / "ladder.yml").read_text())["rungs"])
