"""Ctrl-C and SIGTERM as one clean stop for long commands (``bench run``, ``bench grid``).

While :func:`stop_on_signals` is active, SIGINT and SIGTERM set an event and raise
``KeyboardInterrupt`` in the main thread; the previous handlers come back afterwards (Lightning
leaves SIGINT ignored after it handled an interrupt). The event matters because library code
does not always let the ``KeyboardInterrupt`` through: Lightning turns it into
``SystemExit(1)`` inside ``fit``/``test``, other code into an ordinary error.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def stop_on_signals(stop: threading.Event | None = None) -> Iterator[threading.Event]:
    """Yield ``stop`` (a new event if None), set when SIGINT or SIGTERM arrives. Outside the
    main thread signals cannot be handled, and the body runs with the handlers unchanged."""
    stop = stop if stop is not None else threading.Event()

    def on_signal(signum, frame):
        stop.set()
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = (signal.signal(signal.SIGTERM, on_signal), signal.signal(signal.SIGINT, on_signal))
    try:
        yield stop
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
