"""The MLP block: its hand-written backward against finite differences."""
import numpy as np
import pytest

import mlp
from tests.helpers import finite_difference


@pytest.mark.parametrize("act", ["relu", "tanh", "elu"])
def test_mlp_backward_matches_finite_differences(act):
    rng = np.random.default_rng(1)
    sizes = (6, 8, 5, 3)
    params = np.zeros(mlp.MLP.n_params(sizes))
    net = mlp.MLP(sizes, params, act)
    net.init(rng)
    net.p["b0"][...] = rng.normal(0, 0.3, 8)        # kinks away from zero for the ReLU
    X, G = rng.normal(size=(10, 6)), rng.normal(size=(10, 3))
    loss = lambda: float(np.sum(net.forward(X)[0] * G))
    out, cache = net.forward(X)
    grad, g_X = net.backward(cache, G)
    np.testing.assert_allclose(grad, finite_difference(loss, params, range(len(params))),
                               rtol=1e-5, atol=1e-7)
    fd_X = finite_difference(lambda: float(np.sum(net.forward(X.reshape(10, 6))[0] * G)),
                             X.reshape(-1), range(X.size))
    np.testing.assert_allclose(g_X.ravel(), fd_X, rtol=1e-5, atol=1e-7)
    assert net.backward(cache, G, input_grad=False)[1] is None
