"""Talking to the admin page of a proxy subprocess: its [admin] table, the address it prints,
HTTP requests that never go through a web proxy from the environment, and scrapes of /metrics
parsed with prometheus_client's own parser."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

PRINTED_URL = re.compile(r"admin page: (http://127\.0\.0\.1:(\d+)/)(\?token=([A-Za-z0-9_-]+))?")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def admin_toml(port: int, token_file: Path | None = None) -> str:
    lines = ["[admin]", f'listen = "tcp:{port}:interface=127.0.0.1"']
    if token_file is not None:
        lines.append(f'token_file = "{token_file}"')
    return "\n".join(lines) + "\n\n"


def printed_url(read_output: Callable[[], str], timeout: float = 20) -> tuple[str, str | None]:
    """(the page's address, its token or None) once the proxy has printed them."""
    deadline = time.monotonic() + timeout
    while True:
        found = PRINTED_URL.search(read_output())
        if found:
            return found.group(1), found.group(4)
        if time.monotonic() > deadline:
            raise TimeoutError("no admin page address in the output:\n" + read_output())
        time.sleep(0.05)


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no HTTP_PROXY from the environment between us and 127.0.0.1
    return session


def scrape(base: str, token: str) -> Samples:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    answer = http().get(base + "metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
