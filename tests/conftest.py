"""Shared fixtures; with XOAUTH2_PROXY_REQUIRE_INTEGRATION=1 a skipped test is a failure."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

from tests.support.dovecot import dovecot_server  # noqa: F401  (a fixture)
from tests.support.postgres import postgres_server  # noqa: F401  (a fixture)

STRICT = os.environ.get("XOAUTH2_PROXY_REQUIRE_INTEGRATION") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if STRICT and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"skipped, which XOAUTH2_PROXY_REQUIRE_INTEGRATION=1 does not allow: {reason}"
        )
