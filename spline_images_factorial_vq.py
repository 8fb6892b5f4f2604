"""Factorial stochastic vector quantisation of spline images, scored by bits-back.

A reproduction of Hinton & Zemel, "Autoencoders, Minimum Description Length and
Helmholtz Free Energy" (NIPS 6, 1994), section 4. Every number this module calls a
description length (DL) is a valid bits-back code length: the Helmholtz free energy

    F(x) = ( E_q ||x - xhat(k)||^2 / (2 sigma_x^2) + sum_d KL(q_d || pi_d) ) / ln 2

in bits per image, with the data quantised at width t = sigma_x * sqrt(2 pi) so that the
per-pixel Gaussian normaliser vanishes. At another width t' add
D * log2(sigma_x * sqrt(2 pi) / t') bits.

The file reads like the paper: data -> free energy -> models -> optimiser -> training ->
evaluation -> CLI. Run `python3 spline_images_factorial_vq.py --help`.
"""

import argparse
import functools
import json
import math
import os
import sys
import time

# Every matrix here is small (at most 2000 x 1296), where threaded BLAS gains nothing and
# two worker processes with two BLAS threads each fight over two cores (2x slower here).
# A value the user sets still wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402  (after the thread settings, which numpy reads at import)
from scipy.interpolate import CubicSpline

HEIGHT, WIDTH = 8, 12
D = HEIGHT * WIDTH                      # 96 pixels, flattened row-major
N_CONTROL = 5                           # control points = the data's degrees of freedom
CONTROL_X = np.linspace(0.0, WIDTH - 1, N_CONTROL)
CONTROL_RANGE = (0.5, 6.5)              # heights are uniform on this interval
N_CURVE_POINTS = 200
BLUR_SIGMA = 0.6                        # pixels
MAX_ENUMERATION = 65_536                # largest K^M enumerated exactly
LN2 = math.log(2.0)

MODEL_NAMES = ("standard_vq", "separate_slices", "residual_vq", "factorial_vq", "pca5", "pca24")

# ----------------------------------------------------------------------------- data


def render_splines(controls, blur_sigma=BLUR_SIGMA):
    """Render spline images from control heights.

    controls: (N, 5) heights at x = linspace(0, 11, 5).  Returns (N, 96) in [0, 1].
    A natural cubic spline through the knots is sampled at 200 points; each point adds
    an isotropic Gaussian bump at the pixel centres; each image is scaled to max 1.
    """
    controls = np.asarray(controls, dtype=np.float64)
    xs = np.linspace(0.0, WIDTH - 1, N_CURVE_POINTS)
    ys = CubicSpline(CONTROL_X, controls.T, bc_type="natural")(xs).T          # (N, 200)
    # the bump is separable, so the sum over curve points is one matrix product
    gx = np.exp(-(np.arange(WIDTH)[None, :] - xs[:, None]) ** 2 / (2 * blur_sigma**2))  # (200, 12)
    gy = np.exp(-(np.arange(HEIGHT)[None, None, :] - ys[:, :, None]) ** 2
                / (2 * blur_sigma**2))                                          # (N, 200, 8)
    images = np.matmul(gy.transpose(0, 2, 1), gx).reshape(len(controls), D)   # (N, 96)
    return images / images.max(axis=1, keepdims=True)


def generate_spline_images(n, seed=0, stream=0, blur_sigma=BLUR_SIGMA):
    """Draw n spline images.  Returns (images (n, 96), controls (n, 5)).

    stream 0 is the training stream, np.random.default_rng(seed), drawn exactly as the
    earlier public reproduction draws it; stream s > 0 is the independent stream
    np.random.default_rng([seed, s]) (stream 1 is the held-out set).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed if stream == 0 else [seed, stream])
    controls = rng.uniform(*CONTROL_RANGE, size=(n, N_CONTROL))
    return render_splines(controls, blur_sigma), controls


def column_bands(n_bands):
    """(n_bands, 96) 0/1 masks: the 12 columns split into contiguous vertical bands."""
    cols = np.tile(np.arange(WIDTH), HEIGHT)                                    # column of each pixel
    groups = np.array_split(np.arange(WIDTH), n_bands)
    return np.stack([np.isin(cols, g) for g in groups]).astype(np.float64)


# ----------------------------------------------------------------------------- free energy
#
# Softmax helpers: scipy.special's versions route through its array-API layer, which costs
# tens of microseconds a call; in the training loop and the K^M enumeration that overhead
# is most of the run time, so these are the plain numpy forms (tests check them
# against scipy.special).


def logsumexp(z, axis=-1):
    """log sum exp of z along axis, stabilised by the maximum."""
    zmax = z.max(axis=axis, keepdims=True)
    return (zmax + np.log(np.exp(z - zmax).sum(axis=axis, keepdims=True))).squeeze(axis)


def log_softmax(z, axis=-1):
    """z minus its logsumexp along axis."""
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def softmax(z, axis=-1):
    """Normalised exp(z) along axis."""
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# The generative family (SPEC section 2): M factors of K codes, codebooks C (M, K, D),
# bias b (D,), prior p(k) = prod_d softmax(a_d)[k_d], likelihood N(x; xhat(k), sigma_x^2 I)
# with xhat(k) = b + sum_d C_d[k_d].  The recognition model is factorial, q = prod_d q_d.
# Because the factors are independent under q, the expected squared error is exact in
# closed form (the paper's section 3.1): the means add and so do the variances,
#     E_q ||x - xhat||^2 = ||x - mu||^2 + sum_d (sum_k q_d(k) ||C_d[k]||^2 - ||mu_d||^2).


def free_energy(X, C, b, a, logits, sigma_x, variance=True, kl_weight=1.0, grad=False):
    """Bits-back free energy of a factorial posterior, in nats per image.

    X (N, D) images; C (M, K, D) codebooks; b (D,) bias; a (M, K) prior logits;
    logits (N, M, K) recognition logits.  Returns (recon (N,), code (N,)) and, with
    grad=True, also a dict of gradients of mean(recon + kl_weight * code) with respect to
    C, b, a and logits.  variance=False drops the variance of the stochastic code: that is
    the earlier reproduction's loss, which is *not* a code length.
    """
    N = X.shape[0]
    log_q = log_softmax(logits, axis=-1)                           # (N, M, K)
    q = np.exp(log_q)
    log_pi = log_softmax(a, axis=-1)                               # (M, K)
    qt = q.transpose(1, 0, 2)                                      # (M, N, K)
    mu_d = np.matmul(qt, C)                                        # (M, N, D)
    R = X - b - mu_d.sum(axis=0)                                   # (N, D) residual of the mean
    err = np.einsum("nd,nd->n", R, R)
    if variance:
        sq = np.einsum("mkd,mkd->mk", C, C)                        # (M, K)
        err = err + np.einsum("nmk,mk->n", q, sq) - np.einsum("mnd,mnd->n", mu_d, mu_d)
    kl = np.einsum("nmk,nmk->n", q, log_q - log_pi)
    recon = err / (2 * sigma_x**2)
    if not grad:
        return recon, kl
    s = 1.0 / (2 * sigma_x**2 * N)                                 # d(mean recon)/d err
    g_mu = -2.0 * R[None] - 2.0 * mu_d if variance else np.broadcast_to(-2.0 * R, mu_d.shape)
    g_q = s * np.matmul(g_mu, C.transpose(0, 2, 1)).transpose(1, 0, 2)   # (N, M, K)
    g_C = s * np.matmul(qt.transpose(0, 2, 1), g_mu)                     # (M, K, D)
    if variance:
        g_q += s * sq
        g_C += (2.0 * s) * q.sum(axis=0)[:, :, None] * C
    g_q += (kl_weight / N) * (log_q - log_pi)        # the +1 of d(q log q) cancels in softmax
    g_logits = q * (g_q - np.einsum("nmk,nmk->nm", q, g_q)[:, :, None])
    g_b = -2.0 * s * R.sum(axis=0)
    g_a = (kl_weight / N) * (N * np.exp(log_pi) - q.sum(axis=0))
    return recon, kl, {"C": g_C, "b": g_b, "a": g_a, "logits": g_logits}


def mean_field(X, C, b, a, q, sigma_x, sweeps=50, tol=1e-7):
    """Coordinate-wise mean-field refinement of a factorial posterior.

    q (N, M, K) is the starting posterior (e.g. the recognition network's).  Each update
    sets q_d to the exact minimiser of F given the other factors, so F never increases and
    the refined posterior is still a deterministic function of x: a valid bits-back code.
    An image stops once none of its probabilities moved by more than tol in a sweep (images
    are independent, so the others go on alone); all stop after `sweeps` sweeps.  tol=None
    runs every sweep on every image (the training loop).  Returns the refined q (N, M, K).
    """
    q = q.copy()
    M = C.shape[0]
    log_pi = log_softmax(a, axis=-1)
    sq = np.einsum("mkd,mkd->mk", C, C)
    mu_d = np.matmul(q.transpose(1, 0, 2), C)                      # (M, N, D)
    target = X - b
    total = mu_d.sum(axis=0)
    active = np.arange(len(X))
    for _ in range(sweeps):
        qa, ma, ta, ra = q[active], mu_d[:, active], total[active], target[active]
        change = np.zeros(len(active))
        for d in range(M):
            r = ra - ta + ma[d]                                    # what factor d must explain
            new = softmax(log_pi[d] + (r @ C[d].T - 0.5 * sq[d]) / sigma_x**2, axis=-1)
            if tol is not None:
                change = np.maximum(change, np.abs(new - qa[:, d]).max(axis=1))
            qa[:, d] = new
            new_mu = new @ C[d]
            ta += new_mu - ma[d]
            ma[d] = new_mu
        q[active], mu_d[:, active], total[active] = qa, ma, ta
        if M == 1:                                     # one update is the exact posterior
            break
        if tol is not None:
            active = active[change >= tol]
            if not len(active):
                break
    return q


def all_codes(n_dims, n_codes):
    """Every joint code, (K^M, M) ints, in lexicographic order."""
    return np.indices((n_codes,) * n_dims).reshape(n_dims, -1).T


def code_sq_errors(X, Xhat):
    """||x_n - xhat_j||^2 for all pairs: X (N, D), Xhat (J, D) -> (N, J)."""
    return np.maximum(
        np.einsum("nd,nd->n", X, X)[:, None] - 2.0 * X @ Xhat.T + np.einsum("jd,jd->j", Xhat, Xhat),
        0.0)


# ----------------------------------------------------------------------------- models


def kmeans_pp(X, n, rng):
    """k-means++ seeding: n row indices of X (N, D), each drawn with probability
    proportional to its squared distance from the rows already chosen."""
    idx = [int(rng.integers(len(X)))]
    dist = np.sum((X - X[idx[0]]) ** 2, axis=1)
    for _ in range(n - 1):
        total = dist.sum()
        i = int(rng.choice(len(X), p=dist / total)) if total > 0 else int(rng.integers(len(X)))
        idx.append(i)
        dist = np.minimum(dist, np.sum((X - X[i]) ** 2, axis=1))
    return np.array(idx)


class CodeModel:
    """The generative part shared by every discrete model: C (M, K, D), b (D,), a (M, K).

    Subclasses keep all parameters as named views into one flat vector `theta`, so the
    optimiser updates a single array and masks freeze entries by zeroing their gradient.
    """

    def __init__(self, layout, sigma_x, rng):
        if sigma_x <= 0:
            raise ValueError(f"sigma_x must be > 0, got {sigma_x}")
        self.sigma_x = float(sigma_x)
        self.rng = rng
        self._layout, offset = {}, 0
        for name, shape in layout.items():
            size = int(np.prod(shape))
            self._layout[name] = (slice(offset, offset + size), shape)
            offset += size
        self.theta = np.zeros(offset)
        self.trainable = np.ones(offset)              # 0 marks a frozen entry
        self.p, self.mask = self._views(self.theta), self._views(self.trainable)

    def _views(self, flat):
        """Named views into a flat vector laid out like theta."""
        return {name: flat[sl].reshape(shape) for name, (sl, shape) in self._layout.items()}

    # copies and pickles must rebuild the views, or p would stop sharing memory with theta
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("p", "mask")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.p, self.mask = self._views(self.theta), self._views(self.trainable)

    @property
    def n_dims(self):
        return self.p["C"].shape[0]

    @property
    def n_codes(self):
        return self.p["C"].shape[1]

    def log_prior(self, codes):
        """log p(k) in nats: codes (N, M) -> (N,)."""
        log_pi = log_softmax(self.p["a"], axis=-1)
        return log_pi[np.arange(self.n_dims), codes].sum(axis=1)

    def reconstruct(self, codes):
        """xhat(k) = b + sum_d C_d[k_d]: codes (N, M) -> (N, D)."""
        return self.p["b"] + self.p["C"][np.arange(self.n_dims), codes].sum(axis=1)

    def exact_dl(self, X, chunk_entries=4_000_000):
        """Exact DL of the generative model (Boltzmann posterior), bits: (N,) or None.

        DL*(x) = -log2 sum_k p(k) exp(-||x - xhat(k)||^2 / (2 sigma_x^2)), enumerating all
        K^M codes; None when K^M exceeds 65,536.
        """
        M, K = self.n_dims, self.n_codes
        if K**M > MAX_ENUMERATION:
            return None
        codes = all_codes(M, K)
        Xhat, log_p = self.reconstruct(codes), self.log_prior(codes)
        out = np.empty(len(X))
        step = max(1, chunk_entries // len(codes))
        for i in range(0, len(X), step):
            e = code_sq_errors(X[i:i + step], Xhat)
            out[i:i + step] = -logsumexp(log_p - e / (2 * self.sigma_x**2), axis=1) / LN2
        return out


class StochasticVQ(CodeModel):
    """A factorial stochastic VQ: M factors of K codes and a recognition network.

    The recognition network maps x to M blocks of K logits: linear (n_hidden=0) or one
    tanh hidden layer.  With bands (M, D) each factor's codewords and recognition inputs
    are confined to its band (the paper's separate VQs on vertical slices).  With
    refine > 0 the posterior used for scoring and sampling is the recognition network's
    output improved by up to `refine` mean-field sweeps.
    """

    def __init__(self, n_dims, n_codes, sigma_x=0.15, n_hidden=0, bands=None, refine=0,
                 learn_prior=True, rng=None):
        if n_dims < 1 or n_codes < 2:
            raise ValueError("need n_dims >= 1 and n_codes >= 2")
        M, K, H = n_dims, n_codes, n_hidden
        layout = {"C": (M, K, D), "b": (D,), "a": (M, K)}
        if H:
            layout.update({"W1": (D, H), "c1": (H,), "W2": (H, M * K), "c2": (M * K,)})
        else:
            layout.update({"W": (D, M * K), "c": (M * K,)})
        super().__init__(layout, sigma_x, rng if rng is not None else np.random.default_rng(0))
        self.n_hidden, self.refine, self.bands = H, int(refine), bands
        if not learn_prior:
            self.mask["a"][...] = 0.0
        if bands is not None:
            if bands.shape != (M, D):
                raise ValueError(f"bands must have shape {(M, D)}")
            self.mask["C"][...] = bands[:, None, :]
            per_logit = np.repeat(bands.T, K, axis=1)                          # (D, M*K)
            if H:
                groups = np.array_split(np.arange(H), M)
                unit_band = np.zeros((M, H))
                for d, g in enumerate(groups):
                    unit_band[d, g] = 1.0
                self.mask["W1"][...] = bands.T @ unit_band                     # band d -> units of d
                self.mask["W2"][...] = np.repeat(unit_band.T, K, axis=1)      # units of d -> q_d
            else:
                self.mask["W"][...] = per_logit

    # --- recognition ---------------------------------------------------------

    def recognition_logits(self, X, cache=None):
        """Recognition logits (N, M, K); fills `cache` with what backprop needs."""
        p = self.p
        if self.n_hidden:
            Hid = np.tanh(X @ p["W1"] + p["c1"])
            out = Hid @ p["W2"] + p["c2"]
            if cache is not None:
                cache["H"] = Hid
        else:
            out = X @ p["W"] + p["c"]
        return out.reshape(len(X), self.n_dims, self.n_codes)

    def _recognition_backward(self, X, g_logits, cache, g):
        """Accumulate recognition-weight gradients into the flat gradient views g."""
        gl = g_logits.reshape(len(X), -1)
        if self.n_hidden:
            Hid = cache["H"]
            g["W2"][...] = Hid.T @ gl
            g["c2"][...] = gl.sum(axis=0)
            gz = (gl @ self.p["W2"].T) * (1.0 - Hid**2)
            g["W1"][...] = X.T @ gz
            g["c1"][...] = gz.sum(axis=0)
        else:
            g["W"][...] = X.T @ gl
            g["c"][...] = gl.sum(axis=0)

    def loss_and_grad(self, X, kl_weight=1.0, variance=True, sigma_x=None):
        """Mean training loss (nats) and its gradient, a flat array like theta."""
        sigma = self.sigma_x if sigma_x is None else sigma_x
        p, cache = self.p, {}
        logits = self.recognition_logits(X, cache)
        recon, code, g = free_energy(X, p["C"], p["b"], p["a"], logits, sigma,
                                     variance=variance, kl_weight=kl_weight, grad=True)
        flat = np.zeros_like(self.theta)
        views = self._views(flat)
        self._recognition_backward(X, g["logits"], cache, views)
        views["C"][...], views["b"][...], views["a"][...] = g["C"], g["b"], g["a"]
        flat *= self.trainable
        return float(np.mean(recon + kl_weight * code)), flat

    # --- posterior, scoring, sampling ------------------------------------------

    def posteriors(self, X, refine=None):
        """q_d(. | x) for each factor: list of M arrays (N, K).  refine=0 gives the amortised one."""
        return list(self._q(X, refine).transpose(1, 0, 2))

    def _q(self, X, refine=None):
        sweeps = self.refine if refine is None else refine
        q = softmax(self.recognition_logits(X), axis=-1)
        if sweeps:
            q = mean_field(X, self.p["C"], self.p["b"], self.p["a"], q, self.sigma_x, sweeps)
        return q

    def description_length(self, X, refine=None, variance=True):
        """Per-image bits: {"recon", "code", "total"} of the posterior (refined if set).

        variance=False gives the earlier reproduction's legacy number, which is not a code
        length; it is only ever reported next to the valid total.
        """
        q = np.clip(self._q(X, refine), 1e-300, None)
        recon, code = free_energy(X, self.p["C"], self.p["b"], self.p["a"], np.log(q),
                                  self.sigma_x, variance=variance)
        return {"recon": recon / LN2, "code": code / LN2, "total": (recon + code) / LN2}

    def mean_reconstruction(self, X):
        """E_q[xhat(k)] = b + sum_d sum_k q_d(k|x) C_d[k]: (N, D)."""
        q = self._q(X)
        return self.p["b"] + np.matmul(q.transpose(1, 0, 2), self.p["C"]).sum(axis=0)

    def contributions(self, X):
        """Each factor's expected contribution sum_k q_d(k|x) C_d[k]: (M, N, D)."""
        return np.matmul(self._q(X).transpose(1, 0, 2), self.p["C"])

    def sample_codes(self, X, rng):
        """Draw k ~ q(k|x): codes (N, M) ints and log q(k|x) (N,) in nats."""
        q = self._q(X)                                                  # (N, M, K)
        u = rng.random(q.shape[:2])[..., None]
        codes = np.minimum((np.cumsum(q, axis=-1) < u).sum(axis=-1), self.n_codes - 1)
        log_q = np.log(np.take_along_axis(q, codes[..., None], axis=-1)[..., 0]).sum(axis=1)
        return codes, log_q

    # --- initialisation --------------------------------------------------------

    def init_from_data(self, X, scale=0.1, band_init=False):
        """Bias = data mean; codewords = deviations of k-means++-seeded training images.

        With M > 1 the deviations are scaled by `scale`, or with band_init confined to
        the factor's column band (a symmetry-breaking start that joint training may leave).
        """
        p, M, K = self.p, self.n_dims, self.n_codes
        p["b"][...] = X.mean(axis=0)
        dev = X[kmeans_pp(X, M * K, self.rng).reshape(M, K)] - p["b"]   # (M, K, D)
        if M > 1:
            dev = dev * column_bands(M)[:, None, :] if band_init else scale * dev
        p["C"][...] = dev * self.mask["C"]
        if self.n_hidden:
            H = self.n_hidden
            p["W1"][...] = self.rng.normal(0, 1 / math.sqrt(D), (D, H)) * self.mask["W1"]
            p["W2"][...] = self.rng.normal(0, 1 / math.sqrt(H), (H, M * K)) * self.mask["W2"]
        else:
            # a linear recognition starts as one mean-field step from "other factors at 0":
            # logits_d(k) = (C_d[k].(x - b) - ||C_d[k]||^2 / 2) / sigma_x^2
            C, s2 = p["C"], self.sigma_x**2
            p["W"][...] = (C / s2).transpose(2, 0, 1).reshape(D, M * K) * self.mask["W"]
            p["c"][...] = (-(0.5 * np.einsum("mkd,mkd->mk", C, C) + C @ p["b"]) / s2).ravel()
        return self

    def fit(self, X, **kw):
        """Train on X (N, 96) with hand-written Adam; returns the history dict."""
        return train(self, X, **kw)


class ResidualVQ(CodeModel):
    """The earlier reproduction's "separate" VQs, read as a residual chain.

    Stage d is a K-code stochastic VQ whose linear-softmax recognition sees the residual
    r_d = x - b - sum_{d'<d} C_d'[k_d'] left by the codes *sampled* at earlier stages, so
    q(k|x) = prod_d q_d(k_d | r_d) is not factorial.  Trained stage by stage and scored with
    the same chain: F = E_q[ ||x - xhat(k)||^2 / (2 sigma_x^2) + sum_d log(q_d / pi_d) ] / ln 2,
    exactly by enumerating the K^M paths, or by Monte Carlo when there are too many.
    """

    def __init__(self, n_dims, n_codes, sigma_x=0.15, learn_prior=True, replicas=2, rng=None):
        if n_dims < 1 or n_codes < 2:
            raise ValueError("need n_dims >= 1 and n_codes >= 2")
        M, K = n_dims, n_codes
        super().__init__({"C": (M, K, D), "b": (D,), "a": (M, K), "W": (M, D, K), "c": (M, K)},
                         sigma_x, rng if rng is not None else np.random.default_rng(0))
        self.learn_prior, self.replicas = learn_prior, int(replicas)

    def fit(self, X, steps=400, X_eval=None, eval_every=0, **kw):
        """Train stage by stage on sampled residuals, steps // M optimiser steps a stage.

        Returns {"stages": [stage history, ...]} and, with eval_every, the F of the chain
        built so far after each stage, in train()'s history keys.
        """
        p, R = self.p, np.repeat(X, self.replicas, axis=0)   # several code draws per image
        per_stage = max(1, steps // self.n_dims)
        history = {"stages": [], "eval_step": [], "train": [], "heldout": [],
                   "heldout_recon": [], "heldout_code": []}
        for d in range(self.n_dims):
            stage = StochasticVQ(1, self.n_codes, self.sigma_x, learn_prior=self.learn_prior,
                                 rng=self.rng).init_from_data(R)
            history["stages"].append(train(stage, R, steps=per_stage, **kw))
            s = stage.p
            if d == 0:
                p["b"][...] = s["b"]
                p["C"][d] = s["C"][0]
            else:             # a later stage's bias shifts all its codewords alike: fold it in
                p["C"][d] = s["C"][0] + s["b"]
            p["a"][d], p["W"][d], p["c"][d] = s["a"][0], s["W"], s["c"]
            codes, _ = stage.sample_codes(R, self.rng)
            R = R - stage.reconstruct(codes)
            if eval_every:
                record_eval(history, (d + 1) * per_stage, self.truncated(d + 1), X, X_eval)
        return history

    def truncated(self, n):
        """The chain of the first n stages (a new model)."""
        out = ResidualVQ(n, self.n_codes, self.sigma_x, self.learn_prior, self.replicas, self.rng)
        for name in ("C", "a", "W", "c"):
            out.p[name][...] = self.p[name][:n]
        out.p["b"][...] = self.p["b"]
        return out

    def sample_codes(self, X, rng):
        """Draw k ~ q(k|x) down the chain: codes (N, M), log q(k|x) (N,) in nats."""
        p = self.p
        r, log_q = X - p["b"], np.zeros(len(X))
        codes = np.empty((len(X), self.n_dims), dtype=np.int64)
        for d in range(self.n_dims):
            lq = log_softmax(r @ p["W"][d] + p["c"][d], axis=-1)
            u = rng.random((len(X), 1))
            k = np.minimum((np.cumsum(np.exp(lq), axis=1) < u).sum(axis=1), self.n_codes - 1)
            codes[:, d] = k
            log_q += lq[np.arange(len(X)), k]
            r = r - p["C"][d][k]
        return codes, log_q

    def _chain_exact(self, X):
        """Exact recon and code (nats, (N,) each) by enumerating every path of the chain."""
        p, M, K = self.p, self.n_dims, self.n_codes
        log_pi = log_softmax(p["a"], axis=-1)
        T = X - p["b"]
        prefix = np.zeros((1, D))                # sum of the codewords chosen so far, per path
        log_q = np.zeros((len(X), 1))            # log q of each path prefix
        code = np.zeros((len(X), 1))             # sum of log(q_d / pi_d) along it
        for d in range(M):
            # the stage is linear in its input, so its logits for every prefix are cheap
            lq = log_softmax((T @ p["W"][d])[:, None, :] - (prefix @ p["W"][d])[None]
                             + p["c"][d], axis=-1)                                   # (N, P, K)
            log_q = (log_q[:, :, None] + lq).reshape(len(X), -1)
            code = (code[:, :, None] + lq - log_pi[d]).reshape(len(X), -1)
            prefix = (prefix[:, None, :] + p["C"][d][None]).reshape(-1, D)
        w = np.exp(log_q)
        recon = np.einsum("nj,nj->n", w, code_sq_errors(T, prefix)) / (2 * self.sigma_x**2)
        return recon, np.einsum("nj,nj->n", w, code), p["b"] + w @ prefix

    def mean_reconstruction(self, X, n_draws=256, rng=None):
        """E_q[xhat(k)] down the chain (N, D): exact, or a Monte Carlo mean of n_draws."""
        if self.n_codes**self.n_dims <= MAX_ENUMERATION:
            step = max(1, 2_000_000 // self.n_codes**self.n_dims)
            return np.concatenate([self._chain_exact(X[i:i + step])[2]
                                   for i in range(0, len(X), step)])
        codes, _ = self.sample_codes(np.repeat(X, n_draws, axis=0),
                                     rng if rng is not None else np.random.default_rng(0))
        return self.reconstruct(codes).reshape(len(X), n_draws, D).mean(axis=1)

    def description_length(self, X, n_draws=64, rng=None):
        """Per-image bits {"recon", "code", "total"}; with Monte Carlo also "se" of total."""
        if self.n_codes**self.n_dims <= MAX_ENUMERATION:
            step = max(1, 2_000_000 // self.n_codes**self.n_dims)
            parts = [self._chain_exact(X[i:i + step]) for i in range(0, len(X), step)]
            recon = np.concatenate([part[0] for part in parts])
            code = np.concatenate([part[1] for part in parts])
            return {"recon": recon / LN2, "code": code / LN2, "total": (recon + code) / LN2}
        rng = rng if rng is not None else np.random.default_rng(0)
        Xr = np.repeat(X, n_draws, axis=0)
        codes, log_q = self.sample_codes(Xr, rng)
        err = np.sum((Xr - self.reconstruct(codes)) ** 2, axis=1) / (2 * self.sigma_x**2)
        code = log_q - self.log_prior(codes)
        recon, code = err.reshape(len(X), n_draws), code.reshape(len(X), n_draws)
        total = recon + code
        return {"recon": recon.mean(1) / LN2, "code": code.mean(1) / LN2,
                "total": total.mean(1) / LN2,
                "se": total.std(1, ddof=1) / math.sqrt(n_draws) / LN2}


class PPCA:
    """Probabilistic PCA: the linear-Gaussian reference code.

    z ~ N(0, diag(lam)), x = mean + W z + N(0, sigma_x^2 I), W the top principal directions
    of the training set (orthonormal columns) and lam_j = max(s_j^2 - sigma_x^2, eps) the
    maximum-likelihood prior variances.  The posterior is exact, so the bits-back total
    equals -log2 p(x) in the same quantisation convention as the discrete models.
    """

    def __init__(self, n_components=5, sigma_x=0.15, eps=1e-12):
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        if sigma_x <= 0:
            raise ValueError(f"sigma_x must be > 0, got {sigma_x}")
        self.n_components, self.sigma_x, self.eps = int(n_components), float(sigma_x), eps

    def fit(self, X):
        """Fit mean, directions W (D, n) and prior variances lam (n,) from X (N, D)."""
        n = self.n_components
        if n > min(X.shape):
            raise ValueError(f"PCA with {n} components needs at least {n} training images")
        self.mean = X.mean(axis=0)
        _, s, Vt = np.linalg.svd(X - self.mean, full_matrices=False)
        self.W = Vt[:n].T
        self.lam = np.maximum(s[:n] ** 2 / len(X) - self.sigma_x**2, self.eps)
        return self

    def _posterior(self, X):
        shrink = self.lam / (self.lam + self.sigma_x**2)
        return shrink * ((X - self.mean) @ self.W), shrink * self.sigma_x**2   # m (N, n), S (n,)

    def reconstruct(self, X):
        """Posterior-mean reconstruction (N, D)."""
        m, _ = self._posterior(X)
        return self.mean + m @ self.W.T

    mean_reconstruction = reconstruct          # the same call as the discrete models'

    def description_length(self, X):
        """Per-image bits {"recon", "code", "total"}."""
        m, S = self._posterior(X)
        resid = X - self.mean - m @ self.W.T
        recon = (np.einsum("nd,nd->n", resid, resid) + S.sum()) / (2 * self.sigma_x**2)
        ratio = S / self.lam
        code = 0.5 * ((ratio - 1.0 - np.log(ratio)).sum() + (m**2 / self.lam).sum(axis=1))
        return {"recon": recon / LN2, "code": code / LN2, "total": (recon + code) / LN2}

    def exact_dl(self, X):
        """The posterior is exact, so the exact DL is the total itself (bits, (N,))."""
        return self.description_length(X)["total"]


# ----------------------------------------------------------------------------- optimiser


class Adam:
    """Adam (Kingma & Ba, 2015), written out; state is kept per parameter array."""

    def __init__(self, params, lr=1e-2, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(params)
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, grads, lr=None):
        """One in-place update of every parameter from its gradient."""
        self.t += 1
        lr = self.lr if lr is None else lr
        c1, c2 = 1.0 - self.b1**self.t, 1.0 - self.b2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= self.b1
            m += (1.0 - self.b1) * g
            v *= self.b2
            v += (1.0 - self.b2) * g * g
            p -= lr * (m / c1) / (np.sqrt(v / c2) + self.eps)


# ----------------------------------------------------------------------------- training

SCHEDULES = ("kl", "sigma", "none")


def schedule_values(schedule, frac, sigma_x):
    """(kl_weight, sigma) at fraction frac of training.

    "kl": the KL weight warms up linearly from 0.1 to 1 over the first half;
    "sigma": sigma anneals geometrically from 3 sigma_x to sigma_x over the first half;
    "none": the plain free energy throughout.  Only the second half is the true objective.
    """
    ramp = min(1.0, 2.0 * frac)
    if schedule == "kl":
        return 0.1 + 0.9 * ramp, sigma_x
    if schedule == "sigma":
        return 1.0, sigma_x * 3.0 ** (1.0 - ramp)
    return 1.0, sigma_x


def train(model, X, steps=400, lr=0.02, schedule="sigma", objective="bits-back",
          X_eval=None, eval_every=0, snapshot_every=0):
    """Full-batch training of a StochasticVQ with Adam (one step = one epoch).

    The learning rate decays on a cosine from lr to lr/20.  Returns a history with the
    training objective per step ("loss", bits); at the start, every eval_every steps and
    after the last, the amortised F in bits on X ("train") and on X_eval ("heldout", with its
    "heldout_recon" and "heldout_code"); and with snapshot_every, copies of theta
    ("snapshots": [(step, theta)], from step 0 on).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}")
    opt = Adam([model.theta], lr=lr)
    history = {"loss": [], "eval_step": [], "train": [], "heldout": [], "heldout_recon": [],
               "heldout_code": [], "snapshots": []}
    if eval_every:
        record_eval(history, 0, model, X, X_eval, refine=0)
    for t in range(steps):
        if snapshot_every and t % snapshot_every == 0:
            history["snapshots"].append((t, model.theta.copy()))
        beta, sigma = schedule_values(schedule, t / steps, model.sigma_x)
        loss, g = model.loss_and_grad(X, kl_weight=beta, variance=objective == "bits-back",
                                      sigma_x=sigma)
        opt.step([g], lr=lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t / steps))))
        history["loss"].append(loss / LN2)
        if eval_every and ((t + 1) % eval_every == 0 or t + 1 == steps):
            record_eval(history, t + 1, model, X, X_eval, refine=0)
    if snapshot_every:
        history["snapshots"].append((steps, model.theta.copy()))
    return history


def record_eval(history, step, model, X, X_eval, **kw):
    """Append F (bits, mean over images) on the training and held-out sets to history."""
    history["eval_step"].append(step)
    history["train"].append(float(model.description_length(X, **kw)["total"].mean()))
    if X_eval is not None:
        dl = model.description_length(X_eval, **kw)
        for key in ("total", "recon", "code"):
            history["heldout" if key == "total" else f"heldout_{key}"].append(float(dl[key].mean()))


# ----------------------------------------------------------------------------- evaluation


def build_model(name, n_dims=4, n_units_per_dim=6, sigma_x=0.15, refine=50, init="band",
                rng=None):
    """A fresh, untrained model by name (see MODEL_NAMES)."""
    M, K = n_dims, n_units_per_dim
    if name == "standard_vq":                       # the M = 1 case with the same 24 codewords
        return StochasticVQ(1, M * K, sigma_x, refine=refine, rng=rng)
    if name == "separate_slices":
        return StochasticVQ(M, K, sigma_x, bands=column_bands(M), refine=refine, rng=rng)
    if name == "factorial_vq":
        return StochasticVQ(M, K, sigma_x, refine=refine, rng=rng)
    if name == "residual_vq":
        return ResidualVQ(M, K, sigma_x, rng=rng)
    if name in ("pca5", "pca24"):
        return PPCA(int(name[3:]), sigma_x)
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")


def fit_model(name, X, seed=0, steps=400, schedule="sigma", objective="bits-back", init="band",
              X_eval=None, eval_every=0, snapshot_every=0, **model_kw):
    """Build and train model `name` on X (N, 96); returns (model, history).

    Each model draws from its own generator, derived from (seed, model), so results do not
    depend on which other models run or in which process.
    """
    rng = np.random.default_rng([seed, 1000 + MODEL_NAMES.index(name)])
    model = build_model(name, rng=rng, **model_kw)
    if isinstance(model, PPCA):
        return model.fit(X), {}
    kw = dict(steps=steps, schedule=schedule, objective=objective, snapshot_every=snapshot_every)
    if isinstance(model, StochasticVQ):
        # band_init breaks the symmetry between the factorial model's factors
        model.init_from_data(X, band_init=init == "band" and name == "factorial_vq")
    return model, model.fit(X, X_eval=X_eval, eval_every=eval_every, **kw)


def evaluate(model, X, legacy=False, rng=None):
    """Mean bits per image on X: recon, code, total, exact (None if skipped), and where they
    apply total_amortised (recognition network alone), total_se (Monte Carlo), legacy (the
    earlier reproduction's accounting, not a code length) and min_gap = min_n (F - DL*)."""
    dl = (model.description_length(X, rng=rng) if isinstance(model, ResidualVQ)
          else model.description_length(X))
    out = {k: float(dl[k].mean()) for k in ("recon", "code", "total")}
    exact = model.exact_dl(X)
    out["exact"] = None if exact is None else float(exact.mean())
    if exact is not None and not isinstance(model, PPCA):
        out["min_gap"] = float((dl["total"] - exact).min())
    if "se" in dl:
        out["total_se"] = float(np.sqrt(np.sum(dl["se"] ** 2)) / len(X))
    if isinstance(model, StochasticVQ):
        if model.refine:
            out["total_amortised"] = float(model.description_length(X, refine=0)["total"].mean())
        if legacy:
            out["legacy"] = float(model.description_length(X, refine=0, variance=False)
                                  ["total"].mean())
    return out


@functools.lru_cache(maxsize=16)
def load_data(seed, n_samples=200, n_test=2000):
    """(train (n_samples, 96), held-out (n_test, 96)) for a seed; cached, do not modify."""
    return (generate_spline_images(n_samples, seed)[0],
            generate_spline_images(n_test, seed, stream=1)[0])


def run_comparison(seed=0, n_dims=4, n_units_per_dim=6, n_samples=200, n_test=2000, steps=400,
                   sigma_x=0.15, objective="bits-back", schedule="sigma", init="band", refine=50,
                   models=MODEL_NAMES, eval_every=0, snapshot_every=0, score=False, workers=1):
    """Train the paper's comparison at one seed.

    Returns {"models": {NAME: fitted model}, "histories": {NAME: history},
    "train": (n_samples, 96), "heldout": (n_test, 96)}, and with score=True also
    "scores": {NAME: evaluate(model, heldout)}.  With eval_every > 0 the histories hold F
    on both sets every eval_every steps, with snapshot_every > 0 copies of the parameters
    (for the figures and the animation).  workers > 1 fits the models in parallel
    processes; the results are the same.
    """
    X, Xt = load_data(seed, n_samples, n_test)
    kw = dict(seed=seed, steps=steps, schedule=schedule, objective=objective, init=init,
              X_eval=Xt, eval_every=eval_every, snapshot_every=snapshot_every, n_dims=n_dims,
              n_units_per_dim=n_units_per_dim, sigma_x=sigma_x, refine=refine)
    tasks = [(name, X, Xt, kw, score) for name in sorted(models, key=_COST_ORDER.index)]
    fitted = {name: rest for name, *rest in _map(_fit_task, tasks, workers)}
    out = {"models": {n: fitted[n][0] for n in models},
           "histories": {n: fitted[n][1] for n in models}, "train": X, "heldout": Xt}
    if score:
        out["scores"] = {n: fitted[n][2] for n in models}
    return out


def _fit_task(task):
    """Worker: fit one model (and score it on the held-out set if asked)."""
    name, X, Xt, kw, score = task
    model, history = fit_model(name, X, **kw)
    return name, model, history, evaluate(model, Xt) if score else None


def _map(fn, tasks, workers):
    """Yield fn(task) for every task, in `workers` forked processes when that helps;
    results arrive in completion order."""
    if workers > 1 and len(tasks) > 1:
        import multiprocessing
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                          else "spawn")
        with ctx.Pool(min(workers, len(tasks))) as pool:
            yield from pool.imap_unordered(fn, tasks)
    else:
        yield from map(fn, tasks)


def _run_task(task):
    """Worker: train and score one (seed, model); returns plain numbers."""
    seed, name, cfg = task
    t0 = time.perf_counter()
    X, Xt = load_data(seed, cfg["n_samples"], cfg["n_test"])
    model, _ = fit_model(name, X, seed=seed, steps=cfg["steps"], schedule=cfg["schedule"],
                         objective=cfg["objective"], init=cfg["init"], n_dims=cfg["n_dims"],
                         n_units_per_dim=cfg["n_units_per_dim"], sigma_x=cfg["sigma_x"],
                         refine=cfg["refine"])
    legacy = cfg["objective"] == "meanfield"
    rng = np.random.default_rng([seed, 2000 + MODEL_NAMES.index(name)])
    result = {"heldout": evaluate(model, Xt, legacy, rng), "train": evaluate(model, X, legacy, rng)}
    result["seconds"] = time.perf_counter() - t0
    return seed, name, result


def progress_logger(quiet):
    """A function that prints a progress line on stderr, or does nothing when quiet."""
    if quiet:
        return lambda msg: None
    return lambda msg: print(msg, file=sys.stderr, flush=True)


# run the slowest models first so the two workers finish together
_COST_ORDER = ("factorial_vq", "residual_vq", "separate_slices", "standard_vq", "pca24", "pca5")


def run_seeds(cfg, seeds, workers=1, log=progress_logger(True)):
    """Run every model of cfg["models"] at every seed, in `workers` processes.

    Returns {seed: {NAME: result}}; results are identical whatever the worker count.
    """
    tasks = [(s, name, cfg) for s in seeds
             for name in sorted(cfg["models"], key=_COST_ORDER.index)]
    results = {s: {} for s in seeds}

    def collect(item):
        seed, name, res = item
        results[seed][name] = res
        log(f"seed {seed} {name:16s} held-out F {res['heldout']['total']:7.2f} bits "
            f"({res['seconds']:.2f} s)  [{sum(map(len, results.values()))}/{len(tasks)}]")

    if workers > 1:
        for s in seeds:                 # render once here; forked workers inherit the cache
            load_data(s, cfg["n_samples"], cfg["n_test"])
    for item in _map(_run_task, tasks, workers):
        collect(item)
    return {s: {name: results[s][name] for name in cfg["models"]} for s in seeds}


def summarise(results, models):
    """Per-model mean and sd (ddof=1; 0 for one seed) of the held-out totals over seeds."""
    summary = {}
    for name in models:
        totals = np.array([r[name]["heldout"]["total"] for r in results.values()])
        summary[name] = {"heldout_total_mean": float(totals.mean()),
                         "heldout_total_sd": float(totals.std(ddof=1)) if len(totals) > 1 else 0.0}
    return summary


# ----------------------------------------------------------------------------- CLI

LABELS = {"standard_vq": "standard {MK}-VQ", "separate_slices": "separate {M} x 8x{w} slices",
          "residual_vq": "residual chain {M}x{K}", "factorial_vq": "factorial {M}x{K} VQ",
          "pca5": "PPCA, 5 components", "pca24": "PPCA, 24 components"}


def model_label(name, M, K):
    return LABELS[name].format(MK=M * K, M=M, K=K, w=WIDTH // M if WIDTH % M == 0 else "~")


def format_table(results, cfg, markdown=False):
    """The results table: mean (and +- sd over seeds) in bits per image; plain or Markdown."""
    seeds, M, K = list(results), cfg["n_dims"], cfg["n_units_per_dim"]
    legacy = cfg["objective"] == "meanfield"

    def stat(name, split, key):
        vals = [results[s][name][split].get(key) for s in seeds]
        if any(v is None for v in vals):
            return "skipped" if key == "exact" else "-"
        vals = np.array(vals)
        if len(vals) == 1:
            return f"{vals[0]:.2f}"
        return f"{vals.mean():.2f} ± {vals.std(ddof=1):.2f}"

    cols = ["model", "recon", "code", "total F", "amortised", "exact DL*", "train F"]
    cols += ["legacy (not a DL)"] if legacy else []
    cols += ["seconds"]
    rows = []
    for name in cfg["models"]:
        row = [model_label(name, M, K), stat(name, "heldout", "recon"),
               stat(name, "heldout", "code"), stat(name, "heldout", "total"),
               stat(name, "heldout", "total_amortised"), stat(name, "heldout", "exact"),
               stat(name, "train", "total")]
        row += [stat(name, "heldout", "legacy")] if legacy else []
        row += [f"{np.mean([results[s][name]['seconds'] for s in seeds]):.2f}"]
        rows.append(row)
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))} (mean ± sd)"
    head = (f"Bits-back description length, bits per image, {cfg['n_test']} held-out images, "
            f"{seed_text}; sigma_x = {cfg['sigma_x']}, t = sigma_x*sqrt(2 pi)")
    if markdown:
        line = lambda r: "| " + " | ".join(r) + " |"
        return "\n".join([f"*{head}*", "", line(cols), line(["---"] + ["---:"] * (len(cols) - 1))]
                         + [line(r) for r in rows])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths)))
    return "\n".join([head, line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows])


class CLIParser(argparse.ArgumentParser):
    """argparse that reports a bad value in one line and exits with status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def int_at_least(lo):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        return value
    return parse


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _seed(text):
    return int_at_least(0)(text)


def parse_args(argv=None):
    ap = CLIParser(prog="spline_images_factorial_vq.py",
                 description="Factorial stochastic VQ of spline images (Hinton & Zemel 1994), "
                             "scored by bits-back description length in bits per image.")
    seeds = ap.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    seeds.add_argument("--seeds", type=_seed, nargs="+", metavar="S",
                       help="several seeds: mean ± sd, run in parallel worker processes")
    ap.add_argument("--n-dims", type=int_at_least(1), default=4,
                    help="factors M (VQs) of the factorial model (default 4)")
    ap.add_argument("--n-units-per-dim", type=int_at_least(2), default=6,
                    help="codes K per factor (default 6); the standard VQ gets M*K codes")
    ap.add_argument("--n-samples", type=int_at_least(1), default=200,
                    help="training images (default 200, as in the paper)")
    ap.add_argument("--n-test", type=int_at_least(1), default=2000,
                    help="held-out images (default 2000)")
    ap.add_argument("--steps", "--n-epochs", dest="steps", type=int_at_least(1), default=400,
                    help="full-batch Adam steps per model, so one step is one epoch (default 400)")
    ap.add_argument("--sigma-x", type=positive_float, default=0.15,
                    help="std of the Gaussian pixel noise model (default 0.15)")
    ap.add_argument("--objective", choices=("bits-back", "meanfield"), default="bits-back",
                    help="train on the valid free energy (default) or on the earlier "
                         "reproduction's loss without the code variance")
    ap.add_argument("--schedule", choices=SCHEDULES, default="sigma",
                    help="warm-up during the first half of training (default sigma)")
    ap.add_argument("--init", choices=("band", "random"), default="band",
                    help="factorial codebook start: confined to column bands, or small "
                         "random image deviations (default band)")
    ap.add_argument("--refine", type=int_at_least(0), default=50,
                    help="max mean-field sweeps that refine the posterior (0: amortised only)")
    ap.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES),
                    metavar="NAME", help=f"models to run (default all: {' '.join(MODEL_NAMES)})")
    ap.add_argument("--workers", type=int_at_least(1), default=min(2, os.cpu_count() or 1),
                    help="worker processes (default: up to 2)")
    ap.add_argument("--json", metavar="PATH", help="write config, versions and all numbers here")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--quiet", action="store_true", help="print only the table")
    args = ap.parse_args(argv)
    args.models = list(dict.fromkeys(args.models))
    if "separate_slices" in args.models and args.n_dims > WIDTH:
        ap.error(f"--n-dims {args.n_dims}: separate_slices needs at most {WIDTH} bands")
    small = [n for n in args.models if n.startswith("pca") and int(n[3:]) > args.n_samples]
    if small:
        ap.error(f"--n-samples {args.n_samples} is too small for {small[0]} "
                 f"(needs >= {small[0][3:]}); raise it or leave {small[0]} out of --models")
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            ap.error(f"--json {args.json}: folder {folder} does not exist or is not writable")
    return args


def writable_folder(path):
    """Create folder `path` if missing; OSError with a plain message if it cannot be used."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create output folder {path}: {err.strerror or err}") from None
    if not os.access(path, os.W_OK):
        raise OSError(f"output folder {path} is not writable")
    return path


def atomic_write(path, write):
    """Call write(tmp_path), then rename the temporary file onto path, so that an
    interrupted run never leaves a half-written file."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, payload):
    """Write JSON atomically."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=1)
    atomic_write(path, write)


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    seeds = args.seeds if args.seeds else [args.seed]
    cfg = {k: getattr(args, k) for k in ("n_dims", "n_units_per_dim", "n_samples", "n_test",
                                         "steps", "sigma_x", "objective", "schedule", "init",
                                         "refine", "models")}
    log = progress_logger(args.quiet)
    log(f"training {len(cfg['models'])} models x {len(seeds)} seed(s), {args.steps} steps "
        f"each, {min(args.workers, len(seeds) * len(cfg['models']))} worker(s)")
    results = run_seeds(cfg, seeds, workers=args.workers, log=log)
    wall = time.perf_counter() - t0
    print(format_table(results, cfg, markdown=args.markdown))
    if args.objective == "meanfield":
        print("legacy = ||x - E[xhat]||^2/(2 sigma^2) + KL, the earlier reproduction's number: it "
              "omits the variance of the stochastic code and is not a code length; total F is.")
    log(f"done in {wall:.2f} s wall")
    if args.json:
        import platform
        import scipy
        payload = {"config": {**cfg, "seeds": seeds},
                   "versions": {"python": platform.python_version(), "numpy": np.__version__,
                                "scipy": scipy.__version__, "platform": platform.platform()},
                   "results": [{"seed": s, "models": results[s]} for s in seeds],
                   "summary": summarise(results, cfg["models"]),
                   "wall_seconds": wall}
        try:
            write_json(args.json, payload)
        except OSError as err:
            print(f"spline_images_factorial_vq.py: error: cannot write {args.json}: {err}",
                  file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
