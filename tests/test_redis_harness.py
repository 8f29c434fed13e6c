"""The Redis test harness itself (tests/redis_server.py): real redis-server processes on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import redis_server as harness
from .redis_server import SHARED_PORT, RedisServer, RedisServerError

pytestmark = pytest.mark.timeout(30)


def client(server: RedisServer, **kwargs: object) -> redis.Redis:
    """A client that fails fast: no retries, every command bounded."""
    options: dict[str, object] = {
        "socket_timeout": 2.0,
        "socket_connect_timeout": 2.0,
        "retry": Retry(NoBackoff(), 0),
        **server.client_kwargs(),
        **kwargs,
    }
    return redis.Redis.from_url(server.url, **options)  # type: ignore[arg-type]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:
        yield server


def test_start_serves_on_a_free_loopback_port_without_persistence(redis_server: RedisServer) -> None:
    assert redis_server.running
    assert redis_server.port not in (0, SHARED_PORT)
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    with client(redis_server) as r:
        assert r.ping()
        assert r.config_get("save") == {"save": ""}
        assert r.config_get("appendonly") == {"appendonly": "no"}
        assert r.config_get("dir") == {"dir": str(redis_server.dir)}
        assert int(r.info("server")["tcp_port"]) == redis_server.port


def test_two_servers_run_side_by_side() -> None:
    with RedisServer() as one, RedisServer() as two:
        assert one.port != two.port
        with client(one) as a, client(two) as b:
            a.set("k", "one")
            assert b.get("k") is None


def test_kill_resets_connections_at_once(redis_server: RedisServer) -> None:
    with client(redis_server) as r:
        r.ping()
        pid = redis_server.pid
        redis_server.kill()
        assert not redis_server.running
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            r.ping()
        assert time.monotonic() - started < 1.0
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_restart_comes_back_empty_on_the_same_port(redis_server: RedisServer) -> None:
    port = redis_server.port
    with client(redis_server) as r:
        r.set("k", "v")
        r.save()  # even a dump on disk must not come back
        run_id = r.info("server")["run_id"]
    assert (redis_server.dir / "dump.rdb").exists()
    redis_server.restart()
    assert redis_server.port == port
    with client(redis_server) as r:
        assert r.dbsize() == 0
        assert r.info("server")["run_id"] != run_id


def test_restart_after_stop_and_a_client_reconnects(redis_server: RedisServer) -> None:
    with client(redis_server) as r:
        r.set("k", "v")
        redis_server.kill()
        with pytest.raises(redis.ConnectionError):
            r.get("k")
        redis_server.restart()
        assert r.get("k") is None  # the same client object reconnects on its next command


def test_pause_makes_commands_time_out_and_resume_recovers(redis_server: RedisServer) -> None:
    with client(redis_server, socket_timeout=0.3) as r:
        r.ping()
        redis_server.pause()
        try:
            with pytest.raises(redis.TimeoutError):
                r.ping()
        finally:
            redis_server.resume()
        assert r.ping()


def test_stop_removes_its_own_directory() -> None:
    server = RedisServer().start()
    directory = server.dir
    assert directory.is_dir()
    server.stop()
    assert not directory.exists()
    assert not server.running


def test_a_taken_port_is_retried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real = harness.free_port
        monkeypatch.setattr(harness, "free_port", lambda host: next(ports, None) or real(host))
        with RedisServer(tmp_path) as server:
            assert server.port != taken
            with client(server) as r:
                assert r.ping()


def test_a_server_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    with pytest.raises(RedisServerError, match="Bad directive|wrong number|unknown"):
        RedisServer(tmp_path, extra_args=("--no-such-option", "1")).start()


def test_requirepass_guards_the_default_user(tmp_path: Path) -> None:
    with RedisServer(tmp_path, password="s3cret pass") as server:
        assert server.url == f"redis://:s3cret%20pass@127.0.0.1:{server.port}/0"
        with client(server) as r:
            assert r.ping()
        anonymous = redis.Redis(
            host=server.host, port=server.port, socket_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        with anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.ping()


def test_acl_user_with_key_and_channel_patterns(tmp_path: Path) -> None:
    rules = "~c1:* &c1:* +@all"
    with RedisServer(tmp_path, username="host-a", password="pw", acl_rules=rules) as server:
        assert server.url.startswith("redis://host-a:pw@")
        with client(server) as r:
            assert r.acl_whoami() == "host-a"
            r.set("c1:k", "v")
            assert r.publish("c1:inbox", "x") == 0
            with pytest.raises(redis.exceptions.NoPermissionError):
                r.set("c2:k", "v")
            with pytest.raises(redis.exceptions.NoPermissionError):
                r.publish("c2:inbox", "x")
        anonymous = redis.Redis(
            host=server.host, port=server.port, socket_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        with anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.ping()  # the default user is off
        wrong = redis.Redis.from_url(
            server.url.replace(":pw@", ":nope@"), socket_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        with wrong, pytest.raises(redis.AuthenticationError):
            wrong.ping()


def test_acl_user_needs_a_password() -> None:
    with pytest.raises(ValueError, match="password"):
        RedisServer(username="nobody")


def test_tls_serves_rediss_only(tmp_path: Path) -> None:
    with RedisServer(tmp_path, tls=True) as server:
        assert server.url.startswith("rediss://127.0.0.1:")
        with client(server) as r:
            assert r.ping()
            assert r.config_get("port") == {"port": "0"}  # no plain-text listener
        plain = redis.Redis(host=server.host, port=server.port, socket_timeout=1, retry=Retry(NoBackoff(), 0))
        with plain, pytest.raises(redis.ConnectionError):
            plain.ping()
        untrusted = redis.Redis.from_url(server.url, socket_timeout=2, retry=Retry(NoBackoff(), 0))
        with untrusted, pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.ping()


def test_tls_with_client_certificates_and_acl(tmp_path: Path) -> None:
    with RedisServer(tmp_path, tls=True, tls_client_auth=True, username="u", password="p") as server:
        with client(server) as r:
            assert r.acl_whoami() == "u"
        no_cert = redis.Redis.from_url(
            server.url, ssl_ca_certs=str(server.dir / "ca.pem"), socket_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        with no_cert, pytest.raises(redis.ConnectionError):
            no_cert.ping()


ORPHAN = """
import sys
sys.path.insert(0, sys.argv[1])
from tests.redis_server import RedisServer
server = RedisServer().start()
print(server.port, flush=True)
sys.stdin.read()
"""


def test_a_server_dies_with_the_process_that_started_it() -> None:
    """SIGKILL the owner (no atexit, no __exit__): its redis-server must not linger."""
    root = str(Path(__file__).resolve().parent.parent)
    owner = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, root], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        port = int(owner.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        owner.kill()
        owner.wait(10)
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except ConnectionRefusedError:
                break
            except ConnectionResetError:
                pass  # caught while it exits: look again
            assert time.monotonic() < deadline, "redis-server outlived its owner"
            time.sleep(0.01)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
        for stream in (owner.stdin, owner.stdout):
            if stream is not None:
                stream.close()
