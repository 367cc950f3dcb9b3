"""Rate limits on the token endpoint and on submissions, with the `limits` library.

Counters live in memory (one process) by default and in Redis when `PROVATAR_REDIS_URL` is set, so every API
process behind a load balancer shares them. Moving windows: a client that hit a limit is told exactly when the
oldest request in the window expires (`Retry-After`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from service.errors import InvalidInput, TooManyRequests
from service.settings import Settings


@dataclass(frozen=True)
class Rule:
    name: str  # what is limited, e.g. "token.ip"
    limit: RateLimitItem


def _rule(name: str, spec: str) -> Rule:
    try:
        return Rule(name, parse(spec))
    except ValueError as exc:
        raise InvalidInput(f"invalid rate limit {spec!r} for {name}: {exc}", code="invalid_settings") from exc


class RateLimiter:
    """Named limits keyed by who is asking (`hit`), plus failure budgets checked before and spent after (`spend`)."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limits_enabled
        self.backend = "redis" if settings.redis_url else "memory"
        # Keys are namespaced by the limit's name, so one Redis database can serve other applications too.
        self._storage = storage_from_string(settings.redis_url or "memory://", key_prefix=settings.redis_key_prefix)
        self._limiter = MovingWindowRateLimiter(self._storage)
        self.rules = {
            r.name: r
            for r in (
                _rule("token.ip", settings.rate_limit_token_per_ip),
                _rule("token.client", settings.rate_limit_token_per_client),
                _rule("auth_failure.ip", settings.rate_limit_auth_failures_per_ip),
                _rule("submit.client", settings.rate_limit_submit_per_client),
                _rule("submit.ip", settings.rate_limit_submit_per_ip),
            )
        }

    def hit(self, name: str, key: str) -> None:
        """Count one request against limit `name` for `key`; TooManyRequests (429) once it is used up."""
        if not self.enabled:
            return
        rule = self.rules[name]
        if not self._limiter.hit(rule.limit, name, key):
            raise self._too_many(rule, key)

    def check(self, name: str, key: str) -> None:
        """Raise TooManyRequests if limit `name` is used up for `key`, without counting this request."""
        if self.enabled and not self._limiter.test(self.rules[name].limit, name, key):
            raise self._too_many(self.rules[name], key)

    def spend(self, name: str, key: str) -> None:
        """Count one event (e.g. a failed authentication) without refusing this request."""
        if self.enabled:
            self._limiter.hit(self.rules[name].limit, name, key)

    def reset(self) -> None:
        self._storage.reset()

    def _too_many(self, rule: Rule, key: str) -> TooManyRequests:
        stats = self._limiter.get_window_stats(rule.limit, rule.name, key)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        return TooManyRequests(
            f"rate limit {rule.limit} on {rule.name.replace('.', ' per ')} exceeded; retry in {wait} s",
            retry_after=wait,
            details={"limit": str(rule.limit), "scope": rule.name},
        )
