"""The Node.js worker (examples/node-worker) on a secured host: a bearer token, extra handshake
headers for an authenticator of one's own, and a private CA for TLS.

Skipped, with the reason, only where `node` is not installed (as tests/test_node_worker.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from autogen_core import AgentId

from autogen_http_runtime import BearerTokens, HttpAgentServer

from .test_node_worker import EXAMPLE, NODE, node_modules  # noqa: F401 (a fixture)
from .test_security import ca, host_tls, serving, tls, workers  # noqa: F401 (fixtures)
from .utils import Text, bounded, owners

pytestmark = pytest.mark.skipif(
    NODE is None, reason="node is not installed: the Node.js worker of examples/node-worker cannot run here"
)

TOKENS = BearerTokens({"node": "n0de-s3cret", "python": "py-s3cret"})
#: What the worker reads from the environment, left out of what the test passes on.
WORKER_VARIABLES = ("AUTOGEN_HOST", "AUTOGEN_HTTP_TOKEN", "AUTOGEN_HTTP_HEADERS", "AUTOGEN_HTTP_CA")


class NodeWorker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def first_line(self) -> dict[str, Any]:
        """The first record it prints: ``{"ready": ...}`` once registered."""
        assert self.process.stdout is not None
        text = await bounded(self.process.stdout.readline())
        assert text, f"the node worker exited: {await self.stderr()}"
        record: dict[str, Any] = json.loads(text)
        return record

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        return (await bounded(self.process.stderr.read())).decode()

    async def refused(self) -> str:
        """It exits 1 without saying ready; what it said on stderr."""
        assert self.process.stdout is not None
        assert await bounded(self.process.stdout.read()) == b""
        assert await bounded(self.process.wait()) == 1
        return await self.stderr()


@contextlib.asynccontextmanager
async def node_worker(*args: str, env: Mapping[str, str] | None = None) -> AsyncIterator[NodeWorker]:
    assert NODE is not None
    base = {key: value for key, value in os.environ.items() if key not in WORKER_VARIABLES}
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(EXAMPLE / "worker.js"),
        *args,
        env={**base, **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield NodeWorker(process)
    finally:
        if process.returncode is None:
            process.kill()
        await bounded(process.communicate())


async def assert_serves(worker: NodeWorker, server: HttpAgentServer, **python: Any) -> None:
    """Ready, callable from a Python worker, and out with `bye` on SIGTERM."""
    assert (await worker.first_line())["ready"]["agent_type"] == "node-echo"
    async with workers() as make:
        caller = await make(server.url, **python)
        reply = await bounded(caller.send_message(Text("hi"), AgentId("node-echo", "k")))
        assert reply == Text("node heard: hi")
    worker.process.send_signal(signal.SIGTERM)
    assert await bounded(worker.process.wait()) == 0


async def test_the_node_worker_passes_a_bearer_token(node_modules: None) -> None:  # noqa: F811
    async with serving(authenticator=TOKENS) as server:
        # From the environment, the way to keep it out of the process list ...
        async with node_worker(server.url, env={"AUTOGEN_HTTP_TOKEN": "n0de-s3cret"}) as worker:
            await assert_serves(worker, server, token="py-s3cret")
        # ... or on the command line.
        async with node_worker("--token", "n0de-s3cret", server.url) as worker:
            await assert_serves(worker, server, token="py-s3cret")


async def test_without_a_good_token_the_node_worker_is_refused_and_says_so(
    node_modules: None,  # noqa: F811
) -> None:
    async with serving(authenticator=TOKENS) as server:
        async with node_worker(server.url) as worker:
            assert "HTTP 401" in await worker.refused()
        async with node_worker("--token", "wrong", server.url) as worker:
            said = await worker.refused()
            assert "HTTP 401" in said and "no token, or a wrong one" in said
        assert owners(server.service.core) == {}


async def by_api_key(headers: Mapping[str, str]) -> str | None:
    """An authenticator of one's own: an API key in a header of its own."""
    return "node" if headers.get("x-api-key") == "k-123" else None


async def test_the_node_worker_sends_extra_headers(node_modules: None) -> None:  # noqa: F811
    async with serving(authenticator=by_api_key) as server:
        async with node_worker("--header", "X-Api-Key: k-123", server.url) as worker:
            await assert_serves(worker, server, headers={"X-Api-Key": "k-123"})
        headers = json.dumps({"X-Api-Key": "k-123"})
        async with node_worker(server.url, env={"AUTOGEN_HTTP_HEADERS": headers}) as worker:
            await assert_serves(worker, server, headers={"X-Api-Key": "k-123"})
        async with node_worker("--header", "X-Api-Key: nope", server.url) as worker:
            assert "HTTP 401" in await worker.refused()


async def test_the_node_worker_trusts_a_private_ca(
    tls: dict[str, str],  # noqa: F811
    node_modules: None,  # noqa: F811
) -> None:
    async with serving(ssl_settings=host_tls(tls), authenticator=TOKENS) as server:
        assert server.url.startswith("https://")
        token = {"AUTOGEN_HTTP_TOKEN": "n0de-s3cret"}
        async with node_worker("--ca", tls["ca"], server.url, env=token) as worker:
            await assert_serves(worker, server, token="py-s3cret", ssl_ca=tls["ca"])
        async with node_worker(server.url, env={**token, "AUTOGEN_HTTP_CA": tls["ca"]}) as worker:
            await assert_serves(worker, server, token="py-s3cret", ssl_ca=tls["ca"])
        # Without it, Node's own CA store does not know the host's certificate.
        async with node_worker(server.url, env=token) as worker:
            said = await worker.refused()  # "unable to verify the first certificate" on Node 20
            assert "connection error" in said and "certificate" in said


async def test_the_node_worker_says_what_is_wrong_with_its_options(
    node_modules: None,  # noqa: F811
    tmp_path: Path,
) -> None:
    for args, env, says in [
        (["--header", "no colon"], {}, "--header wants 'Name: value'"),
        ([], {"AUTOGEN_HTTP_HEADERS": "[1]"}, "must be a JSON object"),
        (["--ca", str(tmp_path / "ca.pem")], {}, "--ca needs an https:// host address"),
        (["--bogus"], {}, "usage: node worker.js"),
    ]:
        async with node_worker(*args, "http://127.0.0.1:9", env=env) as worker:
            assert await bounded(worker.process.wait()) == 2
            assert says in await worker.stderr()
