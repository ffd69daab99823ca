"""Shared fixtures: a zmq context that is always terminated, and tool-requirement handling."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import zmq


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


def require_tools() -> bool:
    """Under CHARON_REQUIRE_TOOLS=1 (CI) a missing external tool fails instead of skipping."""
    return os.environ.get("CHARON_REQUIRE_TOOLS") == "1"


def skip_or_fail(reason: str) -> None:
    if require_tools():
        pytest.fail(f"required tool missing (CHARON_REQUIRE_TOOLS=1): {reason}")
    pytest.skip(reason)
