"""Two BentoML 1.4.40 hot-path costs, measured under load on 2 cores, and their fixes.

1. `TimeoutMiddleware` arms a `loop.call_later(timeout)` per request and never cancels it:
   every request leaves a timer holding a copy of its context alive for the whole traffic
   timeout (60 s). Under load that is hundreds of thousands of live objects, and the
   garbage collector's full passes over them stalled every request for 100-500 ms about
   once a second. The patched call cancels its timer when the request ends.
2. A root-model API output derives its media type from its JSON schema on every response
   (about 15% of the runner's time); it is computed once instead.
"""

from __future__ import annotations

import asyncio

from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse

_original_call = traffic.TimeoutMiddleware.__call__


async def _timeout_call(self, scope, receive, send):
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message):
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        await waiter
    except TimeoutError:
        if fut.cancel():
            resp = JSONResponse(
                {"error": f"Not able to process the request in {self.timeout} seconds"},
                status_code=504,
            )
            await resp(scope, receive, send)
    else:
        await fut
    finally:
        timer.cancel()


def apply(*services) -> None:
    """Patch the timeout middleware once and fix the services' output media types."""
    if traffic.TimeoutMiddleware.__call__ is _original_call:
        traffic.TimeoutMiddleware.__call__ = _timeout_call
    for svc in services:
        for method in svc.apis.values():
            spec = method.output_spec
            if spec.media_type is None:
                spec.media_type = spec.mime_type()
