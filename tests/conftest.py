from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from chertcast.sandbox import DEFAULT_SECRET, SandboxModel, SandboxServer, sandbox_transport

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def model() -> SandboxModel:
    return SandboxModel()


@pytest.fixture
async def http(model: SandboxModel) -> AsyncIterator[httpx.AsyncClient]:
    """A real httpx client talking to the sandbox in-process."""
    async with httpx.AsyncClient(transport=sandbox_transport(model), base_url="http://sandbox.test/api/v1") as client:
        yield client


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    """The sandbox served by uvicorn on a loopback port."""
    with SandboxServer(SandboxModel()) as running:
        yield running


BEARER = {"authorization": f"Bearer {DEFAULT_SECRET}"}
