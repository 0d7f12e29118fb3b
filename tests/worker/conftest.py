"""Fixtures of the worker tests: the SQLite queue on the test's data directory."""

import pytest_asyncio

from worker.queue import LocalJobQueue


@pytest_asyncio.fixture
async def queue(settings):
    q = await LocalJobQueue(settings.db_path).open()
    yield q
    await q.close()
