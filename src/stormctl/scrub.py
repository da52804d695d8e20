"""Secrets out of everything a run leaves behind: by name (credential-like keys and environment
variables) and by value (the secrets the run was given, wherever they turn up), plus the password
of any ``user:password@`` in a URL."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

# Names that carry credentials: variables, keys and environment variables (REDISCLI_AUTH,
# AUTHORIZATION, HTTP_AUTHORIZATION among them).
SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?$|token|secret|api_?key|credential|private_?key|(^|_)auth(orization)?$", re.IGNORECASE
)
REDACTED = "<redacted>"
# What Ansible and we already put in place of a secret: not secrets themselves.
PLACEHOLDERS = {REDACTED, "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER", "********"}
URL_PASSWORD = re.compile(r"(?<=//)([^/@\s:\"'<>]*):([^/@\s\"'<>]+)@")
AUTH_SCHEME = re.compile(r"^(bearer|basic|token)\s+", re.IGNORECASE)
# Shorter values would blank ordinary words of the output.
MIN_SECRET = 4


class Scrubber:
    """The secrets of one run; ``text``, ``data`` and ``tree`` take them out of what they are given."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values: set[str] = set()
        for value in values:
            self.add(value)

    def add(self, value: Any) -> None:
        if not isinstance(value, str):
            return
        value = value.strip()
        if len(value) < MIN_SECRET or value in PLACEHOLDERS:
            return
        self.values.add(value)
        bare = AUTH_SCHEME.sub("", value)
        if bare != value and len(bare) >= MIN_SECRET:
            self.values.add(bare)  # "Bearer <token>": the token shows up on its own too

    def learn(self, value: Any, name: str = "") -> None:
        """Remember the values of credential-like names in a structure, and URL passwords in its text."""
        if isinstance(value, Mapping):
            for key, item in value.items():
                self.learn(item, str(key))
        elif isinstance(value, list):
            for item in value:
                self.learn(item, name)
        elif isinstance(value, str):
            if name and SECRET_NAME.search(name):
                self.add(value)
            for match in URL_PASSWORD.finditer(value):
                self.add(match.group(2))

    @classmethod
    def for_run(cls, environment: Mapping[str, str], extravar_files: Iterable[Path]) -> Scrubber:
        """The secrets a run is handed: credential-like environment variables and extra-vars files."""
        scrubber = cls()
        scrubber.learn(dict(environment))
        for path in extravar_files:
            try:
                scrubber.learn(yaml.safe_load(path.read_text()))
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                continue  # a vault file: its secrets stay encrypted in it
        return scrubber

    def text(self, text: str) -> str:
        text = URL_PASSWORD.sub(lambda m: "%s:%s@" % (m.group(1), REDACTED), text)
        for value in sorted(self.values, key=len, reverse=True):
            text = text.replace(value, REDACTED)
            escaped = json.dumps(value)[1:-1]
            if escaped != value:
                text = text.replace(escaped, REDACTED)
        return text

    def data(self, value: Any, name: str = "") -> Any:
        """A copy without secrets: credential-like keys blanked, every string scrubbed."""
        if isinstance(value, Mapping):
            return {str(k): self.data(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.data(v, name) for v in value]
        if isinstance(value, str):
            if name and SECRET_NAME.search(name) and value and value not in PLACEHOLDERS:
                return REDACTED
            return self.text(value)
        return value

    def tree(self, root: Path) -> int:
        """Scrub every file under ``root`` in place; returns how many files changed."""
        changed = 0
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            try:
                original = path.read_bytes().decode("utf-8", "surrogateescape")
            except OSError:
                continue
            clean = self.text(original)
            if clean != original:
                path.write_bytes(clean.encode("utf-8", "surrogateescape"))
                changed += 1
        return changed
