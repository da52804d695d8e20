"""Build the control plane's binaries from the Go module in sandbox/kube into a per-user cache.

The cache directory is named by the pinned versions and a hash of the module files
(``~/.cache/redis-storm/kube/k8s-v1.37.2-etcd-v3.7.0-ms-v0.8.0-<hash>/``), so a checkout reuses
binaries whose pins match and a change of go.mod, go.sum or the etcd main builds afresh.
``python -m stormctl.sandbox.kube.build`` (``make kube``) builds what is missing; ``--print-dir``
prints the directory.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TextIO

GO_MODULE = Path(__file__).resolve().parents[4] / "sandbox" / "kube"
MANIFEST = "manifest.json"
KUBERNETES_VERSION_SYMBOLS = ("k8s.io/component-base/version.gitVersion", "k8s.io/client-go/pkg/version.gitVersion")
# Files whose content decides what gets built: any change makes a new cache directory.
PINNED_FILES = ("go.mod", "go.sum", "etcd/main.go", "metrics-server/go.mod", "metrics-server/go.sum")


class BuildError(Exception):
    """The control plane's binaries are missing or could not be built; the message says what to run."""


@dataclass(frozen=True)
class Component:
    binary: str
    package: str
    module: str  # the pinned module the binary comes from (named in errors and the manifest)
    module_dir: str  # the Go module (relative to sandbox/kube) that pins it
    version_symbols: tuple[str, ...] = ()  # set to the pinned version at link time, so --version tells it


COMPONENTS = (
    Component("etcd", "./etcd", "go.etcd.io/etcd/server/v3", "."),
    Component("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes", ".",
              KUBERNETES_VERSION_SYMBOLS),
    Component("kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager", "k8s.io/kubernetes", ".",
              KUBERNETES_VERSION_SYMBOLS),
    Component("kubectl", "k8s.io/kubernetes/cmd/kubectl", "k8s.io/kubernetes", ".", KUBERNETES_VERSION_SYMBOLS),
    Component("metrics-server", "sigs.k8s.io/metrics-server/cmd/metrics-server", "sigs.k8s.io/metrics-server",
              "metrics-server", ("k8s.io/client-go/pkg/version.gitVersion",)),
)


def _require_version(go_mod: Path, module: str) -> str:
    match = re.search(r"^\s*(?:require\s+)?%s\s+(v\S+)" % re.escape(module), go_mod.read_text(), re.MULTILINE)
    if not match:
        raise BuildError("%s does not pin %s" % (go_mod, module))
    return match.group(1)


def versions(go_module: Path = GO_MODULE) -> dict[str, str]:
    """The pinned version of each component's module, e.g. {"kube-apiserver": "v1.37.2", ...}."""
    if not (go_module / "go.mod").is_file():
        raise BuildError(
            "the control plane's Go module is not at %s: run from a checkout of redis-storm" % go_module
        )
    return {c.binary: _require_version(go_module / c.module_dir / "go.mod", c.module) for c in COMPONENTS}


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "redis-storm" / "kube"


def version_key(go_module: Path = GO_MODULE) -> str:
    pins = versions(go_module)
    digest = hashlib.sha256()
    for name in PINNED_FILES:
        digest.update(name.encode() + b"\0" + (go_module / name).read_bytes() + b"\0")
    return "k8s-%s-etcd-%s-ms-%s-%s" % (
        pins["kube-apiserver"], pins["etcd"], pins["metrics-server"], digest.hexdigest()[:10]
    )


def binaries_dir(go_module: Path = GO_MODULE) -> Path:
    return cache_root() / version_key(go_module)


def installed(go_module: Path = GO_MODULE) -> dict[str, Path]:
    """Each binary's path in the cache; raises BuildError naming `make kube` when any is missing."""
    directory = binaries_dir(go_module)
    paths = {c.binary: directory / c.binary for c in COMPONENTS}
    if not (directory / MANIFEST).is_file() or not all(p.is_file() for p in paths.values()):
        raise BuildError("the control plane is not built for these pins (%s): run `make kube`" % directory)
    return paths


def _go_command(component: Component, version: str, output: Path) -> list[str]:
    ldflags = " ".join(["-s", "-w", *("-X %s=%s" % (symbol, version) for symbol in component.version_symbols)])
    return ["go", "build", "-trimpath", "-ldflags=" + ldflags, "-o", str(output), component.package]


def retry_command(component: Component, version: str, directory: Path, go_module: Path = GO_MODULE) -> str:
    return "cd %s && %s" % (
        shlex.quote(str(go_module / component.module_dir)),
        shlex.join(_go_command(component, version, directory / component.binary)),
    )


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One build per cache directory at a time (several checkouts share the cache)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / (directory.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _go_version() -> str:
    if shutil.which("go") is None:
        raise BuildError(
            "the go command is not on PATH: install Go 1.26 (https://go.dev/doc/install) and run `make kube`"
        )
    return subprocess.run(["go", "version"], capture_output=True, text=True, check=True).stdout.strip()


def build(go_module: Path = GO_MODULE, out: TextIO | None = None) -> Path:
    """Build every missing binary; a no-op when the cache for these pins is complete. Returns the directory."""
    stream = out or sys.stderr  # progress, so `make demo --json`'s stdout stays the JSON it prints
    directory = binaries_dir(go_module)
    with _locked(directory):
        with contextlib.suppress(BuildError):
            installed(go_module)
            print("control plane binaries up to date in %s" % directory, file=stream, flush=True)
            return directory
        go_version = _go_version()
        directory.mkdir(parents=True, exist_ok=True)
        pins = versions(go_module)
        env = dict(os.environ, GOFLAGS="-mod=readonly -buildvcs=false")
        timings: dict[str, float] = {}
        for index, component in enumerate(COMPONENTS, 1):
            target = directory / component.binary
            if target.is_file():
                continue
            print(
                "[%d/%d] building %s (%s %s) ..." % (index, len(COMPONENTS), component.binary, component.module,
                                                     pins[component.binary]),
                file=stream, flush=True,
            )
            started = time.monotonic()
            partial = directory / (component.binary + ".partial")
            result = subprocess.run(
                _go_command(component, pins[component.binary], partial), cwd=go_module / component.module_dir, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            if result.returncode != 0:
                partial.unlink(missing_ok=True)
                raise BuildError(
                    "building %s from %s %s failed:\n%s\nretry with: %s"
                    % (component.binary, component.module, pins[component.binary], result.stdout.strip()[-4000:],
                       retry_command(component, pins[component.binary], directory, go_module))
                )
            partial.rename(target)
            timings[component.binary] = round(time.monotonic() - started, 1)
            print("[%d/%d] %s built in %.0f s" % (index, len(COMPONENTS), component.binary, timings[component.binary]),
                  file=stream, flush=True)
        manifest = {"versions": pins, "go": go_version, "build_seconds": timings}
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        print("control plane binaries in %s" % directory, file=stream, flush=True)
        return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stormctl.sandbox.kube.build", description=__doc__)
    parser.add_argument("--print-dir", action="store_true", help="print the cache directory for these pins and exit")
    args = parser.parse_args(argv)
    try:
        if args.print_dir:
            print(binaries_dir())
            return 0
        build()
    except BuildError as exc:
        print("make kube: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
