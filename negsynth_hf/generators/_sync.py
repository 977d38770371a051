"""Run a coroutine from synchronous code, also where an event loop is already running (Jupyter)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(make: Callable[[], Coroutine[Any, Any, T]], *, thread_name: str) -> T:
    """``asyncio.run(make())``; inside a running loop (which ``asyncio.run`` refuses) on a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()
