"""One MLP block, forward and hand-written backward, for every network of the project.

A leaf module: it knows no model.  An MLP's weights are views into a slice of a flat
parameter vector that its owner holds, so that a model keeps all its networks (and its
other parameters) in one vector and one Adam updates them all.
"""

import math

import numpy as np

ACTIVATIONS = {
    # name: (f(a), f'(a) from (a, f(a)))
    "relu": (lambda a: np.maximum(a, 0.0), lambda a, h: (a > 0).astype(a.dtype)),
    "tanh": (np.tanh, lambda a, h: 1.0 - h * h),
    "elu": (lambda a: np.where(a > 0, a, np.expm1(np.minimum(a, 0.0))),
            lambda a, h: np.where(a > 0, 1.0, h + 1.0).astype(a.dtype)),
}


class MLP:
    """Affine layers with an activation between them and none after the last.

    sizes = (n_in, h_1, ..., n_out).  The weights live in views of a flat vector `params`
    (W{i} (n_i, n_{i+1}), b{i} (n_{i+1},)), so that a model can hold every network in one
    vector and one Adam.  forward keeps what backward needs; backward returns the gradient
    of the parameters (flat, like params) and of the input.
    """

    def __init__(self, sizes, params, act="relu"):
        if act not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}")
        self.sizes, self.act = tuple(int(s) for s in sizes), act
        self.params, self.p = params, self._views(params)

    @staticmethod
    def layout(sizes):
        out = {}
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            out[f"W{i}"], out[f"b{i}"] = (a, b), (b,)
        return out

    @staticmethod
    def n_params(sizes):
        return sum(math.prod(s) for s in MLP.layout(sizes).values())

    def _views(self, flat):
        views, offset = {}, 0
        for name, shape in self.layout(self.sizes).items():
            size = math.prod(shape)
            views[name] = flat[offset:offset + size].reshape(shape)
            offset += size
        return views

    def init(self, rng, last_scale=1.0):
        """He-scaled normal weights (variance 2 / fan-in for ReLU, 1 / fan-in otherwise),
        zero biases; the last layer's weights times last_scale."""
        n = len(self.sizes) - 1
        gain = 2.0 if self.act == "relu" else 1.0
        for i in range(n):
            W = self.p[f"W{i}"]
            W[...] = rng.normal(0.0, math.sqrt(gain / W.shape[0]), W.shape)
            if i == n - 1:
                W *= last_scale
            self.p[f"b{i}"][...] = 0.0

    def forward(self, X):
        """X (N, n_in) -> (out (N, n_out), cache): per layer its input, and for hidden
        layers the pre-activation and the activation."""
        f = ACTIVATIONS[self.act][0]
        h, cache, last = X, [], len(self.sizes) - 2
        for i in range(last + 1):
            a = h @ self.p[f"W{i}"] + self.p[f"b{i}"]
            cache.append((h, a))
            h = f(a) if i < last else a
        return h, cache

    def backward(self, cache, g_out, input_grad=True):
        """Gradients given d loss / d out (N, n_out): (flat like params, d loss / d X, or
        None without input_grad, which saves the widest product of an encoder)."""
        df = ACTIVATIONS[self.act][1]
        grad = np.empty_like(self.params)          # every entry is assigned below
        g = self._views(grad)
        delta = g_out
        for i in reversed(range(len(cache))):
            g[f"W{i}"][...] = cache[i][0].T @ delta
            g[f"b{i}"][...] = delta.sum(axis=0)
            if i == 0 and not input_grad:
                return grad, None
            delta = delta @ self.p[f"W{i}"].T
            if i > 0:                  # through the activation that made this layer's input
                delta = delta * df(cache[i - 1][1], cache[i][0])
        return grad, delta
