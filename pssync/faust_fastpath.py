"""A fast path under Faust's consumer: one record handed to the streams without four futures.

Faust's fetcher hands every record it reads to the streams with
`await self.wait_first(callback(message), self.suspend_flow.wait())`
(`faust.transport.consumer.Consumer._drain_messages`). Mode's `wait_first`
wraps each argument, and the service's stopped and crashed events, in a
future and runs `asyncio.wait` over the four: per record. On a backlog this was
the largest single cost in the worker (py-spy: three quarters of the fetcher's
time, about a tenth of the process), larger than decoding the record.

`install()` gives Faust's `Consumer` a `wait_first` that first runs the callback
eagerly. When it finishes without suspending (the stream's buffer has room: the
common case), its result is returned as `wait_first` reports a winner, and no
future is made. When it suspends (a full buffer: backpressure), the coroutine
already started goes on under the original race, so a rebalance that sets
`suspend_flow`, or a stop, still interrupts it as before. A callback that
raises raises here, as `wait_first` would re-raise it. Nothing else changes:
the method is Faust's `Consumer`'s only caller of `wait_first`, and any other
call (a timeout, other arguments) takes the original path.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport.consumer import Consumer
from mode import Service
from mode.services import WaitResults

_installed = False


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    """Go on driving `coro`, which has yielded `pending` to its (absent) task."""
    while True:
        try:
            sent = yield pending
        except BaseException as exc:  # cancellation and errors go to the coroutine
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _continue(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    return await _resume(coro, pending)


async def wait_first(
    self: Service,
    *coros: Any,
    timeout: Any = None,  # noqa: ASYNC109 (mode's signature)
) -> WaitResults:
    first = coros[0] if coros else None
    if (
        timeout is not None
        or not inspect.iscoroutine(first)
        or self._stopped.is_set()
        or self._crashed.is_set()
    ):
        return await Service.wait_first(self, *coros, timeout=timeout)
    try:
        pending = first.send(None)
    except StopIteration as stop:  # done without suspending: it won
        for other in coros[1:]:  # the race's other side (suspend_flow.wait()) never runs
            if inspect.iscoroutine(other):
                other.close()
        return WaitResults([first], [stop.value], False)
    started = _continue(first, pending)
    return await Service.wait_first(self, started, *coros[1:])


def install() -> None:
    """Patch Faust's consumer (idempotent)."""
    global _installed
    if not _installed:
        Consumer.wait_first = wait_first  # type: ignore[method-assign]
        _installed = True
