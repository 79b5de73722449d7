"""Databento Historical API source: download one session's GLBX.MDP3 files, priced first, resumable.

Per session (window = [18:00 ET previous evening, 16:00 ET close)):
- futures: `ES.FUT` (parent symbology) trades, mbp-10, ohlcv-1m, definition;
- options: definitions of the ES options parents (quarterly, end-of-month, Friday and
  Monday–Thursday weeklies, i.e. the 0DTE products), then trades, mbp-1 and statistics for the
  calls/puts that expire on the session date (0DTE) or whose underlying is an outright ES
  future (bronze later keeps the front month's), by instrument id in chunks of ≤ 2,000.

Cost control: every request still to download is priced with `metadata.get_cost` and logged,
with the running total, before any data is fetched, and the session is refused (SourceError)
if the total exceeds `max_cost_usd`. The options id list depends on the options definitions,
so those (small) definitions are the only download that can happen before the options data is
priced; if the futures or the definitions alone are over budget, nothing is downloaded.

Layout and idempotence: `<root>/GLBX.MDP3/<YYYY-MM-DD>/<venue>/glbx-mdp3-<YYYYMMDD>.<schema>[.partN].dbn.zst`
and `<root>/GLBX.MDP3/<YYYY-MM-DD>/manifest.json` (per file: request parameters, cost, size,
sha256). Each file is streamed to `<name>.download`, checked (complete zstd frames, the
requested schema in its header), renamed into place and only then recorded in the manifest,
so a re-run skips recorded files and an interrupted run resumes: a leftover `.download` is
discarded and fetched again.

Secrets: the API key lives only inside the client and a redacting holder; it is scrubbed from
every error message, and never written to logs, the manifest, repr/str or returned objects.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..lib.calendar import et_to_ns, session_window
from .base import FUTURES, FUTURES_SCHEMAS, OPTIONS, OPTIONS_SCHEMAS, SessionFiles, SourceError, file_sha256
from .dbn_header import DbnFileError, check_dbn_complete, read_dbn_header

DATASET = "GLBX.MDP3"
FUTURES_PARENTS = ("ES.FUT",)
# ES options on futures live under several CME product codes (parents), not just ES.OPT:
# ES quarterlies/serials, EW end-of-month, EW1–EW4 Friday weeklies, and the Monday (E?A),
# Tuesday (E?B), Wednesday (E?C) and Thursday (E?D) weeklies for weeks 1–5 — together these
# list an expiry on every weekday, i.e. the 0DTE products.
ES_OPTIONS_PARENTS = (
    "ES.OPT",
    "EW.OPT",
    *(f"EW{week}.OPT" for week in range(1, 5)),
    *(f"E{week}{day}.OPT" for day in "ABCD" for week in range(1, 6)),
)
OPTIONS_DATA_SCHEMAS = tuple(s for s in OPTIONS_SCHEMAS if s != "definition")  # trades, mbp-1, statistics
ES_OUTRIGHT_PATTERN = r"^ES[FGHJKMNQUVXZ]\d{1,2}$"
MAX_SYMBOLS_PER_REQUEST = 2000  # Databento's limit per timeseries request
DOWNLOAD_SUFFIX = ".download"
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
DEFINITION_CHUNK_RECORDS = 200_000


@dataclass(frozen=True)
class DownloadRequest:
    """One `timeseries.get_range` call and the file it produces."""

    venue: str
    schema: str
    symbols: tuple[str | int, ...]
    stype_in: str
    start_ns: int
    end_ns: int
    filename: str
    dataset: str = DATASET
    stype_out: str = "instrument_id"

    @property
    def relative_path(self) -> str:
        return f"{self.venue}/{self.filename}"

    def api_params(self) -> dict[str, Any]:
        """Keyword arguments shared by `metadata.get_cost` and `timeseries.get_range`."""
        return {
            "dataset": self.dataset,
            "start": self.start_ns,
            "end": self.end_ns,
            "symbols": list(self.symbols),
            "schema": self.schema,
            "stype_in": self.stype_in,
        }

    def manifest_params(self) -> dict[str, Any]:
        return {**self.api_params(), "stype_out": self.stype_out}

    def describe(self) -> str:
        if len(self.symbols) <= 3:
            what = ",".join(map(str, self.symbols))
        else:
            what = f"{len(self.symbols)} {self.stype_in} symbols"
        return f"{self.venue}/{self.schema} [{what}] {_iso(self.start_ns)} → {_iso(self.end_ns)}"


class _RedactedSecret:
    """Holds the API key so that repr/str/vars of the source never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "<redacted>") if self._value else text

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


class DatabentoSource:
    """Acquire sessions from Databento's Historical API (GLBX.MDP3) into `root`, within a per-session budget."""

    name = "databento"

    def __init__(
        self,
        api_key: str,
        root: Path,
        client: Any = None,
        max_cost_usd: float = 50.0,
        options_parents: tuple[str, ...] = ES_OPTIONS_PARENTS,
        log: Any = None,
        *,
        include_options: bool = True,
        futures_parents: tuple[str, ...] = FUTURES_PARENTS,
        max_symbols_per_request: int = MAX_SYMBOLS_PER_REQUEST,
    ) -> None:
        if not api_key or not api_key.strip():
            raise ValueError("DatabentoSource needs a non-empty API key")
        self._secret = _RedactedSecret(api_key)
        self.root = Path(root)
        self.max_cost_usd = float(max_cost_usd)
        self.options_parents = tuple(options_parents)
        self.futures_parents = tuple(futures_parents)
        self.include_options = include_options
        self.max_symbols_per_request = max_symbols_per_request
        self._log = log or logging.getLogger(__name__)
        if client is None:
            import databento

            client = databento.Historical(key=api_key)
        self._client = client

    def __repr__(self) -> str:
        return (
            f"DatabentoSource(root={str(self.root)!r}, dataset={DATASET!r}, max_cost_usd={self.max_cost_usd}, "
            f"include_options={self.include_options})"
        )

    __str__ = __repr__

    # --- public --------------------------------------------------------------------------------

    def session_dir(self, session: dt.date) -> Path:
        return self.root / DATASET / session.isoformat()

    def acquire(self, session: dt.date) -> SessionFiles:
        window = session_window(session)
        start_ns, end_ns = window.globex_open_ns, window.close_ns
        session_dir = self.session_dir(session)
        manifest = _Manifest.load(session_dir, session)

        futures_requests = [
            self._request(FUTURES, schema, self.futures_parents, "parent", start_ns, end_ns, session)
            for schema in FUTURES_SCHEMAS
        ]
        definitions_requests = (
            [self._request(OPTIONS, "definition", self.options_parents, "parent", start_ns, end_ns, session)]
            if self.include_options
            else []
        )
        # Stage 1: everything whose parameters are known up front is priced before any download.
        stage_one_cost = self._price(session, [*futures_requests, *definitions_requests], manifest, spent=0.0)

        options_requests: list[DownloadRequest] = []
        if definitions_requests:
            self._download_pending(definitions_requests, session_dir, manifest)
            definitions_path = session_dir / definitions_requests[0].relative_path
            instrument_ids = select_option_instrument_ids(definitions_path, session)
            self._log.info(
                f"Databento {session}: {len(instrument_ids)} options selected from the definitions "
                "(0DTE or underlying an outright ES future)"
            )
            options_requests = self._options_data_requests(instrument_ids, start_ns, end_ns, session)
            # Stage 2: the options data, priced with the stage-1 total so the budget is per session.
            self._price(session, options_requests, manifest, spent=stage_one_cost)

        self._download_pending([*futures_requests, *options_requests], session_dir, manifest)

        files: dict[tuple[str, str], tuple[Path, ...]] = {}
        for request in [*futures_requests, *definitions_requests, *options_requests]:
            key = (request.venue, request.schema)
            files[key] = (*files.get(key, ()), session_dir / request.relative_path)
        return SessionFiles(session=session, source=self.name, files=files)

    # --- planning ------------------------------------------------------------------------------

    def _request(
        self,
        venue: str,
        schema: str,
        symbols: tuple[str | int, ...],
        stype_in: str,
        start_ns: int,
        end_ns: int,
        session: dt.date,
        part: int | None = None,
    ) -> DownloadRequest:
        stem = f"{DATASET.lower().replace('.', '-')}-{session:%Y%m%d}.{schema}"
        filename = f"{stem}.part{part}.dbn.zst" if part is not None else f"{stem}.dbn.zst"
        return DownloadRequest(venue, schema, tuple(symbols), stype_in, start_ns, end_ns, filename)

    def _options_data_requests(
        self, instrument_ids: list[int], start_ns: int, end_ns: int, session: dt.date
    ) -> list[DownloadRequest]:
        if not instrument_ids:
            return []
        chunks = [
            tuple(instrument_ids[i : i + self.max_symbols_per_request])
            for i in range(0, len(instrument_ids), self.max_symbols_per_request)
        ]
        return [
            self._request(
                OPTIONS, schema, chunk, "instrument_id", start_ns, end_ns, session,
                part=(number if len(chunks) > 1 else None),
            )
            for schema in OPTIONS_DATA_SCHEMAS
            for number, chunk in enumerate(chunks, start=1)
        ]

    def _price(self, session: dt.date, requests: list[DownloadRequest], manifest: _Manifest, spent: float) -> float:
        """Log the cost of every request not yet downloaded; refuse the session if the total is over budget."""
        total = spent
        for request in requests:
            if manifest.is_complete(request):
                self._log.info(f"Databento {session}: {request.describe()}: already downloaded")
                continue
            get_cost = self._client.metadata.get_cost
            cost = float(self._call("metadata.get_cost", request, get_cost, **request.api_params()))
            total += cost
            self._log.info(f"Databento {session}: cost estimate {request.describe()}: ${cost:,.4f}")
        self._log.info(
            f"Databento {session}: estimated total ${total:,.4f} (budget ${self.max_cost_usd:,.2f})"
        )
        if total > self.max_cost_usd:
            raise SourceError(
                f"Databento {session}: estimated cost ${total:,.2f} exceeds max_cost_usd=${self.max_cost_usd:,.2f}; "
                "refusing to download (raise the budget, or disable options)"
            )
        return total

    # --- downloading ---------------------------------------------------------------------------

    def _download_pending(self, requests: list[DownloadRequest], session_dir: Path, manifest: _Manifest) -> None:
        for request in requests:
            if not manifest.is_complete(request):
                self._download(request, session_dir, manifest)

    def _download(self, request: DownloadRequest, session_dir: Path, manifest: _Manifest) -> None:
        final = session_dir / request.relative_path
        partial = final.with_name(final.name + DOWNLOAD_SUFFIX)
        final.parent.mkdir(parents=True, exist_ok=True)
        if partial.exists():
            self._log.warning(f"Databento: discarding an interrupted download {partial}")
            partial.unlink()
        self._log.info(f"Databento: downloading {request.describe()} → {final}")
        try:
            self._call(
                "timeseries.get_range", request, self._client.timeseries.get_range,
                **request.api_params(), stype_out=request.stype_out, path=str(partial),
            )
            _verify_download(partial, request)
        except Exception:
            # A failure we can see leaves no half-written file; a hard kill leaves `.download`,
            # which the next run discards.
            partial.unlink(missing_ok=True)
            raise
        size = partial.stat().st_size
        digest = file_sha256(partial)
        os.replace(partial, final)
        manifest.record(request, size=size, sha256=digest)
        self._log.info(f"Databento: saved {final} ({size:,} bytes)")

    def _call(self, operation: str, request: DownloadRequest, function, **kwargs):
        try:
            return function(**kwargs)
        except SourceError:
            raise
        except Exception as exc:
            details = self._secret.scrub("".join(traceback.format_exception(exc)))
            self._log.debug(f"Databento {operation} failed:\n{details}")
            message = self._secret.scrub(f"{type(exc).__name__}: {exc}")
        # Raised outside the `except` block so the original exception, which may quote the key,
        # is neither the cause nor the context of the error that travels on.
        raise SourceError(f"Databento {operation} failed for {request.describe()}: {message}")


def select_option_instrument_ids(definitions_path: Path, session: dt.date) -> list[int]:
    """Sorted unique ids of the options to download from a definitions file (see `option_selection_mask`).

    Reads the file in chunks of records, so a day of ES options definitions (tens of thousands
    of records, repeated on updates) never becomes Python objects.
    """
    import databento as db

    store = db.DBNStore.from_file(definitions_path)
    selected = [chunk["instrument_id"][option_selection_mask(chunk, session)]
                for chunk in store.to_ndarray(count=DEFINITION_CHUNK_RECORDS) if len(chunk)]
    if not selected:
        return []
    return [int(i) for i in np.unique(np.concatenate(selected))]


def option_selection_mask(definitions: np.ndarray, session: dt.date) -> np.ndarray:
    """Calls and puts that expire on the session's ET calendar date (0DTE) or whose underlying is an ES outright.

    `definitions` is a structured array of definition records (any DBN version's layout).
    Option spreads are left out: dealer positioning is built from single options.
    """
    day_start_ns = et_to_ns(session, dt.time(0, 0))
    day_end_ns = et_to_ns(session, dt.time(0, 0), day_offset=1)
    is_option = np.isin(definitions["instrument_class"], [b"C", b"P"])
    expiration = definitions["expiration"]
    expires_today = (expiration >= day_start_ns) & (expiration < day_end_ns)
    underlying = pl.Series(np.asarray(definitions["underlying"])).cast(pl.Utf8)
    on_es_outright = underlying.str.contains(ES_OUTRIGHT_PATTERN).fill_null(False).to_numpy()
    return is_option & (expires_today | on_es_outright)


def _verify_download(path: Path, request: DownloadRequest) -> None:
    try:
        check_dbn_complete(path)
        header = read_dbn_header(path)
    except DbnFileError as exc:
        raise SourceError(f"Databento download of {request.describe()} is unusable: {exc}") from exc
    if header.schema != request.schema or header.dataset != request.dataset:
        raise SourceError(
            f"Databento download of {request.describe()} holds {header.dataset}/{header.schema}, "
            f"not {request.dataset}/{request.schema}"
        )


class _Manifest:
    """`manifest.json` of one session directory: which files are complete, from which request."""

    def __init__(self, path: Path, session: dt.date, files: dict[str, dict[str, Any]]) -> None:
        self.path = path
        self.session = session
        self.files = files

    @classmethod
    def load(cls, session_dir: Path, session: dt.date) -> _Manifest:
        path = session_dir / MANIFEST_NAME
        if not path.exists():
            return cls(path, session, {})
        try:
            content = json.loads(path.read_text())
            files = dict(content["files"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"{path}: unreadable download manifest ({exc}); delete it to re-download") from exc
        return cls(path, session, files)

    def is_complete(self, request: DownloadRequest) -> bool:
        entry = self.files.get(request.relative_path)
        if not entry or entry.get("request") != _jsonable(request.manifest_params()):
            return False
        final = self.path.parent / request.relative_path
        return final.is_file() and final.stat().st_size == entry.get("size")

    def record(self, request: DownloadRequest, *, size: int, sha256: str) -> None:
        self.files[request.relative_path] = {
            "venue": request.venue,
            "schema": request.schema,
            "request": _jsonable(request.manifest_params()),
            "size": size,
            "sha256": sha256,
            "downloaded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        self._save()

    def _save(self) -> None:
        content = {
            "manifest_version": MANIFEST_VERSION,
            "session": self.session.isoformat(),
            "dataset": DATASET,
            "files": dict(sorted(self.files.items())),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(content, indent=2, sort_keys=True))
        os.replace(temporary, self.path)


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """The form a dict takes after a JSON round trip (tuples become lists), for comparisons."""
    return json.loads(json.dumps(params))


def _iso(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
