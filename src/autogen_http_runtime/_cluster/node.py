"""A host's membership of a cluster: joining, the change log, the inbox, leases, and recovery.

The node runs the tasks that keep this host one of the cluster:

- the *writer* sends the directory's writes to the engine, in order and in batches, and
  calls each write's ``finished`` once this host's view holds it;
- the *follower* applies the change log to the view;
- the *listener* routes what other hosts send to this one's inbox;
- the *ticker* renews this host's lease and declares gone the hosts whose lease expired,
  every tenth of the lease; when the engine is out of reach, it tries to come back.

Out of reach (Redis down, or this host's lease lost): calls to other hosts fail with
``CLUSTER_UNAVAILABLE``; calls between this host's own workers go on; writes take effect
here only. Back: the node puts back everything its workers hold (Redis may have restarted
empty) and reloads the view.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING

from .._constants import __version__
from .._exceptions import ClusterJoinError, ErrorCode
from .._host.deliveries import AT_LEAST_ONCE
from .._host.directory import ClusterStatus
from .._host.security import AccessPolicy
from .._host.session import CLOSE_NORMAL, WorkerSession
from .config import PEERING_VERSION, RETRY_INTERVAL, ClusterConfig, disagreement, host_name
from .deliveries import StreamDeliveries
from .delivery_store import DeliveryStore
from .directory import ClusterDirectory
from .engine import Engine, EngineUnavailable, NotJoined, SettingsDisagree
from .envelope import BatchReader, BatchWriter, Item, batch_key, keyed_digest
from .links import Dial
from .peers import PeerTable
from .redis_engine import RedisEngine
from .state_store import RedisStateStore
from .sync import ViewSync
from .tasks import cancel_tasks
from .view import WorkerInfo

if TYPE_CHECKING:
    from .._host.core import RoutingCore


class ClusterNode:
    """This host's membership of its cluster.

    Args:
        config: The cluster's settings.
        replicas: Several workers may serve one agent type (all hosts must agree).
        max_message_size: This host's frame limit (all hosts must agree).
        access: The access policy (all hosts must agree).
        engine: The engine; a :class:`RedisEngine` for ``config.redis_url`` by default.
    """

    def __init__(
        self,
        config: ClusterConfig,
        *,
        replicas: bool,
        max_message_size: int,
        access: AccessPolicy | None,
        logger: logging.Logger,
        engine: Engine | None = None,
    ) -> None:
        self.config = config
        self.host = host_name()
        self._log = logger
        self.engine: Engine = engine or RedisEngine(
            config.redis_url, cluster=config.name, host=self.host, lease=config.lease
        )
        self.where = self.engine.where
        #: Where the durable agents' states of the cluster are (docs/durable-agents.md).
        self.state_store = RedisStateStore(config.redis_url, cluster=config.name)
        key = batch_key(config.secret, config.name)
        self._settings = (
            ("peering", PEERING_VERSION),
            ("cluster_secret", keyed_digest(key, "cluster secret")),
            ("replicas", "on" if replicas else "off"),
            ("max_message_size", str(max_message_size)),
            ("access_policy", "none" if access is None else keyed_digest(key, access.describe())),
            ("delivery", config.delivery),
        )
        self.directory = ClusterDirectory(
            replicas=replicas,
            here=self.host,
            stand_in=self._stand_in,
            replaced=self._replaced,
            host_gone=self._host_gone,
            logger=logger,
        )
        self._key = key
        self._host_info: dict[str, object] = {"started": time.time(), "version": __version__}
        #: Opens direct links to other hosts (set by the web layer with ``cluster_link_url``).
        self.dial: Dial | None = None
        self._core: RoutingCore | None = None
        self._peers: PeerTable | None = None
        #: Why the engine is out of reach, or ``None``; ``"not started"`` before :meth:`start`.
        self.unavailable: str | None = "not started"
        #: Counts connections to the engine: a failure seen on an older one is old news.
        self.generation = 0
        self._up = asyncio.Event()
        self.sync = ViewSync(self, self.directory, logger)
        self.sync.moved = self._release
        self.directory.attach(self.sync, self.status)
        self._tasks: list[asyncio.Task[None]] = []
        self._live: tuple[str, ...] = ()
        self._reasserted = 0
        self._stopping = False
        #: With at-least-once delivery: the store of event copies (from :meth:`start`).
        self.deliveries: StreamDeliveries | None = None

    # -- wiring -------------------------------------------------------------------------

    def bind(self, core: RoutingCore) -> None:
        self._core = core

    def offer_links(self, url: str, dial: Dial) -> None:
        """Take direct links from other hosts at ``url`` (said when joining), and open them with ``dial``."""
        self._host_info["link"] = url
        self.dial = dial

    @property
    def core(self) -> RoutingCore:
        assert self._core is not None, "bind() the routing core first"
        return self._core

    @property
    def started(self) -> bool:
        return bool(self._tasks)

    def status(self) -> ClusterStatus:
        peers = self._peers.each() if self._peers is not None else []
        return ClusterStatus(
            name=self.config.name,
            host=self.host,
            unavailable=self.unavailable,
            hosts=self._live or (self.host,),
            frames_out={peer.name: peer.frames_out for peer in peers},
            frames_in={peer.name: peer.frames_in for peer in peers},
            bytes_in=0 if self._peers is None else self._peers.bytes_in,
            refused=0 if self._peers is None else self._peers.refused,
            reasserted=self._reasserted,
            links=tuple(sorted(peer.name for peer in peers if peer.link is not None)),
        )

    # -- start and stop -----------------------------------------------------------------

    async def start(self) -> None:
        """Join the cluster: connect, take a lease, load the directory, start the tasks.

        Raises:
            ClusterJoinError: The engine cannot be reached, or a setting differs from the
                running hosts' (the message names it).
        """
        self._peers = PeerTable(
            self,
            BatchReader(self._key, self.config.name, self.host),
            BatchWriter(self._key, self.config.name, self.host),
            self._log,
        )
        try:
            await self._join()
        except EngineUnavailable as exc:
            await self.engine.close()
            raise ClusterJoinError(f"Cannot join cluster {self.config.name!r}: {exc}") from None
        except SettingsDisagree as exc:
            await self.engine.close()
            raise ClusterJoinError(disagreement(self.config.name, exc.name)) from None
        if self.config.delivery == AT_LEAST_ONCE:
            await self._start_deliveries()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.sync.write_loop(), name="autogen-http-cluster writer"),
            loop.create_task(self.sync.follow(self._up), name="autogen-http-cluster follower"),
            loop.create_task(self._listen(), name="autogen-http-cluster listener"),
            loop.create_task(self._tick(), name="autogen-http-cluster ticker"),
        ]
        self._log.info(
            "Host %s joined cluster %r through %s (%d host(s) up)",
            self.host,
            self.config.name,
            self.where,
            len(self._live),
        )

    async def _start_deliveries(self) -> None:
        assert isinstance(self.engine, RedisEngine), "at-least-once delivery needs the Redis engine"
        store = DeliveryStore(self.engine, self.host)
        config = self.config
        deliveries = StreamDeliveries(
            store, self.core, visibility_timeout=config.visibility_timeout,
            max_deliveries=config.max_deliveries, logger=self._log,
        )  # fmt: skip
        try:
            await deliveries.start()
        except EngineUnavailable as exc:
            await store.close()
            await self.engine.leave()
            await self.engine.close()
            raise ClusterJoinError(f"Cannot join cluster {config.name!r}: {exc}") from None
        self.deliveries = self.core.events.deliveries = deliveries

    async def _join(self) -> None:
        """Connect, take the lease, put back this host's entries, load the view; then up."""
        await self.engine.connect()
        self.generation += 1
        await self.engine.join(json.dumps(self._host_info, separators=(",", ":")), self._settings)
        for last in (False, False, True):  # again for a worker that connected meanwhile
            _, refused = await self.engine.assert_host(self.directory.state())
            for what, refusal in refused:
                self.directory.refused_again(what, refusal)
            snapshot = await self.engine.snapshot()
            if self.directory.load(snapshot, report=last):
                break
        self._live = tuple(snapshot.hosts)
        self.sync.settled()
        was = self.unavailable
        self.unavailable = None
        self._up.set()
        if was is not None and was != "not started":
            self._reasserted += 1
            self._log.warning(
                "Cluster %r reachable again through %s; this host's %d worker(s) and their entries are back",
                self.config.name,
                self.where,
                sum(1 for s in self.directory.workers() if s.remote is None),
            )

    async def stop(self, timeout: float = 2.0) -> None:
        """Leave the cluster: send what is queued, give up the lease, close the connections."""
        if self._stopping or self._peers is None or not self._tasks:
            return
        self._stopping = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._quiet(), timeout)
        if self.deliveries is not None:
            self.core.events.deliveries = None
            await self.deliveries.stop(timeout)
        if self.unavailable is None:
            try:
                await asyncio.wait_for(self.engine.leave(), timeout)
            except (EngineUnavailable, asyncio.TimeoutError) as exc:
                self._log.warning("Could not leave cluster %r cleanly: %s", self.config.name, exc)
        self.unavailable = "stopped"
        await cancel_tasks(self._tasks, timeout)
        closing = {asyncio.ensure_future(link.closed()) for link in self._peers.close()}
        for late in (await asyncio.wait(closing, timeout=timeout))[1] if closing else ():
            late.cancel()  # the links' closing handshakes get ``timeout``, no more
        try:
            await asyncio.wait_for(self.engine.close(), timeout)
        except asyncio.TimeoutError:
            self._log.warning("Closing the connections to Redis took over %.0f s; left to the GC", timeout)
        self._log.info("Host %s left cluster %r", self.host, self.config.name)

    async def _quiet(self) -> None:
        """Until every write and every batch queued has gone out."""
        await self.sync.writes_done.wait()
        assert self._peers is not None
        for peer in self._peers.each():
            await peer.flushed()

    # -- out of reach and back ----------------------------------------------------------

    def lost_engine(self, reason: str, generation: int) -> None:
        """The engine failed on a connection of ``generation``: out of reach until it is back."""
        if generation != self.generation or self.unavailable is not None or self._stopping:
            return
        self.unavailable = reason
        self._up.clear()
        self._log.error(
            "Cluster %r out of reach (%s): calls to other hosts fail until it is back",
            self.config.name,
            reason,
        )
        core = self.core
        ended = core.calls.host_lost(
            None, ErrorCode.CLUSTER_UNAVAILABLE, f"the cluster is out of reach ({reason})"
        )
        if ended:
            self._log.warning("Failed %d call(s) in flight between hosts", ended)
        if self._peers is not None:
            self._peers.discard_all()
        self.sync.fail_writes()
        self.sync.settled(everything=True)

    async def _tick(self) -> None:
        interval = self.config.lease / 10
        while True:
            if self.unavailable is None:
                generation = self.generation
                try:
                    tick = await self.engine.tick()
                except EngineUnavailable as exc:
                    self.lost_engine(str(exc), generation)
                    continue
                if not tick.renewed:
                    self.lost_engine(
                        "this host's lease expired (it stalled, or Redis lost its data)", generation
                    )
                    continue
                self._live = tuple(tick.live)
                for host in tick.gone:
                    self._host_gone(host, "its lease expired")
                self._release()
                await asyncio.sleep(interval)
            else:
                try:
                    await self._join()
                except (EngineUnavailable, NotJoined):
                    await asyncio.sleep(RETRY_INTERVAL)
                except SettingsDisagree as exc:
                    self._log.error("%s", disagreement(self.config.name, exc.name))
                    await asyncio.sleep(max(RETRY_INTERVAL, self.config.lease))

    # -- other hosts --------------------------------------------------------------------

    def _release(self) -> None:
        """The view moved on: route the batches parked until it did."""
        if self._peers is not None and self._core is not None:
            self._peers.release(self.directory.view.version, self._core)

    async def _listen(self) -> None:
        assert self._peers is not None
        while True:
            await self._up.wait()
            generation = self.generation
            try:
                data = await self.engine.receive()
            except EngineUnavailable as exc:
                self.lost_engine(str(exc), generation)
                continue
            if generation == self.generation:
                self._peers.receive(data, self.directory.view.version, self.core)

    def seal(self, items: list[Item], *, to: str, previous: int) -> tuple[int, bytes]:
        """A batch for host ``to``: its number, and the sealed batch."""
        assert self._peers is not None
        return self._peers.seal(items, self.directory.view.version, to=to, previous=previous)

    def is_live(self, host: str) -> bool:
        """Whether ``host`` held its lease at this host's last renewal."""
        return host in self._live

    def _stand_in(self, worker_id: str, info: WorkerInfo) -> WorkerSession:
        assert self._peers is not None
        return self._peers.get(info.host).stand_in(
            worker_id,
            name=info.name,
            max_message_size=info.max_message_size,
            connected_at=info.connected_at,
            instance=info.instance,
            identity=info.identity,
        )

    def _replaced(self, session: WorkerSession, why: str) -> None:
        self._log.info("Worker %s connected again through another host of the cluster", session.worker_id)
        session.close(CLOSE_NORMAL, why)
        self.core.close_session(session, why)

    def _host_gone(self, host: str, why: str) -> None:
        if host == self.host or self._peers is None or host not in self._peers.peers:
            return
        log = self._log.info if why == "it left" else self._log.warning
        log("Host %s of cluster %r is gone (%s)", host, self.config.name, why)
        ended = self.core.calls.host_lost(
            host, ErrorCode.WORKER_DISCONNECTED, f"its host {host} is gone ({why})"
        )
        if ended:
            self._log.warning("Failed %d call(s) in flight with host %s", ended, host)
        self.directory.view.drop_host(host)
        self._peers.drop(host)

    def peer_silent(self, host: str, why: str, *, both_ways: bool = True, lost_cluster: bool = False) -> None:
        """What was sent to ``host`` may be lost (nobody listens to its inbox, or this host's
        link to it closed: not ``both_ways``, its answers to calls from there may still come
        back): the calls in flight with it fail now rather than when its lease ends, with
        ``CLUSTER_UNAVAILABLE`` if ``host`` said it had lost the cluster."""
        code = ErrorCode.CLUSTER_UNAVAILABLE if lost_cluster else ErrorCode.WORKER_DISCONNECTED
        ended = self.core.calls.host_lost(host, code, why, both_ways=both_ways)
        if ended:
            self._log.warning("Host %s: %s; failed %d call(s) in flight with it", host, why, ended)

    async def link_address(self, host: str) -> str | None:
        """Where ``host`` takes direct links; ``None``: it takes none.

        Raises:
            EngineUnavailable: The engine cannot be reached.
            LookupError: ``host`` has no entry in the engine (it is joining, or gone).
        """
        info = await self.engine.host_info(host)
        if info is None:
            raise LookupError(host)
        try:
            address = json.loads(info).get("link")
        except (ValueError, AttributeError):
            return None
        return address if isinstance(address, str) and address else None

    def receive_link(self, data: bytes) -> str | None:
        """A batch from another host's direct link: its sender; ``None``: refused, or this host
        is out of reach (the link should close: its sender then fails its calls in flight here)."""
        if self.unavailable is not None or self._peers is None:
            return None
        return self._peers.receive(data, self.directory.view.version, self.core, via="links")

    def link_closed(self, host: str) -> None:
        """``host``'s link to this one ended: answers to calls made from here may have been on it."""
        if not self._stopping and self._peers is not None and host in self._peers.peers:
            self.peer_silent(
                host,
                "its direct link to this host closed (it died, or the connection broke)",
                both_ways=False,
            )
