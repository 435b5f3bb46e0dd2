"""Thread offload for the async twins (``async_request``, ``async_stream_request``).

The synchronous code is the one implementation; the async methods run it in worker threads, as
``asyncio.to_thread`` would.  Unlike ``to_thread`` they do not use the event loop's default
executor (only ``min(32, cores + 4)`` workers: 6 on a 2-core server, so 100 concurrent requests
would crawl in batches of 6) and do not need Python 3.9: every call gets its own daemon worker
thread, started in ~0.1 ms, so 100 concurrent requests really are concurrent.

Cancelling the awaiting task cancels the request's :class:`CancelScope`, which shuts the socket
down, so the worker returns at once and its connection is discarded.

Streams hand pieces over in batches: the worker appends to a buffer and wakes the event loop only
when the consumer is waiting, so a fast stream costs one thread hop per batch, not per chunk.
"""

from __future__ import annotations

import threading
from collections import deque

from .common import TYPE_CHECKING
from .transport import CancelScope

if TYPE_CHECKING:
    import asyncio
    from typing import Any, Callable


def _aio_resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _aio_start_worker(target: Callable[[], None]) -> None:
    import contextvars

    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(target,), name="openai2-worker", daemon=True)
    thread.start()


async def offload(func: Callable[[], Any], scope: CancelScope) -> Any:
    """Run ``func()`` in a worker thread and await its result.

    If the awaiting task is cancelled, ``scope.cancel()`` is called (the blocked socket is shut
    down) and ``CancelledError`` propagates; the worker's late result is dropped.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def run() -> None:
        try:
            result = func()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            ok, value = False, exc
        else:
            ok, value = True, result
        try:
            loop.call_soon_threadsafe(_aio_resolve, future, ok, value)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    _aio_start_worker(run)
    try:
        return await future
    except asyncio.CancelledError:
        scope.cancel()
        raise


class PieceChannel:
    """A one-producer (worker thread), one-consumer (event loop) hand-off of stream pieces.

    The producer calls :meth:`put_many` for each batch of pieces and :meth:`finish` once (with an exception or
    None).  The consumer awaits :meth:`get_batch`, which returns every piece buffered so far, and
    an empty list once the producer has finished (raising its exception, if any).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pieces: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._finished = False
        self._error: BaseException | None = None

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            try:
                self._loop.call_soon_threadsafe(_aio_resolve, waiter, True, None)
            except RuntimeError:
                pass

    def put_many(self, pieces: list[Any]) -> None:
        """Producer side: hand over several pieces at once (one wake-up at most)."""
        with self._lock:
            self._pieces.extend(pieces)
            if self._waiter is not None:
                self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        """Producer side: no more pieces; ``error`` is raised to the consumer after the pieces."""
        with self._lock:
            self._finished = True
            self._error = error
            self._wake()

    async def get_batch(self) -> list[Any]:
        """Consumer side: the pieces buffered so far; [] when finished (after raising its error)."""
        while True:
            with self._lock:
                if self._pieces:
                    batch = list(self._pieces)
                    self._pieces.clear()
                    return batch
                if self._finished:
                    if self._error is not None:
                        error, self._error = self._error, None
                        raise error
                    return []
                waiter = self._loop.create_future()
                self._waiter = waiter
            await waiter


def start_producer(func: Callable[[], None]) -> None:
    """Run ``func`` in a fresh daemon worker thread (used for async streams)."""
    _aio_start_worker(func)
