"""Stream projections (SPEC §10): q10/q50/q90 of a stream's next 10 bars as cubic paths.

For one stream, a sample is a (bar, level) with LOOKBACK bars of the stream's own history, the
slope and curvature of its smoothed value and the current values of the other streams (all ≤ t);
its targets are the stream's change over the next ANCHOR_BARS bars (FORWARD-LOOKING: targets
only, never features). One LightGBM quantile model per (anchor, quantile); a projected path is
the cubic through the current value (h = 0) and the three predicted anchor values, evaluated at
h = 1…HORIZON and clipped to [−1, 1]. Splits are by session (never by row): a session's bars are
autocorrelated, so a row split would score a model on near-copies of its training rows.

`project(models, history)` is THE inference: the asset ml/projections calls it on a whole
session, the live engine on the last rows of one level after each 30 s update (latest_only).
Its trees run as numpy arrays (`CompiledTrees`, exact to LightGBM's own decision rules), because
45 `Booster.predict` calls of one row cost ≈ 7 ms and a level update must cost ≤ 2 ms.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

# LightGBM (~0.6 CPU-s to import, with sklearn and narwhals) is imported where a model is fitted or
# loaded: a process that does neither (a daily run without a model to score, the CLI) does not pay for it.
if TYPE_CHECKING:
    import lightgbm as lgb

PROJECTED_STREAMS = ("sigma_p", "sigma_m", "sigma_f", "sigma_b", "sigma_r")
CONTEXT_STREAMS = ("sigma_m", "sigma_f", "sigma_b", "sigma_d", "sigma_s")
LOOKBACK = 16
HORIZON = 10
ANCHOR_BARS = (2, 5, 10)
QUANTILES = (0.1, 0.5, 0.9)
BAND_COLUMNS = ("q10", "q50", "q90")
ZERO_THRESHOLD = 1e-35  # LightGBM's kZeroThreshold: |x| ≤ this is "zero" for missing_type Zero


@dataclass(frozen=True)
class ProjectionConfig:
    n_estimators: int = 60
    learning_rate: float = 0.05
    num_leaves: int = 15
    max_depth: int = 6  # bounds the tree walk of a live update (one numpy step per level)
    min_data_in_leaf: int = 20
    seed: int = 0

    def params(self, alpha: float) -> dict:
        return {"objective": "quantile", "alpha": alpha, "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves, "max_depth": self.max_depth, "min_data_in_leaf": self.min_data_in_leaf, "seed": self.seed,
                "deterministic": True, "num_threads": 1, "verbose": -1}

    def as_dict(self) -> dict:
        return asdict(self) | {"lookback": LOOKBACK, "horizon": HORIZON, "anchor_bars": list(ANCHOR_BARS),
                               "quantiles": list(QUANTILES)}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


def feature_names(stream: str) -> list[str]:
    context = [c for c in CONTEXT_STREAMS if c != stream]
    return [f"{stream}_lag{k}" for k in range(LOOKBACK)] + [f"{stream}_slope", f"{stream}_curvature"] + context


# --- features (causal) ----------------------------------------------------------------------

def _group_columns(frame: pl.DataFrame) -> list[str]:
    """A path is one level of one session (the live engine passes one level and no session)."""
    return [c for c in ("session", "level_kind") if c in frame.columns]


def path_order(streams: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The row order by path and time, and each ordered row's path id (consecutive integers).
    numpy only: a live update must not wait on polars' thread pool (ms under CPU contention)."""
    codes = [np.unique(streams.get_column(c).to_numpy(), return_inverse=True)[1].reshape(-1)
             for c in _group_columns(streams)]
    order = np.lexsort([streams.get_column("t_ns").to_numpy(), *reversed(codes)])
    starts = np.zeros(order.size, dtype=bool)
    starts[:1] = True
    for code in codes:
        ordered = code[order]
        starts[1:] |= ordered[1:] != ordered[:-1]
    return order, np.cumsum(starts) - 1


def stream_columns(streams: pl.DataFrame, order: np.ndarray, wanted: list[str] | None = None) -> dict[str, np.ndarray]:
    """The stream columns the features of the `wanted` streams read (default: every stream column),
    with their `_smooth`, as float arrays in `order`, NaN for null."""
    keep = None if wanted is None else {*wanted, *[f"{s}_smooth" for s in wanted], *CONTEXT_STREAMS}
    return {c: streams.get_column(c).to_numpy().astype(np.float64, copy=False)[order] for c in streams.columns
            if c.startswith("sigma_") and (keep is None or c in keep)}


def key_columns(streams: pl.DataFrame, order: np.ndarray) -> dict[str, np.ndarray]:
    return {c: streams.get_column(c).to_numpy()[order] for c in ("session", "t_ns", "level_kind") if c in streams.columns}


def _shift(values: np.ndarray, path: np.ndarray, k: int) -> np.ndarray:
    """values[i − k] where row i − k is on the same path, else NaN (k > 0: the past; k < 0: the future)."""
    out = np.full(values.shape[0], np.nan)
    if k == 0:
        return values.copy()
    if abs(k) >= values.shape[0]:
        return out
    if k > 0:
        same = path[k:] == path[:-k]
        out[k:] = np.where(same, values[:-k], np.nan)
    else:
        same = path[:k] == path[-k:]
        out[:k] = np.where(same, values[-k:], np.nan)
    return out


def lags(values: np.ndarray, path: np.ndarray, count: int) -> np.ndarray:
    """[rows, count]: column k = values[i − k] on the same path, else NaN (one gather for all lags)."""
    source = np.arange(values.shape[0])[:, None] - np.arange(count)[None, :]
    clipped = np.maximum(source, 0)
    return np.where((source >= 0) & (path[clipped] == path[:, None]), values[clipped], np.nan)


def feature_matrix(columns: dict[str, np.ndarray], path: np.ndarray, stream: str) -> tuple[np.ndarray, np.ndarray]:
    """The features of `stream` for every row (in path order) from rows ≤ t of its own path, and
    which rows have them all (the stream's own history complete; other streams may be missing:
    LightGBM routes a missing value by its learned default)."""
    absent = np.full(path.shape[0], np.nan)
    own = columns.get(stream, absent)
    smooth = columns.get(f"{stream}_smooth", own)
    slope = smooth - _shift(smooth, path, 1)
    curvature = slope - _shift(slope, path, 1)
    own_features = np.column_stack([lags(own, path, LOOKBACK), slope, curvature])
    context = [columns.get(c, absent) for c in CONTEXT_STREAMS if c != stream]
    complete = np.isfinite(own_features).all(axis=1)
    return np.column_stack([own_features, *context]), complete


def projection_samples(streams: pl.DataFrame, stream: str, with_targets: bool = True) -> pl.DataFrame:
    """One row per (session, level, bar) with a full lookback (and, for training, a full horizon):
    features from bars ≤ t, targets `target_h{h}` = value at t + h − value at t."""
    order, path = path_order(streams)
    columns = stream_columns(streams, order, [stream])
    X, keep = feature_matrix(columns, path, stream)
    keys = ["session", "level_kind", "t_ns"]
    parts = [streams.select([c for c in keys if c in streams.columns])[order],
             pl.DataFrame(X, schema=feature_names(stream), orient="row")]
    if with_targets:
        own = columns[stream]
        targets = {f"target_h{h}": _shift(own, path, -h) - own for h in ANCHOR_BARS}
        keep &= np.isfinite(np.column_stack(list(targets.values()))).all(axis=1)
        parts.append(pl.DataFrame(targets))
    frame = pl.concat(parts, how="horizontal")
    return frame.filter(pl.Series(keep))


# --- models -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CompiledTrees:
    """The trees of several LightGBM boosters as flat node arrays, walked for all rows and trees at
    once. Decisions follow LightGBM's numerical split (missing types None and NaN; Zero needs
    `zero_as_missing`, which is not used): a NaN goes the split's default way when its missing
    type is NaN and is read as 0.0 otherwise; any other value goes left when x ≤ threshold.
    Output: the sum of each booster's leaf values (its raw prediction)."""

    feature: np.ndarray  # split feature per node (0 at leaves)
    threshold: np.ndarray  # +inf at leaves: every value "goes left", to the leaf itself
    nan_left: np.ndarray  # where a NaN goes, decided per node at compile time
    children: np.ndarray  # [node, 2]: left, right (a leaf's children are itself)
    value: np.ndarray  # leaf value (0 at splits)
    roots: np.ndarray
    model_starts: np.ndarray  # index of each booster's first tree (a booster's trees are contiguous)
    depth: int

    @classmethod
    def from_boosters(cls, boosters: list[lgb.Booster], feature_offsets: list[int] | None = None) -> CompiledTrees:
        """`feature_offsets[i]`: where booster i's features start in the matrix `predict` gets
        (several streams' models walked in one pass over side-by-side feature blocks)."""
        offsets = feature_offsets or [0] * len(boosters)
        nodes: list[tuple | None] = []  # feature, threshold, nan_left, left, right, value
        roots, owners, depth = [], [], 0

        def add(node: dict, level: int, offset: int) -> int:
            nonlocal depth
            depth = max(depth, level)
            index = len(nodes)
            if "leaf_value" in node:
                nodes.append((0, np.inf, True, index, index, float(node["leaf_value"])))
                return index
            if node["decision_type"] != "<=" or node["missing_type"] not in ("None", "NaN"):
                raise ValueError(f"unsupported LightGBM split {node['decision_type']} / missing {node['missing_type']}")
            nodes.append(None)
            left, right = add(node["left_child"], level + 1, offset), add(node["right_child"], level + 1, offset)
            threshold = float(node["threshold"])
            nan_left = bool(node["default_left"]) if node["missing_type"] == "NaN" else 0.0 <= threshold
            nodes[index] = (node["split_feature"] + offset, threshold, nan_left, left, right, 0.0)
            return index

        for model, booster in enumerate(boosters):
            for tree in booster.dump_model()["tree_info"]:
                roots.append(add(tree["tree_structure"], 0, offsets[model]))
                owners.append(model)
        feature, threshold, nan_left, left, right, value = (np.asarray(c) for c in zip(*nodes))
        starts = np.searchsorted(np.asarray(owners), np.arange(len(boosters)))
        return cls(feature.astype(np.int64), threshold.astype(np.float64), nan_left.astype(bool),
                   np.column_stack([left, right]).astype(np.int64).ravel(), value.astype(np.float64),
                   np.asarray(roots, np.int64), starts, depth)

    def predict(self, X: np.ndarray, chunk_rows: int = 256) -> np.ndarray:
        """[rows, models] raw predictions (= each booster's `predict`); rows in chunks so the
        [rows, trees] work arrays stay small."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.shape[0] > chunk_rows:
            return np.concatenate([self.predict(X[i:i + chunk_rows]) for i in range(0, X.shape[0], chunk_rows)])
        flat = X.ravel()
        row_start = (np.arange(X.shape[0]) * X.shape[1])[:, None]
        node = np.broadcast_to(self.roots, (X.shape[0], self.roots.shape[0]))
        for _ in range(self.depth):
            x = flat.take(row_start + self.feature.take(node))
            go_right = ~((x <= self.threshold.take(node)) | (np.isnan(x) & self.nan_left.take(node)))
            node = self.children.take(2 * node + go_right)
        # Summed in tree order per row (not a matrix product, whose blocking depends on the row count):
        # a row's prediction is bit-identical alone or in a batch.
        return np.add.reduceat(self.value.take(node), self.model_starts, axis=1)


@dataclass
class StreamProjector:
    """The quantile models of one stream: (anchor bar, quantile) → booster, and their compiled trees."""

    stream: str
    boosters: dict[tuple[int, float], lgb.Booster] = field(default_factory=dict)
    _compiled: CompiledTrees | None = field(default=None, repr=False, compare=False)

    @classmethod
    def fit(cls, samples: pl.DataFrame, stream: str, config: ProjectionConfig = ProjectionConfig()) -> StreamProjector:
        if samples.height < config.min_data_in_leaf * 2:
            raise ValueError(f"{stream}: {samples.height} samples are too few to fit projections")
        import lightgbm as lgb

        X = samples.select(feature_names(stream)).to_numpy()
        # Binned once: the nine models differ only in label and alpha.
        data = lgb.Dataset(X, label=samples[f"target_h{ANCHOR_BARS[0]}"].to_numpy(), feature_name=feature_names(stream),
                           free_raw_data=False, params={"verbose": -1, "min_data_in_leaf": config.min_data_in_leaf})
        data.construct()
        boosters = {}
        for h in ANCHOR_BARS:
            data.set_label(samples[f"target_h{h}"].to_numpy())
            for q in QUANTILES:
                boosters[(h, q)] = lgb.train(config.params(q), data, num_boost_round=config.n_estimators)
        return cls(stream, boosters)

    @property
    def compiled(self) -> CompiledTrees:
        if self._compiled is None:
            self._compiled = CompiledTrees.from_boosters([self.boosters[(h, q)] for q in QUANTILES for h in ANCHOR_BARS])
        return self._compiled

    def anchors_of(self, X: np.ndarray) -> np.ndarray:
        """[rows, quantile, anchor] predicted change at each anchor bar, quantiles sorted (no crossing)."""
        raw = self.compiled.predict(X).reshape(X.shape[0], len(QUANTILES), len(ANCHOR_BARS))
        return np.sort(raw, axis=1)

    def anchors(self, samples: pl.DataFrame) -> np.ndarray:
        return self.anchors_of(samples.select(feature_names(self.stream)).to_numpy())

    def paths(self, samples: pl.DataFrame) -> np.ndarray:
        """[rows, quantile, HORIZON] projected stream values at t + 1 … t + HORIZON."""
        return cubic_paths(samples[f"{self.stream}_lag0"].to_numpy(), self.anchors(samples))


@dataclass
class ProjectionModels:
    """The projectors of every modelled stream, walked as one tree ensemble (one pass per call
    instead of one per stream: a live level update is dominated by per-call overhead)."""

    projectors: dict[str, StreamProjector] = field(default_factory=dict)
    _compiled: CompiledTrees | None = field(default=None, repr=False, compare=False)

    @property
    def streams(self) -> list[str]:
        return list(self.projectors)

    def __bool__(self) -> bool:
        return bool(self.projectors)

    @property
    def compiled(self) -> CompiledTrees:
        if self._compiled is None:
            boosters, offsets, offset = [], [], 0
            for stream, projector in self.projectors.items():
                for q in QUANTILES:
                    for h in ANCHOR_BARS:
                        boosters.append(projector.boosters[(h, q)])
                        offsets.append(offset)
                offset += len(feature_names(stream))
            self._compiled = CompiledTrees.from_boosters(boosters, offsets)
        return self._compiled

    def anchors_of(self, X: np.ndarray) -> np.ndarray:
        """[rows, stream, quantile, anchor] from the streams' feature blocks side by side."""
        raw = self.compiled.predict(X).reshape(X.shape[0], len(self.projectors), len(QUANTILES), len(ANCHOR_BARS))
        return np.sort(raw, axis=2)


def _path_basis() -> np.ndarray:
    """[HORIZON, 4]: values at h = 1…HORIZON of the cubic through (0, y0) and the anchors (h, y_h),
    as a linear map of (y0, y_anchors) — the Vandermonde system solved once."""
    hs = np.asarray((0, *ANCHOR_BARS), dtype=float)
    grid = np.vander(np.arange(1, HORIZON + 1, dtype=float), 4, increasing=True)
    return grid @ np.linalg.inv(np.vander(hs, 4, increasing=True))


PATH_BASIS = _path_basis()


def cubic_paths(current: np.ndarray, anchor_changes: np.ndarray) -> np.ndarray:
    """The cubic through (0, 0) and (h, Δ_h) for the anchor bars, plus the current value, at
    h = 1…HORIZON, clipped to the streams' range [−1, 1]; quantiles sorted at every h (bands
    never cross between anchors)."""
    rows, quantiles, _ = anchor_changes.shape
    points = np.concatenate([np.zeros((rows, quantiles, 1)), anchor_changes], axis=2)
    paths = np.clip(current[:, None, None] + points @ PATH_BASIS.T, -1.0, 1.0)
    return np.sort(paths, axis=1)


# --- inference: THE function -------------------------------------------------------------------

PROJECTION_SCHEMA: dict[str, pl.DataType] = {
    "session": pl.Date,
    "t_ns": pl.Int64,  # the bar the forecast is made at (uses rows ≤ t_ns only)
    "level_kind": pl.Utf8,
    "stream": pl.Utf8,
    "horizon": pl.Int8,  # bars ahead, 1…HORIZON (30 s each)
    "value_now": pl.Float64,  # the stream at t_ns
    "q10": pl.Float64,
    "q50": pl.Float64,
    "q90": pl.Float64,
}


def project(models: ProjectionModels, history: pl.DataFrame, latest_only: bool = False) -> pl.DataFrame:
    """Bands (q10 ≤ q50 ≤ q90) of every modelled stream's next HORIZON bars, per (bar, level) of
    `history` whose own LOOKBACK bars are present; one row per (bar, level, stream, horizon).

    `history`: gold/streams rows (t_ns, level_kind, the streams, their `_smooth`; `session` when
    several sessions). A forecast at t reads rows ≤ t of its own level and session only, so a
    batch over a session equals the row-by-row answers. `latest_only`: only each path's last bar
    (the live engine's update: pass the level's last ≥ LOOKBACK + 2 rows)."""
    schema = {k: v for k, v in PROJECTION_SCHEMA.items() if k != "session" or "session" in history.columns}
    if history.height == 0 or not models:
        return pl.DataFrame(schema=schema)
    order, path = path_order(history)
    columns = stream_columns(history, order, models.streams)
    wanted = np.append(path[1:] != path[:-1], True) if latest_only else np.ones(order.size, dtype=bool)
    blocks = [feature_matrix(columns, path, stream) for stream in models.streams]
    complete = np.column_stack([ok & wanted for _, ok in blocks])  # [rows, stream]
    rows = np.flatnonzero(complete.any(axis=1))
    if rows.size == 0:
        return pl.DataFrame(schema=schema)
    X = np.hstack([features[rows] for features, _ in blocks])
    anchors = models.anchors_of(X)
    keys = key_columns(history, order)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in schema}
    for j, stream in enumerate(models.streams):
        mine = np.flatnonzero(complete[rows, j])  # positions in `rows`
        if mine.size == 0:
            continue
        now = blocks[j][0][rows[mine], 0]  # lag0 = the value now
        paths = cubic_paths(now, anchors[mine, j])
        repeated = np.repeat(rows[mine], HORIZON)
        for name, values in keys.items():
            parts[name].append(values[repeated])
        parts["stream"].append(np.full(repeated.size, stream, dtype=object))
        parts["horizon"].append(np.tile(np.arange(1, HORIZON + 1, dtype=np.int8), mine.size))
        parts["value_now"].append(np.repeat(now, HORIZON))
        for i, name in enumerate(BAND_COLUMNS):
            parts[name].append(paths[:, i, :].reshape(-1))
    return pl.DataFrame([pl.Series(name, np.concatenate(values), dtype=schema[name]) for name, values in parts.items()])


# --- evaluation (FORWARD-LOOKING: reports only) ------------------------------------------------

def realised_paths(streams: pl.DataFrame, stream: str) -> pl.DataFrame:
    """The stream's realised value h = 1…HORIZON bars after each (session, level, bar), in the
    same bar indexing as the training targets; null past the end of the path."""
    order, path = path_order(streams)
    own = stream_columns(streams, order, [stream])[stream]
    keys = streams.select([c for c in ("session", "t_ns", "level_kind") if c in streams.columns])[order]
    return pl.concat([keys.with_columns(stream=pl.lit(stream), horizon=pl.lit(h, pl.Int8),
                                        realised=pl.Series(_shift(own, path, -h)).fill_nan(None))
                      for h in range(1, HORIZON + 1)])


def path_sums(scored: pl.DataFrame, by: tuple[str, ...] = ("stream",)) -> pl.DataFrame:
    """Additive sufficient statistics of forecasts joined with their realised values (columns
    value_now, q10, q50, q90, realised, horizon), per `by` and horizon: sessions are summed one at a
    time and combined (`path_metrics_from_sums`), so an evaluation never holds every forecast."""
    change, predicted = pl.col("realised") - pl.col("value_now"), pl.col("q50") - pl.col("value_now")
    return scored.group_by([*by, "horizon"]).agg(
        n=pl.len(),
        sum_y=pl.col("realised").sum(), sum_y2=(pl.col("realised") ** 2).sum(),
        sum_dy=change.sum(), sum_dy2=(change ** 2).sum(),
        sse=((pl.col("realised") - pl.col("q50")) ** 2).sum(), sse_flat=(change ** 2).sum(),
        sse_change=((change - predicted) ** 2).sum(),
        abs_err=(pl.col("realised") - pl.col("q50")).abs().sum(), abs_err_flat=change.abs().sum(),
        inside=pl.col("realised").is_between(pl.col("q10"), pl.col("q90")).sum(),
        width=(pl.col("q90") - pl.col("q10")).sum(),
    )


def _r2(sse: float, n: float, total: float, squares: float) -> float | None:
    """1 − SSE / SS_tot, SS_tot = Σy² − (Σy)²/n."""
    ss_tot = squares - total * total / n if n else 0.0
    return None if n < 2 or ss_tot <= 0 else float(1.0 - sse / ss_tot)


def path_metrics_from_sums(sums: pl.DataFrame) -> dict:
    """Path R² of the q50 path and of the flat forecast (the value now held), on levels and on changes
    from now; endpoint (h = HORIZON) MAE of both; q10–q90 coverage, pooled and per horizon."""
    if sums.height == 0 or sums["n"].sum() == 0:
        return {"n_points": 0}
    stats = [c for c in sums.columns if c not in ("stream", "session", "horizon")]
    by_h = sums.group_by("horizon").agg(pl.col(stats).sum()).sort("horizon")
    t = by_h.drop("horizon").sum().row(0, named=True)
    end = by_h.filter(pl.col("horizon") == HORIZON)
    end = end.row(0, named=True) if end.height else None
    return {
        "n_points": int(t["n"]),
        "n_forecasts": int(end["n"]) if end else 0,
        "path_r2": _r2(t["sse"], t["n"], t["sum_y"], t["sum_y2"]),
        "path_r2_flat": _r2(t["sse_flat"], t["n"], t["sum_y"], t["sum_y2"]),
        "change_r2": _r2(t["sse_change"], t["n"], t["sum_dy"], t["sum_dy2"]),
        "change_r2_flat": _r2(t["sum_dy2"], t["n"], t["sum_dy"], t["sum_dy2"]),
        "endpoint_mae": end["abs_err"] / end["n"] if end else None,
        "endpoint_mae_flat": end["abs_err_flat"] / end["n"] if end else None,
        "coverage_q10_q90": t["inside"] / t["n"],
        "coverage_by_horizon": {int(r["horizon"]): r["inside"] / r["n"] for r in by_h.iter_rows(named=True)},
        "mean_band_width": t["width"] / t["n"],
    }


def path_metrics(scored: pl.DataFrame) -> dict:
    """`path_metrics_from_sums` of one frame of scored forecasts."""
    return path_metrics_from_sums(path_sums(scored, by=()))


def session_split(samples: pl.DataFrame, holdout_sessions: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Train on every session but the last `holdout_sessions`, validate on those (walk-forward)."""
    sessions = sorted(samples["session"].unique().to_list())
    if len(sessions) <= holdout_sessions:
        raise ValueError(f"{len(sessions)} sessions cannot hold out {holdout_sessions}")
    cut = sessions[-holdout_sessions]
    return samples.filter(pl.col("session") < cut), samples.filter(pl.col("session") >= cut)


def band_coverage(projector: StreamProjector, samples: pl.DataFrame) -> dict:
    """Share of realised anchor changes inside the predicted q10–q90 band (target ≈ 0.8), per
    anchor bar, and the q50 mean absolute error against a no-change forecast's."""
    predicted = projector.anchors(samples)
    realised = samples.select([f"target_h{h}" for h in ANCHOR_BARS]).to_numpy()
    inside = (realised >= predicted[:, 0, :]) & (realised <= predicted[:, -1, :])
    return {
        "n": samples.height,
        "sessions": samples["session"].n_unique(),
        "coverage_q10_q90": {h: float(inside[:, i].mean()) for i, h in enumerate(ANCHOR_BARS)},
        "mae_q50": {h: float(np.abs(realised[:, i] - predicted[:, 1, i]).mean()) for i, h in enumerate(ANCHOR_BARS)},
        "mae_no_change": {h: float(np.abs(realised[:, i]).mean()) for i, h in enumerate(ANCHOR_BARS)},
    }
