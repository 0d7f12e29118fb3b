"""One command's connection to the queue: opened for it, closed after it."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

from artbot.config import Settings
from worker.queue import JobQueue, LocalJobQueue

T = TypeVar("T")


def run_on_queue(settings: Settings, fn: Callable[[JobQueue], Awaitable[T]]) -> T:
    """`await fn(queue)` on the data directory's queue, which is closed afterwards."""

    async def go() -> T:
        async with LocalJobQueue(settings.db_path) as queue:
            return await fn(queue)

    return asyncio.run(go())
