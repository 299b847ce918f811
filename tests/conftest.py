"""Fixtures shared by several test files."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from _llm_server import LLMServer


@pytest.fixture
async def server() -> AsyncIterator[LLMServer]:
    """The local OpenAI/Anthropic-compatible server (``examples/_llm_server.py``) on
    127.0.0.1, in the test's event loop (anyio tests)."""
    async with LLMServer() as running:
        yield running
