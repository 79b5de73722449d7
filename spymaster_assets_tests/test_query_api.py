"""The warm query service: `GET /api/query` contract, the not-near-level answer on a hand-made
session, the bounded caches, and `spymaster query --server` talking to `spymaster serve` in a
subprocess. All on a hand-made lake (random episodes, one hand-made state table), no Dagster run."""

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.testclient import TestClient

from spymaster_assets.cli import main as cli
from spymaster_assets.gold.as_of import (
    query_anchors,
    query_answer,
    setup_at,
    write_normalization_stats,
    write_similarity_index,
    write_similarity_metric,
)
from spymaster_assets.lake import Lake
from spymaster_assets.lib.calendar import et_to_ns, session_window, trading_sessions
from spymaster_assets.lib.episodes import describe_setups
from spymaster_assets.lib.features import registry
from spymaster_assets.lib.features.context import APPROACH_D_ATR
from spymaster_assets.lib.state import state_schema
from spymaster_assets.lib.tiers import tier_rank
from spymaster_assets.live.query_api import QUERY_PATH, BoundedLRU, QueryService, query_routes
from spymaster_assets_tests.test_gold_retrieval import fake_episodes

SESSION = dt.date(2024, 4, 15)
HISTORY = trading_sessions(dt.date(2024, 3, 1), SESSION)[:-1]
TIER = "T2"
LEVEL, LEVEL_PRICE, ATR = "PM_HIGH", 5000.0, 2.0
FAR_CLOCK, NEAR_CLOCK = dt.time(9, 31), dt.time(10, 30)


def hand_made_state(session: dt.date) -> pl.DataFrame:
    """PM_HIGH at 5000 with ATR 2: price climbs from 4 ATR below it at 09:30 to 0.2 ATR below at
    10:30 (30 s grid). At 09:31 it is 3.97 ATR away — outside the 2-ATR approach zone. SMA_90 at
    4995 rides along (its rows make the session's grid hold two levels); other features are noise."""
    grid = np.arange(et_to_ns(session, dt.time(9, 30)), et_to_ns(session, dt.time(10, 30)) + 1, 30 * 10**9)
    n = len(grid)
    d_atr = np.linspace(-4.0, -0.2, n)
    spot = LEVEL_PRICE + d_atr * ATR
    rng = np.random.default_rng(11)
    frames = []
    for kind, price in ((LEVEL, LEVEL_PRICE), ("SMA_90", 4995.0)):
        level_d_atr = (spot - price) / ATR
        frame = {"session": [session] * n, "t_ns": grid, "level_kind": [kind] * n, "level_price": np.full(n, price),
                 "dir_sign": np.where(level_d_atr < 0, 1, -1).astype(np.int8), "time_bucket": ["T0_15"] * n,
                 "tier": [TIER] * n, "in_approach": np.abs(level_d_atr) <= APPROACH_D_ATR}
        for d in registry.all_features():
            frame[d.name] = rng.normal(size=n) if tier_rank(TIER) >= tier_rank(d.tier) else [None] * n
        frame |= {"d_atr": level_d_atr, "atr": np.full(n, ATR), "spot": spot,
                  "minutes_since_open": (grid - grid[0]) / 60e9, "attempt_index": np.zeros(n)}
        frames.append(pl.DataFrame(frame).select(list(state_schema())).cast(state_schema()))
    return pl.concat(frames).sort("t_ns", "level_kind")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A lake that can answer SESSION: 29 earlier sessions of random T2 episodes, SESSION's as-of
    stats, metric and index built from them, and SESSION's hand-made state table."""
    root = tmp_path_factory.mktemp("query_home")
    lake = Lake(root / "lake")
    rng = np.random.default_rng(5)
    for day in HISTORY:
        lake.write_frame("gold", "episodes", day, fake_episodes(day, 20, TIER, rng))
    stamp = {"schema_version": "test", "config_hash": "test"}
    write_normalization_stats(lake, SESSION, stamp)
    write_similarity_metric(lake, SESSION, stamp)
    write_similarity_index(lake, SESSION, stamp)
    lake.write_frame("silver", "state", SESSION, hand_made_state(SESSION))
    return root


@pytest.fixture(scope="module")
def client(home) -> TestClient:
    return TestClient(Starlette(routes=query_routes(Lake(home / "lake"))))


def test_price_far_from_the_level_is_said_not_answered(home):
    answer = query_answer(Lake(home / "lake"), SESSION, FAR_CLOCK, LEVEL)
    assert answer["near_level"] is False
    assert answer["distance_atr"] == pytest.approx(4.0 - 3.8 / 120 * 2, abs=1e-9)  # 2 grid steps of 3.8/120 ATR
    assert "outside its approach zone" in answer["note"] and "below" in answer["note"]
    assert answer["retrieval"] is None
    near = query_answer(Lake(home / "lake"), SESSION, NEAR_CLOCK, LEVEL)
    assert near["near_level"] is True and near["distance_atr"] == pytest.approx(0.2)
    assert near["retrieval"] is not None and sum(near["retrieval"]["probabilities"].values()) == pytest.approx(1.0)


@pytest.mark.parametrize("level", [LEVEL, "SMA_90"])
def test_a_setup_described_with_the_whole_grid_equals_one_described_alone(home, level):
    from polars.testing import assert_frame_equal

    lake = Lake(home / "lake")
    state = lake.read("silver", "state", SESSION)
    for clock in (dt.time(9, 30), dt.time(9, 47), dt.time(10, 30), dt.time(10, 45)):  # 10:45: after the last row
        at_ns = et_to_ns(SESSION, clock)
        served, row = setup_at(lake, SESSION, clock, level)
        rows = state.filter((pl.col("level_kind") == level) & (pl.col("t_ns") <= at_ns)).tail(1)
        alone = describe_setups(state, query_anchors(rows, SESSION, at_ns), session_window(SESSION).rth_open_ns)
        assert served.height == 1 and row["t_ns"] == rows["t_ns"][0]
        assert_frame_equal(served, alone)


def test_endpoint_answers_like_the_in_process_query(client, home):
    response = client.get(QUERY_PATH, params={"date": SESSION.isoformat(), "time": "10:30", "level": LEVEL,
                                              "neighbours": 3})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert "answer;dur=" in response.headers["server-timing"]
    answer = response.json()
    direct = query_answer(Lake(home / "lake"), SESSION, NEAR_CLOCK, LEVEL, neighbours=3)
    assert answer["near_level"] is True and answer["session"] == SESSION.isoformat()
    assert answer["retrieval"]["probabilities"] == pytest.approx(direct["retrieval"]["probabilities"])
    assert len(answer["retrieval"]["neighbours"]) == 3
    assert {n["session"] for n in answer["retrieval"]["neighbours"]} <= {d.isoformat() for d in HISTORY}
    assert answer["model"] is None  # no ml/break_model partition in this lake

    far = client.get(QUERY_PATH, params={"date": SESSION.isoformat(), "time": "09:31", "level": LEVEL}).json()
    assert far["near_level"] is False and far["distance_atr"] > APPROACH_D_ATR and "model" not in far


@pytest.mark.parametrize("params, status, says", [
    ({"time": "10:30", "level": LEVEL}, 400, "missing query parameter(s): date"),
    ({"date": "2024-13-01", "time": "10:30", "level": LEVEL}, 400, "date must be YYYY-MM-DD"),
    ({"date": SESSION.isoformat(), "time": "25:00", "level": LEVEL}, 400, "time must be HH:MM"),
    ({"date": SESSION.isoformat(), "time": "10:30", "level": "VWAP"}, 400, "level must be one of"),
    ({"date": SESSION.isoformat(), "time": "10:30", "level": LEVEL, "neighbours": "0"}, 400, "neighbours must be"),
    ({"date": "2024-04-16", "time": "10:30", "level": LEVEL}, 404, "silver/state has no partition 2024-04-16"),
    ({"date": SESSION.isoformat(), "time": "10:30", "level": "OR_LOW"}, 422, "OR_LOW has no state"),
])
def test_endpoint_rejects_what_it_cannot_answer(client, params, status, says):
    response = client.get(QUERY_PATH, params=params)
    assert response.status_code == status
    assert says in response.json()["error"]


def test_warm_answers_reuse_the_session_and_stay_bounded(home):
    service = QueryService(Lake(home / "lake"), max_sessions=1)
    first = service.answer(SESSION, NEAR_CLOCK, LEVEL)
    as_of = service.as_of(SESSION)
    assert service.answer(SESSION, NEAR_CLOCK, LEVEL)["retrieval"]["probabilities"] == first["retrieval"]["probabilities"]
    assert service.as_of(SESSION) is as_of and len(service.sessions) == 1
    assert service.lake.frames.hits > 0  # the state table was read once


def test_bounded_lru_evicts_the_least_recently_used_by_count_and_size():
    loads = []
    cache = BoundedLRU(max_items=2, max_bytes=10, size_of=len)

    def get(key, value):
        return cache.get_or_load(key, lambda: loads.append(key) or value)

    get("a", "xxx"), get("b", "yyy"), get("a", "xxx")
    get("c", "zzz")  # over 2 items: "b" (least recently used) goes
    assert loads == ["a", "b", "c"] and len(cache) == 2
    get("a", "xxx")
    assert loads == ["a", "b", "c"]
    get("d", "dddddddd")  # 3 + 3 + 8 > 10 bytes: evict until it fits, keeping the new value
    assert len(cache) == 1 and cache.total_bytes == 8
    get("big", "b" * 50)  # alone over budget: still kept (and served)
    assert len(cache) == 1 and cache.total_bytes == 50
    with pytest.raises(ValueError):
        BoundedLRU(max_items=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_asks_a_running_server(home, tmp_path):
    port = free_port()
    env = os.environ | {"SPYMASTER_HOME": str(home), "OMP_WAIT_POLICY": "passive", "POLARS_MAX_THREADS": "1"}
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "spymaster_assets.cli", "serve", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
                    assert json.load(response)["lake"] == str((home / "lake").resolve())
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "spymaster serve did not start"
                time.sleep(0.5)
        # The server's lake, not the CLI's: the CLI's own home is empty, so only the server can answer.
        runner = CliRunner(env={"SPYMASTER_HOME": str(tmp_path / "empty"), "SPYMASTER_SERVER": url})
        args = ["query", "--date", SESSION.isoformat(), "--time", "10:30", "--level", LEVEL]
        out = runner.invoke(cli, [*args, "--json"])
        assert out.exit_code == 0, out.output
        assert json.loads(out.stdout)["retrieval"]["probabilities"] == pytest.approx(
            query_answer(Lake(home / "lake"), SESSION, NEAR_CLOCK, LEVEL)["retrieval"]["probabilities"])
        text = runner.invoke(cli, args)
        assert text.exit_code == 0 and "outcome: BREAK" in text.output
        far = runner.invoke(cli, ["query", "--date", SESSION.isoformat(), "--time", "09:31", "--level", LEVEL])
        assert far.exit_code == 0 and "outside its approach zone" in far.output and "outcome:" not in far.output
        bad = runner.invoke(cli, ["query", "--date", "2024-04-16", "--time", "10:30", "--level", LEVEL,
                                  "--server", url])
        assert bad.exit_code != 0 and "silver/state has no partition 2024-04-16" in bad.output
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_cli_falls_back_in_process_when_the_server_is_down(home, monkeypatch):
    monkeypatch.setenv("SPYMASTER_HOME", str(home))
    out = CliRunner().invoke(cli, ["query", "--date", SESSION.isoformat(), "--time", "10:30", "--level", LEVEL,
                                   "--server", f"http://127.0.0.1:{free_port()}", "--json"])
    assert out.exit_code == 0, out.output
    assert "unreachable" in out.stderr and json.loads(out.stdout)["near_level"] is True
