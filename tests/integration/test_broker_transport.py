"""The Redis transport our workers use: a channel closed after its connection was collected
(what Celery's consumer does when Redis goes away) gets a connection error, which the
consumer survives, not the AttributeError that made it exit. The whole outage is
test_chaos.py's test_redis_stopped_for_ten_seconds."""

from __future__ import annotations

import os

import pytest
import redis
from kombu import Connection

from services.broker_transport import Transport

pytestmark = pytest.mark.integration


def test_a_channel_of_a_collected_connection_raises_a_connection_error() -> None:
    connection = Connection(os.environ["REDIS_URL"], transport=Transport)
    channel = connection.default_channel
    assert channel._connparams()["host"] == "127.0.0.1"  # a live connection: kombu's own answer
    # What the consumer's collect() leaves when closing the channel failed on the dead socket
    # (a BRPOP in flight): the channel still open, its transport detached.
    connection._do_close_transport()
    with pytest.raises(redis.exceptions.ConnectionError):
        channel._connparams()
    assert isinstance(redis.exceptions.ConnectionError(), Transport.connection_errors)
