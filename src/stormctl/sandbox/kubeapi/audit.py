"""The audit log of every write request: kept in memory for `/_sandbox/audit` and appended to a JSONL file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional


def now_iso(millis: bool = True) -> str:
    stamp = datetime.now(timezone.utc)
    if millis:
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + "%06dZ" % stamp.microsecond
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class AuditLog:
    path: Optional[Path] = None
    entries: list[dict[str, Any]] = field(default_factory=list)

    def record(self, *, user: str, verb: str, group: str, version: str, resource: str, subresource: str,
               namespace: Optional[str], name: str, dry_run: bool, code: Optional[int],
               patch_type: Optional[str] = None) -> dict[str, Any]:
        entry = {
            "seq": len(self.entries) + 1, "ts": now_iso(), "user": user, "verb": verb, "group": group,
            "version": version, "resource": resource, "subresource": subresource, "namespace": namespace or "",
            "name": name, "dry_run": dry_run, "code": code,
        }
        if patch_type:
            entry["patch_type"] = patch_type
        self.entries.append(entry)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, separators=(",", ":")) + "\n")
        return entry

    def reset(self) -> None:
        self.entries.clear()
        if self.path is not None:
            self.path.write_text("", encoding="utf-8")

    def since(self, seq: int) -> list[dict[str, Any]]:
        return self.entries[seq:] if seq >= 0 else list(self.entries)
