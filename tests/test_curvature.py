"""Curvature primitives against independent references.

References: ``jax.hessian``/``jax.jacfwd`` of the raveled function, explicit
``Jᵀ H J`` products of dense matrices, central finite differences, closed forms.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import newtonjax as nj

RTOL = 1e-10  # float64 accuracy target
RTOL_F32 = 1e-4
FD_RTOL = 1e-6  # central differences, step 1e-5 in float64


def make_params(seed=0, dtype=jnp.float64):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    return {
        "a": jax.random.normal(k1, (3,), dtype),
        "b": jax.random.normal(k2, (2, 2), dtype),
        "c": jax.random.normal(k3, (), dtype),
    }


def loss(p, data):
    """A non-quadratic scalar function of a mixed pytree, with data."""
    a, b, c = p["a"], p["b"], p["c"]
    return (
        jnp.sum(jnp.sin(a) * data[:3])
        + jnp.sum(jnp.tanh(b @ b) * data[3])
        + c**2 * jnp.sum(a**2)
        + jnp.exp(0.3 * c) * b[0, 1]
    )


DATA = jnp.array([0.5, -1.0, 2.0, 1.5])


def dense_hessian(f, params):
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda x: f(unravel(x)))(flat)


def flat(tree):
    return ravel_pytree(tree)[0]


def model(p, x):
    """A small model with pytree output."""
    h = jnp.tanh(x @ p["b"] + p["a"][:2])
    return {"out": h @ p["a"][1:3] + p["c"], "aux": jnp.sin(h[:, 0]) * p["c"]}


X = jax.random.normal(jax.random.PRNGKey(7), (5, 2), jnp.float64)


def output_loss(z):
    """Convex, non-quadratic: softplus + quartic."""
    return (
        jnp.sum(jax.nn.softplus(z["out"]))
        + 0.25 * jnp.sum(z["aux"] ** 4)
        + 0.5 * jnp.sum(z["aux"] ** 2)
    )


class TestHvp(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_dense_hessian(self):
        params, v = make_params(0), make_params(1)
        got = self.variant(lambda p, v: nj.hvp(loss, p, v, DATA))(params, v)
        want = dense_hessian(lambda p: loss(p, DATA), params) @ flat(v)
        np.testing.assert_allclose(flat(got), want, rtol=RTOL, atol=1e-12)
        chex.assert_trees_all_equal_shapes_and_dtypes(got, params)

    def test_matches_finite_differences(self):
        params, v = make_params(2), make_params(3)
        g = jax.grad(loss)
        h = 1e-5
        fd = (
            flat(g(jax.tree.map(lambda p, d: p + h * d, params, v), DATA))
            - flat(g(jax.tree.map(lambda p, d: p - h * d, params, v), DATA))
        ) / (2 * h)
        np.testing.assert_allclose(flat(nj.hvp(loss, params, v, DATA)), fd, rtol=FD_RTOL, atol=1e-8)

    def test_keyword_data(self):
        params, v = make_params(0), make_params(1)
        got = nj.hvp(loss, params, v, data=DATA)
        np.testing.assert_allclose(flat(got), flat(nj.hvp(loss, params, v, DATA)), rtol=1e-14)

    def test_vmap_over_params_and_vectors(self):
        batch = jax.vmap(make_params)(jnp.arange(4))
        vs = jax.vmap(make_params)(jnp.arange(4) + 10)
        got = jax.vmap(lambda p, v: nj.hvp(loss, p, v, DATA))(batch, vs)
        for i in range(4):
            p_i = jax.tree.map(lambda x: x[i], batch)
            v_i = jax.tree.map(lambda x: x[i], vs)
            want = dense_hessian(lambda p: loss(p, DATA), p_i) @ flat(v_i)
            np.testing.assert_allclose(
                flat(jax.tree.map(lambda x: x[i], got)), want, rtol=RTOL, atol=1e-12
            )

    def test_float32_smoke(self):
        params, v = make_params(0, jnp.float32), make_params(1, jnp.float32)
        data = DATA.astype(jnp.float32)
        got = nj.hvp(loss, params, v, data)
        assert flat(got).dtype == jnp.float32
        want = dense_hessian(
            lambda p: loss(p, DATA), jax.tree.map(lambda x: x.astype(jnp.float64), params)
        ) @ flat(v).astype(jnp.float64)
        np.testing.assert_allclose(flat(got), want, rtol=RTOL_F32, atol=1e-4)


class TestHessianOperator(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_value_grad_and_products(self):
        params = make_params(4)

        def run(p, vs):
            op = nj.hessian_operator(loss, p, DATA)
            return op.value, op.grad, jax.vmap(op.matvec)(vs)

        vs = jax.vmap(make_params)(jnp.arange(3) + 20)
        value, grad, hvs = self.variant(run)(params, vs)
        hess = dense_hessian(lambda p: loss(p, DATA), params)
        np.testing.assert_allclose(value, loss(params, DATA), rtol=1e-14)
        np.testing.assert_allclose(flat(grad), flat(jax.grad(loss)(params, DATA)), rtol=1e-13)
        for i in range(3):
            v_i = jax.tree.map(lambda x: x[i], vs)
            got = flat(jax.tree.map(lambda x: x[i], hvs))
            np.testing.assert_allclose(got, hess @ flat(v_i), rtol=RTOL, atol=1e-12)

    def test_as_matrix(self):
        params = make_params(5)
        got = nj.hessian_operator(loss, params, DATA).as_matrix()
        np.testing.assert_allclose(
            got, dense_hessian(lambda p: loss(p, DATA), params), rtol=RTOL, atol=1e-12
        )

    def test_products_do_not_retrace(self):
        traces = []

        def f(w):
            traces.append(1)
            return jnp.sum(jnp.cos(w) * w**2)

        op = nj.hessian_operator(f, jnp.linspace(0.0, 1.0, 4))
        n_after_build = len(traces)
        for i in range(5):
            op(jnp.full(4, float(i)))
        assert len(traces) == n_after_build


class TestGaussNewton(chex.TestCase):
    def explicit_ggn(self, params):
        flat_p, unravel = ravel_pytree(params)
        jac = jax.jacfwd(lambda x: flat(model(unravel(x), X)))(flat_p)
        z = model(params, X)
        z_flat, z_unravel = ravel_pytree(z)
        h_loss = jax.hessian(lambda y: output_loss(z_unravel(y)))(z_flat)
        return jac.T @ h_loss @ jac, jac

    @chex.variants(with_jit=True, without_jit=True)
    def test_ggn_vp_matches_jt_h_j(self):
        params, v = make_params(6), make_params(7)
        got = self.variant(lambda p, v: nj.ggn_vp(model, output_loss, p, v, X))(params, v)
        ggn, _ = self.explicit_ggn(params)
        np.testing.assert_allclose(flat(got), ggn @ flat(v), rtol=RTOL, atol=1e-12)

    def test_ggn_operator_value_grad(self):
        params = make_params(8)
        op = nj.ggn_operator(model, output_loss, params, X)
        objective = lambda p: output_loss(model(p, X))  # noqa: E731
        np.testing.assert_allclose(op.value, objective(params), rtol=1e-14)
        np.testing.assert_allclose(flat(op.grad), flat(jax.grad(objective)(params)), rtol=1e-12)
        ggn, jac = self.explicit_ggn(params)
        np.testing.assert_allclose(op.as_matrix(), ggn, rtol=RTOL, atol=1e-12)
        u = jax.tree.map(jnp.ones_like, op.outputs)
        np.testing.assert_allclose(flat(op.vjp(u)), jac.T @ flat(u), rtol=RTOL, atol=1e-12)

    def test_ggn_equals_hessian_for_linear_model(self):
        # For a linear model the GGN is the exact Hessian.
        a = jax.random.normal(jax.random.PRNGKey(0), (6, 3))
        lin = lambda w: a @ w  # noqa: E731
        w, v = jnp.array([0.3, -0.2, 0.5]), jnp.array([1.0, 2.0, -1.0])
        objective = lambda w: jnp.sum(jax.nn.softplus(lin(w)))  # noqa: E731
        got = nj.ggn_vp(lin, lambda z: jnp.sum(jax.nn.softplus(z)), w, v)
        np.testing.assert_allclose(got, jax.hessian(objective)(w) @ v, rtol=RTOL)

    def test_least_squares_objective_gives_jtj(self):
        params, v = make_params(9), make_params(10)
        residual = lambda p: jnp.concatenate([flat(model(p, X)), p["a"] ** 2])  # noqa: E731
        obj = nj.least_squares_objective(residual)
        op = nj.gauss_newton_operator(obj, params)
        jac = nj.jacobian_matrix(residual, params)
        np.testing.assert_allclose(flat(op(v)), jac.T @ jac @ flat(v), rtol=RTOL, atol=1e-12)
        np.testing.assert_allclose(op.value, 0.5 * jnp.sum(residual(params) ** 2), rtol=1e-14)
        np.testing.assert_allclose(flat(op.grad), flat(jax.grad(obj)(params)), rtol=1e-12)
        np.testing.assert_allclose(
            flat(nj.jtj_vp(residual, params, v)), jac.T @ jac @ flat(v), rtol=RTOL, atol=1e-12
        )

    def test_composite_objective_operator_with_kwargs(self):
        params, v = make_params(11), make_params(12)
        obj = nj.composite_objective(lambda p, x: model(p, x), output_loss)
        np.testing.assert_allclose(obj(params, x=X), output_loss(model(params, X)), rtol=1e-14)
        op = nj.gauss_newton_operator(obj, params, x=X)
        ggn, _ = self.explicit_ggn(params)
        np.testing.assert_allclose(flat(op(v)), ggn @ flat(v), rtol=RTOL, atol=1e-12)

    def test_plain_callable_is_rejected_with_advice(self):
        with pytest.raises(TypeError, match="least_squares_objective"):
            nj.gauss_newton_operator(lambda p: jnp.sum(p**2), jnp.ones(2))

    def test_objective_keeps_signature_for_optax_keyword_matching(self):
        import inspect

        def residual(params, batch):
            return params - batch

        obj = nj.least_squares_objective(residual)
        assert list(inspect.signature(obj).parameters) == ["params", "batch"]
        assert obj.__name__ == "residual"


class TestJacobian(chex.TestCase):
    def residual(self, p):
        return jnp.concatenate([jnp.sin(p["a"]) * p["c"], (p["b"] @ p["a"][:2]) ** 2])

    @chex.variants(with_jit=True, without_jit=True)
    def test_products_match_dense_jacobian(self):
        params, v = make_params(13), make_params(14)
        u = jnp.arange(5.0)
        flat_p, unravel = ravel_pytree(params)
        jac = jax.jacrev(lambda x: self.residual(unravel(x)))(flat_p)  # independent of nj
        jv, jtu = self.variant(
            lambda p, v, u: (
                nj.jacobian_vp(self.residual, p, v),
                nj.jacobian_tvp(self.residual, p, u),
            )
        )(params, v, u)
        np.testing.assert_allclose(jv, jac @ flat(v), rtol=RTOL)
        np.testing.assert_allclose(flat(jtu), jac.T @ u, rtol=RTOL)
        np.testing.assert_allclose(nj.jacobian_matrix(self.residual, params), jac, rtol=RTOL)

    def test_materialize_non_symmetric_operator_on_a_pytree(self):
        # Column i of the result is A e_i: a transposed result differs for A != Aᵀ.
        params = make_params(15)
        n = flat(params).shape[0]
        A = np.random.default_rng(16).standard_normal((n, n))
        assert not np.allclose(A, A.T)
        unravel = ravel_pytree(params)[1]
        matvec = lambda v: unravel(jnp.asarray(A) @ flat(v))  # noqa: E731
        np.testing.assert_array_equal(np.asarray(nj.materialize(matvec, params)), A)

    def test_jacobian_matrix_wide_uses_reverse_mode_correctly(self):
        fn = lambda w: jnp.stack([jnp.sum(w**2), jnp.prod(w)])  # noqa: E731
        w = jnp.array([1.0, 2.0, 3.0, 4.0])
        want = np.array([2 * w, [24.0, 12.0, 8.0, 6.0]])
        np.testing.assert_allclose(nj.jacobian_matrix(fn, w), want, rtol=1e-14)


class TestHessianMatrixAndSeeds:
    def test_matches_finite_differences_of_gradient(self):
        params = make_params(15)
        flat_p, unravel = ravel_pytree(params)
        g = lambda x: flat(jax.grad(loss)(unravel(x), DATA))  # noqa: E731
        h = 1e-5
        eye = np.eye(flat_p.size)
        fd = np.stack([(g(flat_p + h * e) - g(flat_p - h * e)) / (2 * h) for e in eye], axis=1)
        np.testing.assert_allclose(
            nj.hessian_matrix(loss, params, DATA), fd, rtol=FD_RTOL, atol=1e-8
        )

    def test_seed_saddle_2d(self):
        f = lambda w: w[0] ** 2 + w[0] * w[1] - w[1] ** 2  # noqa: E731
        np.testing.assert_allclose(
            nj.hessian_matrix(f, jnp.array([0.3, -1.0])), [[2.0, 1.0], [1.0, -2.0]]
        )
        result = nj.classify_critical_point(f, jnp.zeros(2))
        assert result.kind == "saddle" and bool(result.is_critical)
        np.testing.assert_allclose(result.eigenvalues, [-np.sqrt(5.0), np.sqrt(5.0)], rtol=1e-14)

    def test_seed_saddle_3d(self):
        f = lambda w: 2 * w[0] ** 2 - w[0] * w[1] + w[1] ** 2 - 3 * w[2] ** 2  # noqa: E731
        want = np.array([[4.0, -1.0, 0.0], [-1.0, 2.0, 0.0], [0.0, 0.0, -6.0]])
        np.testing.assert_allclose(nj.hessian_matrix(f, jnp.ones(3)), want)
        result = nj.classify_critical_point(f, jnp.zeros(3))
        assert result.kind == "saddle"
        np.testing.assert_allclose(result.eigenvalues, np.linalg.eigvalsh(want), rtol=1e-14)

    def test_seed_newton_step_lands_on_minimizer(self):
        target = jnp.array([1.0, 2.0, 3.0])
        f = lambda w: jnp.sum((w - target) ** 2)  # noqa: E731
        w0 = jnp.zeros(3)
        step = jnp.linalg.solve(nj.hessian_matrix(f, w0), -jax.grad(f)(w0))
        np.testing.assert_allclose(w0 + step, target, rtol=1e-15)
        assert nj.classify_critical_point(f, target).kind == "minimum"

    def test_maximum_and_degenerate(self):
        f = lambda w: -jnp.sum(w**2) - w[0] * w[1]  # noqa: E731
        assert nj.classify_critical_point(f, jnp.zeros(2)).kind == "maximum"
        g = lambda w: w[0] ** 2 + w[1] ** 4  # noqa: E731
        assert nj.classify_critical_point(g, jnp.zeros(2)).kind == "degenerate"
        zero = lambda w: jnp.sum(w**3)  # noqa: E731
        assert nj.classify_critical_point(zero, jnp.zeros(2)).kind == "degenerate"

    def test_non_critical_point_is_flagged(self):
        result = nj.classify_critical_point(lambda w: jnp.sum(w**2), jnp.ones(2))
        assert result.kind == "minimum" and not bool(result.is_critical)
        np.testing.assert_allclose(result.grad_norm, 2.0)

    def test_critical_point_code_under_jit_and_vmap(self):
        def f(w, s):
            return w[0] ** 2 + s * w[1] ** 2

        codes = jax.jit(jax.vmap(lambda s: nj.critical_point_code(f, jnp.zeros(2), s).code))(
            jnp.array([1.0, -1.0, 0.0])
        )
        np.testing.assert_array_equal(
            codes,
            [
                nj.CriticalPointKind.MINIMUM,
                nj.CriticalPointKind.SADDLE,
                nj.CriticalPointKind.DEGENERATE,
            ],
        )
        with pytest.raises(TypeError, match="critical_point_code"):
            jax.jit(lambda w: nj.classify_critical_point(lambda v: jnp.sum(v**2), w).eigenvalues)(
                jnp.ones(2)
            )


class TestHessianDiag(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_exact(self):
        params = make_params(16)
        got = self.variant(lambda p: nj.hessian_diag(loss, p, DATA, batch_size=3))(params)
        want = jnp.diag(dense_hessian(lambda p: loss(p, DATA), params))
        np.testing.assert_allclose(flat(got), want, rtol=RTOL, atol=1e-12)

    def test_hutchinson_exact_for_diagonal_hessian(self):
        # z_i^2 = 1 for Rademacher probes, so a diagonal Hessian is recovered exactly.
        f = lambda w: jnp.sum(jnp.cosh(w) * jnp.arange(1.0, 6.0))  # noqa: E731
        w = jnp.linspace(-1.0, 1.0, 5)
        got = nj.hessian_diag(f, w, key=jax.random.PRNGKey(0), num_samples=3)
        np.testing.assert_allclose(got, jnp.cosh(w) * jnp.arange(1.0, 6.0), rtol=1e-14)

    def test_hutchinson_is_unbiased(self):
        params = make_params(17)
        hess = np.asarray(dense_hessian(lambda p: loss(p, DATA), params))
        n_samples = 4000
        got = flat(
            nj.hessian_diag(loss, params, DATA, key=jax.random.PRNGKey(1), num_samples=n_samples)
        )
        # Per-entry variance of one sample: sum_{j != i} H_ij^2.
        std = np.sqrt((np.sum(hess**2, axis=1) - np.diag(hess) ** 2) / n_samples)
        assert np.all(np.abs(got - np.diag(hess)) <= 5 * std + 1e-12)

    def test_requires_positive_samples(self):
        with pytest.raises(ValueError, match="num_samples"):
            nj.hessian_diag(loss, make_params(0), DATA, key=jax.random.PRNGKey(0), num_samples=0)


class TestTaylor2:
    def test_exact_on_quadratic(self):
        a = jnp.array([[3.0, 1.0], [1.0, 2.0]])
        b = jnp.array([1.0, -1.0])
        f = lambda w: 0.5 * w @ a @ w + b @ w + 4.0  # noqa: E731
        model2 = nj.taylor2(f, jnp.array([0.5, 0.25]))
        for d in (jnp.array([1.0, 2.0]), jnp.array([-3.0, 0.1])):
            np.testing.assert_allclose(model2(d), f(jnp.array([0.5, 0.25]) + d), rtol=1e-14)

    def test_third_order_error(self):
        params, d = make_params(18), make_params(19)
        model2 = nj.taylor2(loss, params, DATA)
        errs = []
        for t in (1e-2, 5e-3):
            dt = jax.tree.map(lambda x: t * x, d)
            errs.append(abs(float(loss(jax.tree.map(jnp.add, params, dt), DATA) - model2(dt))))
        # Halving the step divides an O(t^3) error by about 8.
        assert 6.0 < errs[0] / errs[1] < 10.0
        np.testing.assert_allclose(model2.decrease(d), model2.value - model2(d), rtol=1e-14)


class TestBadInput:
    def test_mismatched_structure(self):
        with pytest.raises(ValueError, match="structure"):
            nj.hvp(loss, make_params(0), {"a": jnp.ones(3)}, DATA)

    def test_mismatched_shape(self):
        v = make_params(1)
        v["b"] = jnp.ones((3, 2))
        with pytest.raises(ValueError, match=r"v\['b'\] has shape \(3, 2\)"):
            nj.hvp(loss, make_params(0), v, DATA)

    def test_non_scalar_loss(self):
        with pytest.raises(ValueError, match="scalar"):
            nj.hessian_matrix(lambda w: w**2, jnp.ones(3))
        with pytest.raises(ValueError, match="scalar"):
            nj.hvp(lambda w: w**2, jnp.ones(3), jnp.ones(3))

    def test_integer_params(self):
        with pytest.raises(TypeError, match="int"):
            nj.hvp(lambda w: jnp.sum(w**2), jnp.arange(3), jnp.arange(3))
        with pytest.raises(TypeError, match="floating-point"):
            nj.hessian_operator(lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.arange(3)})

    def test_vjp_cotangent_shape(self):
        with pytest.raises(ValueError, match="u"):
            nj.jacobian_tvp(lambda w: w**2, jnp.ones(3), jnp.ones(4))
