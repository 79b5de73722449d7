"""DatabentoSource against a fake Historical client (the real API is never called)."""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import json
import logging
import shutil
from pathlib import Path

import databento as db
import numpy as np
import pytest
from databento.historical.api.metadata import MetadataHttpAPI
from databento.historical.api.timeseries import TimeseriesHttpAPI

from spymaster_assets.lib.calendar import et_to_ns, session_window
from spymaster_assets.sources.base import FUTURES, FUTURES_SCHEMAS, OPTIONS, SourceError
from spymaster_assets.sources.databento_api import (
    ES_OPTIONS_PARENTS,
    DatabentoSource,
    option_selection_mask,
    select_option_instrument_ids,
)
from spymaster_assets.sources.dbn_header import read_dbn_header

SESSION = dt.date(2024, 5, 9)  # the day of the real ES options definitions fixture
OPTION_IDS = [4163986, 42449452]  # ESM4 P5250, ESM4 P5230: puts on the ESM4 outright
API_KEY = "db-FAKEKEY0123456789abcdefXYZ"
OPTIONS_DATA = ("trades", "mbp-1", "statistics")


class SimulatedCrash(BaseException):
    """Stands in for a kill -9 mid-download: not an Exception, so nothing gets cleaned up."""


class FakeHistorical:
    """Records calls, returns configured costs and copies real fixture DBN files to `path`."""

    def __init__(self, fixtures: Path, costs: dict[tuple[str, str], float] | None = None):
        real, fmt = fixtures / "real-es-dbn", fixtures / "databento-format"
        self.files = {
            (FUTURES, "trades"): real / "futures_trades_2024-07-01T23h58_2024-07-02T00h02.dbn.zst",
            (FUTURES, "mbp-10"): fmt / "test_data.mbp-10.dbn.zst",
            (FUTURES, "ohlcv-1m"): real / "futures_ohlcv-1m_2024-07-01T23h40_2024-07-02T00h10.dbn.zst",
            (FUTURES, "definition"): real / "futures_definition.dbn.zst",
            (OPTIONS, "definition"): real / "options_definition.dbn.zst",
            (OPTIONS, "trades"): fmt / "test_data.trades.dbn.zst",
            (OPTIONS, "mbp-1"): real / "options_mbp-1_2024-05-09T10h00_2024-05-09T10h05.dbn.zst",
            (OPTIONS, "statistics"): fmt / "test_data.statistics.dbn.zst",
        }
        self.costs = costs or {}
        self.calls: list[tuple[str, str, str, dict]] = []
        self.on_download = None  # hook(call_number, venue, schema, path) -> True if it wrote the file itself
        self.metadata = _Namespace(get_cost=self.get_cost)
        self.timeseries = _Namespace(get_range=self.get_range)

    @staticmethod
    def venue(symbols, stype_in) -> str:
        if stype_in == "instrument_id" or any(str(s).endswith(".OPT") for s in symbols):
            return OPTIONS
        return FUTURES

    def get_cost(self, dataset, start, end=None, mode=None, symbols=None, schema="trades", stype_in="raw_symbol",
                 limit=None):
        venue = self.venue(symbols, stype_in)
        self.calls.append(("get_cost", venue, schema, dict(dataset=dataset, start=start, end=end, symbols=symbols,
                                                          schema=schema, stype_in=stype_in)))
        return self.costs.get((venue, schema), 0.25)

    def get_range(self, dataset, start, end=None, symbols=None, schema="trades", stype_in="raw_symbol",
                  stype_out="instrument_id", limit=None, path=None):
        venue = self.venue(symbols, stype_in)
        self.calls.append(("get_range", venue, schema, dict(dataset=dataset, start=start, end=end, symbols=symbols,
                                                           schema=schema, stype_in=stype_in, stype_out=stype_out,
                                                           path=path)))
        target = Path(path)
        if target.exists():  # the real client refuses to overwrite (validate_file_write_path)
            raise FileExistsError(f"The file `{path}` already exists.")
        downloads = sum(1 for call in self.calls if call[0] == "get_range")
        if self.on_download and self.on_download(downloads, venue, schema, target, self.files[(venue, schema)]):
            return None
        shutil.copy(self.files[(venue, schema)], target)
        return None

    def ranges(self) -> list[tuple[str, str]]:
        return [(venue, schema) for op, venue, schema, _ in self.calls if op == "get_range"]


class _Namespace:
    def __init__(self, **members):
        self.__dict__.update(members)


@pytest.fixture
def fake(fixtures) -> FakeHistorical:
    return FakeHistorical(fixtures)


def _source(tmp_path: Path, client, **options) -> DatabentoSource:
    return DatabentoSource(API_KEY, tmp_path / "databento", client=client, **options)


def _session_dir(tmp_path: Path) -> Path:
    return tmp_path / "databento" / "GLBX.MDP3" / SESSION.isoformat()


def test_acquire_downloads_every_schema_into_the_batch_layout_with_a_manifest(tmp_path, fake):
    files = _source(tmp_path, fake).acquire(SESSION)

    day = _session_dir(tmp_path)
    assert files.source == "databento" and files.session == SESSION
    expected_keys = {(FUTURES, s) for s in FUTURES_SCHEMAS} | {(OPTIONS, s) for s in ("definition", *OPTIONS_DATA)}
    assert set(files.files) == expected_keys
    assert files.get(FUTURES, "mbp-10") == (day / "futures" / "glbx-mdp3-20240509.mbp-10.dbn.zst",)
    assert files.get(OPTIONS, "statistics") == (day / "options" / "glbx-mdp3-20240509.statistics.dbn.zst",)
    for (venue, schema), paths in files.files.items():
        [path] = paths
        assert read_dbn_header(path).schema == schema
    assert not list(day.rglob("*.download"))

    window = session_window(SESSION)
    requests = {(venue, schema): kwargs for op, venue, schema, kwargs in fake.calls if op == "get_range"}
    for schema in FUTURES_SCHEMAS:
        request = requests[(FUTURES, schema)]
        assert request["symbols"] == ["ES.FUT"] and request["stype_in"] == "parent"
        assert (request["start"], request["end"]) == (window.globex_open_ns, window.close_ns)
    assert requests[(OPTIONS, "definition")]["symbols"] == list(ES_OPTIONS_PARENTS)
    assert {"ES.OPT", "EW1.OPT", "E1A.OPT", "E3B.OPT", "E2C.OPT", "E5D.OPT"} <= set(ES_OPTIONS_PARENTS)
    for schema in OPTIONS_DATA:
        assert requests[(OPTIONS, schema)]["symbols"] == OPTION_IDS
        assert requests[(OPTIONS, schema)]["stype_in"] == "instrument_id"

    manifest = json.loads((day / "manifest.json").read_text())
    assert manifest["session"] == "2024-05-09" and len(manifest["files"]) == 8
    entry = manifest["files"]["futures/glbx-mdp3-20240509.trades.dbn.zst"]
    path = day / "futures" / "glbx-mdp3-20240509.trades.dbn.zst"
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert entry["size"] == path.stat().st_size
    assert entry["request"]["symbols"] == ["ES.FUT"] and entry["request"]["schema"] == "trades"


def test_recorded_calls_bind_to_the_real_databento_signatures(tmp_path, fake):
    _source(tmp_path, fake).acquire(SESSION)
    for op, _, _, kwargs in fake.calls:
        real = MetadataHttpAPI.get_cost if op == "get_cost" else TimeseriesHttpAPI.get_range
        inspect.signature(real).bind(None, **kwargs)  # raises TypeError on an unknown parameter


def test_costs_are_logged_before_anything_is_downloaded(tmp_path, fake, caplog):
    fake.costs = {(FUTURES, "mbp-10"): 3.5}
    with caplog.at_level(logging.INFO, logger="spymaster_assets.sources.databento_api"):
        _source(tmp_path, fake).acquire(SESSION)

    sequence = [(op, venue, schema) for op, venue, schema, _ in fake.calls]
    stage_one = [("get_cost", FUTURES, s) for s in FUTURES_SCHEMAS] + [("get_cost", OPTIONS, "definition")]
    assert sequence[:5] == stage_one
    # Only the options definitions (needed to know which options to price) precede the options pricing.
    assert sequence[5] == ("get_range", OPTIONS, "definition")
    assert sequence[6:9] == [("get_cost", OPTIONS, s) for s in OPTIONS_DATA]
    assert all(op == "get_range" for op, _, _ in sequence[9:]) and len(sequence) == 16

    messages = [r.getMessage() for r in caplog.records]
    cost_lines = [m for m in messages if "cost estimate" in m]
    assert len(cost_lines) == 8 and any("futures/mbp-10" in m and "$3.5000" in m for m in cost_lines)
    first_futures_download = next(i for i, m in enumerate(messages) if "downloading futures/" in m)
    totals = [i for i, m in enumerate(messages) if "estimated total" in m]
    assert len(totals) == 2 and totals[-1] < first_futures_download
    assert "$5.2500" in messages[totals[-1]]  # 3.5 + 7 × 0.25


def test_over_budget_futures_refuse_before_any_download(tmp_path, fake):
    fake.costs = {(FUTURES, "mbp-10"): 60.0}
    with pytest.raises(SourceError, match=r"estimated cost \$61\.00 exceeds max_cost_usd=\$50\.00"):
        _source(tmp_path, fake, max_cost_usd=50.0).acquire(SESSION)
    assert fake.ranges() == []
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_over_budget_options_refuse_before_any_data_download(tmp_path, fake):
    fake.costs = {(OPTIONS, "mbp-1"): 49.0}  # stage one is 5 × 0.25; the options data push it over
    with pytest.raises(SourceError, match="exceeds max_cost_usd"):
        _source(tmp_path, fake).acquire(SESSION)
    assert fake.ranges() == [(OPTIONS, "definition")]
    assert not (_session_dir(tmp_path) / "futures").exists()


def test_second_acquire_is_idempotent(tmp_path, fake, fixtures):
    source = _source(tmp_path, fake)
    first = source.acquire(SESSION)
    calls_after_first = len(fake.calls)
    second = source.acquire(SESSION)
    assert second == first
    assert fake.calls[calls_after_first:] == []  # neither priced nor downloaded again
    # A fresh source over the same root (a new process) agrees.
    again = FakeHistorical(fixtures)
    assert _source(tmp_path, again).acquire(SESSION) == first and again.calls == []


def test_resume_after_a_crash_mid_download(tmp_path, fake, fixtures):
    def crash_on_third(number, venue, schema, target, fixture):
        if number == 3:
            target.write_bytes(fixture.read_bytes()[:100])  # half a file on disk, then the process dies
            raise SimulatedCrash()
        return False

    fake.on_download = crash_on_third
    with pytest.raises(SimulatedCrash):
        _source(tmp_path, fake).acquire(SESSION)
    day = _session_dir(tmp_path)
    [leftover] = list(day.rglob("*.download"))
    completed = json.loads((day / "manifest.json").read_text())["files"]
    assert len(completed) == 2  # options definitions + the first futures file

    healthy = FakeHistorical(fixtures)
    files = _source(tmp_path, healthy).acquire(SESSION)
    assert len(healthy.ranges()) == 8 - len(completed)
    assert not leftover.exists()
    assert len(json.loads((day / "manifest.json").read_text())["files"]) == 8
    for paths in files.files.values():
        for path in paths:
            read_dbn_header(path)


def test_a_truncated_download_is_rejected_and_leaves_nothing(tmp_path, fake):
    def truncate_mbp10(number, venue, schema, target, fixture):
        if (venue, schema) == (FUTURES, "mbp-10"):
            target.write_bytes(fixture.read_bytes()[:-20])  # the server closed the stream early
            return True
        return False

    fake.on_download = truncate_mbp10
    with pytest.raises(SourceError, match="futures/mbp-10.*unusable.*truncated"):
        _source(tmp_path, fake).acquire(SESSION)
    futures_dir = _session_dir(tmp_path) / "futures"
    assert not list(futures_dir.glob("*mbp-10*"))
    manifest = json.loads((_session_dir(tmp_path) / "manifest.json").read_text())["files"]
    assert not any("mbp-10" in name for name in manifest)


def test_long_id_lists_are_chunked(tmp_path, fake):
    files = _source(tmp_path, fake, max_symbols_per_request=1).acquire(SESSION)
    for schema in OPTIONS_DATA:
        paths = files.get(OPTIONS, schema)
        assert [p.name for p in paths] == [f"glbx-mdp3-20240509.{schema}.part{n}.dbn.zst" for n in (1, 2)]
    chunks = [kwargs["symbols"] for op, venue, schema, kwargs in fake.calls
              if (op, venue, schema) == ("get_range", OPTIONS, "trades")]
    assert chunks == [[OPTION_IDS[0]], [OPTION_IDS[1]]]


def test_without_options_only_futures_are_requested(tmp_path, fake):
    files = _source(tmp_path, fake, include_options=False).acquire(SESSION)
    assert {venue for venue, _ in files.files} == {FUTURES}
    assert {venue for _, venue, _, _ in fake.calls} == {FUTURES}


# --- options selection ------------------------------------------------------------------------------


def test_option_ids_selected_from_the_real_definitions(fixtures):
    real = fixtures / "real-es-dbn"
    assert select_option_instrument_ids(real / "options_definition.dbn.zst", SESSION) == OPTION_IDS
    assert select_option_instrument_ids(real / "futures_definition.dbn.zst", SESSION) == []  # futures only


def test_option_selection_keeps_0dte_and_es_outright_underlyings(fixtures):
    definitions = db.DBNStore.from_file(fixtures / "real-es-dbn" / "options_definition.dbn.zst").to_ndarray()
    assert list(definitions["raw_symbol"]) == [b"ESM4 P5250", b"ESM4 P5230"]
    assert option_selection_mask(definitions, SESSION).tolist() == [True, True]  # underlying ESM4

    edited = definitions.copy()
    edited["underlying"] = [b"NQM4", b"NQM4"]
    edited["expiration"][0] = et_to_ns(SESSION, dt.time(16, 0))  # expires today: 0DTE
    assert option_selection_mask(edited, SESSION).tolist() == [True, False]
    assert option_selection_mask(edited, SESSION + dt.timedelta(days=1)).tolist() == [False, False]
    edited["instrument_class"][0] = b"T"  # an option spread is not an option we price
    assert option_selection_mask(edited, SESSION).tolist() == [False, False]


# --- secrets ----------------------------------------------------------------------------------------


def test_api_key_never_leaks(tmp_path, fake, fixtures, caplog):
    caplog.set_level(logging.DEBUG)
    source = _source(tmp_path, fake)
    files = source.acquire(SESSION)
    for text in (repr(source), str(source), repr(vars(source)), repr(files),
                 (_session_dir(tmp_path) / "manifest.json").read_text()):
        assert API_KEY not in text

    class LeakyClient(FakeHistorical):
        def get_cost(self, *args, **kwargs):
            raise RuntimeError(f"401 Unauthorized: key {API_KEY} is not valid")

    with pytest.raises(SourceError) as failure:
        _source(tmp_path / "other", LeakyClient(fixtures)).acquire(SESSION)
    assert "401 Unauthorized" in str(failure.value) and "<redacted>" in str(failure.value)
    assert API_KEY not in str(failure.value)
    assert failure.value.__cause__ is None and failure.value.__context__ is None  # the raw error is not chained
    assert API_KEY not in caplog.text
    assert "Databento metadata.get_cost failed" in caplog.text  # the (scrubbed) traceback is logged


def test_real_client_is_built_without_exposing_the_key(tmp_path):
    source = DatabentoSource(API_KEY, tmp_path)  # databento.Historical does no I/O on construction
    assert isinstance(source._client, db.Historical)
    for text in (repr(source), str(source), repr(vars(source))):
        assert API_KEY not in text
    with pytest.raises(ValueError, match="non-empty API key"):
        DatabentoSource("  ", tmp_path)


def test_definition_layouts_have_the_fields_the_selection_reads(fixtures):
    for path in (fixtures / "real-es-dbn" / "options_definition.dbn.zst",  # DBN v1
                 fixtures / "databento-format" / "test_data.definition.dbn.zst"):  # DBN v3
        definitions = db.DBNStore.from_file(path).to_ndarray()
        assert {"instrument_class", "expiration", "underlying", "instrument_id"} <= set(definitions.dtype.names)
        assert definitions["expiration"].dtype == np.uint64
        option_selection_mask(definitions, SESSION)  # runs on either layout
