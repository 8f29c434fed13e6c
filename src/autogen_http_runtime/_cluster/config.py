"""How a host joins its cluster: the settings, this host's name in it, what must agree. No I/O."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Final

from .._host.deliveries import AT_MOST_ONCE, check_delivery

#: Version of what hosts send each other; hosts of one cluster must speak the same.
PEERING_VERSION: Final = "2"
#: Seconds between attempts to reach the engine again.
RETRY_INTERVAL: Final = 0.25


@dataclass(frozen=True)
class ClusterConfig:
    """How a host joins its cluster (see ``HttpAgentService``)."""

    redis_url: str
    secret: str
    name: str = "default"
    lease: float = 3.0
    #: ``"at-most-once"`` or ``"at-least-once"`` (events kept in a Redis stream until handled).
    delivery: str = AT_MOST_ONCE
    #: At-least-once: seconds a copy may go unacknowledged before it is delivered again.
    visibility_timeout: float = 30.0
    #: At-least-once: deliveries of a copy before it goes to the dead letters.
    max_deliveries: int = 5

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError(
                "A cluster needs cluster_secret (AUTOGEN_HTTP_CLUSTER_SECRET): the hosts sign what "
                "they send each other with it, so that whoever can write to Redis cannot forge calls."
            )
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.name):
            raise ValueError(f"cluster_name must be 1-64 letters, digits, _ . or -, not {self.name!r}.")
        if not 0.5 <= self.lease <= 300:
            raise ValueError(f"cluster_lease must be between 0.5 and 300 seconds, not {self.lease}.")
        check_delivery(self.delivery, self.visibility_timeout, self.max_deliveries)


def host_name() -> str:
    """A name for this host in the cluster, never reused: the machine's, the process id, a random part."""
    machine = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "host"
    return f"{machine}-{os.getpid()}-{os.urandom(3).hex()}"


def disagreement(cluster: str, setting: str) -> str:
    return (
        f"This host's {setting} differs from the running hosts' of cluster {cluster!r}: every host of "
        "a cluster must run with the same replicas, max_message_size, access_policy, delivery and "
        "cluster_secret (and the same version of the cluster protocol). Fix it, or pick another cluster_name."
    )
