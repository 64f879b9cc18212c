"""Per-client token-bucket rate limiting of /api/v1/* (a pure ASGI middleware).

A client is its API key when keys are configured (the key ApiKeyMiddleware stored in the scope,
so this middleware must sit inside it), else its address. Each client's bucket holds up to
`burst` tokens and refills at `rate` tokens per second; a request takes one token or gets
HTTP 429 `{"error": ...}` with `Retry-After` (whole seconds).

Several workers: the buckets live in each worker's memory and are not shared. The kernel spreads
connections over the W workers of the API service (SO_REUSEPORT / one shared socket), so every
worker enforces `rate / W` with a burst of `burst / W`: a client spread evenly over the workers
gets the configured totals, and a client pinned to one worker by a keep-alive connection gets
its share of them (never more than the configured total). Settings (vcp.settings):
VCP_RATE_LIMIT (requests/s per client, all workers together; 0 disables the limit),
VCP_RATE_BURST (burst per client) and VCP_API_WORKERS (what the totals are divided by).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable

log = logging.getLogger("vcp.ratelimit")

LIMITED_PREFIX = "/api/v1/"
MAX_CLIENTS = 10_000  # buckets kept before idle (full) ones are dropped


class TokenBucket:
    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: float, now: float):
        self.rate, self.capacity = rate, capacity
        self.tokens, self.updated = capacity, now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is available."""
        wait = self.wait(now)
        if not wait:
            self.tokens -= 1.0
        return wait

    def wait(self, now: float) -> float:
        """The seconds until a token is available (0.0: one is), taking none."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def idle(self, now: float) -> bool:
        return self.tokens + (now - self.updated) * self.rate >= self.capacity


class Buckets:
    """A token bucket per client, created full on first use; at most MAX_CLIENTS are kept
    (idle ones, which are full, are dropped first)."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.buckets: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self.buckets)

    def _prune(self, now: float) -> None:
        for client in [c for c, b in self.buckets.items() if b.idle(now)]:
            del self.buckets[client]
        if len(self.buckets) >= MAX_CLIENTS:  # all busy: forget the stalest half
            stale = sorted(self.buckets, key=lambda c: self.buckets[c].updated)
            for client in stale[: len(stale) // 2]:
                del self.buckets[client]

    def _bucket(self, client: str, now: float) -> TokenBucket:
        bucket = self.buckets.get(client)
        if bucket is None:
            if len(self.buckets) >= MAX_CLIENTS:
                self._prune(now)
            bucket = self.buckets[client] = TokenBucket(self.rate, self.burst, now)
        return bucket

    def take(self, client: str) -> float:
        """0.0 when the client may go on (a token taken), else the seconds to wait."""
        now = self.clock()
        return self._bucket(client, now).take(now)

    def wait(self, client: str) -> float:
        """The seconds until the client has a token again (0.0: it has one); takes none."""
        bucket = self.buckets.get(client)
        return bucket.wait(self.clock()) if bucket is not None else 0.0


def retry_after(wait: float) -> int:
    """Whole seconds for a Retry-After header (at least 1)."""
    return max(1, math.ceil(wait))


class RateLimitMiddleware:
    """Token bucket per API key (per client address when the API is open) on /api/v1/*."""

    def __init__(
        self,
        app,
        rate: float,
        burst: float,
        workers: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.app = app
        self.workers = max(1, workers)
        self.total_rate, self.total_burst = rate, max(burst, 1.0)
        # This worker's share; a burst below one request would refuse everything.
        self.rate = rate / self.workers
        self.burst = max(self.total_burst / self.workers, 1.0)
        self.buckets = Buckets(self.rate, self.burst, clock)
        if self.enabled:
            log.info("rate limit: %g requests/s, burst %g per client (this worker of %d: "
                     "%g/s, burst %g)", rate, self.total_burst, self.workers,
                     self.rate, self.burst)
        else:
            log.warning("rate limiting disabled (VCP_RATE_LIMIT=0)")

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    @staticmethod
    def client_of(scope) -> str:
        key = (scope.get("state") or {}).get("api_key")
        if key:
            return "key:" + key
        client = scope.get("client")
        return "addr:" + (client[0] if client else "unknown")

    def check(self, client: str) -> float:
        """0.0 when the request may go on, else the seconds to wait."""
        return self.buckets.take(client)

    async def __call__(self, scope, receive, send):
        if (scope["type"] != "http" or not self.enabled
                or not scope.get("path", "").startswith(LIMITED_PREFIX)):
            return await self.app(scope, receive, send)
        wait = self.check(self.client_of(scope))
        if not wait:
            return await self.app(scope, receive, send)
        seconds = retry_after(wait)
        body = json.dumps({"error": (
            f"rate limit exceeded: {self.total_rate:g} requests/s with a burst of "
            f"{self.total_burst:g} per client; retry after {seconds} s")}).encode()
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(seconds).encode()),
        ]})
        await send({"type": "http.response.body", "body": body})
