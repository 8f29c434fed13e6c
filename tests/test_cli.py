"""The `serve` command: as a real child process, and its settings in-process.

The child processes report readiness with their "serving on URL" line, which the tests
read with a bounded wait; every child is killed (if still running) and reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from autogen_core import AgentId

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime
from autogen_http_runtime._cli.main import _runner, main
from autogen_http_runtime._cli.settings import ServeSettings, make_server

from .utils import SERIALIZERS, Text, Upper, bounded

CONSOLE_SCRIPT = Path(sys.executable).with_name("autogen-http-runtime")


@contextlib.asynccontextmanager
async def serve(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``args`` (a command line); kill and reap the process on the way out."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AUTOGEN_HTTP_")}
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**environment, **(env or {})},
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await bounded(proc.communicate())


async def ready_url(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    line = (await bounded(proc.stdout.readline())).decode().strip()
    assert line.startswith("serving on http://127.0.0.1:"), f"expected the ready line, got {line!r}"
    return line.removeprefix("serving on ")


@pytest.mark.parametrize(
    ("command", "options", "env", "stop_signal"),
    [
        pytest.param(
            (sys.executable, "-m", "autogen_http_runtime"),
            ("--port", "0", "--log-format", "json", "--grace", "1", "--loop", "asyncio"),
            {},
            signal.SIGTERM,
            id="python-m-flags-sigterm",
        ),
        pytest.param(
            (str(CONSOLE_SCRIPT),),
            (),
            {
                "AUTOGEN_HTTP_PORT": "0",
                "AUTOGEN_HTTP_LOG_FORMAT": "json",
                "AUTOGEN_HTTP_GRACE": "1",
                "AUTOGEN_HTTP_LOOP": "uvloop",
            },
            signal.SIGINT,
            id="console-script-env-sigint",
        ),
    ],
)
async def test_serve_runs_a_host_until_a_signal_then_exits_0(
    command: tuple[str, ...], options: tuple[str, ...], env: dict[str, str], stop_signal: signal.Signals
) -> None:
    async with serve(*command, "serve", *options, env=env) as proc:
        url = await ready_url(proc)
        async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
            ready = await bounded(http.get("/readyz"))
            assert ready.status_code == 200

            serving = HttpWorkerAgentRuntime(url, name="upper-worker")
            caller = HttpWorkerAgentRuntime(url)
            for worker in (serving, caller):
                worker.add_message_serializer(SERIALIZERS)
            try:
                await bounded(serving.start())
                await bounded(caller.start())
                await Upper.register(serving, "upper", Upper)
                reply = await bounded(caller.send_message(Text("through the cli"), AgentId("upper", "k")))
                assert reply == Text("THROUGH THE CLI")
                metrics = (await bounded(http.get("/metrics"))).text
                assert "autogen_http_calls_routed_total 1.0" in metrics
            finally:
                await bounded(caller.stop())
                await bounded(serving.stop())

        proc.send_signal(stop_signal)
        assert await bounded(proc.wait()) == 0
        assert proc.stderr is not None
        lines = [json.loads(line) for line in (await bounded(proc.stderr.read())).decode().splitlines()]
    messages = [entry["message"] for entry in lines]
    assert any(m.startswith("Host serving on ") for m in messages)
    assert any(m.startswith("Worker ") and m.endswith("connected (upper-worker)") for m in messages)
    assert "Signal received; stopping the host" in messages
    assert messages[-1].endswith(" stopped")
    assert {entry["level"] for entry in lines} == {"INFO"}  # nothing went wrong: no warning, no error


def test_loop_auto_is_uvloop_when_installed_and_asyncio_on_request() -> None:
    import uvloop  # the [fast] extra, part of the dev install

    assert _runner("auto") is uvloop.run
    assert _runner("uvloop") is uvloop.run
    assert _runner("asyncio") is asyncio.run


async def test_serve_on_a_taken_port_exits_1_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        async with serve(sys.executable, "-m", "autogen_http_runtime", "serve", "--port", port) as proc:
            stdout, stderr = await bounded(proc.communicate())
    assert proc.returncode == 1 and stdout == b""
    [line] = stderr.decode().splitlines()
    assert line.startswith("autogen-http-runtime serve: ")
    assert f"Cannot listen on 127.0.0.1:{port}" in line


def test_help_lists_every_setting_with_its_environment_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    for name in ServeSettings.model_fields:
        assert f"--{name.replace('_', '-')}" in help_text
        assert f"AUTOGEN_HTTP_{name.upper()}" in help_text
    for phrase in ("/healthz", "/readyz", "/metrics", "/dashboard", "SIGTERM", "default: 9000"):
        assert phrase in help_text


def test_help_runs_as_a_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "autogen_http_runtime", "serve", "--help"],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert b"--ssl-certfile" in done.stdout and b"--max-calls-in-flight" in done.stdout


def test_settings_come_from_options_then_environment_then_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AUTOGEN_HTTP_"):
            monkeypatch.delenv(name)
    defaults = ServeSettings()
    assert (defaults.host, defaults.port, defaults.log_format, defaults.ssl_certfile) == (
        "127.0.0.1",
        9000,
        "text",
        None,
    )
    monkeypatch.setenv("AUTOGEN_HTTP_PORT", "9100")
    monkeypatch.setenv("AUTOGEN_HTTP_PING_INTERVAL", "none")
    monkeypatch.setenv("AUTOGEN_HTTP_LOG_LEVEL", "DEBUG")
    from_env = ServeSettings()
    assert (from_env.port, from_env.ping_interval, from_env.log_level) == (9100, None, "debug")
    assert ServeSettings(port=9200).port == 9200
    tls = ServeSettings(ssl_certfile="c.pem", ssl_keyfile="k.pem", ssl_cert_reqs=2)
    assert tls.uvicorn_ssl() == {"ssl_certfile": "c.pem", "ssl_keyfile": "k.pem", "ssl_cert_reqs": 2}


def test_invalid_settings_exit_2_naming_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--max-message-size", "10"])
    assert exited.value.code == 2
    assert "max_message_size" in capsys.readouterr().err
    assert main([]) == 2  # no command: the help, on stderr


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    return cert, key


async def test_tls_settings_pass_through_to_uvicorn(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server = make_server(ServeSettings(port=0, ssl_certfile=str(cert), ssl_keyfile=str(key)))
    await bounded(server.start())
    try:
        assert server.url.startswith("https://127.0.0.1:")
        verify = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(verify=verify, trust_env=False) as http:
            response = await bounded(http.get(f"{server.url}/healthz"))
        assert response.status_code == 200 and response.http_version == "HTTP/1.1"
    finally:
        await bounded(server.stop())


def test_ssl_takes_only_uvicorn_ssl_settings() -> None:
    with pytest.raises(TypeError, match="ssl_"):
        HttpAgentServer(port=0, ssl={"certfile": "c.pem"})


@pytest.mark.usefixtures("restore_root_logging")
def test_a_missing_certificate_exits_1_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "missing.pem")
    assert main(["serve", "--port", "0", "--ssl-certfile", missing, "--ssl-keyfile", missing]) == 1
    gc.collect()  # a failed server task nobody retrieved would complain now
    err = capsys.readouterr().err
    assert "autogen-http-runtime serve: [Errno 2] No such file or directory" in err
    assert "never retrieved" not in err
