"""The culprit drill: raise a scenario's storm, run triage at several points of it, check whom it named.

The points are the moments a storm looks least like itself: right after a blip (every client
dropped while triage samples Redis), mid-wave (triage starting while the pools reconnect) and the
steady state. Triage itself is the caller's (``triage`` runs playbooks/triage.yml and returns the
verdict it wrote); the drill only does what the world does to Redis, and compares the verdict with
the scenario's culprits, which triage never sees.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, cast

import redis

from stormctl.sandbox import services
from stormctl.sandbox.scenario import Scenario, load_scenario

POINTS = ("after-blip", "mid-wave", "steady")
TRIAGE_CLIENT_NAME = "redis-storm"
# Redis under a storm by the sandbox's own truth: nearly full, or accepting this many connections a second.
SATURATED = 0.9
CHURNING_PER_SEC = 50.0
QUIET = 0.7

Verdict = dict[str, Any]


@dataclass
class Outcome:
    """One triage at one point: the verdict, whether Redis answered it, and what was wrong with it."""

    point: str
    verdict: Optional[Verdict]
    redis_answered: bool
    problems: list[str] = field(default_factory=list)

    @property
    def right(self) -> bool:
        return not self.problems


def named(verdict: Verdict) -> list[str]:
    return ["%s/%s" % (o.get("namespace"), o.get("name")) for o in verdict.get("offenders") or []]


def redis_answered(verdict: Verdict) -> bool:
    return not any(d["source"] == "redis" and not d.get("partial") for d in verdict.get("degraded_sources") or [])


def check(verdict: Optional[Verdict], scenario: Scenario) -> list[str]:
    """What is wrong with the verdict's culprit for this scenario (nothing: it named the right ones, in order)."""
    if verdict is None:
        return ["triage wrote no verdict"]
    expected = scenario.culprit_keys
    problems = []
    if not verdict.get("storm"):
        problems.append("no storm seen: %s" % verdict.get("summary"))
    if named(verdict)[: len(expected)] != expected:
        problems.append("offenders %s, expected %s first" % (named(verdict)[:3], expected))
    top = (verdict.get("offenders") or [{}])[0]
    if redis_answered(verdict):
        record = verdict.get("culprit") or {}
        if not record.get("certain"):
            problems.append("culprit uncertain: %s" % record.get("why"))
        elif record.get("workloads") != expected:
            problems.append("culprits named %s, expected %s" % (record.get("workloads"), expected))
        if not str(top.get("connections_from", "")).startswith("redis_"):
            problems.append("Redis answered but the top offender was counted from %s" % top.get("connections_from"))
    elif top.get("connections_from") != "prometheus":
        problems.append("Redis refused triage and the top offender was counted from %s" % top.get("connections_from"))
    return problems


class CulpritDrill:
    """A sandbox's storms with an admin connection held from before them (a full Redis refuses new ones)."""

    def __init__(self, state_dir: Path, triage: Callable[[], Optional[Verdict]]) -> None:
        self.state_dir = Path(state_dir)
        self.triage = triage
        state = json.loads((self.state_dir / "state.json").read_text())
        self.fleet_url = str(state["fleet"]["url"])
        self.admin = redis.Redis(host=state["redis"]["host"], port=int(state["redis"]["port"]),
                                 password=state["redis"]["password"], socket_timeout=10,
                                 single_connection_client=True, decode_responses=True)
        self.admin_id = int(self.admin.client_id())

    def close(self) -> None:
        self.admin.close()

    # ---- the storm -------------------------------------------------------------------------------
    def calm(self, timeout: float = 150) -> None:
        """End the storm, put the baseline world back and wait until Redis is under 70% of its maxclients."""
        services.calm(self.state_dir)
        services.reset(self.state_dir)

        def quiet() -> bool:
            clients = self.admin.info("clients")
            return bool(clients["connected_clients"] < QUIET * int(clients["maxclients"]))

        self.wait(quiet, timeout, "Redis to be quiet after the storm")

    def storm(self, name: str, timeout: float = 150) -> Scenario:
        scenario = load_scenario(name)
        services.storm(name, self.state_dir)
        self.wait(lambda: self.raging(scenario), timeout, "%s to storm Redis" % name)
        return scenario

    def raging(self, scenario: Scenario) -> bool:
        """The culprits run and Redis is nearly full (by the culprit, as the fleet counts) or churning."""
        with urllib.request.urlopen(self.fleet_url + "/status", timeout=10) as response:
            status = json.loads(response.read())
        workloads = {"%s/%s" % (w["namespace"], w["name"]): w for w in status["workloads"]}
        if not all(workloads.get(key, {}).get("ready") for key in scenario.culprit_keys):
            return False
        first = self.admin.info("stats")["total_connections_received"]
        started = time.monotonic()
        connected = int(self.admin.info("clients")["connected_clients"])
        if connected >= SATURATED * scenario.maxclients:
            held = {key: int(w["connections"]) for key, w in workloads.items()}
            return max(held, key=lambda key: held[key]) == scenario.culprit_key
        self.wait(lambda: time.monotonic() - started >= 1.0, 5, "a second of Redis' accept count", interval=0.1)
        accepted = (self.admin.info("stats")["total_connections_received"] - first) / (time.monotonic() - started)
        return bool(accepted >= CHURNING_PER_SEC)

    def blip(self, spare: tuple[int, ...] = ()) -> int:
        """Drop every application client (CLIENT KILL ID), sparing ours and ``spare``; how many were dropped."""
        ids = [int(c["id"]) for c in self.admin.client_list(_type="normal")]
        doomed = [i for i in ids if i != self.admin_id and i not in spare]
        # one write on our own connection: a full Redis would refuse the extra connection a pipeline takes
        connection = self.admin.connection
        assert connection is not None
        pack = cast(Callable[[list[tuple[Any, ...]]], list[bytes]], connection.pack_commands)
        send = cast(Callable[[list[bytes]], None], connection.send_packed_command)
        send(pack([("CLIENT", "KILL", "ID", client_id) for client_id in doomed]))
        for _ in doomed:
            with contextlib.suppress(redis.ResponseError):  # gone already
                connection.read_response()
        return len(doomed)

    # ---- triage at a point -----------------------------------------------------------------------
    def at(self, point: str, scenario: Scenario) -> Outcome:
        if point == "after-blip":
            verdict = self._triage_through_a_blip()
        elif point == "mid-wave":
            self.blip()
            verdict = self.triage()
        elif point == "steady":
            self.wait(lambda: self.raging(scenario), 150, "%s to storm Redis again" % scenario.name)
            verdict = self.triage()
        else:
            raise ValueError("unknown point %r: choose one of %s" % (point, ", ".join(POINTS)))
        answered = verdict is not None and redis_answered(verdict)
        return Outcome(point, verdict, answered, check(verdict, scenario))

    def _triage_through_a_blip(self) -> Optional[Verdict]:
        """Drop every client as soon as triage's connection is in, so its sampling window opens on the blip;
        when a full Redis refuses triage, drop them all and triage again at once."""
        result: dict[str, Optional[Verdict]] = {}
        worker = threading.Thread(target=lambda: result.update(verdict=self.triage()), daemon=True)
        worker.start()
        deadline = time.monotonic() + 120
        blipped = False
        while worker.is_alive() and time.monotonic() < deadline:
            sampling = [int(c["id"]) for c in self.admin.client_list(_type="normal")
                        if c.get("name") == TRIAGE_CLIENT_NAME and int(c["id"]) != self.admin_id]
            if sampling:
                self.blip(spare=tuple(sampling))
                blipped = True
                break
            time.sleep(0.02)
        worker.join(300)
        if blipped:
            return result.get("verdict")
        self.blip()
        return self.triage()

    @staticmethod
    def wait(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("timed out after %.0f s waiting for %s" % (timeout, what))
            time.sleep(interval)
