"""`make kube`: binaries cached by their pins, a no-op when they match, a failed build named with its retry."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from stormctl.sandbox.kube import build

pytestmark = pytest.mark.integration


def test_a_built_cache_for_the_same_pins_is_reused_without_building(capsys: pytest.CaptureFixture[str]) -> None:
    directory = build.build()  # what make setup did; instant when the cache is complete
    output = io.StringIO()
    assert build.build(out=output) == directory
    assert output.getvalue() == "control plane binaries up to date in %s\n" % directory
    assert sorted(build.installed()) == sorted(c.binary for c in build.COMPONENTS)


@pytest.fixture
def module_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The Go module's pinned files in a scratch directory, with a cache of its own."""
    copy = tmp_path / "kube"
    for name in build.PINNED_FILES:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(build.GO_MODULE / name, copy / name)
    # not through XDG_CACHE_HOME: Go would take its build cache from there too and compile everything anew
    monkeypatch.setattr(build, "cache_root", lambda: tmp_path / "cache")
    return copy


def test_a_change_of_pins_names_a_new_cache_directory(module_copy: Path) -> None:
    before = build.binaries_dir(module_copy)
    assert before.name.startswith("k8s-v1.37.2-etcd-v3.7.0-ms-v0.8.0-")
    with open(module_copy / "go.sum", "a") as go_sum:
        go_sum.write("\n")
    assert build.binaries_dir(module_copy) != before
    with pytest.raises(build.BuildError, match="run `make kube`"):
        build.installed(module_copy)


def test_a_failed_build_names_the_module_its_version_and_the_command_to_retry(module_copy: Path) -> None:
    (module_copy / "etcd" / "main.go").write_text("package main\n\nfunc main() { undefined() }\n")
    with pytest.raises(build.BuildError) as failed:
        build.build(module_copy, out=io.StringIO())
    message = str(failed.value)
    assert message.startswith("building etcd from go.etcd.io/etcd/server/v3 v3.7.0 failed:")
    assert "undefined: undefined" in message
    directory = build.binaries_dir(module_copy)
    assert message.endswith(
        "retry with: cd %s && go build -trimpath '-ldflags=-s -w' -o %s ./etcd" % (module_copy, directory / "etcd")
    )
    assert not (directory / "etcd").exists() and not (directory / build.MANIFEST).exists()
