"""The planner's folding of each neuron's comparison: exact on every input the neuron can see."""

import numpy as np
from hypothesis import given, strategies as st

from sbnn_hdl import load
from sbnn_hdl.hwplan import fold_comparison, narrow_comparisons, plan_network


def reachable(p_max, q_max):
    """Every (p, q) a neuron can see: 0 <= p <= p_max, 0 <= q - p <= q_max - p_max."""
    p, r = np.meshgrid(np.arange(p_max + 1), np.arange(q_max - p_max + 1), indexing="ij")
    return p.ravel(), (p + r).ravel()


def decide(c, p, q):
    x = c.a * p + c.b * q
    return x >= c.k if c.op == ">=" else x <= c.k


neurons = st.lists(st.tuples(st.integers(-3000, 3000), st.integers(0, 30)), min_size=1, max_size=6)


@given(a=st.integers(-5000, 5000).filter(bool), b=st.integers(-5000, 5000).filter(bool), neurons=neurons,
       q_extra=st.integers(0, 60))
def test_narrowed_comparisons_decide_every_reachable_input_the_same(a, b, neurons, q_extra):
    q_max = max(p for _, p in neurons) + q_extra
    folded = [(fold_comparison(a, b, t, p_max, q_max - p_max), p_max) for t, p_max in neurons]
    folded = [(c, p_max) for c, p_max in folded if c.kind == "pq"]
    before = [c for c, _ in folded]
    after = narrow_comparisons(before, [p_max for _, p_max in folded], q_max)
    assert len({(c.a, c.b) for c in after}) <= 1  # one shared split per layer, as before
    for old, new, (_, p_max) in zip(before, after, folded):
        assert (new.kind, new.op) == ("pq", old.op) and 0 < new.a <= old.a and abs(new.b) <= abs(old.b)
        assert np.sign(new.b) == np.sign(old.b)
        p, q = reachable(p_max, q_max)
        assert np.array_equal(decide(old, p, q), decide(new, p, q)), (old, new)


def test_other_comparisons_are_kept():
    kept = [fold_comparison(3, 0, 5, 10, 4), fold_comparison(0, 2, 5, 10, 4)]
    assert [c.kind for c in kept] == ["p", "q"]
    assert narrow_comparisons(kept, [10, 10], 14) == kept


def test_digits_model_is_built_with_smaller_coefficients():
    model = load("examples/digits.sbnn")
    fc1 = plan_network(model).layers[0]
    assert fc1.report["coefficients"] == [{"exported": [3354, -821], "built": [143, -35]}]
    # Exhaustively, on every neuron of the real layer.
    exported = plan_network(model, narrow=False).layers[0]
    for old, new in zip(exported.units, fc1.units):
        p, q = reachable(fc1.p_max(new), fc1.q_max)
        assert np.array_equal(decide(old.comparison, p, q), decide(new.comparison, p, q))
