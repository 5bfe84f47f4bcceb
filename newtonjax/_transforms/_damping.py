r"""Damping, radius and scaling rules of Levenberg–Marquardt, as small pure functions.

Each rule maps scalars (and the spectrum of the scaled curvature, for the secular
equation) to the next damping ``μ`` or radius ``Δ``; none evaluates the objective.

* Nielsen (1999); Madsen, Nielsen & Tingleff (2004), §3.2, Alg. 3.16:
  :func:`nielsen_initial_damping` (eq. 3.14, ``μ₀ = τ · max_i G_ii``) and
  :func:`nielsen_update` (``μ`` directly from the gain ratio ``ρ``).
* Moré (1978), "The Levenberg–Marquardt algorithm: implementation and theory"
  (as in MINPACK's ``lmder``/``lmpar``): :func:`initial_radius` (``Δ₀ = factor ·
  ‖D^{1/2}θ₀‖``), :func:`secular_damping` (§5, ``μ`` whose step has length ``Δ``),
  :func:`trust_region_radius_update` (§7, ``Δ`` from ``ρ``) and
  :func:`marquardt_scaling` (§3, ``D`` the running maximum of ``diag(G)``).
* :func:`damping_bounds`: the range ``[sqrt(tiny), sqrt(max)]`` in which a
  multiplicative rule is kept.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "damping_bounds",
    "nielsen_initial_damping",
    "nielsen_update",
    "initial_radius",
    "secular_damping",
    "trust_region_radius_update",
    "marquardt_scaling",
]

Array = jax.Array


def damping_bounds(dtype) -> tuple[float, float]:
    """``[sqrt(tiny), sqrt(max)]``: a multiplicative damping rule never gets stuck at 0/inf."""
    info = jnp.finfo(dtype)
    return float(info.tiny) ** 0.5, float(info.max) ** 0.5


def nielsen_initial_damping(
    damping: Array, diagonal_ratio: Array | None, first: Array, lo: float, hi: float
) -> Array:
    """The damping of this step under Nielsen's rule, in ``[lo, hi]``.

    At the first update with a ``diagonal_ratio`` (``diag(G) / D``), ``damping`` is
    the relative factor ``τ`` and ``μ₀ = τ · max_i G_ii / D_ii`` (Madsen, Nielsen &
    Tingleff 2004, eq. 3.14; a non-finite or zero maximum counts as 1). Otherwise
    ``damping`` is ``μ`` itself.
    """
    mu = damping
    if diagonal_ratio is not None:
        ratio = jnp.max(diagonal_ratio)
        ratio = jnp.where(jnp.isfinite(ratio) & (ratio > 0), ratio, 1.0)
        mu = jnp.where(first, mu * ratio, mu)
    return jnp.clip(mu, lo, hi)


def nielsen_update(
    damping: Array, growth: Array, rho: Array, accepted: Array
) -> tuple[Array, Array]:
    """Nielsen (1999): the next ``(μ, ν)`` from the gain ratio ``ρ``::

        accepted:  μ ← μ · max(⅓, 1 − (2ρ − 1)³),   ν ← 2
        rejected:  μ ← μ · ν,                        ν ← 2ν

    (Madsen, Nielsen & Tingleff 2004, Alg. 3.16). ``ν`` is capped at ``2³⁰`` so that
    an endless run of rejections never overflows it.
    """
    rho_ok = jnp.where(accepted, rho, 0.5)
    factor = jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho_ok - 1.0) ** 3)
    new_damping = jnp.where(accepted, damping * factor, damping * growth)
    new_growth = jnp.where(accepted, 2.0, jnp.minimum(2.0 * growth, 2.0**30))
    return new_damping, new_growth


def initial_radius(scaled_size: Array, factor: Array) -> Array:
    """Moré (1978) / MINPACK: ``Δ₀ = factor · ‖D^{1/2}θ₀‖``, or ``factor`` if ``θ₀ = 0``."""
    return jnp.where(scaled_size > 0, factor * scaled_size, factor)


def secular_damping(
    values: Array,
    coefficients: Array,
    radius: Array,
    *,
    rtol: float = 0.1,
    max_steps: int = 50,
) -> Array:
    """Levenberg–Marquardt parameter ``μ ≥ 0`` whose step has length ``radius``.

    With the scaled curvature ``Ĝ = V diag(λ) Vᵀ`` and the scaled gradient's
    coordinates ``c = Vᵀ D^{-1/2} g``, the damped step has the scaled length
    ``φ(μ) = ‖c / (λ + μ)‖``, decreasing in ``μ``. Returns ``μ = 0`` when the
    (pseudo-inverse) Gauss–Newton step already satisfies ``φ(0) ≤ (1 + rtol) Δ``;
    otherwise Newton's method on ``1/φ(μ) = 1/Δ`` (Hebden 1973; Moré 1978, §5),
    started at the lower bound ``max(0, ‖c‖/Δ − λ_max)``. ``1/φ`` is concave, so the
    iterates increase monotonically to the root from the left and stop once
    ``φ(μ) ≤ (1 + rtol) Δ`` (MINPACK's ``lmpar`` accepts 10%); they stay in
    ``[max(0, ‖c‖/Δ − λ_max), ‖c‖/Δ]``.

    Args:
      values: eigenvalues ``λ ≥ 0`` of ``Ĝ``.
      coefficients: ``c``, the right-hand side in the eigenbasis.
      radius: ``Δ > 0``.
      rtol: relative tolerance on the step length.
      max_steps: Newton iteration cap.

    Returns:
      The damping ``μ`` (scalar).
    """
    tiny = jnp.finfo(values.dtype).tiny
    radius = jnp.maximum(radius, tiny)

    def length_and_slope(mu):
        shifted = values + mu
        keep = shifted > 0
        safe = jnp.where(keep, shifted, 1.0)
        q = jnp.where(keep, coefficients / safe, 0.0)
        # φ(μ) and -½ dφ²/dμ = Σ c²/(λ + μ)³.
        return jnp.linalg.norm(q), jnp.sum(jnp.where(keep, q * q / safe, 0.0))

    target = (1.0 + rtol) * radius
    hi = jnp.linalg.norm(coefficients) / radius
    lo = jnp.maximum(hi - jnp.max(values), 0.0)
    length0, _ = length_and_slope(jnp.zeros((), values.dtype))
    mu0 = jnp.where(length0 <= target, 0.0, lo)

    def cond(carry):
        _, length, _, k = carry
        return (k < max_steps) & (length > target)

    def body(carry):
        mu, length, slope, k = carry
        # Newton on 1/φ(μ) − 1/Δ: μ ← μ + (φ/Δ − 1) φ² / (Σ c²/(λ+μ)³).
        step = (length / radius - 1.0) * length * (length / jnp.maximum(slope, tiny))
        new = jnp.where(jnp.isfinite(step), mu + step, hi)
        new = jnp.clip(new, lo, hi)
        # Rounding must not stall the (monotone) iteration.
        new = jnp.where(new > mu, new, 0.5 * (mu + hi))
        length, slope = length_and_slope(new)
        return new, length, slope, k + 1

    start = (mu0, *length_and_slope(mu0), jnp.zeros((), jnp.int32))
    return jax.lax.while_loop(cond, body, start)[0]


def trust_region_radius_update(
    radius: Array,
    step_length: Array,
    damping: Array,
    rho: Array,
    predicted_reduction: Array,
    actual_reduction: Array,
    value: Array,
    new_value: Array,
) -> Array:
    """MINPACK's radius update after a step of scaled length ``‖D^{1/2}p‖`` (Moré 1978).

    ``ρ ≤ ¼``: ``Δ ← t · min(Δ, 10 ‖D^{1/2}p‖)`` with ``t = ½`` if ``f`` did not
    increase, else the minimizer ``t = ½ d / (d + Δf)`` of the quadratic through
    ``f(θ)``, the directional derivative ``d = −(pᵀGp + μ‖D^{1/2}p‖²)`` and ``f(θ + p)``,
    kept in ``[0.1, 0.5]`` (``t = 0.1`` if ``f`` grew a hundredfold or is not
    finite). ``ρ ≥ ¾`` or an undamped (Gauss–Newton) step with ``ρ > ¼``:
    ``Δ ← 2‖D^{1/2}p‖``. Otherwise ``Δ`` is kept.

    Args:
      radius: current ``Δ``.
      step_length: ``‖D^{1/2}p‖`` of the damped step.
      damping: the ``μ`` the step was solved with.
      rho: gain ratio.
      predicted_reduction: ``½ pᵀGp + μ‖D^{1/2}p‖²``.
      actual_reduction: ``f(θ) − f(θ + step)`` (``-inf`` if not finite).
      value: ``f(θ)``.
      new_value: ``f(θ + step)``.

    Returns:
      The new radius.
    """
    # d = −(pᵀGp + μ‖D^{1/2}p‖²) = −(2·pred − μ‖D^{1/2}p‖²).
    slope = -(2.0 * predicted_reduction - damping * step_length**2)
    denom = slope + jnp.where(jnp.isfinite(actual_reduction), actual_reduction, -jnp.inf)
    interp = 0.5 * slope / jnp.where(denom < 0, denom, -1.0)
    interp = jnp.where(denom < 0, interp, 0.1)
    t = jnp.where(actual_reduction >= 0, 0.5, interp)
    blowup = ~jnp.isfinite(new_value) | (new_value >= 100.0 * value)
    t = jnp.where(blowup | ~jnp.isfinite(t) | (t < 0.1), 0.1, jnp.minimum(t, 0.5))
    shrunk = t * jnp.minimum(radius, 10.0 * step_length)
    grown = 2.0 * step_length
    keep_or_grow = jnp.where((rho >= 0.75) | (damping == 0), grown, radius)
    return jnp.where(rho <= 0.25, shrunk, keep_or_grow)


def marquardt_scaling(running_max: Array) -> Array:
    """Moré (1978) §3: ``D = max(running max of diag(G), eps · max D)``.

    The running maximum over the iterations keeps ``D`` from shrinking (MINPACK's
    ``lmder`` with ``mode = 1``); the floor keeps ``D`` positive where a column of
    ``J`` vanishes, and ``D = 1`` if ``G`` has been 0 so far.
    """
    top = jnp.max(running_max)
    floor = jnp.where(top > 0, jnp.finfo(running_max.dtype).eps * top, 1.0)
    return jnp.maximum(running_max, floor)
