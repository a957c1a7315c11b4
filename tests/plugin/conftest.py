"""Every suite the plugin tests run goes into a private network namespace (only ``lo``): a
call to any other address fails at once with ENETUNREACH, and nothing leaves the machine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import runner
from tests.netns import Netns


@pytest.fixture(scope="session", autouse=True)
def _private_network(netns: Netns) -> Iterator[None]:
    runner.DEFAULT_NETNS = netns
    yield
    runner.DEFAULT_NETNS = None
