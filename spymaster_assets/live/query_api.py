"""`GET /api/query`: the `spymaster query` answer from a warm process.

A one-shot `spymaster query` spends ~25 s importing and loading for a search whose p99 is under
a millisecond. A long-lived process keeps, per session, what an answer reads: the session's
as-of index (FAISS partitions in the learned metric's space), its stats and the lake partitions
(state table, model summary, the model's training-window episodes). Both caches are bounded LRUs
keyed by the *version* of each partition (the lake resolves `date=D` to its current version
directory), so a rematerialized partition is read again and never served stale.

`query_routes(lake)` is mounted by `spymaster serve` and by the live dashboard server.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..gold.as_of import AsOf, index_dir
from ..lake import Lake
from ..lib.jsonable import jsonable
from ..lib.similarity_index import LEVEL_KINDS

QUERY_PATH = "/api/query"
DEFAULT_NEIGHBOURS = 10
MAX_NEIGHBOURS = 50
# A session's as-of state is a few MB (float16 vectors of its 250-session window plus FAISS copies):
# a handful covers a trader moving between today and a few past dates.
DEFAULT_CACHED_SESSIONS = 8
DEFAULT_CACHED_BYTES = 512 * 2**20


class BoundedLRU:
    """Least-recently-used values, bounded by count and by total size (`size_of` each value).
    One lock: loads are rare and short next to a process lifetime, so they are serialized."""

    def __init__(self, max_items: int, max_bytes: int | None = None,
                 size_of: Callable[[Any], int] = lambda _: 0):
        if max_items < 1:
            raise ValueError(f"max_items must be ≥ 1, got {max_items}")
        self.max_items, self.max_bytes, self.size_of = max_items, max_bytes, size_of
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.RLock()
        self.hits = self.misses = 0

    def get_or_load(self, key: Hashable, load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key][0]
            self.misses += 1
            value = load()
            size = self.size_of(value)
            self._items[key] = (value, size)
            self._bytes += size
            # Evict the oldest, but always keep the value just loaded (even if alone it is over budget).
            while len(self._items) > 1 and (len(self._items) > self.max_items
                                            or (self.max_bytes is not None and self._bytes > self.max_bytes)):
                _, (_, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted
            return value

    def __len__(self) -> int:
        return len(self._items)

    @property
    def total_bytes(self) -> int:
        return self._bytes


def frame_cache(max_bytes: int) -> BoundedLRU:
    return BoundedLRU(max_items=4096, max_bytes=max_bytes, size_of=lambda frame: frame.estimated_size())


@dataclass(frozen=True, eq=False)
class ReadCachedLake(Lake):
    """The lake, with `read` answered from a bounded cache keyed by the partition version's file."""

    frames: BoundedLRU = field(default_factory=lambda: frame_cache(DEFAULT_CACHED_BYTES))

    def read(self, layer: str, table: str, session: dt.date | str, columns: list[str] | None = None) -> pl.DataFrame:
        key = (str(self.partition_file(layer, table, session)), tuple(columns) if columns else None)
        return self.frames.get_or_load(key, lambda: Lake.read(self, layer, table, session, columns))


class QueryService:
    """Answers `full_answer` queries, keeping each session's as-of index warm (bounded LRU)."""

    def __init__(self, lake: Lake, max_sessions: int = DEFAULT_CACHED_SESSIONS,
                 max_cached_bytes: int = DEFAULT_CACHED_BYTES):
        self.lake = ReadCachedLake(lake.root, frame_cache(max_cached_bytes))
        self.sessions = BoundedLRU(max_items=max_sessions)
        self._lock = threading.Lock()

    def as_of(self, session: dt.date) -> AsOf:
        """The session's AsOf, loaded once per version of its index and stats partitions."""
        key = (session, str(index_dir(self.lake, session)),
               str(self.lake.partition_file("gold", "normalization_stats", session)))
        return self.sessions.get_or_load(key, lambda: AsOf(self.lake, session))

    def answer(self, session: dt.date, clock: dt.time, level_kind: str, neighbours: int = DEFAULT_NEIGHBOURS) -> dict:
        from ..cli import full_answer

        with self._lock:  # one answer at a time: FAISS and the lazily built tier indices are shared
            return full_answer(self.lake, session, clock, level_kind, neighbours, as_of=self.as_of(session))


def parse_query(params) -> tuple[dt.date, dt.time, str, int]:
    """`date=YYYY-MM-DD&time=HH:MM&level=KIND[&neighbours=N]` → typed values (ValueError says which is wrong)."""
    missing = [name for name in ("date", "time", "level") if not params.get(name)]
    if missing:
        raise ValueError(f"missing query parameter(s): {', '.join(missing)} (date=YYYY-MM-DD&time=HH:MM&level=KIND)")
    try:
        session = dt.date.fromisoformat(params["date"])
    except ValueError:
        raise ValueError(f"date must be YYYY-MM-DD, got {params['date']!r}") from None
    try:
        clock = dt.datetime.strptime(params["time"], "%H:%M").time()
    except ValueError:
        raise ValueError(f"time must be HH:MM (ET), got {params['time']!r}") from None
    level_kind = params["level"]
    if level_kind not in LEVEL_KINDS:
        raise ValueError(f"level must be one of {', '.join(LEVEL_KINDS)}, got {level_kind!r}")
    raw = params.get("neighbours", str(DEFAULT_NEIGHBOURS))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_NEIGHBOURS:
        raise ValueError(f"neighbours must be an integer in 1..{MAX_NEIGHBOURS}, got {raw!r}")
    return session, clock, level_kind, int(raw)


def query_routes(lake: Lake, service: QueryService | None = None) -> list[Route]:
    """`GET /api/query?date=&time=&level=&neighbours=` over `lake`: 200 with the answer (JSON),
    400 for a malformed request, 404 when the session's partitions are missing, 422 when the
    data cannot answer (e.g. the level has no state at that time)."""
    service = service or QueryService(lake)

    def query(request: Request) -> Response:  # sync: Starlette runs it in its thread pool
        began = time.perf_counter()
        try:
            session, clock, level_kind, neighbours = parse_query(request.query_params)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            answer = service.answer(session, clock, level_kind, neighbours)
        except FileNotFoundError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        elapsed_ms = (time.perf_counter() - began) * 1e3
        return Response(json.dumps(jsonable(answer)), media_type="application/json",
                        headers={"Server-Timing": f"answer;dur={elapsed_ms:.2f}"})

    return [Route(QUERY_PATH, query, methods=["GET"], name="query")]
