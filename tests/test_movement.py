"""The data-movement tracer: LRU stack distances, the tracing convention, and that tracing
leaves every number the models compute unchanged."""
import numpy as np
import pytest

import spline_images_factorial_vq as sv
import data_movement as dm


def naive_distances(ids):
    """LRU stack simulation: distinct elements touched since the element's last touch."""
    stack, out = [], []
    for e in ids:
        if e in stack:
            i = stack.index(e)
            out.append(len(stack) - 1 - i)
            stack.pop(i)
        else:
            out.append(len(stack))
        stack.append(e)
    return np.array(out)


def read_distances(fn):
    ids, is_read = dm.trace(fn)
    return list(dm.stack_distances(ids)[is_read])


def test_stack_distances_agree_with_a_naive_stack_on_random_sequences():
    rng = np.random.default_rng(0)
    for _ in range(100):
        ids = rng.integers(0, rng.integers(1, 30), rng.integers(1, 200))
        np.testing.assert_array_equal(dm.stack_distances(ids), naive_distances(list(ids)))


def test_earlier_leq_counts_like_a_double_loop():
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 64, 300):
        v = rng.integers(0, 20, n)
        brute = [int(np.sum(v[:i] <= v[i])) for i in range(n)]
        np.testing.assert_array_equal(dm.earlier_leq(v), brute)


def test_a_trace_repeats_exactly():
    """No address is reused within a trace, so the numbers follow the program alone."""
    X = sv.load_data(0, 60, 10)[0]
    model, _ = sv.fit_model("factorial_vq", X, seed=1, steps=3)
    first, second = (sv.trace_adam_step(model, X) for _ in range(2))
    assert first == second and first["reads"] > 0


def test_a_plus_b_then_plus_a():
    a, b = np.arange(4.0).view(dm.Traced), np.ones(4).view(dm.Traced)
    # a, b read cold (0..7); c = a + b written; c read back at 3 (c's other three since);
    # a read again: the 3 other a, 4 b and 4 c since
    assert read_distances(lambda: (a + b) + a) == [0, 1, 2, 3, 4, 5, 6, 7] + [3] * 4 + [11] * 4


def test_a_loop_re_reading_one_array():
    x = np.arange(3.0).view(dm.Traced)
    kept = []
    def loop():
        for _ in range(2):
            kept.append(x * 2.0)
    # the second pass finds the other two x and the three y written since
    assert read_distances(loop) == [0, 1, 2, 5, 5, 5]


def test_a_matrix_product_reads_each_operand_once():
    A, B = np.ones((2, 3)).view(dm.Traced), np.ones((3, 2)).view(dm.Traced)
    ids, is_read = dm.trace(lambda: A @ B)
    assert is_read.sum() == 12 and (~is_read).sum() == 4
    assert list(dm.stack_distances(ids)[is_read]) == list(range(12))


def test_views_move_nothing_and_copies_move_their_elements():
    a = np.arange(12.0).reshape(3, 4).view(dm.Traced)
    assert len(dm.trace(lambda: (a.T, a[1:], a.reshape(4, 3), np.swapaxes(a, 0, 1)))[0]) == 0
    ids, is_read = dm.trace(lambda: a[[0, 2]])                  # fancy indexing copies
    assert is_read.sum() == 8 and (~is_read).sum() == 8
    ids, is_read = dm.trace(lambda: a.__setitem__((0, slice(None)), np.zeros(4)))
    assert is_read.sum() == 4 and (~is_read).sum() == 4


@pytest.mark.parametrize("name", ["factorial_vq", "residual_vq"])
def test_tracing_changes_no_number_the_model_computes(name):
    X = sv.load_data(0, 60, 10)[0]
    model, _ = sv.fit_model(name, X, seed=1, steps=3)
    loss, grad = model.loss_and_grad(X)
    clone = sv.traced_model(model)
    ids, _ = dm.trace(lambda: clone.loss_and_grad(X.view(dm.Traced)))
    traced_loss, traced_grad = clone.loss_and_grad(X.view(dm.Traced))
    assert len(ids) > 0 and traced_loss == loss
    np.testing.assert_array_equal(np.asarray(traced_grad), grad)
