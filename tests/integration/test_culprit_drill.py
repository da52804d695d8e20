"""The culprit drill's own admin connection against a real redis-server: a storm's blip drops it while Redis is
full, and it must come back as an SRE's would (retrying within a bound), not fail the drill."""

import threading
import time

import pytest
import redis

from stormctl.sandbox.culprit_drill import ADMIN_RETRY_SECONDS, admin_connection

pytestmark = pytest.mark.integration

# More refusals than redis-py's default retry takes (10 retries) before it gives up.
REFUSALS = 15


def connect_one(server):
    """One more client that holds its connection, or None when Redis refuses it (full)."""
    try:
        return redis.Redis(host=server.host, port=server.port, password=server.password,
                           single_connection_client=True, socket_timeout=5, retry=None)
    except redis.ConnectionError:
        return None


def test_the_admin_connection_dropped_in_a_full_redis_comes_back_when_a_slot_frees(redis_factory):
    server = redis_factory(maxclients=6)
    admin = admin_connection(server.host, server.port, server.password)
    dropped_id = int(admin.client_id())
    fillers = []
    try:
        while True:  # fill Redis up to maxclients
            filler = connect_one(server)
            if filler is None:
                break
            fillers.append(filler)
        fillers[0].execute_command("CLIENT", "KILL", "ID", dropped_id)  # the blip that drops us
        taker = connect_one(server)  # someone else's pool takes our slot: Redis is full again
        assert taker is not None
        fillers.append(taker)
        refused_before = int(fillers[0].info("stats")["rejected_connections"])

        def free_a_slot_after_refusals() -> None:
            deadline = time.monotonic() + ADMIN_RETRY_SECONDS
            while time.monotonic() < deadline:
                if int(fillers[0].info("stats")["rejected_connections"]) - refused_before >= REFUSALS:
                    fillers.pop().close()
                    return
                time.sleep(0.05)

        freer = threading.Thread(target=free_a_slot_after_refusals, daemon=True)
        freer.start()
        assert admin.ping() is True  # refused REFUSALS times, then in
        freer.join(ADMIN_RETRY_SECONDS)
        refused = int(fillers[0].info("stats")["rejected_connections"]) - refused_before
        assert refused >= REFUSALS, "Redis refused the admin connection only %d times" % refused
        assert int(admin.client_id()) != dropped_id  # a new connection, not the dropped one
    finally:
        admin.close()
        for filler in fillers:
            filler.close()
