"""Overlap a producer with its consumer on two cores."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator


def prefetched(items: Iterable, depth: int = 2, name: str = "prefetch") -> Iterator:
    """Produce `items` in a background thread, `depth` ahead of the consumer.

    Decompressing DBN (zstd), gathering columns (numpy copies) and writing Parquet all release
    the GIL, so on two cores they overlap. An exception in the
    producer is re-raised in the consumer; a consumer that stops early stops the producer.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def offer(item) -> bool:
        """Hand `item` to the consumer unless it has gone away (then the producer just ends)."""
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(done)
        except BaseException as exc:  # handed to the consumer, which raises it
            offer(exc)

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)
