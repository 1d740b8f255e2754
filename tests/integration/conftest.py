"""The integration tests' world: see tests/support/world.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.browser import browser  # noqa: F401  (a fixture)
from tests.support.dovecot import Dovecot
from tests.support.world import (  # noqa: F401  (re-exported for the test modules)
    ALICE,
    ALICE_SECRET,
    CAROL,
    CAROL_PASSWORD,
    CAROL_SECRET,
    PASSWORD,
    TENANT,
    World,
    open_world,
)


@pytest.fixture(scope="session")
def world(dovecot_server: Dovecot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with open_world(tmp_path_factory.mktemp("world"), dovecot_server) as opened:
        yield opened
