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
from autogen_http_runtime._cli.serving import make_server
from autogen_http_runtime._cli.settings import ServeSettings

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


@pytest.fixture
def tls_files(certificate: tuple[Path, Path], tmp_path: Path) -> dict[str, str]:
    """The certificate and key, and files that go wrong with them in each way."""
    cert, key = certificate
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other",
         "-keyout", str(other / "key.pem"), "-out", str(other / "cert.pem")],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    encrypted = tmp_path / "encrypted.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    return {
        "cert": str(cert),
        "key": str(key),
        "other-key": str(other / "key.pem"),
        "encrypted": str(encrypted),
        "junk": str(tmp_path / "junk.pem"),
        "missing": str(tmp_path / "missing.pem"),
    }


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            ["--ssl-certfile", "{cert}"],
            "--ssl-certfile {cert} holds no private key: give --ssl-keyfile (the certificate's key), "
            "or put the key in the same file.",
        ),
        (
            ["--ssl-certfile", "{missing}", "--ssl-keyfile", "{key}"],
            "--ssl-certfile {missing}: no such file.",
        ),
        (
            ["--ssl-certfile", "{cert}", "--ssl-keyfile", "{missing}"],
            "--ssl-keyfile {missing}: no such file.",
        ),
        (
            ["--ssl-certfile", "{junk}", "--ssl-keyfile", "{key}"],
            "--ssl-certfile {junk} holds no PEM certificate (-----BEGIN CERTIFICATE-----).",
        ),
        (
            ["--ssl-certfile", "{cert}", "--ssl-keyfile", "{junk}"],
            "--ssl-keyfile {junk} holds no PEM private key (-----BEGIN ... PRIVATE KEY-----).",
        ),
        (
            ["--ssl-certfile", "{cert}", "--ssl-keyfile", "{other-key}"],
            "The private key in {other-key} does not belong to the certificate in {cert} "
            "(--ssl-keyfile and --ssl-certfile).",
        ),
        (
            ["--ssl-certfile", "{cert}", "--ssl-keyfile", "{encrypted}"],
            "--ssl-keyfile {encrypted}: the private key is encrypted: give --ssl-keyfile-password.",
        ),
        (
            ["--ssl-certfile", "{cert}", "--ssl-keyfile", "{encrypted}", "--ssl-keyfile-password", "wrong"],
            "--ssl-keyfile {encrypted}: the private key cannot be decrypted with --ssl-keyfile-password.",
        ),
        (
            ["--ssl-keyfile", "{key}"],
            "--ssl-keyfile was given without --ssl-certfile, the server's certificate.",
        ),
        (
            ["--ssl-certfile", "{cert}", "--ssl-keyfile", "{key}", "--ssl-ca-certs", "{junk}"],
            "--ssl-ca-certs {junk} holds no PEM CA certificate.",
        ),
    ],
    ids=[
        "cert-without-key",
        "missing-cert",
        "missing-key",
        "cert-not-pem",
        "key-not-pem",
        "key-of-another-cert",
        "encrypted-key-without-password",
        "wrong-password",
        "key-without-cert",
        "ca-not-pem",
    ],
)
@pytest.mark.usefixtures("restore_root_logging")
def test_tls_files_are_checked_at_start_and_named(
    tls_files: dict[str, str], options: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [option.format_map(tls_files) for option in options]
    assert main(["serve", "--port", "0", *args]) == 2
    gc.collect()  # a failed server task nobody retrieved would complain now
    err = capsys.readouterr().err
    assert err == f"autogen-http-runtime serve: invalid setting: {expected.format_map(tls_files)}\n"


def test_checked_tls_files_that_are_right_pass(tls_files: dict[str, str], tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_text(Path(tls_files["cert"]).read_text() + Path(tls_files["key"]).read_text())
    for settings in (
        ServeSettings(ssl_certfile=str(both)),
        ServeSettings(
            ssl_certfile=tls_files["cert"], ssl_keyfile=tls_files["encrypted"], ssl_keyfile_password="secret"
        ),
        ServeSettings(
            ssl_certfile=tls_files["cert"], ssl_keyfile=tls_files["key"], ssl_ca_certs=tls_files["cert"]
        ),
    ):
        assert make_server(settings).url.startswith("https://")


async def test_serve_with_a_certificate_but_no_key_exits_2_with_one_line(tls_files: dict[str, str]) -> None:
    command = (sys.executable, "-m", "autogen_http_runtime", "serve", "--port", "0")
    async with serve(*command, "--ssl-certfile", tls_files["cert"]) as proc:
        stdout, stderr = await bounded(proc.communicate())
    assert proc.returncode == 2 and stdout == b""
    assert stderr.decode().splitlines() == [
        "autogen-http-runtime serve: invalid setting: "
        f"--ssl-certfile {tls_files['cert']} holds no private key: "
        "give --ssl-keyfile (the certificate's key), or put the key in the same file."
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "{not json",
            "--access-policy {path} is not valid JSON: Expecting property name enclosed in double quotes",
        ),
        ("[1, 2]", '--access-policy {path} must hold a JSON object ({{"rules": ..., "default": ...}}).'),
        (
            '{"rules": {"a": {"call": "*"}}, "extra": 1}',
            "--access-policy {path} is not a valid access policy: Unknown access policy keys: ['extra'].",
        ),
        (
            '{"rules": {"a": {"cal": "*"}}}',
            "--access-policy {path} is not a valid access policy: Unknown access rule keys: ['cal'].",
        ),
        (None, "--access-policy {path}: no such file."),
    ],
    ids=["not-json", "not-an-object", "unknown-key", "unknown-rule-key", "missing"],
)
@pytest.mark.usefixtures("restore_root_logging")
def test_a_bad_access_policy_file_is_named(
    tmp_path: Path, content: str | None, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.json"
    if content is not None:
        path.write_text(content)
    assert main(["serve", "--port", "0", "--tokens", "a=t", "--access-policy", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autogen-http-runtime serve: invalid setting: " + expected.format(path=path))
    assert len(err.splitlines()) == 1


async def test_an_access_policy_without_tokens_needs_a_rule_for_anonymous(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"rules": {"alice": {"call": "*"}}}')
    command = (sys.executable, "-m", "autogen_http_runtime", "serve", "--port", "0")
    async with serve(*command, "--access-policy", str(path)) as proc:
        stdout, stderr = await bounded(proc.communicate())  # a host that started would not exit
    assert proc.returncode == 2 and stdout == b""
    assert stderr.decode() == (
        f"autogen-http-runtime serve: invalid setting: --access-policy {path} gives no rule to 'anonymous', "
        "the identity of every caller when neither --tokens nor --tokens-file is given: every worker and "
        "HTTP request would be refused. Give tokens, or a rule for 'anonymous' (or a \"default\" rule) "
        "in the policy.\n"
    )
    # With a rule that applies to anonymous, or with tokens, it starts.
    for rules in ('{"rules": {"anonymous": {"call": "*"}}}', '{"rules": {}, "default": {"call": "*"}}'):
        path.write_text(rules)
        assert make_server(ServeSettings(port=0, access_policy=str(path))).service.core.access is not None
    path.write_text('{"rules": {"alice": {"call": "*"}}}')
    settings = ServeSettings(port=0, access_policy=str(path), tokens="alice=t")
    assert make_server(settings).service.core.access is not None


@pytest.mark.usefixtures("restore_root_logging")
def test_a_bad_tokens_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tokens"
    path.write_text("alice\n")
    assert main(["serve", "--port", "0", "--tokens-file", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"autogen-http-runtime serve: invalid setting: --tokens-file {path}: Bearer tokens are written "
        "'name=token', one pair per line or comma.\n"
    )


@pytest.mark.usefixtures("restore_root_logging")
def test_a_link_url_without_a_cluster_names_both_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--cluster-link-url", "auto"]) == 2
    assert capsys.readouterr().err == (
        "autogen-http-runtime serve: invalid setting: cluster_link_url (serve --cluster-link-url) needs "
        "a cluster (redis_url, serve --redis-url): links join the hosts of one.\n"
    )
