"""Rate limits per API key on submissions: a fixed window counted in Redis, so every API
process shares one budget per key, at the cost of one round trip per submission."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from flask import Flask, current_app, make_response
from flask.typing import ResponseReturnValue

from api.auth import caller
from api.errors import ApiError
from services.config import Rate, Settings, parse_rate
from tasks.pipeline import BrokerBreaker

log = logging.getLogger("conveyor.api")

# INCR and start the window on the first hit, in one round trip; TTL tells when it resets.
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {count, redis.call('TTL', KEYS[1])}
"""


@dataclass(frozen=True)
class Window:
    rate: Rate
    count: int
    resets_in: int

    @property
    def exceeded(self) -> bool:
        return self.count > self.rate.amount

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.rate.amount),
            "X-RateLimit-Remaining": str(max(0, self.rate.amount - self.count)),
            "X-RateLimit-Reset": str(int(time.time()) + self.resets_in),
        }


class SubmitLimiter:
    """Counts submissions per key. When Redis cannot count, submissions go on uncounted (the API
    still answers 202 during a broker outage) and counting pauses a few seconds, so a down
    Redis costs one connection attempt, not one per request."""

    def __init__(self, client: redis.Redis, rate: Rate) -> None:
        self.rate = rate
        self._hit = client.register_script(_HIT)
        self._breaker = BrokerBreaker()

    def hit(self, key_id: str) -> Window | None:
        if not self._breaker.is_open():
            return None
        try:
            count, ttl = self._hit(keys=[f"conveyor:limit:submit:{key_id}"], args=[self.rate.seconds])
        except redis.RedisError as error:
            self._breaker.tripped()
            log.warning("rate limit not counted: Redis unavailable", extra={"error": str(error)})
            return None
        return Window(self.rate, int(count), max(0, int(ttl)))


def submit_limit(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
    """One budget for both ways to submit (POST /jobs and POST /uploads), checked before the
    body is read; runs after authenticate, so it counts per key."""

    @functools.wraps(view)
    def limited(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        limiter: SubmitLimiter = current_app.extensions["conveyor.limiter"]
        window = limiter.hit(str(caller().id))
        if window is not None and window.exceeded:
            raise ApiError(
                "rate_limited",
                f"This key may submit {window.rate.amount} jobs per {window.rate.seconds} s;"
                f" try again in {window.resets_in} s.",
                headers=window.headers() | {"Retry-After": str(max(1, window.resets_in))},
            )
        response = make_response(view(*args, **kwargs))
        if window is not None:
            response.headers.update(window.headers())
        return response

    return limited


def init_limits(app: Flask, settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
    app.extensions["conveyor.limiter"] = SubmitLimiter(client, parse_rate(settings.submit_rate_limit))
