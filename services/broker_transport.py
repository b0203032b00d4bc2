"""kombu's Redis transport, with one of its races closed.

When Redis goes away while the worker waits in BRPOP holding messages it has not acked yet,
Celery 5.7's consumer first collects the connection, which detaches the transport (its
`client` becomes None), then closes it. That close restores the unacked messages through a
fresh connection pool, built from the detached transport's `client`: AttributeError, which
Celery does not count as a connection error, so the worker exits ("Unrecoverable error")
instead of reconnecting. Here that case is what it is, a connection error: the close goes
on, the worker reconnects when Redis is back, and the unacked messages stay in Redis's
unacked hash, from which kombu's visibility timeout (and the sweeper) bring them back.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("The broker connection is already closed.")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]
        return params


class Transport(kombu_redis.Transport):
    Channel = Channel
