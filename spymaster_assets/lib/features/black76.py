"""Black-76 for options on futures: price, implied vol, delta, gamma (vectorized numpy).

F futures price, K strike, T years to expiry, σ annualized vol, r discount rate (ES options
premium is paid up front; r only discounts, default 0 — immaterial for the short expiries
used here). Calls: e^{−rT}(F·N(d1) − K·N(d2)); puts: e^{−rT}(K·N(−d2) − F·N(−d1));
d1 = (ln(F/K) + σ²T/2)/(σ√T), d2 = d1 − σ√T.
Greeks are per 1 index point of the underlying future: delta = ∂V/∂F, gamma = ∂²V/∂F²
= e^{−rT}·φ(d1)/(F·σ·√T) (same for calls and puts).

`is_call` is a boolean array (True = call, False = put). Every function is elementwise: a
result depends on its own option's inputs only (the IV solver freezes each option once it
has converged, so batch composition never changes a value).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

IV_LOWER = 1e-4
IV_UPPER = 10.0
IV_MAX_ITER = 100
IV_PRICE_TOL = 1e-10  # relative to the target price
IV_SIGMA_TOL = 1e-12

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


def _pdf(x: np.ndarray) -> np.ndarray:
    return _INV_SQRT_2PI * np.exp(-0.5 * x * x)


def _d1(F, K, T, sigma):
    vol_sqrt_t = sigma * np.sqrt(T)
    return (np.log(F / K) + 0.5 * vol_sqrt_t * vol_sqrt_t) / vol_sqrt_t, vol_sqrt_t


def _arrays(*args):
    return np.broadcast_arrays(*[np.asarray(a, dtype=np.float64) for a in args])


def price(F, K, T, sigma, is_call, r: float = 0.0) -> np.ndarray:
    """Black-76 option price (same units as F)."""
    F, K, T, sigma = _arrays(F, K, T, sigma)
    is_call = np.broadcast_to(np.asarray(is_call, dtype=bool), F.shape)
    d1, vst = _d1(F, K, T, sigma)
    d2 = d1 - vst
    disc = np.exp(-r * T)
    call = disc * (F * ndtr(d1) - K * ndtr(d2))
    put = disc * (K * ndtr(-d2) - F * ndtr(-d1))
    return np.where(is_call, call, put)


def delta(F, K, T, sigma, is_call, r: float = 0.0) -> np.ndarray:
    """∂V/∂F per point: e^{−rT}·N(d1) for calls, −e^{−rT}·N(−d1) for puts."""
    F, K, T, sigma = _arrays(F, K, T, sigma)
    is_call = np.broadcast_to(np.asarray(is_call, dtype=bool), F.shape)
    d1, _ = _d1(F, K, T, sigma)
    disc = np.exp(-r * T)
    return np.where(is_call, disc * ndtr(d1), -disc * ndtr(-d1))


def gamma(F, K, T, sigma, r: float = 0.0) -> np.ndarray:
    """∂²V/∂F² per point² (calls and puts alike)."""
    F, K, T, sigma = _arrays(F, K, T, sigma)
    d1, vst = _d1(F, K, T, sigma)
    return np.exp(-r * T) * _pdf(d1) / (F * vst)


def vega(F, K, T, sigma, r: float = 0.0) -> np.ndarray:
    """∂V/∂σ (per 1.00 of vol)."""
    F, K, T, sigma = _arrays(F, K, T, sigma)
    d1, _ = _d1(F, K, T, sigma)
    return np.exp(-r * T) * F * _pdf(d1) * np.sqrt(T)


def implied_vol(target, F, K, T, is_call, r: float = 0.0) -> np.ndarray:
    """Implied vol per option by safeguarded Newton: Newton steps on σ inside a bracket
    [1e-4, 10] that every evaluation tightens; a step leaving the bracket (or a vanishing vega)
    is replaced by bisection. Converged when |price − target| ≤ 1e-10·target or the
    bracket is narrower than 1e-12. NaN when the target is outside the no-arbitrage bounds
    (≤ intrinsic value or ≥ the discounted F for calls / K for puts), when any input is not
    finite or non-positive, or after 100 iterations without convergence. Vectorized over all
    options; each option stops updating once it has converged."""
    target, F, K, T = _arrays(target, F, K, T)
    shape = F.shape
    is_call = np.broadcast_to(np.asarray(is_call, dtype=bool), shape).ravel()
    target, F, K, T = (a.ravel() for a in (target, F, K, T))
    out = np.full(target.shape, np.nan)

    disc = np.exp(-r * np.where(np.isfinite(T), T, 0.0))
    intrinsic = disc * np.where(is_call, np.maximum(F - K, 0.0), np.maximum(K - F, 0.0))
    upper = disc * np.where(is_call, F, K)
    finite = np.isfinite(target) & np.isfinite(F) & np.isfinite(K) & np.isfinite(T)
    valid = finite & (F > 0) & (K > 0) & (T > 0) & (target > intrinsic) & (target < upper)
    idx = np.flatnonzero(valid)
    if len(idx) == 0:
        return out.reshape(shape)

    tgt, f, k, t, call = target[idx], F[idx], K[idx], T[idx], is_call[idx]
    lo = np.full(len(idx), IV_LOWER)
    hi = np.full(len(idx), IV_UPPER)
    # Brenner–Subrahmanyam start, clipped into the bracket.
    sigma = np.clip(np.sqrt(2.0 * np.pi / t) * tgt / (disc[idx] * f), 0.05, 2.0)
    tol = IV_PRICE_TOL * tgt
    result = np.full(len(idx), np.nan)
    active = np.arange(len(idx))
    for _ in range(IV_MAX_ITER):
        if len(active) == 0:
            break
        s = sigma[active]
        diff = price(f[active], k[active], t[active], s, call[active], r) - tgt[active]
        done = np.abs(diff) <= tol[active]
        above = diff > 0
        hi[active] = np.where(above, s, hi[active])
        lo[active] = np.where(above, lo[active], s)
        done |= (hi[active] - lo[active]) <= IV_SIGMA_TOL
        result[active[done]] = s[done]
        v = vega(f[active], k[active], t[active], s, r)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            newton = s - diff / v
        lo_a, hi_a = lo[active], hi[active]
        ok = np.isfinite(newton) & (newton > lo_a) & (newton < hi_a)
        sigma[active] = np.where(ok, newton, 0.5 * (lo_a + hi_a))
        active = active[~done]
    out[idx] = result
    return out.reshape(shape)
