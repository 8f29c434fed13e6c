"""At-least-once events on a cluster (issue 20): acknowledgements, redelivery, dead letters.

Hosts of one cluster run in this process on a throwaway redis-server, except those a test
kills (``tests/procs/cluster_host.py``); workers that die mid-handler are processes too
(``tests/procs/subscriber.py``).
"""

from __future__ import annotations

from typing import Any

import pytest
from autogen_core import MessageContext, RoutedAgent, TopicId, TypeSubscription, message_handler

from autogen_http_runtime import HttpAgentServer, HttpAgentService

from .cluster_utils import MakeHost, MakeWorker, make_host, make_worker, redis_server, until
from .utils import Text, bounded

__all__ = ["make_host", "make_worker", "redis_server"]  # fixtures

AT_LEAST_ONCE: dict[str, Any] = {"delivery": "at-least-once", "visibility_timeout": 1.0, "replicas": True}


class Collector(RoutedAgent):
    """Records each event it handles as (agent key, text, event id); ``fail`` raises while ``failing``."""

    seen: list[tuple[str, str, str]] = []
    failing = True

    def __init__(self) -> None:
        super().__init__("collects events")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> None:
        if message.content == "fail" and Collector.failing:
            raise RuntimeError("this handler always fails")
        Collector.seen.append((self.id.key, message.content, str(ctx.message_id)))


@pytest.fixture(autouse=True)
def _collector() -> None:
    Collector.seen = []
    Collector.failing = True


async def pending(host: HttpAgentServer) -> int:
    """Copies delivered and not acknowledged in the cluster, as the host last saw (its claimer)."""
    cluster = host.service.cluster
    assert cluster is not None and cluster.deliveries is not None
    return cluster.deliveries.counts.pending


def test_at_least_once_needs_a_cluster_and_sane_settings() -> None:
    with pytest.raises(ValueError, match="needs a cluster"):
        HttpAgentService(delivery="at-least-once")
    with pytest.raises(ValueError, match="delivery must be"):
        HttpAgentService(delivery="exactly-once")
    with pytest.raises(ValueError, match="max_deliveries"):
        HttpAgentService(
            delivery="at-least-once", redis_url="redis://x", cluster_secret="s", max_deliveries=0
        )


async def test_events_across_hosts_are_handled_once_each_and_acknowledged(
    make_host: MakeHost, make_worker: MakeWorker
) -> None:
    a, b = await make_host(**AT_LEAST_ONCE), await make_host(**AT_LEAST_ONCE)
    subscriber = await make_worker(b.url)
    await Collector.register(subscriber, "collector", Collector)
    await subscriber.add_subscription(TypeSubscription("news", "collector"))
    publisher = await make_worker(a.url)
    for i in range(50):
        await publisher.publish_message(Text(f"m{i}"), TopicId("news", f"k{i % 5}"))

    async def all_handled() -> bool:
        return len(Collector.seen) >= 50

    await until(all_handled)
    assert sorted(text for _, text, _ in Collector.seen) == sorted(f"m{i}" for i in range(50))
    assert len({event_id for _, _, event_id in Collector.seen}) == 50

    async def all_acknowledged() -> bool:
        return await stream_length(a) == 0

    await until(all_acknowledged)
    stored = sum(h.service.cluster.deliveries.counts.stored for h in (a, b))  # type: ignore[union-attr]
    assert stored == 50


async def stream_length(host: HttpAgentServer) -> int:
    import redis.asyncio as aioredis

    cluster = host.service.cluster
    assert cluster is not None
    client = aioredis.Redis.from_url(cluster.config.redis_url, protocol=2)
    try:
        return int(await bounded(client.xlen(f"autogen:{{{cluster.config.name}}}:dq")))
    finally:
        await client.aclose()
