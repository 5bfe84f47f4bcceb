"""Implicit differentiation of a solve with respect to its arguments.

At a minimizer ``∇ₓf(x*, a) = 0``; along a branch of minimizers the implicit
function theorem gives ``H ẋ = −(∂²f/∂x∂a) ȧ`` with ``H = ∇²ₓf(x*, a)``. One JVP
rule (``jax.custom_jvp``) computes ``ẋ`` with a :func:`jax.lax.custom_linear_solve`,
which JAX transposes for reverse mode and differentiates again for higher orders
(Blondel et al. 2022, "Efficient and modular implicit differentiation", §2; the
design of lineax and optimistix).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from newtonjax import linalg
from newtonjax._tree import PyTree, tree_max_abs, tree_ravel

__all__ = ["differentiable"]


# Above this many parameters the implicit rule solves with CG instead of a dense
# eigendecomposition.
_DENSE_IMPLICIT_MAX = 2000


def _pinv_solve(matvec: Callable, b: jax.Array) -> jax.Array:
    """Minimum-norm solution of ``H t = b`` for symmetric ``H`` (dense: ``eigh``).

    Eigenvalues with ``|λ| <= n·eps·max|λ|`` count as zero (the cutoff of
    ``numpy.linalg.pinv``; Golub & Van Loan 2013, §5.5.4), so a singular ``H`` gives
    ``H⁺ b``: finite, and exact whenever ``b`` lies in the range of ``H``.
    """
    n = b.shape[0]
    eye = jnp.eye(n, dtype=b.dtype)
    hess = jax.vmap(matvec)(eye)  # rows H eᵢ = columns (H is symmetric)
    hess = 0.5 * (hess + hess.T)
    lam, vecs = jnp.linalg.eigh(hess)
    cutoff = n * jnp.finfo(b.dtype).eps * jnp.max(jnp.abs(lam), initial=0.0)
    keep = jnp.abs(lam) > cutoff
    inv = jnp.where(keep, 1.0 / jnp.where(keep, lam, 1.0), 0.0)
    return vecs @ (inv * (vecs.T @ b))


def _cg_solve(matvec: Callable, b: jax.Array) -> jax.Array:
    """Minimum-norm solution of ``H t = b`` for symmetric ``H`` by CG on ``H² t = H b``.

    ``H b`` lies in the range of ``H²`` for every ``b``, and CG started from zero
    keeps its iterates in that range (the Krylov space of ``H b``), so it tends to
    ``(H²)⁺ H b = H⁺ b`` even for singular or indefinite ``H``, and also for the
    arbitrary right-hand sides of the transposed (reverse-mode) solve (CGNR on a
    symmetric operator; Hestenes & Stiefel 1952, Kammerer & Nashed 1972). Squaring
    the operator squares its condition number: this path is for problems too large
    for the dense one.
    """
    n = b.shape[0]
    return linalg.cg(lambda v: matvec(matvec(v)), matvec(b), max_steps=2 * n).x


def _implicit_tangent(fun: Callable, x: PyTree, args: tuple, args_dot: tuple) -> PyTree:
    """``ẋ = −H⁺ (∂²f/∂x∂a) ȧ`` at a stationary point ``x`` of ``f(·, *args)``.

    ``∇ₓf(x*(a), a) = 0`` along a branch of minimizers, so ``H ẋ = −B ȧ`` with
    ``H = ∇²ₓf`` and ``B = ∂(∇ₓf)/∂a``; ``−B ȧ`` then lies in the range of ``H`` and
    the minimum-norm solution is exact even where ``H`` is singular. The solve is a
    :func:`jax.lax.custom_linear_solve`, linear in ``B ȧ``, so JAX transposes it for
    reverse mode and differentiates it again for higher orders.
    """
    x_flat, unravel = tree_ravel(x)

    def grad_x(x_flat, a):
        return tree_ravel(jax.grad(fun)(unravel(x_flat), *a))[0]

    # B ȧ: one forward-mode product through ∇ₓf with respect to the arguments.
    _, mixed = jax.jvp(lambda a: grad_x(x_flat, a), (args,), (args_dot,))

    def matvec(v):
        return jax.jvp(lambda z: grad_x(z, args), (x_flat,), (v,))[1]

    solve = _pinv_solve if x_flat.shape[0] <= _DENSE_IMPLICIT_MAX else _cg_solve
    t = jax.lax.custom_linear_solve(matvec, -mixed, solve, symmetric=True)
    return unravel(t)


def _zero_tangent(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, jax.dtypes.float0)


def differentiable(run_fn: Callable, fun: Callable) -> Callable:
    """Wrap ``run_fn(x0, args) -> SolveResult`` with one implicit JVP rule.

    Forward mode is the rule itself; reverse mode (``grad``, ``vjp``, ``jacrev``)
    is its transpose, and higher orders (``hessian``, forward-over-reverse and
    reverse-over-reverse) differentiate the rule, whose primal is this same solve
    (Blondel et al. 2022, §2; the design of lineax and optimistix). ``params`` gets
    the implicit tangent, ``value``, ``grad`` and ``grad_norm`` the chain rule at
    ``(x*, a)``; ``x0`` has no effect on a solution (zero derivative), and the
    counters and the history carry zero tangents.
    """

    @jax.custom_jvp
    def solve(x0, args):
        return run_fn(x0, args)

    @solve.defjvp
    def solve_jvp(primals, tangents):
        x0, args = primals
        _, args_dot = tangents
        result = solve(x0, args)
        x = result.params
        x_dot = _implicit_tangent(fun, x, args, args_dot)
        (value, grad), (value_dot, grad_dot) = jax.jvp(
            lambda z, a: jax.value_and_grad(fun)(z, *a), (x, args), (x_dot, args_dot)
        )
        _, grad_norm_dot = jax.jvp(tree_max_abs, (grad,), (grad_dot,))
        result_dot = jax.tree.map(_zero_tangent, result)._replace(
            params=x_dot, value=value_dot, grad=grad_dot, grad_norm=grad_norm_dot
        )
        return result, result_dot

    return solve
