"""Session-wide setup for the example suite, with one deliberate violation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from egress import udp_connect


@pytest.fixture(scope="session", autouse=True)
def session_egress() -> Iterator[None]:
    """Egress during session setup, which belongs to no single test: reported as <session>."""
    udp_connect("192.0.2.99", 9999)  # violation, attributed to <session>
    yield
