"""Several instances on one PostgreSQL database behind a real HAProxy: shared accounts, one
refresh per account across instances, kill -9 during refreshes, a dump without secrets, the
device's real address through the balancer, and the database down and back."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from proxy.store import Secrets
from proxy.store.postgresql import PostgresStore
from tests.support.dovecot import Dovecot
from tests.support.fake_entra import FakeEntra
from tests.support.flows import device_code_add
from tests.support.haproxy import HAProxy, haproxy_available
from tests.support.instances import (
    APP,
    DANA,
    FAILURES_BEFORE_LOCKOUT,
    LOCAL_PASSWORD,
    Instance,
    login_answer,
    make_instances,
)
from tests.support.postgres import PostgresServer
from tests.support.world import TENANT

pytestmark = pytest.mark.integration

REFRESH = "refresh_token"
EXPIRING = 200  # seconds: inside the refresh margin, so every login refreshes


@dataclass
class Cluster:
    server: PostgresServer
    dsn: str
    entra: FakeEntra
    instances: list[Instance]
    haproxy: HAProxy
    probe: PostgresStore  # the test's own view of the database

    def secrets(self) -> Secrets:
        return self.probe.load(DANA, self.probe.derive_key(DANA, LOCAL_PASSWORD))

    def version(self) -> tuple[int, ...] | None:
        return self.probe.stamp(DANA)


@pytest.fixture(scope="module")
def cluster(dovecot_server: Dovecot, postgres_server: PostgresServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = haproxy_available()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("instances")
    dsn = postgres_server.new_database("instances")
    entra = FakeEntra(lambda mailbox, lifetime: dovecot_server.token(mailbox, lifetime),
                      invalidate_rotated_refresh_tokens=True, hang_seconds=3)
    entra.start()
    instances: list[Instance] = []
    haproxy = None
    try:
        entra.add_user(TENANT, APP, DANA)
        instances = make_instances(root, 2, dsn, dovecot_server, entra)
        device_code_add(instances[0].proxy.config, entra, DANA, DANA, LOCAL_PASSWORD)
        for instance in instances:
            instance.start()
        haproxy = HAProxy(root / "haproxy", [i.balanced_port for i in instances])
        haproxy.start()
        probe = PostgresStore(dsn)
        yield Cluster(postgres_server, dsn, entra, instances, haproxy, probe)
        probe.close()
    finally:
        if haproxy is not None:
            haproxy.stop()
        for instance in instances:
            instance.proxy.stop()
        entra.stop()


def _expire_stored_token(cluster: Cluster) -> None:
    """Write the account's record again with its access token expired, as time would."""
    store = cluster.probe
    key = store.derive_key(DANA, LOCAL_PASSWORD)
    with store.lock(DANA):
        secrets = store.load(DANA, key)
        store.save(DANA, key, Secrets(secrets.refresh_token, secrets.access_token,
                                      time.time() - 10, secrets.extra))


def test_an_account_added_on_one_instance_serves_logins_on_the_other(cluster: Cluster) -> None:
    """`account add` ran against instance 1 only; instance 2 logs the device in, and lists
    the account from the database."""
    assert login_answer(cluster.instances[1].imap_port) == "OK"
    listed = cluster.instances[1].proxy.cli("account", "list")
    assert listed.returncode == 0
    assert DANA in listed.stdout and "not added" not in listed.stdout


def test_a_refresh_storm_over_both_instances_makes_one_token_request(cluster: Cluster) -> None:
    """30 logins at once, spread over both instances, on an expired token: exactly one refresh
    request reaches Entra ID (in strict rotation), and every login succeeds."""
    cluster.entra.access_token_lifetime = 3600
    for instance in cluster.instances:  # both have the account unlocked
        assert login_answer(instance.imap_port) == "OK"
    _expire_stored_token(cluster)
    before = cluster.entra.token_requests(REFRESH)
    answers: list[str] = []
    ports = [cluster.instances[n % 2].imap_port for n in range(30)]
    threads = [threading.Thread(target=lambda p=port: answers.append(login_answer(p)))
               for port in ports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == ["OK"] * 30
    assert cluster.entra.token_requests(REFRESH) - before == 1
    assert cluster.entra.reused_refresh_tokens == 0


def _wait_for(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def test_kill_9_during_refreshes_loses_nothing(cluster: Cluster) -> None:
    """An instance killed at random moments of a refresh (waiting for Entra ID's answer with
    the account locked, or just after the rotated token was committed) loses no account and
    makes no instance use a refresh token twice; the survivor and the restarted instance go
    on. (Between Entra ID's answer and the commit no client can keep a rotated token it never
    received; real Entra ID keeps the previous one valid, so that moment loses nothing either.)"""
    rng = random.Random(13)
    cluster.entra.access_token_lifetime = EXPIRING
    _expire_stored_token(cluster)
    for round_number in range(6):
        victim, survivor = rng.sample(cluster.instances, 2)
        _kill_during_a_refresh(cluster, victim, waiting=rng.random() < 0.5, rng=rng)
        assert login_answer(survivor.imap_port) == "OK", f"round {round_number}"
        victim.start()
        assert login_answer(victim.imap_port) == "OK", f"round {round_number}"
    assert cluster.entra.reused_refresh_tokens == 0
    listed = cluster.instances[0].proxy.cli("account", "list")
    assert "needs re-authorisation" not in listed.stdout and DANA in listed.stdout
    cluster.entra.access_token_lifetime = 3600


def _kill_during_a_refresh(cluster: Cluster, victim: Instance, waiting: bool,
                           rng: random.Random) -> None:
    """Log in on `victim` (which refreshes) and kill -9 it while it waits for Entra ID, or
    just after the rotated token was committed."""
    requests, version = cluster.entra.token_requests(REFRESH), cluster.version()
    if waiting:
        cluster.entra.fail_next(1, "timeout")  # held unanswered, never processed

    def log_in() -> None:
        with contextlib.suppress(OSError):  # the instance is killed under it
            login_answer(victim.imap_port)

    attempt = threading.Thread(target=log_in)
    attempt.start()
    if waiting:
        _wait_for(lambda: cluster.entra.token_requests(REFRESH) > requests)
        time.sleep(rng.uniform(0, 1.0))
    else:
        _wait_for(lambda: cluster.version() != version)
        time.sleep(rng.uniform(0, 0.05))
    victim.proxy.kill()
    attempt.join(30)


def test_a_database_dump_holds_no_secret(cluster: Cluster) -> None:
    """pg_dump of the database holds neither the access token, the refresh token, the local
    password nor the database password."""
    secrets = cluster.secrets()
    dump = cluster.server.dump(cluster.dsn)
    assert "xoauth2_proxy_accounts" in dump and DANA in dump
    for secret in (secrets.access_token, secrets.refresh_token, LOCAL_PASSWORD,
                   cluster.server.password):
        assert secret and secret not in dump


def test_logins_through_haproxy_see_the_device_address(cluster: Cluster) -> None:
    """Through HAProxy (send-proxy-v2), logins work on both instances and their logs name the
    device's address, not the balancer's."""
    for _ in range(4):
        assert login_answer(cluster.haproxy.port, source="127.0.0.2") == "OK"
    for instance in cluster.instances:
        log = instance.proxy.log_text()
        assert "imap 127.0.0.2:" in log and f"{DANA} logged in upstream" in log


def test_only_the_balancer_may_use_the_haproxy_listener(cluster: Cluster) -> None:
    """A device connecting straight to a haproxy: listener, from an address not in
    proxy_protocol_from, is disconnected before a byte."""
    port = cluster.instances[0].balanced_port
    with socket.create_connection(("127.0.0.1", port), timeout=5,
                                  source_address=("127.0.0.2", 0)) as direct:
        assert direct.recv(100) == b""
    assert "refused connection from 127.0.0.2: not in proxy_protocol_from" in \
        cluster.instances[0].proxy.log_text()


def test_the_throttle_counts_the_device_address_within_the_documented_bound(
    cluster: Cluster,
) -> None:
    """Wrong passwords from one device through HAProxy lock that device out after at most
    instances x failures_before_lockout tries (each instance counts its own), and only it."""
    bound = len(cluster.instances) * FAILURES_BEFORE_LOCKOUT
    answers = [login_answer(cluster.haproxy.port, f"guess {n}", source="127.0.0.3")
               for n in range(bound + 1)]
    wrong = [a for a in answers if "[AUTHENTICATIONFAILED]" in a]
    assert len(wrong) <= bound
    assert "Too many failed logins" in answers[-1]
    for _ in cluster.instances:  # round robin: each instance refuses it
        assert "Too many failed logins" in login_answer(cluster.haproxy.port, source="127.0.0.3")
    assert login_answer(cluster.haproxy.port, source="127.0.0.4") == "OK"


def test_the_database_down_and_back(cluster: Cluster) -> None:
    """With the database stopped, an unlocked account with a valid token still logs in; an
    instance that never unlocked it answers the temporary failure (never a wrong password);
    once the database is back, that instance logs in without a restart."""
    first, second = cluster.instances
    assert login_answer(first.imap_port) == "OK"
    second.proxy.stop()
    second.start()  # nothing unlocked
    cluster.server.stop()
    try:
        assert login_answer(first.imap_port) == "OK"
        refused = login_answer(second.imap_port)
        assert "[UNAVAILABLE]" in refused and "AUTHENTICATIONFAILED" not in refused
    finally:
        cluster.server.start()
    deadline = time.monotonic() + 30
    while (answer := login_answer(second.imap_port)) != "OK" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert answer == "OK"
    assert "could not be used" in second.proxy.log_text()
