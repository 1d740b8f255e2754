"""Several instances on PostgreSQL: key derivation cost, a restart with many accounts logging in
at once, and logins per second through HAProxy with one and with two instances.

    sudo .venv/bin/python -m tests.benchmark_instances [--accounts 200] [--logins 400] [--clients 8]

Runs a real Dovecot (root needed, as for the integration tests), a throwaway PostgreSQL
cluster, HAProxy and the proxy as subprocesses, all on 127.0.0.1. Accounts are written
straight into the database with a valid access token, so logins measure the proxy (unlock,
upstream XOAUTH2 login to Dovecot), not Entra ID.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from proxy.store import AccountMeta, Argon2Params, ScryptParams, Secrets
from proxy.store.kdf import derive
from proxy.store.postgresql import PostgresStore
from tests.support.dovecot import Dovecot, dovecot_available
from tests.support.haproxy import HAProxy
from tests.support.instances import login_answer
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.support.proxy_config import limits_toml, listener_toml
from tests.support.proxy_process import ProxyProcess

MAILBOX = "bench@contoso.example"
PASSWORD = "bench local password"


def kdf_costs(runs: int = 10) -> None:
    for name, params in (("scrypt N=2**15 r=8 p=1 (before)", ScryptParams()),
                         ("Argon2id 46 MiB t=1 p=1 (now)  ", Argon2Params())):
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            derive(PASSWORD, os.urandom(16), params)
            times.append(time.perf_counter() - started)
        print(f"first-login key derivation, {name}: median {statistics.median(times) * 1000:6.1f} ms"
              f", memory {params.memory_bytes / 2**20:.0f} MiB")


def users(count: int) -> list[str]:
    return [f"user{n:03d}@contoso.example" for n in range(count)]


def config(workdir: Path, dsn: str, dovecot: Dovecot, ports: tuple[int, int], count: int) -> str:
    upstream, ca = f"tls:127.0.0.1:{dovecot.imaps_port}", dovecot.ca.cert_path
    accounts = "".join(
        f'[[account]]\nusername = "{user}"\nmailbox = "{MAILBOX}"\ntenant = "contoso.example"\n'
        f'client_id = "app"\nflow = "client_credentials"\nclient_secret = "unused"\n'
        f'authority = "http://127.0.0.1:9"\n\n' for user in users(count))
    return (f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\npath = "{workdir / "store"}"\n\n'
            + limits_toml(max_sessions=1000, max_sessions_per_address=1000)
            + listener_toml("imap", f"tcp:{ports[0]}:interface=127.0.0.1", upstream, ca)
            + listener_toml("imap", f"haproxy:tcp:{ports[1]}:interface=127.0.0.1", upstream, ca,
                            allow_from=["127.0.0.0/8"], allow_plaintext=True,
                            proxy_protocol_from=["127.0.0.1/32"])
            + accounts)


def peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def restart_storm(proxy: ProxyProcess, port: int, count: int) -> None:
    """Every account logs in at once on a freshly started instance (each needs a derivation)."""
    before = peak_memory_mib(proxy.pid)
    barrier = threading.Barrier(count)

    def one(user: str) -> str:
        barrier.wait()
        return login_answer(port, PASSWORD, user=user)

    started = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        answers = list(pool.map(one, users(count)))
    took = time.perf_counter() - started
    assert answers == ["OK"] * count, [a for a in answers if a != "OK"][:3]
    print(f"restart, {count} accounts logging in at once: all OK in {took:.1f} s; proxy peak "
          f"RSS {peak_memory_mib(proxy.pid):.0f} MiB (idle after start: {before:.0f} MiB)")


def logins_per_second(port: int, logins: int, clients: int, count: int) -> float:
    names = users(count)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda n: login_answer(port, PASSWORD, user=names[n % count]),
                                range(logins)))
    assert answers == ["OK"] * logins
    return logins / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--logins", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    reason = dovecot_available()
    if reason:
        raise SystemExit(f"benchmark needs Dovecot: {reason}")
    kdf_costs()
    with tempfile.TemporaryDirectory(prefix="xoauth2-bench-") as tmp:
        root = Path(tmp)
        dovecot, server = Dovecot(root / "dovecot", jwt_key=os.urandom(32)), PostgresServer()
        started: list[object] = []
        try:
            dovecot.start()
            server.create()
            server.start()
            dsn = server.new_database("bench")
            store = PostgresStore(dsn)
            token = dovecot.token(MAILBOX, 7200)
            for user in users(args.accounts):
                store.save(user, store.new_key(PASSWORD), Secrets(None, token, time.time() + 7200),
                           AccountMeta(user, MAILBOX, "client_credentials"))
            store.close()
            instances = []
            for n in (1, 2):
                ports = (free_port(), free_port())
                proxy = ProxyProcess(root / f"proxy{n}",
                                     config(root / f"proxy{n}", dsn, dovecot, ports, args.accounts))
                instances.append((proxy, ports))
            first, (first_direct, first_balanced) = instances[0]
            first.start(first_direct, first_balanced)
            started.append(first)
            restart_storm(first, first_direct, args.accounts)
            for count in (1, 2):
                balancer = HAProxy(root / f"haproxy{count}", [p[1] for _, p in instances[:count]])
                if count == 2:
                    second, ports = instances[1]
                    second.start(*ports)
                    started.append(second)
                    logins_per_second(ports[0], args.accounts, args.clients, args.accounts)  # unlock
                balancer.start()
                try:
                    rate = logins_per_second(balancer.port, args.logins, args.clients, args.accounts)
                finally:
                    balancer.stop()
                print(f"through HAProxy, {count} instance(s): {rate:6.1f} logins/s "
                      f"({args.logins} login+logout, {args.clients} clients at once)")
        finally:
            for proxy in started:
                proxy.stop()  # type: ignore[attr-defined]
            server.stop()
            server.remove()
            dovecot.stop()


if __name__ == "__main__":
    main()
