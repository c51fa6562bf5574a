"""What a long-running ``dddframe`` process (worker, relay) does around its application."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
import threading

__all__ = ["freeze_startup_heap", "stop_on_signals"]


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGINT/SIGTERM, so the application stops gracefully.

    Signals reach the main thread only: run elsewhere (a test driving the CLI from a worker
    thread) nothing is installed, and whoever owns the main thread stops the process. On
    Windows, whose event loops have no signal support, a plain handler hands over to the loop.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        if sys.platform == "win32":  # its event loops have no add_signal_handler
            signal.signal(sig, lambda _sig, _frame: loop.call_soon_threadsafe(stop.set))
        else:
            loop.add_signal_handler(sig, stop.set)


def freeze_startup_heap() -> None:
    """Move what start-up built (modules, mappers, the application) out of the collector's way.

    A full collection walks every tracked object; in a started worker that is mostly objects
    living as long as the process, and the walk paused delivery for ~40 ms on the benchmark
    machine (docs/performance.md). Frozen objects are never scanned again, so full collections
    only walk what the process allocated since.
    """
    gc.collect()
    gc.freeze()
