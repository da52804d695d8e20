"""Wall time of playbooks/triage.yml on the sandbox during a storm holding about 5,000 connections.

Starts its own sandbox, raises the `big-storm` scenario (maxclients 6000) and waits until Redis
holds 5,000 connections, then times, alternately and ROUNDS times each, triage.yml and a
one-task no-op playbook against the same inventory (Ansible's own floor in the same run).
Prints the medians and their ratio against the targets (triage < 10 s and < 4x the no-op);
asserts nothing about time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCENARIO = "big-storm"
CONNECTIONS = 5000
# The scenario holds "about 5,000": its fleet settles a little under the round number.
ENOUGH = int(CONNECTIONS * 0.95)
ROUNDS = 5
TARGET_SECONDS = 10.0
TARGET_RATIO = 4.0
NOOP = """- name: No-op (Ansible's own floor)
  hosts: all
  gather_facts: false
  tasks:
    - name: Say nothing
      ansible.builtin.debug:
        msg: noop
"""


def _stormctl(state_dir: Path, *args: str, timeout: float = 180) -> str:
    done = subprocess.run([str(BIN / "stormctl"), "sandbox", *args, "--dir", str(state_dir)], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, STORM_SANDBOX_DIR=str(state_dir)))
    if done.returncode != 0:
        raise RuntimeError("stormctl sandbox %s failed: %s" % (" ".join(args), (done.stderr or done.stdout).strip()))
    return done.stdout


def _connected(state_dir: Path) -> int:
    import redis

    state = json.loads((state_dir / "state.json").read_text())
    client = None
    try:
        client = redis.Redis(host=state["redis"]["host"], port=state["redis"]["port"],
                             password=state["redis"]["password"], socket_timeout=5, single_connection_client=True)
        return int(client.info("clients")["connected_clients"])
    except redis.RedisError:
        return 0  # refused at maxclients: keep waiting for the count
    finally:
        if client is not None:
            client.close()


def _play(state_dir: Path, playbook: Path, extra: Dict[str, Any]) -> float:
    env = dict(os.environ, STORM_SANDBOX_DIR=str(state_dir), ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               ANSIBLE_NOCOLOR="1")
    command = [str(BIN / "ansible-playbook"), "-i", str(REPO / "inventories" / "sandbox"), str(playbook),
               "-e", json.dumps(extra)]
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError("%s failed (rc %d):\n%s" % (playbook.name, done.returncode, done.stdout[-3000:]))
    return elapsed


def run() -> Dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-triage-") as tmp:
        base = Path(tmp)
        state_dir = base / "run"
        noop = base / "noop.yml"
        noop.write_text(NOOP)
        _stormctl(state_dir, "up")
        try:
            _stormctl(state_dir, "storm", SCENARIO)
            started = time.monotonic()
            held = 0
            while time.monotonic() < started + 300:
                held = _connected(state_dir)
                if held >= ENOUGH:
                    break
                time.sleep(1)
            if held < ENOUGH:
                raise RuntimeError("%s reached only %d connections in 300 s" % (SCENARIO, held))
            print("%s holds %d Redis connections after %.0f s" % (SCENARIO, held, time.monotonic() - started),
                  flush=True)
            triage_times: List[float] = []
            noop_times: List[float] = []
            verdict: Dict[str, Any] = {}
            for index in range(ROUNDS):
                noop_times.append(_play(state_dir, noop, {}))
                output = base / ("verdict-%d.json" % index)
                triage_times.append(_play(state_dir, REPO / "playbooks" / "triage.yml",
                                          {"triage_output_file": str(output)}))
                verdict = json.loads(output.read_text())
                print("round %d: triage %.2f s, no-op %.2f s" % (index + 1, triage_times[-1], noop_times[-1]),
                      flush=True)
            held_after = _connected(state_dir)
        finally:
            _stormctl(state_dir, "down")
    triage_s = statistics.median(triage_times)
    noop_s = statistics.median(noop_times)
    ratio = triage_s / noop_s
    top = verdict.get("offenders", [{}])[0] if verdict.get("offenders") else {}
    print("triage.yml %.2f s (target < %.0f s), no-op playbook %.2f s, ratio %.1fx (target < %.0fx); "
          "verdict %s, top offender %s/%s" % (triage_s, TARGET_SECONDS, noop_s, ratio, TARGET_RATIO,
                                              verdict.get("severity"), top.get("namespace"), top.get("name")),
          flush=True)
    return {
        "scenario": SCENARIO, "connections": held, "connections_after": held_after,
        "triage_seconds": round(triage_s, 2), "noop_seconds": round(noop_s, 2), "ratio": round(ratio, 2),
        "triage_runs": [round(t, 2) for t in triage_times], "noop_runs": [round(t, 2) for t in noop_times],
        "target_seconds": TARGET_SECONDS, "target_ratio": TARGET_RATIO,
        "severity": verdict.get("severity"), "top_offender": "%s/%s" % (top.get("namespace"), top.get("name")),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
