"""What the update-rule tests share."""

import jax


def counting(fn, traces: list):
    """``fn`` that appends to ``traces`` each time it is traced or called."""

    def counted(*args, **kwargs):
        traces.append(1)
        return fn(*args, **kwargs)

    return counted


def assert_second_update_does_not_retrace(tx, value_fn, w0, traces: list) -> None:
    """A jitted ``tx.update`` step compiles once: the second call traces nothing.

    ``value_fn`` must append to ``traces`` when traced (see :func:`counting`).
    """

    @jax.jit
    def step(w, state):
        updates, state = tx.update(jax.grad(value_fn)(w), state, w, value_fn=value_fn)
        return w - updates, state

    w, state = step(w0, tx.init(w0))
    n_traces = len(traces)
    step(w, state)
    assert len(traces) == n_traces
    assert step._cache_size() == 1
