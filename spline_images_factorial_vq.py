"""Factorial stochastic vector quantisation of spline images, scored by bits-back.

A reproduction of Hinton & Zemel, "Autoencoders, Minimum Description Length and
Helmholtz Free Energy" (NIPS 6, 1994), section 4. Every number this module calls a
description length (DL) is a valid bits-back code length: the Helmholtz free energy

    F(x) = ( E_q ||x - xhat(k)||^2 / (2 sigma_x^2) + sum_d KL(q_d || pi_d) ) / ln 2

in bits per image, with the data quantised at width t = sigma_x * sqrt(2 pi) so that the
per-pixel Gaussian normaliser vanishes. At another width t' add
D * log2(sigma_x * sqrt(2 pi) / t') bits.

The file reads like the paper, each section using only those above it: data -> free
energy -> hard codes (the deterministic search every model starts from) -> optimiser ->
training -> models -> the model registry -> evaluation -> the open questions the paper
leaves (factor counts, alignment, warm-up, the generator's own description length, sigma_x,
data movement) -> coding the 1994 models with the bits-back coder -> the CLI.  The leaf
modules bits_back_coder, file_container, data_movement, mlp and cli_kit know no model.  docs/architecture.md
is the map.  Run `python3 spline_images_factorial_vq.py --help`.
"""

import os
import sys

import cli_kit as kit

if __name__ == "__main__":
    kit.quit_on_interrupt("spline_images_factorial_vq.py")

import copy  # noqa: E402
import functools  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from typing import Callable, NamedTuple  # noqa: E402

# Every matrix here is small (at most 2000 x 1296), where threaded BLAS gains nothing and
# two worker processes with two BLAS threads each fight over two cores (2x slower here).
# A value the user sets still wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402  (after the thread settings, which numpy reads at import)

import bits_back_coder as bbc  # noqa: E402
import compressors  # noqa: E402
import data_movement as dm  # noqa: E402
import file_container as fc  # noqa: E402
import mlp  # noqa: E402

HEIGHT, WIDTH = 8, 12
D = HEIGHT * WIDTH                      # 96 pixels, flattened row-major
N_CONTROL = 5                           # control points = the data's degrees of freedom
CONTROL_X = np.linspace(0.0, WIDTH - 1, N_CONTROL)
CONTROL_RANGE = (0.5, 6.5)              # heights are uniform on this interval
N_CURVE_POINTS = 200
BLUR_SIGMA = 0.6                        # pixels
MAX_ENUMERATION = 65_536                # largest K^M enumerated exactly
CHUNK_ENTRIES = 250_000                 # (image, code) pairs per pass: 2 MB arrays stay in cache
LN2 = math.log(2.0)

# upper limits of sizes and values: beyond them a run cannot fit in memory or would not finish
SIGMA_RANGE = (1e-3, 1e3)              # pixel noise std; images live in [0, 1]
MAX_STEPS = 1_000_000
STEPS = 40                             # Adam steps after the hard start and EM (FactorialVQ.fit)
LR = 0.03                              # their learning rate, decayed on a cosine to LR / 20
MAX_DIMS = D                           # at most one factor per pixel
MAX_CODES = 4096                       # per factor
MAX_IMAGES = 1_000_000                 # training or held-out images
MAX_SEED = 2**63 - 1                   # a bitstream header stores the seed as a JSON int64
BLUR_RANGE, HEIGHTS_RANGE = (0.05, 10.0), (-20.0, 30.0)   # pixels; heights in pixel rows


# ----------------------------------------------------------------------------- data


def natural_spline_basis(knots, xs):
    """(len(knots), len(xs)) matrix B with spline(xs) = heights @ B, for the natural cubic
    spline through (knots, heights).

    The spline is linear in the heights: its second derivatives m at the knots (zero at
    both ends) solve the tridiagonal system h_{i-1}/6 m_{i-1} + (h_{i-1} + h_i)/3 m_i +
    h_i/6 m_{i+1} = (y_{i+1} - y_i)/h_i - (y_i - y_{i-1})/h_{i-1}, and on [x_j, x_j+1] with
    u = (x - x_j)/h_j the spline is (1-u) y_j + u y_j+1 + h_j^2/6 (((1-u)^3 - (1-u)) m_j +
    (u^3 - u) m_j+1).  (scipy's CubicSpline(bc_type="natural") computes the same; this
    form spares its import, a third of a second of every run.)
    """
    n, h = len(knots), np.diff(knots)
    A = np.diag((h[:-1] + h[1:]) / 3) + np.diag(h[1:-1] / 6, 1) + np.diag(h[1:-1] / 6, -1)
    rhs = np.zeros((n - 2, n))
    for i in range(1, n - 1):
        rhs[i - 1, i - 1:i + 2] = 1 / h[i - 1], -1 / h[i - 1] - 1 / h[i], 1 / h[i]
    m = np.zeros((n, n))
    m[1:-1] = np.linalg.solve(A, rhs)                     # (n, n): m = m_of_y @ y
    j = np.clip(np.searchsorted(knots, xs, side="right") - 1, 0, n - 2)
    u = (xs - knots[j]) / h[j]
    eye = np.eye(n)
    return ((1 - u) * eye[:, j] + u * eye[:, j + 1]
            + h[j] ** 2 / 6 * (((1 - u) ** 3 - (1 - u)) * m[j].T + (u**3 - u) * m[j + 1].T))


RENDER_CHUNK = 20_000                   # images rendered at once (their curves: 256 MB)


def render_splines(controls, blur_sigma=BLUR_SIGMA):
    """Render spline images from control heights.

    controls: (N, 5) heights at x = linspace(0, 11, 5).  Returns (N, 96) in [0, 1].
    A natural cubic spline through the knots is sampled at 200 points; each point adds
    an isotropic Gaussian bump at the pixel centres; each image is scaled to max 1.
    """
    controls = np.asarray(controls, dtype=np.float64)
    if len(controls) > RENDER_CHUNK:            # (N, 200, 8) at once would not fit in memory
        return np.concatenate([render_splines(controls[i:i + RENDER_CHUNK], blur_sigma)
                               for i in range(0, len(controls), RENDER_CHUNK)])
    xs = np.linspace(0.0, WIDTH - 1, N_CURVE_POINTS)
    ys = controls @ natural_spline_basis(CONTROL_X, xs)                        # (N, 200)
    # the bump is separable, so the sum over curve points is one matrix product
    gx = np.exp(-(np.arange(WIDTH)[None, :] - xs[:, None]) ** 2 / (2 * blur_sigma**2))  # (200, 12)
    gy = np.exp(-(np.arange(HEIGHT)[None, None, :] - ys[:, :, None]) ** 2
                / (2 * blur_sigma**2))                                          # (N, 200, 8)
    images = np.matmul(gy.transpose(0, 2, 1), gx).reshape(len(controls), D)   # (N, 96)
    return images / images.max(axis=1, keepdims=True)


def generate_spline_images(n, seed=0, stream=0, blur_sigma=BLUR_SIGMA, heights=CONTROL_RANGE,
                           heights_dist="uniform"):
    """Draw n spline images.  Returns (images (n, 96), controls (n, 5)).

    stream 0 is the training stream, np.random.default_rng(seed), drawn exactly as the
    earlier public reproduction draws it; stream s > 0 is the independent stream
    np.random.default_rng([seed, s]) (stream 1 is the held-out set).  The paper states
    neither the blur nor how the heights are drawn: blur_sigma (pixels), heights (low,
    high) and heights_dist are this generator's reading, the earlier reproduction's by
    default: uniform on [low, high]; "normal": mean (low + high) / 2, sd (high - low) / 4.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed if stream == 0 else [seed, stream])
    low, high = heights
    controls = (rng.uniform(low, high, size=(n, N_CONTROL)) if heights_dist == "uniform" else
                rng.normal((low + high) / 2, (high - low) / 4, size=(n, N_CONTROL)))
    return render_splines(controls, blur_sigma), controls


def heights_text(reading):
    low, high = reading["heights"]
    return (f"uniform on [{low:g}, {high:g}]" if reading["heights_dist"] == "uniform" else
            f"normal, mean {(low + high) / 2:g}, sd {(high - low) / 4:g}")


def data_reading(cfg):
    """The generator's reading in a run's cfg (the default where it names none)."""
    return {"blur_sigma": cfg.get("blur_sigma", BLUR_SIGMA),
            "heights": list(cfg.get("heights", CONTROL_RANGE)),
            "heights_dist": cfg.get("heights_dist", "uniform")}


def quantise_images(X):
    """8-bit pixels (N, 96) uint8 of images in [0, 1]."""
    return np.clip(np.round(X * (bbc.PIXEL_LEVELS - 1)), 0, bbc.PIXEL_LEVELS - 1).astype(np.uint8)


def column_bands(n_bands):
    """(n_bands, 96) 0/1 masks: the 12 columns split into contiguous vertical bands."""
    cols = np.tile(np.arange(WIDTH), HEIGHT)                                    # column of each pixel
    groups = np.array_split(np.arange(WIDTH), n_bands)
    return np.stack([np.isin(cols, g) for g in groups]).astype(np.float64)


# ----------------------------------------------------------------------------- free energy
#
# Softmax helpers: scipy.special's versions route through its array-API layer, which costs
# tens of microseconds a call; in the training loop and the K^M enumeration that overhead
# is most of the run time, so these are the plain numpy forms (tests check them against
# scipy.special).  The axis is usually short (K codes) and numpy's max and sum along a
# short last axis run several times slower than elementwise work over its columns, so the
# max takes one np.maximum per column and the sum is an einsum.

SHORT_AXIS = 32


def _max(z):
    """Maximum along the last axis, (...)."""
    if z.shape[-1] > SHORT_AXIS:
        return z.max(axis=-1)
    out = z[..., 0].copy()
    for k in range(1, z.shape[-1]):
        np.maximum(out, z[..., k], out=out)
    return out


def logsumexp(z, axis=-1):
    """log sum exp of z along axis, stabilised by the maximum."""
    z = np.moveaxis(z, axis, -1)
    zmax = _max(z)
    return zmax + np.log(np.einsum("...k->...", np.exp(z - zmax[..., None])))


def log_softmax(z, axis=-1):
    """z minus its logsumexp along axis."""
    z = np.moveaxis(z, axis, -1)
    z = z - _max(z)[..., None]
    return np.moveaxis(z - np.log(np.einsum("...k->...", np.exp(z)))[..., None], -1, axis)


def softmax(z, axis=-1):
    """Normalised exp(z) along axis."""
    z = np.moveaxis(z, axis, -1)
    e = np.exp(z - _max(z)[..., None])
    return np.moveaxis(e / np.einsum("...k->...", e)[..., None], -1, axis)


# The generative family: M factors of K codes, codebooks C (M, K, D),
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


def inverse_cdf(p, u):
    """Draw from the distributions p (..., K) with uniforms u (...): the first index whose
    cumulative probability reaches u (the last, should rounding leave the sum below u)."""
    return np.minimum((np.cumsum(p, axis=-1) < u[..., None]).sum(axis=-1), p.shape[-1] - 1)


def code_scores(X, C, b):
    """(x_n - b).C_d[k] for every image, factor and code: X (N, D), C (..., M, K, D),
    b (..., D) -> (..., N, M, K); leading axes are separate models."""
    *lead, M, K, Dx = C.shape
    flat = np.swapaxes(C.reshape(tuple(lead) + (M * K, Dx)), -1, -2)           # (..., D, MK)
    return ((X - b[..., None, :]) @ flat).reshape(tuple(lead) + (-1, M, K))


def mean_field(X, C, b, a, q, sigma_x, sweeps=50, tol=1e-7):
    """Coordinate-wise mean-field refinement of a factorial posterior.

    q (N, M, K) is the starting posterior (e.g. the recognition network's).  Each update
    sets q_d to the exact minimiser of F given the other factors, so F never increases and
    the refined posterior is still a deterministic function of x: a valid bits-back code.
    An image stops once none of its probabilities moved by more than tol in a sweep (images
    are independent, so the others go on alone); all stop after `sweeps` sweeps.  tol=None
    runs every sweep on every image (the training loop).  C, b, a and q may carry the same
    leading axes, several models refined at once.  Returns the refined q (..., N, M, K).

    The update q_d(k) ∝ pi_d(k) exp(((x - b - sum_{e≠d} mu_e).C_d[k] - ||C_d[k]||^2/2)
    / sigma^2) needs the scores (x - b).C_d[k] and the overlaps mu_e.C_d[k].  With few codes
    these come from the codebooks' Gram matrix C C^T, mu_e.C_d[k] = sum_l q_e(l) C_e[l].C_d[k]
    (N (MK)^2 multiply-adds a sweep, no image-sized array touched); with M K > 3 D from the
    other factors' mean image in pixel space (3 N M K D a sweep), which is the same sum.
    """
    q = q.copy()
    *lead, M, K, Dx = C.shape
    log_pi = log_softmax(a, axis=-1)[..., None, :, :]                      # (..., 1, M, K)
    flat = C.reshape(tuple(lead) + (M * K, Dx))
    pixels = M * K > 3 * Dx
    if pixels:
        half_sq = 0.5 * np.einsum("...mkd,...mkd->...mk", C, C)[..., None, :, :]
    else:
        gram = flat @ np.swapaxes(flat, -1, -2)                            # (..., MK, MK)
        half_sq = 0.5 * np.diagonal(gram, axis1=-2, axis2=-1).reshape(tuple(lead) + (1, M, K))
    base = log_pi + (code_scores(X, C, b) - half_sq) / sigma_x**2          # (..., N, M, K)
    every = tol is None
    active = slice(None) if every else np.arange(X.shape[-2])
    for _ in range(sweeps):
        qa = q if every else q[..., active, :, :]      # a view (updates land) or a copy
        ba = base if every else base[..., active, :, :]
        change = 0.0
        if pixels:                                     # sum_e mu_e, (..., n, D)
            mean = qa.reshape(qa.shape[:-2] + (M * K,)) @ flat
        for d in range(M):
            cols = slice(d * K, (d + 1) * K)
            if pixels:
                mean -= qa[..., d, :] @ C[..., d, :, :]
                others = mean @ np.swapaxes(C[..., d, :, :], -1, -2)        # (..., n, K)
            else:
                others = (qa.reshape(qa.shape[:-2] + (M * K,)) @ gram[..., :, cols]
                          - qa[..., d, :] @ gram[..., cols, cols])        # (..., n, K)
            new = softmax(ba[..., d, :] - others / sigma_x**2, axis=-1)
            if not every:
                change = np.maximum(change, np.abs(new - qa[..., d, :]).max(axis=-1))
            qa[..., d, :] = new
            if pixels:
                mean += new @ C[..., d, :, :]
        if not every:
            q[..., active, :, :] = qa
        if M == 1:                                     # one update is the exact posterior
            break
        if not every:
            active = active[change.reshape(-1, change.shape[-1]).max(axis=0) >= tol]
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


# ----------------------------------------------------------------------------- hard codes
#
# The deterministic counterpart of each stochastic model: the same generative family, but
# every image sends one joint code, the shortest, of (||x - xhat(k)||^2 / (2 sigma_x^2)
# - log p(k)) / ln 2 bits.  Its search (alternate the shortest codes with least-squares
# codebooks and the codes' frequencies, the k-means recipe) is also where every stochastic
# model starts: a one-hot posterior lies inside the bits-back family, so bits-back training
# from there can end no worse (docs/hard_codes.md).  Here, the search over stacked starts;
# the HardCode class is with the models.

HARD_RESTARTS = 8              # starts of the hard-code search; the lowest training length wins
HARD_ITERS = 100               # alternations at most; the search stops when no code changes
FREQ_FLOOR = 1e-300            # a code no training image used: finite, never worth sending
START_FREQ_FLOOR = 1e-4        # ... and in a stochastic model's start, still within reach


def shortest_codes(X, C, b, log_pi, sigma_x, codes=None, chunk_entries=CHUNK_ENTRIES,
                   max_joint=MAX_ENUMERATION):
    """The shortest joint code of each image, argmin_k ||x - xhat(k)||^2/(2 sigma_x^2) - log p(k).

    X (N, D), C (..., M, K, D), b (..., D), log_pi (..., M, K) -> codes (..., N, M); the
    leading axes hold several models at once.  Exhaustive over the K^M codes when there
    are at most max_joint: the length splits into a per-image part
    sum_d (x - b).C_d[k_d] / sigma^2 + log pi_d(k_d) (added up by broadcasting, M adds per
    joint code instead of D multiplies) and a per-code part ||sum_d C_d[k_d]||^2/(2 sigma^2).
    When the factors' codewords cover disjoint pixels (the slices) the length is a sum of
    one term per factor and one coordinate-wise sweep is exact.  Otherwise, beyond
    max_joint, coordinate-wise from `codes` (or the factor-by-factor greedy codes),
    each factor set to its best given the others until none changes: a local optimum.
    """
    *lead, M, K, Dx = C.shape
    lead, s2 = tuple(lead), sigma_x**2
    U = code_scores(X, C, b) / s2 + log_pi[..., None, :, :]                # (..., N, M, K)
    N = U.shape[-3]
    disjoint = M > 1 and bool((np.any(C != 0, axis=-2).sum(axis=-2) <= 1).all())
    if K**M <= max_joint and not disjoint:
        joint = all_codes(M, K)                                             # (J, M)
        # ||sum_d C_d[k_d]||^2 from the codebooks' Gram blocks, over the grid of codes
        gram = np.einsum("...mkd,...nld->...mnkl", C, C) / (2 * s2)         # (..., M, M, K, K)
        const = np.zeros(lead + (K,) * M)
        for d in range(M):
            for e in range(d, M):
                shape = [1] * M
                shape[d] = K
                if e > d:
                    shape[e] = K
                    term = 2.0 * gram[..., d, e, :, :]
                else:
                    term = np.diagonal(gram[..., d, d, :, :], axis1=-2, axis2=-1)
                const = const + term.reshape(lead + tuple(shape))
        const = const.reshape(lead + (1, -1))                               # (..., 1, J)
        out = np.empty(lead + (N, M), dtype=np.int64)
        step = max(1, chunk_entries // (len(joint) * max(1, math.prod(lead))))
        for i in range(0, N, step):
            acc = U[..., i:i + step, 0, :]
            for d in range(1, M):                  # lexicographic, as in all_codes
                acc = (acc[..., :, None] + U[..., i:i + step, d, None, :]).reshape(
                    acc.shape[:-1] + (-1,))
            out[..., i:i + step, :] = joint[np.argmax(acc - const, axis=-1)]
        return out
    half_sq = (0.5 * np.einsum("...mkd,...mkd->...mk", C, C) / s2)[..., None, :, :]
    first = codes is None
    k = np.zeros(lead + (N, M), dtype=np.int64) if first else codes.copy()
    parts = np.zeros(lead + (M, N, Dx))                    # each factor's chosen codeword
    if not first:
        for d in range(M):
            parts[..., d, :, :] = one_hot(k[..., d], K) @ C[..., d, :, :]
    total = parts.sum(axis=-3)
    for _ in range(1 if disjoint else HARD_ITERS):
        changed = first
        for d in range(M):
            others = total - parts[..., d, :, :]
            gain = (U[..., d, :] - (others @ np.swapaxes(C[..., d, :, :], -1, -2)) / s2
                    - half_sq[..., d, :])                                   # (..., N, K)
            new = np.argmax(gain, axis=-1)
            changed = changed or bool(np.any(new != k[..., d]))
            k[..., d] = new
            parts[..., d, :, :] = one_hot(new, K) @ C[..., d, :, :]
            total = others + parts[..., d, :, :]
        first = False
        if not changed:
            break
    return k


def pixel_groups(n_dims, bands=None):
    """(pixel mask (D,), factor mask (M,)) pairs that partition the pixels, each pixel
    explained by its group's factors only: one group of every factor, or with bands (M, D)
    one band per factor (the separate slices)."""
    if bands is None:
        return [(np.ones(D, bool), np.ones(n_dims, bool))]
    return [(bands[d] > 0, np.arange(n_dims) == d) for d in range(n_dims)]


def one_hot(codes, n_codes):
    """codes (...) ints -> (..., K) one-hot posteriors."""
    q = np.zeros(codes.shape + (n_codes,))
    np.put_along_axis(q, codes[..., None], 1.0, axis=-1)
    return q


def least_squares_codebooks(X, q, C_old, groups):
    """Codebooks and bias that minimise sum_n E_q ||x_n - b - sum_d C_d[k_d]||^2 (F's recon
    term) for a fixed factorial posterior q (..., N, M, K); one-hot q gives the hard fit.

    With z = [1, one-hot(k_1), ..., one-hot(k_M)], the normal equations are
    sum_n E[z z^T] [b; C] = sum_n E[z] x^T, where E[z z^T] has diag(q_d) on the factor's
    own block (a code is one-hot) and q_d q_e^T across independent factors.  Each group
    of pixels is solved with its own factors.  Every block sums to the constant column, so
    the system is singular; a ridge of 1e-9 per image, its bias removed again by one step
    of iterative refinement, picks the minimum-norm solution (the right-hand side lies in
    the matrix's range, so the fit itself is exact).  Codes with no mass keep their old
    codeword.  Leading axes of q and C_old
    (..., M, K, D) are separate models.
    Returns b (..., D), C (..., M, K, D).
    """
    *lead, N, M, K = q.shape
    P = 1 + M * K
    E = np.concatenate([np.ones(tuple(lead) + (N, 1)), q.reshape(tuple(lead) + (N, M * K))],
                       axis=-1)                                              # (..., N, P)
    G = np.swapaxes(E, -1, -2) @ E                                           # (..., P, P)
    mass = q.sum(axis=-3)                                                    # (..., M, K)
    for d in range(M):
        block = np.arange(1 + d * K, 1 + (d + 1) * K)
        G[..., block[:, None], block] = 0.0
        G[..., block, block] = mass[..., d, :]
    rhs = np.swapaxes(E, -1, -2) @ X                                         # (..., P, D)
    theta = np.zeros(tuple(lead) + (P, X.shape[-1]))
    index = 1 + np.arange(M * K).reshape(M, K)
    for pixels, factors in groups:
        rows = np.concatenate([[0], index[factors].ravel()])
        cols = np.flatnonzero(pixels)
        block, target = G[..., rows[:, None], rows], rhs[..., rows[:, None], cols]
        A = block + 1e-9 * N * np.eye(len(rows))
        sol = np.linalg.solve(A, target)
        sol += np.linalg.solve(A, target - block @ sol)         # one refinement: bias 1e-18
        theta[..., rows[:, None], cols] = sol
    C = theta[..., 1:, :].reshape(C_old.shape).copy()
    unused = mass < 1e-12
    C[unused] = C_old[unused]
    return theta[..., 0, :], C


def hard_code_search(X, n_dims, n_codes, sigma_x, rng, bands=None, start="band",
                     restarts=HARD_RESTARTS, iters=HARD_ITERS):
    """Fit hard codes of the family to X (N, D) from `restarts` starts, searched together.

    Each search starts from k-means++-seeded training images (their deviations from the
    mean, confined to the column bands with start="band" or scaled by 0.1 with "random"),
    then alternates the shortest codes, least-squares codebooks and log code frequencies
    until no code changes (a search that has settled repeats itself exactly, so the
    others may go on), at most `iters` times (iters=0: the starting codewords themselves,
    with uniform code frequencies).  Returns one {"C", "b", "a", "bits"} per start, the
    shortest first: a = log frequencies (M, K), bits = mean training code length.
    """
    M, K, R = n_dims, n_codes, restarts
    groups = pixel_groups(M, bands)
    b = np.tile(X.mean(axis=0), (R, 1))                                     # (R, D)
    C = np.stack([X[kmeans_pp(X, M * K, rng).reshape(M, K)] for _ in range(R)]) - b[:, None, None]
    if bands is not None or (M > 1 and start == "band"):
        C = C * column_bands(M)[:, None, :]
    elif M > 1:
        C = 0.1 * C
    a, codes, done = np.full((R, M, K), -math.log(K)), None, 0
    for done in range(iters):
        new = shortest_codes(X, C, b, a, sigma_x, codes)                     # (R, N, M)
        if codes is not None and np.array_equal(new, codes):
            break
        codes = new
        C, b, a = refit_hard_code(X, codes, C, groups)
    if codes is None:
        codes = shortest_codes(X, C, b, a, sigma_x)
    found = [{"C": C[r], "b": b[r], "a": a[r], "iters": done + 1,
              "bits": float(hard_code_bits(X, C[r], b[r], a[r], sigma_x, codes[r])["total"].mean())}
             for r in range(R)]
    return sorted(found, key=lambda f: f["bits"])


def refit_hard_code(X, codes, C_old, groups):
    """The half of a hard-code alternation after the codes: least-squares codebooks and
    bias for codes (..., N, M), and log code frequencies.  Returns C, b, a."""
    q = one_hot(codes, C_old.shape[-2])
    b, C = least_squares_codebooks(X, q, C_old, groups)
    return C, b, np.log(np.maximum(q.mean(axis=-3), FREQ_FLOOR))


def hard_code_bits(X, C, b, a, sigma_x, codes):
    """Per-image bits {"recon", "code", "total"} of sending `codes` (N, M): recon under
    sigma_x in the module's convention, code -log2 p(k) under the frequencies softmax(a)."""
    M = C.shape[0]
    log_pi = log_softmax(a, axis=-1)
    err = X - b - C[np.arange(M), codes].sum(axis=1)
    recon = np.einsum("nd,nd->n", err, err) / (2 * sigma_x**2) / LN2
    code = -log_pi[np.arange(M), codes].sum(axis=1) / LN2
    return {"recon": recon, "code": code, "total": recon + code}


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


WARMUP = 0.1                   # fraction of the Adam steps over which the rate rises


def learning_rate_factor(t, steps):
    """The rate at step t of `steps`, as a fraction of lr: a linear rise over the first
    WARMUP of the steps (Adam's first updates move every weight by about lr, whatever its
    gradient, which would throw a trained model off), then a cosine decay to 1/20."""
    rise = min(1.0, (t + 1) / max(1.0, WARMUP * steps))
    return rise * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t / steps)))


def train(model, X, steps=STEPS, lr=0.02, schedule="sigma", objective="bits-back",
          X_eval=None, eval_every=0, snapshot_every=0):
    """Full-batch Adam on a model's loss_and_grad (one step = one epoch).

    The learning rate follows learning_rate_factor.  Returns a history with the
    training objective per step ("loss", bits); at the start, every eval_every steps and
    after the last, F in bits on X ("train") and on X_eval ("heldout", with its
    "heldout_recon" and "heldout_code"; see record_eval); and with snapshot_every, copies
    of theta ("snapshots": [(step, theta)], from step 0 on).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}")
    opt = Adam([model.theta], lr=lr)
    history = {"loss": [], "eval_step": [], "train": [], "heldout": [], "heldout_recon": [],
               "heldout_code": [], "snapshots": []}
    if eval_every:
        record_eval(history, 0, model, X, X_eval)
    for t in range(steps):
        if snapshot_every and t % snapshot_every == 0:
            history["snapshots"].append((t, model.theta.copy()))
        beta, sigma = schedule_values(schedule, t / steps, model.sigma_x)
        loss, g = model.loss_and_grad(X, kl_weight=beta, variance=objective == "bits-back",
                                      sigma_x=sigma)
        opt.step([g], lr=lr * learning_rate_factor(t, steps))
        history["loss"].append(loss / LN2)
        if eval_every and ((t + 1) % eval_every == 0 or t + 1 == steps):
            record_eval(history, t + 1, model, X, X_eval)
    if snapshot_every:
        history["snapshots"].append((steps, model.theta.copy()))
    return history


def record_eval(history, step, model, X, X_eval):
    """Append F (bits, mean over images; the refined posterior's for a FactorialVQ) on the
    training and held-out sets to history."""
    history["eval_step"].append(step)
    history["train"].append(float(model.description_length(X)["total"].mean()))
    if X_eval is not None:
        dl = model.description_length(X_eval)
        for key in ("total", "recon", "code"):
            history["heldout" if key == "total" else f"heldout_{key}"].append(float(dl[key].mean()))


EM_ITERS = 50                  # variational EM iterations from each hard-code start
EM_SWEEPS = 2                  # mean-field sweeps per E-step (from the previous posterior)


def em_step(X, C, b, a, q, sigma, groups, learn_prior=True, sweeps=EM_SWEEPS):
    """One EM iteration: `sweeps` mean-field sweeps of q at noise sigma, then the
    least-squares codebooks and bias and (with learn_prior) the prior.  Returns C, b, a, q."""
    q = mean_field(X, C, b, a, q, sigma, sweeps=sweeps, tol=None)
    b, C = least_squares_codebooks(X, q, C, groups)
    if learn_prior:
        a = np.log(np.maximum(q.mean(axis=-3), FREQ_FLOOR))
    return C, b, a, q


def variational_em(X, C, b, a, sigma_x, groups, learn_prior=True, iters=EM_ITERS,
                   schedule="sigma", on_step=None):
    """Variational EM on F for the generative part of a factorial model, from R starts at
    once: C (R, M, K, D), b (R, D), a (R, M, K).  Returns (C, b, a, F) with F (R,) the
    final mean training F in bits of each.

    E-step: EM_SWEEPS mean-field sweeps from the previous posterior, each update the exact
    minimiser of F over one factor's q.  M-step: the least-squares codebooks and bias for
    that q (least_squares_codebooks) and the prior a = log mean_n q, each the exact
    minimiser of F over those parameters.  So at the true sigma_x, F on X never increases.
    The warm-up schedule (schedule_values) sets the E-step's temperature over the first
    half: a KL weight beta acts as the noise sigma * sqrt(beta).  on_step(t, C, b, a) is
    called before each iteration and after the last (for histories).
    """
    R, M, K = a.shape
    q = np.full((R, len(X), M, K), 1.0 / K)
    for t in range(iters):
        if on_step:
            on_step(t, C, b, a)
        beta, sigma = schedule_values(schedule, t / iters, sigma_x)
        C, b, a, q = em_step(X, C, b, a, q, sigma * math.sqrt(beta), groups, learn_prior,
                             EM_SWEEPS if t else 5 * EM_SWEEPS)
    if on_step:
        on_step(iters, C, b, a)
    q = mean_field(X, C, b, a, q, sigma_x, sweeps=5 * EM_SWEEPS, tol=None)
    F = [free_energy(X, C[r], b[r], a[r], np.log(np.clip(q[r], 1e-300, None)), sigma_x)
         for r in range(R)]
    return C, b, a, np.array([np.mean(recon + code) for recon, code in F]) / LN2


# ----------------------------------------------------------------------------- models


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

    def exact_dl(self, X, chunk_entries=CHUNK_ENTRIES):
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


class HardCode(CodeModel):
    """A hard code on a stochastic model's family: each image sends its shortest joint code.

    The family is that of FactorialVQ (bands for the slices, M = 1 for the standard VQ);
    with residual=True it is the greedy chain, stage d a K-code hard code fitted to what the
    stages before it left, and each image's codes chosen stage by stage.
    """

    def __init__(self, n_dims, n_codes, sigma_x=0.15, bands=None, residual=False, rng=None):
        super().__init__({"C": (n_dims, n_codes, D), "b": (D,), "a": (n_dims, n_codes)},
                         sigma_x, rng if rng is not None else np.random.default_rng(0))
        self.bands, self.residual = bands, residual

    def fit(self, X, init="band", **_):
        """Search the codebooks on X (N, 96); returns an empty history (nothing is trained)."""
        p, K = self.p, self.n_codes
        if not self.residual:
            found = hard_code_search(X, self.n_dims, K, self.sigma_x, self.rng, self.bands, init)[0]
            self.iters = found["iters"]
            for name in ("C", "b", "a"):
                p[name][...] = found[name]
            return {}
        R, self.iters = X, 0
        for d in range(self.n_dims):
            stage = hard_code_search(R, 1, K, self.sigma_x, self.rng)[0]
            self.iters += stage["iters"]
            if d == 0:
                p["b"][...], p["C"][0] = stage["b"], stage["C"][0]
                R = R - p["b"]
            else:                     # a later stage's bias shifts all its codewords alike
                p["C"][d] = stage["C"][0] + stage["b"]
            p["a"][d] = stage["a"][0]
            R = R - p["C"][d][self._stage_codes(R, d)]
        return {}

    def _stage_codes(self, r, d):
        """Stage d's shortest code for residuals r (N, D) measured from 0: (N,) ints."""
        return shortest_codes(r, self.p["C"][d:d + 1], np.zeros(D),
                              log_softmax(self.p["a"][d:d + 1], axis=-1), self.sigma_x)[:, 0]

    def codes(self, X):
        """The code each image sends: (N, M) ints."""
        p = self.p
        if not self.residual:
            return shortest_codes(X, p["C"], p["b"], log_softmax(p["a"], axis=-1), self.sigma_x)
        r, out = X - p["b"], np.empty((len(X), self.n_dims), dtype=np.int64)
        for d in range(self.n_dims):
            out[:, d] = self._stage_codes(r, d)
            r = r - p["C"][d][out[:, d]]
        return out

    def posteriors(self, X):
        """The one-hot posterior of the code sent: list of M arrays (N, K)."""
        return list(one_hot(self.codes(X), self.n_codes).transpose(1, 0, 2))

    def sample_codes(self, X, rng=None):
        """The code sent, as a draw from the one-hot posterior: codes (N, M), log q = 0."""
        return self.codes(X), np.zeros(len(X))

    def description_length(self, X):
        """Per-image bits {"recon", "code", "total"} of the codes sent."""
        p = self.p
        return hard_code_bits(X, p["C"], p["b"], p["a"], self.sigma_x, self.codes(X))


class FactorialVQ(CodeModel):
    """A factorial stochastic VQ: M factors of K codes and a recognition network.

    The recognition network maps x to M blocks of K logits: linear (n_hidden=0) or an
    mlp.MLP with one hidden layer (activation `act`), whose weights W1, c1, W2, c2 are
    contiguous in theta and are the MLP's own views.  With bands (M, D) each factor's
    codewords and recognition inputs are confined to its band (the paper's separate VQs on
    vertical slices).  With
    refine > 0 the posterior used for scoring and sampling is the recognition network's
    output improved by up to `refine` mean-field sweeps.
    """

    def __init__(self, n_dims, n_codes, sigma_x=0.15, n_hidden=0, bands=None, refine=0,
                 learn_prior=True, rng=None, act="tanh"):
        if n_dims < 1 or n_codes < 2:
            raise ValueError("need n_dims >= 1 and n_codes >= 2")
        M, K, H = n_dims, n_codes, n_hidden
        layout = {"C": (M, K, D), "b": (D,), "a": (M, K)}
        if H:
            layout.update({"W1": (D, H), "c1": (H,), "W2": (H, M * K), "c2": (M * K,)})
        else:
            layout.update({"W": (D, M * K), "c": (M * K,)})
        super().__init__(layout, sigma_x, rng if rng is not None else np.random.default_rng(0))
        self.n_hidden, self.refine, self.bands, self.act = H, int(refine), bands, act
        if not learn_prior:
            self.mask["a"][...] = 0.0
        if bands is not None:
            if bands.shape != (M, D):
                raise ValueError(f"bands must have shape {(M, D)}")
            self.mask["C"][...] = bands[:, None, :]
            if H:
                groups = np.array_split(np.arange(H), M)
                unit_band = np.zeros((M, H))
                for d, g in enumerate(groups):
                    unit_band[d, g] = 1.0
                self.mask["W1"][...] = bands.T @ unit_band                     # band d -> units of d
                self.mask["W2"][...] = np.repeat(unit_band.T, K, axis=1)      # units of d -> q_d
            else:
                self.mask["W"][...] = np.repeat(bands.T, K, axis=1)           # (D, M*K)

    # --- recognition ---------------------------------------------------------

    def _net(self, flat):
        """The hidden-layer recognition network over a flat vector laid out like theta
        (its slice W1 .. c2): theta's network, or views into a gradient or the mask."""
        net_slice = slice(self._layout["W1"][0].start, self._layout["c2"][0].stop)
        return mlp.MLP((D, self.n_hidden, self.n_dims * self.n_codes), flat[net_slice],
                       self.act)

    def recognition_logits(self, X, cache=None):
        """Recognition logits (N, M, K); fills `cache` with what backprop needs."""
        p = self.p
        if self.n_hidden:
            out, cache_net = self._net(self.theta).forward(X)
            if cache is not None:
                cache["net"] = cache_net
        else:
            out = X @ p["W"] + p["c"]
        return out.reshape(len(X), self.n_dims, self.n_codes)

    def _recognition_backward(self, X, g_logits, cache, flat):
        """Write the recognition weights' gradients into the flat gradient `flat`."""
        gl = g_logits.reshape(len(X), -1)
        if self.n_hidden:
            grad, _ = self._net(self.theta).backward(cache["net"], gl, input_grad=False)
            self._net(flat).params[...] = grad
        else:
            g = self._views(flat)
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
        self._recognition_backward(X, g["logits"], cache, flat)
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

    def contributions(self, X):
        """Each factor's expected contribution sum_k q_d(k|x) C_d[k]: (M, N, D)."""
        return np.matmul(self._q(X).transpose(1, 0, 2), self.p["C"])

    def mean_reconstruction(self, X):
        """E_q[xhat(k)] = b + sum_d sum_k q_d(k|x) C_d[k]: (N, D)."""
        return self.p["b"] + self.contributions(X).sum(axis=0)

    def sample_codes(self, X, rng):
        """Draw k ~ q(k|x): codes (N, M) ints and log q(k|x) (N,) in nats."""
        q = self._q(X)                                                  # (N, M, K)
        codes = inverse_cdf(q, rng.random(q.shape[:2]))
        log_q = np.log(np.take_along_axis(q, codes[..., None], axis=-1)[..., 0]).sum(axis=1)
        return codes, log_q

    # --- initialisation --------------------------------------------------------

    def init_from_hard_code(self, X, start="band", restarts=HARD_RESTARTS, iters=HARD_ITERS):
        """Start from the hard codes of this family fitted to X (N, 96), one per restart
        (see hard_code_search; start="band" or "random" picks their starting codewords,
        iters=0 keeps those).  The model takes the shortest; fit() trains from every one."""
        t0 = time.perf_counter()
        self.starts = hard_code_search(X, self.n_dims, self.n_codes, self.sigma_x, self.rng,
                                       self.bands, start, restarts, iters)
        self.search_seconds = time.perf_counter() - t0
        self.set_generative(self.starts[0])
        self.init_recognition()
        return self

    def hard_code(self):
        """The shortest hard code found by init_from_hard_code, as a HardCode model."""
        hard = HardCode(self.n_dims, self.n_codes, self.sigma_x, bands=self.bands)
        for name in ("C", "b", "a"):
            hard.p[name][...] = self.starts[0][name]
        return hard

    def set_generative(self, found):
        """Codebooks, bias and code frequencies from a hard code (frequencies floored at
        START_FREQ_FLOOR, so that training can still revive a code no training image used)."""
        p = self.p
        p["b"][...] = found["b"]
        p["C"][...] = found["C"] * self.mask["C"]
        if self.mask["a"].any():
            p["a"][...] = np.maximum(found["a"], math.log(START_FREQ_FLOOR))

    def init_recognition(self):
        """A linear recognition network starts as one mean-field step with the other
        factors at zero, the posterior of each factor alone:
        logits_d(k) = log pi_d(k) + (C_d[k].(x - b) - ||C_d[k]||^2 / 2) / sigma_x^2;
        a hidden layer starts as mlp.MLP.init draws it."""
        p, M, K = self.p, self.n_dims, self.n_codes
        if self.n_hidden:
            self._net(self.theta).init(self.rng)
            p["W1"][...] *= self.mask["W1"]
            p["W2"][...] *= self.mask["W2"]
        else:
            C, s2 = p["C"], self.sigma_x**2
            p["W"][...] = (C / s2).transpose(2, 0, 1).reshape(D, M * K) * self.mask["W"]
            p["c"][...] = (log_softmax(p["a"], axis=-1)
                           - (0.5 * np.einsum("mkd,mkd->mk", C, C) + C @ p["b"]) / s2).ravel()

    def fit(self, X, steps=STEPS, lr=LR, schedule="sigma", objective="bits-back", X_eval=None,
            eval_every=0, snapshot_every=0, select=True):
        """Train on X (N, 96) from the hard-code starts; returns the history dict.

        Bits-back training has two phases:
        1. variational EM on F for the generative part from every hard-code start
           (variational_em, warm-up `schedule`); the start that ends with the lowest
           training F is kept;
        2. the paper's autoencoder training: `steps` full-batch Adam steps on F of the
           recognition network's posterior, recognition and generative weights together,
           from the EM's generative model and a recognition network initialised to match it.
        The history runs through both (its steps count the EM iterations, then the Adam
        steps), with the refined F.  select=False runs the EM from the shortest hard code
        alone.  objective="meanfield" trains jointly by Adam on the earlier reproduction's
        loss instead (it has no closed-form M-step), from the shortest hard code.
        """
        if not hasattr(self, "starts"):
            raise RuntimeError("call init_from_hard_code first")
        kw = dict(lr=lr, X_eval=X_eval, eval_every=eval_every, snapshot_every=snapshot_every)
        if objective != "bits-back":
            return train(self, X, steps, schedule=schedule, objective=objective, **kw)
        starts = self.starts if select else self.starts[:1]
        stack = lambda key: np.stack([found[key] for found in starts])
        C0, b0 = stack("C") * self.mask["C"], stack("b")
        learn_prior = bool(self.mask["a"].any())
        a0 = (np.maximum(stack("a"), math.log(START_FREQ_FLOOR)) if learn_prior
              else np.repeat(self.p["a"][None], len(starts), axis=0))
        em = dict(groups=pixel_groups(self.n_dims, self.bands), schedule=schedule,
                  learn_prior=learn_prior)
        C, b, a, F = variational_em(X, C0, b0, a0, self.sigma_x, **em)
        best = int(np.argmin(F))
        history = {"loss": [], "eval_step": [], "train": [], "heldout": [], "heldout_recon": [],
                   "heldout_code": [], "snapshots": []}
        if eval_every or snapshot_every:          # replay the kept start, recording
            p = self.p

            def record(t, C_t, b_t, a_t):
                due = lambda every: every and (t % every == 0 or t == EM_ITERS)
                if not (due(snapshot_every) or due(eval_every)):
                    return
                p["C"][...], p["b"][...], p["a"][...] = C_t[0], b_t[0], a_t[0]
                self.init_recognition()            # the refinement starts from it
                if due(snapshot_every):
                    history["snapshots"].append((t, self.theta.copy()))
                if due(eval_every):
                    record_eval(history, t, self, X, X_eval)

            keep = slice(best, best + 1)
            variational_em(X, C0[keep], b0[keep], a0[keep], self.sigma_x, on_step=record, **em)
        self.p["C"][...], self.p["b"][...], self.p["a"][...] = C[best], b[best], a[best]
        self.init_recognition()
        later = train(self, X, steps, schedule="none", **kw)
        for key, values in later.items():
            if key == "snapshots":
                values = [(EM_ITERS + t, theta) for t, theta in values[1:]]
            elif key == "eval_step":
                values = [EM_ITERS + t for t in values[1:]]
            elif key not in ("loss",):
                values = values[1:]          # its step 0 is the EM's last step
            history.setdefault(key, []).extend(values)
        return history


class StochasticVQ(FactorialVQ):
    """The standard stochastic VQ: one factor of K codes (FactorialVQ with M = 1), whose
    posterior is the exact Boltzmann one once refined."""

    def __init__(self, n_codes, sigma_x=0.15, refine=0, learn_prior=True, rng=None):
        super().__init__(1, n_codes, sigma_x, refine=refine, learn_prior=learn_prior, rng=rng)


class ResidualVQ(CodeModel):
    """The earlier reproduction's "separate" VQs, read as a residual chain.

    Stage d is a K-code stochastic VQ whose linear-softmax recognition sees the residual
    r_d = x - b - sum_{d'<d} C_d'[k_d'] left by the codes *sampled* at earlier stages, so
    q(k|x) = prod_d q_d(k_d | r_d) is not factorial.  Its F is
    E_q[ ||x - xhat(k)||^2 / (2 sigma_x^2) + sum_d log(q_d / pi_d) ] / ln 2, exact by
    enumerating the K^M paths, or by Monte Carlo when there are too many.  Trained from the
    greedy hard chain on that exact F (fit).
    """

    def __init__(self, n_dims, n_codes, sigma_x=0.15, rng=None):
        if n_dims < 1 or n_codes < 2:
            raise ValueError("need n_dims >= 1 and n_codes >= 2")
        M, K = n_dims, n_codes
        super().__init__({"C": (M, K, D), "b": (D,), "a": (M, K), "W": (M, D, K), "c": (M, K)},
                         sigma_x, rng if rng is not None else np.random.default_rng(0))

    def init_from_hard_code(self, X, start="band"):
        """Start from the greedy hard chain fitted to X (N, 96) (see HardCode; `start` is
        not used: a chain has no bands), its code frequencies floored at START_FREQ_FLOOR,
        and each stage's recognition the posterior of that stage alone given its residual
        r: logits_d(k) = log pi_d(k) + (C_d[k].r - ||C_d[k]||^2 / 2) / sigma_x^2."""
        t0 = time.perf_counter()
        self.hard = HardCode(self.n_dims, self.n_codes, self.sigma_x, residual=True, rng=self.rng)
        self.hard.fit(X)
        self.search_seconds = time.perf_counter() - t0
        p, s2 = self.p, self.sigma_x**2
        for name in ("C", "b"):
            p[name][...] = self.hard.p[name]
        p["a"][...] = np.maximum(self.hard.p["a"], math.log(START_FREQ_FLOOR))
        p["W"][...] = p["C"].transpose(0, 2, 1) / s2
        p["c"][...] = (log_softmax(p["a"], axis=-1)
                       - 0.5 * np.einsum("mkd,mkd->mk", p["C"], p["C"]) / s2)
        return self

    def hard_code(self):
        """The greedy hard chain this model started from."""
        return self.hard

    def fit(self, X, steps=STEPS, lr=LR, schedule="sigma", objective="bits-back",
            X_eval=None, eval_every=0, snapshot_every=0):
        """`steps` full-batch Adam steps on the chain's exact F, every parameter together,
        from the hard start (init_from_hard_code).  The chain's posterior is not factorial,
        so it has no closed-form EM and no variance-free legacy loss: `schedule` and
        `objective` do not apply.  A chain of more than MAX_ENUMERATION paths keeps its
        start.  Returns train()'s history."""
        if not hasattr(self, "hard"):
            raise RuntimeError("call init_from_hard_code first")
        if self.n_codes**self.n_dims > MAX_ENUMERATION:
            return {}
        return train(self, X, steps, lr=lr, schedule="none", X_eval=X_eval,
                     eval_every=eval_every, snapshot_every=snapshot_every)

    def loss_and_grad(self, X, kl_weight=1.0, variance=True, sigma_x=None):
        """Mean chain F (nats) on X and its gradient, a flat array like theta (train()'s
        interface; `variance` does not apply to the chain's exact F)."""
        total, grad = self.chain_free_energy(X, sigma_x, kl_weight, grad=True)
        return float(np.mean(total)), grad * self.trainable

    def _prefix_sum(self, blocks, d):
        """sum_{e<d} blocks[e][:, k_e] for every prefix (k_0 .. k_{d-1}): blocks[e]
        (width, K) -> (width, K^d), prefix index sum_e k_e K^e (the latest stage the most
        significant digit, so that a new stage's choices stack as leading blocks)."""
        K, width = self.n_codes, blocks[0].shape[0] if blocks else 1
        out = np.zeros((width,) + (1,) * d)
        for e, block in enumerate(blocks):
            shape = [width] + [1] * d
            shape[d - e] = K
            out = out + block.reshape(shape)
        return np.broadcast_to(out, (width,) + (K,) * d).reshape(width, -1)

    def chain_free_energy(self, X, sigma_x=None, kl_weight=1.0, grad=False):
        """The chain's F on X (N, D) over all its K^M paths, in nats.

        Returns recon (N,), code (N,) and the marginals q(k_d | x) (M arrays (N, K)); with
        grad=True instead recon + kl_weight * code (N,) and its mean's gradient over every
        parameter, a flat array like theta.  The paths form a tree, level d holding the K^d
        prefixes.  Each stage is linear in its input, so every prefix's logits come from
        T.W_d and C_e.W_d (T = x - b), and ||x - xhat(k)||^2 from the scores T.C_d[k] and
        the codebooks' Gram matrix: no (N, paths, D) array is made.  The cost of a choice is
        its code term plus the expected cost below it, summed up the tree.  Arrays over a
        level are (N, K, K^d): the prefixes last, the long axis innermost.
        """
        p, M, K = self.p, self.n_dims, self.n_codes
        N, s2 = len(X), (self.sigma_x if sigma_x is None else sigma_x) ** 2
        C, W = p["C"], p["W"]
        T = X - p["b"]
        log_pi = log_softmax(p["a"], axis=-1)
        TW = (T @ W.transpose(1, 0, 2).reshape(D, M * K)).reshape(N, M, K) + p["c"]
        U = code_scores(X, C, p["b"])                                         # (N, M, K)
        gram = (C.reshape(M * K, D) @ C.reshape(M * K, D).T).reshape(M, K, M, K)
        reach, score, sq = np.ones((N, 1)), np.zeros((N, 1)), np.zeros(1)
        reaches, qs, terms, marg = [], [], [], []
        code = np.zeros(N)
        for d in range(M):
            # logits of stage d at every prefix: (T - prefix).W_d + c_d, (N, K, K^d)
            z = TW[:, d, :, None] - self._prefix_sum([(C[e] @ W[d]).T for e in range(d)], d)
            z -= _max(np.moveaxis(z, 1, -1))[:, None, :]
            q = np.exp(z)
            total = q.sum(axis=1, keepdims=True)
            q /= total
            z -= np.log(total)
            z -= log_pi[d][:, None]
            term = z                                                          # log(q_d / pi_d)
            qs.append(q)
            terms.append(term)
            marg.append(np.einsum("np,nkp->nk", reach, q))
            if not grad:                           # with grad the sum up the tree gives F
                code += np.einsum("np,np->n", reach, np.einsum("nkp,nkp->np", q, term))
            reach = (reach[:, None, :] * q).reshape(N, -1)                     # q(prefix | x)
            reaches.append(reach)
            score = (score[:, None, :] + U[:, d, :, None]).reshape(N, -1)
            cross = self._prefix_sum([gram[e, :, d].T for e in range(d)], d)   # (K, K^d)
            sq = (sq + 2.0 * cross + np.diagonal(gram[d, :, d])[:, None]).reshape(-1)
        err = score                                    # ||T - prefix||^2 / (2 s2), in place
        err *= -1.0 / s2
        err += (np.einsum("nd,nd->n", T, T)[:, None] + sq) / (2 * s2)        # (N, K^M)
        if not grad:
            return np.einsum("np,np->n", reach, err), code, marg
        flat = np.zeros_like(self.theta)
        g = self._views(flat)
        # through the path probabilities: choosing k at prefix p costs its code term plus
        # the expected cost below; d F / d logits = q(p) q(k|p) (cost(k) - E_q cost) / N
        below = err
        dT = np.zeros_like(T)
        for d in reversed(range(M)):
            cost = below.reshape(N, K, K**d) + (terms[d] if kl_weight == 1.0
                                                 else kl_weight * terms[d])
            below = np.einsum("nkp,nkp->np", qs[d], cost)
            cost -= below[:, None, :]
            cost *= reaches[d].reshape(N, K, -1)
            per_image = cost.sum(axis=2) / N                                  # (N, K)
            Y = cost.sum(axis=0) / N                                          # (K, K^d)
            g["W"][d] = T.T @ per_image
            g["c"][d] = Y.sum(axis=1)
            dT += per_image @ W[d].T
            Y = Y.reshape((K,) * (d + 1))          # axes k_d, k_{d-1}, ..., k_0
            for e in range(d):      # a prefix holding C_e[k] shifts stage d's logits by -C_e[k].W_d
                Ye = Y.sum(axis=tuple(a for a in range(1, d + 1) if a != d - e))   # (K_d, K_e)
                g["W"][d] -= C[e].T @ Ye.T
                g["C"][e] -= Ye.T @ W[d].T
        # through the reconstruction error, with the path probabilities fixed
        mean_q = reach.sum(axis=0).reshape((K,) * M) / N     # axes k_{M-1}, ..., k_0
        dT += (T - sum(marg[e] @ C[e] for e in range(M))) / (s2 * N)
        for d in range(M):
            for e in range(M):
                if e == d:
                    pair = np.diag(marg[d].sum(axis=0) / N)
                else:
                    pair = mean_q.sum(axis=tuple(a for a in range(M) if a not in (M - 1 - d,
                                                                                 M - 1 - e)))
                    pair = pair.T if d < e else pair                          # (K_d, K_e)
                g["C"][d] += pair @ C[e] / s2
            g["C"][d] -= marg[d].T @ T / (s2 * N)
            g["a"][d] = kl_weight * (np.exp(log_pi[d]) - marg[d].mean(axis=0))
        g["b"][...] = -dT.sum(axis=0)
        return below[:, 0], flat

    def sample_codes(self, X, rng):
        """Draw k ~ q(k|x) down the chain: codes (N, M), log q(k|x) (N,) in nats."""
        p = self.p
        r, log_q = X - p["b"], np.zeros(len(X))
        codes = np.empty((len(X), self.n_dims), dtype=np.int64)
        for d in range(self.n_dims):
            lq = log_softmax(r @ p["W"][d] + p["c"][d], axis=-1)
            k = inverse_cdf(np.exp(lq), rng.random(len(X)))
            codes[:, d] = k
            log_q += lq[np.arange(len(X)), k]
            r = r - p["C"][d][k]
        return codes, log_q

    def _chain_exact(self, X, chunk_entries=CHUNK_ENTRIES):
        """Exact recon, code (nats, (N,) each) and E_q[xhat] (N, D) over every path,
        a chunk of images at a time so that the (images x paths) arrays stay small."""
        step = max(1, chunk_entries // self.n_codes**self.n_dims)
        parts = []
        for i in range(0, len(X), step):
            recon, code, marg = self.chain_free_energy(X[i:i + step])
            xhat = self.p["b"] + sum(m @ C for m, C in zip(marg, self.p["C"]))
            parts.append((recon, code, xhat))
        return tuple(np.concatenate(column) for column in zip(*parts))

    def mean_reconstruction(self, X, n_draws=256, rng=None):
        """E_q[xhat(k)] down the chain (N, D): exact, or a Monte Carlo mean of n_draws."""
        if self.n_codes**self.n_dims <= MAX_ENUMERATION:
            return self._chain_exact(X)[2]
        codes, _ = self.sample_codes(np.repeat(X, n_draws, axis=0),
                                     rng if rng is not None else np.random.default_rng(0))
        return self.reconstruct(codes).reshape(len(X), n_draws, D).mean(axis=1)

    def description_length(self, X, n_draws=64, rng=None):
        """Per-image bits {"recon", "code", "total"}; with Monte Carlo also "se" of total."""
        if self.n_codes**self.n_dims <= MAX_ENUMERATION:
            recon, code, _ = self._chain_exact(X)
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


class PCA:
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


# ----------------------------------------------------------------------------- the model registry
#
# Every 1994 model, once.  Adding one is an entry here, its class above and its colour in
# the figure script.  A model's random stream is fixed by its entry, not by its place in
# the table: every number of a seed follows from (seed, stream), so reordering or adding
# entries moves no number.


class Spec(NamedTuple):
    label: str        # table label: {MK}, {M}, {K} and {w} (slice widths) are filled in
    stream: int       # random-stream id: training draws from default_rng([seed, 1000 + id])
    cost: int         # run order, the slowest first, so that two workers finish together
    build: Callable   # (M, K, sigma_x, refine, rng) -> an untrained model
    start_of: str = None    # a hard code: the stochastic model whose start it is
    coded: bool = False     # the bits-back coder codes it (--compress, --bitstream)


MODELS = {
    "standard_vq": Spec("standard {MK}-VQ", 0, 3, coded=True,           # M = 1, the same M K codes
                        build=lambda M, K, s, r, rng: StochasticVQ(M * K, s, refine=r, rng=rng)),
    "separate_slices": Spec("separate {M} x 8x{w} slices", 1, 2, coded=True,
                            build=lambda M, K, s, r, rng: FactorialVQ(
                                M, K, s, bands=column_bands(M), refine=r, rng=rng)),
    "residual_vq": Spec("residual chain {M}x{K}", 2, 1, coded=True,
                        build=lambda M, K, s, r, rng: ResidualVQ(M, K, s, rng=rng)),
    "factorial_vq": Spec("factorial {M}x{K} VQ", 3, 0, coded=True,
                         build=lambda M, K, s, r, rng: FactorialVQ(M, K, s, refine=r, rng=rng)),
    "pca5": Spec("PPCA, 5 components", 4, 9, build=lambda M, K, s, r, rng: PCA(5, s)),
    "pca24": Spec("PPCA, 24 components", 5, 8, build=lambda M, K, s, r, rng: PCA(24, s)),
    "hard_standard": Spec("hard code: {MK}-means", 6, 7, start_of="standard_vq",
                          build=lambda M, K, s, r, rng: HardCode(1, M * K, s, rng=rng)),
    "hard_slices": Spec("hard code: {M} x 8x{w} slices", 7, 6, start_of="separate_slices",
                        build=lambda M, K, s, r, rng: HardCode(M, K, s, bands=column_bands(M),
                                                               rng=rng)),
    "hard_residual": Spec("hard code: greedy residual {M}x{K}", 8, 5, start_of="residual_vq",
                          build=lambda M, K, s, r, rng: HardCode(M, K, s, residual=True, rng=rng)),
    "hard_factorial": Spec("hard code: factorial {M}x{K}", 9, 4, start_of="factorial_vq",
                           build=lambda M, K, s, r, rng: HardCode(M, K, s, rng=rng)),
}
MODEL_NAMES = tuple(MODELS)
# each hard code and the stochastic model whose family it shares and whose start it is
HARD_CODES = {name: spec.start_of for name, spec in MODELS.items() if spec.start_of}
STOCHASTIC = tuple(name for name, spec in MODELS.items() if not spec.start_of)


def model_stream(name):
    """The random-stream id a model trains from: a hard code shares its stochastic
    counterpart's, so that it is exactly where that model's training starts."""
    return MODELS[HARD_CODES.get(name, name)].stream


def by_cost(names):
    """names in running order, the slowest first."""
    return sorted(names, key=lambda name: MODELS[name].cost)


def model_label(name, M, K):
    widths = sorted({len(g) for g in np.array_split(np.arange(WIDTH), min(M, WIDTH))})
    w = "-".join(map(str, (widths[0], widths[-1]) if len(widths) > 1 else widths))
    return MODELS[name].label.format(MK=M * K, M=M, K=K, w=w)


def model_shape(name, M, K):
    """(factors, codes per factor) of a discrete model's family, or None for PCA."""
    if name.startswith("pca"):
        return None
    return (1, M * K) if HARD_CODES.get(name, name) == "standard_vq" else (M, K)


# ----------------------------------------------------------------------------- evaluation


def build_model(name, n_dims=4, n_units_per_dim=6, sigma_x=0.15, refine=50, rng=None):
    """A fresh, untrained model by name (see MODELS)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    return MODELS[name].build(n_dims, n_units_per_dim, sigma_x, refine, rng)


def fit_model(name, X, seed=0, steps=STEPS, schedule="sigma", objective="bits-back", init="band",
              X_eval=None, eval_every=0, snapshot_every=0, **model_kw):
    """Build and train model `name` on X (N, 96); returns (model, history).

    Each model draws from its own generator, derived from (seed, model), so results do not
    depend on which other models run or in which process.  A hard code shares its
    stochastic counterpart's generator, so that it is exactly where that model's training
    starts.
    """
    rng = np.random.default_rng([seed, 1000 + model_stream(name)])
    model = build_model(name, rng=rng, **model_kw)
    if isinstance(model, PCA):
        return model.fit(X), {}
    if isinstance(model, HardCode):
        return model, model.fit(X, init=init)
    kw = dict(steps=steps, schedule=schedule, objective=objective, snapshot_every=snapshot_every)
    if isinstance(model, (FactorialVQ, ResidualVQ)):
        model.init_from_hard_code(X, start=init)
    return model, model.fit(X, X_eval=X_eval, eval_every=eval_every, **kw)


# --- saved models ----------------------------------------------------------------------------
#
# A trained model and its history can be kept in a file and loaded instead of trained.  The
# file's header holds the settings that trained it; a run that loads it names the settings it
# would train with, and the file is refused unless they are the same, so that a loaded model
# is the very model the run would have trained and every number it gives is the same.

SAVED_CLASSES = {c.__name__: c for c in (HardCode, FactorialVQ, StochasticVQ, ResidualVQ, PCA)}
# what trains a 1994 model besides its name and seed (a PCA: the first and the noise alone)
TRAINING_KEYS = ("n_samples", "n_dims", "n_units_per_dim", "steps", "sigma_x", "objective",
                 "schedule", "init", "refine")


def training_config(name, seed, cfg):
    """The settings that train model `name` at `seed` under a run's cfg, with the reading
    of the generator its images come from."""
    keys = ("n_samples", "sigma_x") if name.startswith("pca") else TRAINING_KEYS
    return {"seed": seed, **{k: cfg[k] for k in keys}, **data_reading(cfg)}


def evaluate(model, X, legacy=False, rng=None):
    """Mean bits per image on X: recon, code, total, exact (None if skipped), and where they
    apply total_amortised (recognition network alone), total_se (Monte Carlo), legacy (the
    earlier reproduction's accounting, not a code length) and min_gap = min_n (F - DL*)."""
    dl = (model.description_length(X, rng=rng) if isinstance(model, ResidualVQ)
          else model.description_length(X))
    out = {k: float(dl[k].mean()) for k in ("recon", "code", "total")}
    exact = model.exact_dl(X)
    out["exact"] = None if exact is None else float(exact.mean())
    if exact is not None and not isinstance(model, PCA):
        out["min_gap"] = float((dl["total"] - exact).min())
    if "se" in dl:
        out["total_se"] = float(np.sqrt(np.sum(dl["se"] ** 2)) / len(X))
    if isinstance(model, FactorialVQ):
        if model.refine:
            out["total_amortised"] = float(model.description_length(X, refine=0)["total"].mean())
        if legacy:
            out["legacy"] = float(model.description_length(X, refine=0, variance=False)
                                  ["total"].mean())
    return out


@functools.lru_cache(maxsize=16)
def load_data(seed, n_samples=200, n_test=2000, *reading):
    """(train (n_samples, 96), held-out (n_test, 96)) for a seed and a reading of the
    generator (blur_sigma, heights as a tuple, heights_dist; the default if none); cached,
    so read-only."""
    data = (generate_spline_images(n_samples, seed, 0, *reading)[0],
            generate_spline_images(n_test, seed, 1, *reading)[0])
    for array in data:
        array.flags.writeable = False
    return data


def load_run_data(seed, cfg):
    """load_data for a seed under a run's cfg, at its reading of the generator."""
    r = data_reading(cfg)
    return load_data(seed, cfg["n_samples"], cfg["n_test"], r["blur_sigma"],
                     tuple(r["heights"]), r["heights_dist"])


def run_comparison(seed=0, n_dims=4, n_units_per_dim=6, n_samples=200, n_test=2000, steps=STEPS,
                   sigma_x=0.15, objective="bits-back", schedule="sigma", init="band", refine=50,
                   models=MODEL_NAMES, eval_every=0, snapshot_every=0, score=False, workers=1,
                   folder=None, reading=None):
    """Train the paper's comparison at one seed.

    Returns {"models": {NAME: fitted model}, "histories": {NAME: history},
    "train": (n_samples, 96), "heldout": (n_test, 96)}, and with score=True also
    "scores": {NAME: evaluate(model, heldout)}.  With eval_every > 0 the histories hold F
    on both sets every eval_every steps, with snapshot_every > 0 copies of the parameters
    (for the figures and the animation).  workers > 1 fits the models in parallel
    processes; the results are the same.  folder: an fc.ModelFolder the models are saved to or
    loaded from (a loaded model has an empty history); reading: the generator's, as
    data_reading names it (the default if None).
    """
    reading = data_reading(reading or {})
    X, Xt = load_run_data(seed, {"n_samples": n_samples, "n_test": n_test, **reading})
    kw = dict(seed=seed, steps=steps, schedule=schedule, objective=objective, init=init,
              X_eval=Xt, eval_every=eval_every, snapshot_every=snapshot_every, n_dims=n_dims,
              n_units_per_dim=n_units_per_dim, sigma_x=sigma_x, refine=refine)
    tasks = [(name, X, Xt, kw, score, folder, reading) for name in by_cost(models)]
    fitted = {name: rest for name, *rest in kit.map_workers(_fit_task, tasks, workers)}
    out = {"models": {n: fitted[n][0] for n in models},
           "histories": {n: fitted[n][1] for n in models}, "train": X, "heldout": Xt}
    if score:
        out["scores"] = {n: fitted[n][2] for n in models}
    return out


def _fit_task(task):
    """Worker: fit (or load) one model, and score it on the held-out set if asked."""
    name, X, Xt, kw, score, folder, reading = task
    config = training_config(name, kw["seed"], {**kw, **reading, "n_samples": len(X)})
    config |= {k: kw[k] for k in ("eval_every", "snapshot_every") if kw[k]}  # in its history
    model, history, _ = fc.fit_or_load(folder, fc.model_key(name, kw["seed"], len(X)), config,
                                    lambda: fit_model(name, X, **kw))
    return name, model, history, evaluate(model, Xt) if score else None


def _run_task(task):
    """Worker: train and score one (seed, model) and, when it is asked for too, the hard
    code that the model started from (the same search, so it is not run twice).
    Returns (seed, [(NAME, result)]) in plain numbers."""
    seed, name, cfg, folder = task
    X, Xt = load_run_data(seed, cfg)
    fit = lambda: fit_model(name, X, seed=seed, **{k: cfg[k] for k in TRAINING_KEYS[1:]})
    model, _, seconds = fc.fit_or_load(folder, fc.model_key(name, seed, cfg["n_samples"]),
                                    training_config(name, seed, cfg), fit)
    legacy = cfg["objective"] == "meanfield"
    out = [(name, model, seconds)]
    hard = _shared_hard_code(name, cfg["models"])
    if hard:
        out.append((hard, model.hard_code(), model.search_seconds))
        if folder and folder.mode == "save":
            folder.save(fc.model_key(hard, seed, cfg["n_samples"]), training_config(hard, seed, cfg),
                        model.hard_code(), {}, model.search_seconds)
    results = []
    for label, fitted, seconds in out:
        rng = np.random.default_rng([seed, 2000 + MODELS[label].stream])
        t1 = time.perf_counter()
        result = {"heldout": evaluate(fitted, Xt, legacy, rng),
                  "train": evaluate(fitted, X, legacy, rng)}
        result["seconds"] = seconds + time.perf_counter() - t1
        results.append((label, result))
    return seed, results


def _shared_hard_code(name, models):
    """The hard code among `models` that is model `name`'s first start, or None."""
    for hard, counterpart in HARD_CODES.items():
        if counterpart == name and hard in models:
            return hard
    return None


def run_seeds(cfg, seeds, workers=1, log=kit.progress_logger(True), folder=None):
    """Run every model of cfg["models"] at every seed, in `workers` processes, each saved to
    or loaded from the fc.ModelFolder `folder` if given.

    Returns {seed: {NAME: result}}; results are identical whatever the worker count.
    """
    shared = {_shared_hard_code(name, cfg["models"]) for name in cfg["models"]}
    tasks = [(s, name, cfg, folder) for s in seeds
             for name in by_cost(cfg["models"]) if name not in shared]
    if folder and folder.mode == "load":          # every file checked before any work
        for s, name, *_ in tasks:
            folder.load(fc.model_key(name, s, cfg["n_samples"]), training_config(name, s, cfg))
    results = {s: {} for s in seeds}

    def collect(item):
        seed, pairs = item
        for name, res in pairs:
            results[seed][name] = res
            log(f"seed {seed} {name:16s} held-out F {res['heldout']['total']:7.2f} bits "
                f"({res['seconds']:.2f} s)  [{sum(map(len, results.values()))}/"
                f"{len(seeds) * len(cfg['models'])}]")

    if workers > 1:
        for s in seeds:                 # render once here; forked workers inherit the cache
            load_run_data(s, cfg)
    for item in kit.map_workers(_run_task, tasks, workers):
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


# ----------------------------------------------------------------------------- open questions
#
# The earlier reproduction listed these and never ran them: how the description length
# depends on the number of factors at a fixed 24 codewords and on bigger codes; whether
# factors align with control points; whether warm-up schedules matter; and the floor, the
# description length of the true generator itself.  Beyond them: how the comparison depends
# on sigma_x, which the paper does not state (SIGMA_SWEEP).

SWEEP_FIXED = ((1, 24), (2, 12), (3, 8), (4, 6), (6, 4), (8, 3), (12, 2))
SWEEP_LARGER = ((4, 8), (4, 12), (4, 16), (5, 6))
ALIGNMENT_MODELS = ((4, 6), (5, 6))
ANNEALING_RUNS = tuple((s, i) for i in ("band", "random") for s in ("sigma", "kl", "none"))
EXPERIMENTS = ("training", "sweep", "alignment", "annealing", "limit", "movement", "sigma")
EARLIER_EXPERIMENT = "earlier"      # the earlier reproduction's recipe: by name, not in all
SIGMA_SWEEP = (0.05, 0.1, 0.15, 0.2, 0.22, 0.24, 0.26, 0.28, 0.3, 0.4)
SIGMA_MODELS = STOCHASTIC
# the paper's held-out (recon, code) bits, the four numbers a sigma_x is matched against
PAPER_SPLIT = {"factorial_vq": (18.0, 7.0), "standard_vq": (36.0, 4.0)}
# the training recipe taken apart, for the factorial 4x6 VQ: (key, label) in build-up order
RECIPE_STEPS = (
    ("adam_codeword_start", "Adam alone, from image codewords"),
    ("adam_hard_start", "Adam alone, from the hard code"),
    ("em_hard_start", "EM from the hard code"),
    ("em_best_start", "EM from every hard-code start, lowest training F kept"),
    ("recipe", f"... then {STEPS} Adam steps (the recipe)"),
)
ADAM_ALONE_STEPS, ADAM_ALONE_LR = 400, 0.02   # sigma annealed over the first half
POOR_OPTIMUM_BITS = 5.0        # a run this much worse than the best at its seed is "poor"
LIMIT_CHUNK = 25               # images of the limit a task samples, from its own stream


def segment_heights(controls, n_points=64):
    """Mean spline height over each of the 4 segments between control points: (N, 4)."""
    xs = np.linspace(CONTROL_X[:-1], CONTROL_X[1:], n_points).T.ravel()          # (4 n,)
    ys = np.asarray(controls) @ natural_spline_basis(CONTROL_X, xs)              # (N, 4 n)
    return ys.reshape(len(ys), N_CONTROL - 1, n_points).mean(axis=2)


def quantile_bins(values, n_bins=8):
    """Equal-frequency bin index (N,) of each value, from the values' own quantiles."""
    edges = np.quantile(values, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, values, side="right")


def mutual_information(q, labels, n_labels):
    """Plug-in MI in bits between a stochastic code q (N, K) and labels (N,) in 0..n_labels-1.

    The joint p(k, b) is the average over images of q(k|x_n) [b_n = b]."""
    joint = q.T @ np.eye(n_labels)[labels] / len(q)                            # (K, B)
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log2(joint[nz] / outer[nz])))


def alignment_score(mi):
    """mean_d max_j MI_dj / sum_j MI_dj of an (M, J) MI table: 1 when each factor informs
    about one quantity alone."""
    return float(np.mean(mi.max(axis=1) / np.maximum(mi.sum(axis=1), 1e-12)))


def alignment(model, X, controls, n_bins=8):
    """MI (bits) between every factor's posterior and every control height (M, 5) and
    segment mean height (M, 4), and the score mean_d max_j MI_dj / sum_j MI_dj (controls)."""
    q = model.posteriors(X)
    heights = [quantile_bins(h, n_bins) for h in np.asarray(controls).T]
    segments = [quantile_bins(h, n_bins) for h in segment_heights(controls).T]
    mi_c = np.array([[mutual_information(qd, b, n_bins) for b in heights] for qd in q])
    mi_s = np.array([[mutual_information(qd, b, n_bins) for b in segments] for qd in q])
    return {"mi_controls": mi_c, "mi_segments": mi_s, "score": alignment_score(mi_c),
            "score_segments": alignment_score(mi_s)}


def importance_dl(log_lik, centre, cov, low, high, n_samples, rng, df=4):
    """-log2 E_h exp(log_lik(h)) for h ~ U[low, high]^d, in bits, and its standard error, by
    importance sampling from a multivariate t around `centre` with scale matrix cov.

    log_lik maps heights (S, d) to log-likelihoods (S,) in nats; -inf is allowed (the 8-bit
    limit's indicator).  Returns (bits, se, weights (n_samples,)), the weights relative to
    their largest, so that a caller can adapt its proposal to where they fall.
    """
    from scipy.stats import multivariate_t
    proposal = multivariate_t(centre, cov, df=df)
    h = proposal.rvs(size=n_samples, random_state=rng).reshape(n_samples, -1)
    inside = np.all((h >= low) & (h <= high), axis=1)
    log_w = np.full(n_samples, -np.inf)
    if inside.any():
        log_w[inside] = (log_lik(h[inside]) - h.shape[1] * math.log(high - low)
                         - proposal.logpdf(h[inside]))
    top = log_w.max()
    if not np.isfinite(top):
        raise ValueError("no importance sample has any likelihood: widen the proposal")
    w = np.exp(log_w - top)
    mean = w.mean()
    dl = -(top + math.log(mean)) / LN2
    se = w.std(ddof=1) / (mean * math.sqrt(n_samples)) / LN2        # delta method, in bits
    return dl, se, (h, w)


def limit_summary(bits, se):
    """The generator's limit over images from per-image bits and importance-sampling errors:
    the mean, the error of the mean over images (which includes each image's sampling
    error), the sampling error alone, and the number of images."""
    n = len(bits)
    return {"bits": float(bits.mean()), "se": float(bits.std(ddof=1) / math.sqrt(n)),
            "importance_se": float(np.sqrt(np.sum(se**2)) / n), "n_images": n}


def render_jacobian(h, eps=1e-5):
    """d render / d heights at h (5,) by forward differences: (5, 96)."""
    return (render_splines(h + eps * np.eye(N_CONTROL)) - render_splines(h[None])) / eps


def generator_dl(X, controls, sigma_x=0.15, n_samples=1000, rng=None, widen=1.5):
    """DL of the true generator for images X (N, 96) with their controls (N, 5): per-image
    bits and standard errors, each proposal centred at the true heights with widen^2 times
    the Laplace covariance sigma_x^2 (J^T J)^-1 of the renderer."""
    rng = rng if rng is not None else np.random.default_rng(0)
    lo, hi = CONTROL_RANGE
    out = np.zeros((len(X), 2))
    for n, (x, h) in enumerate(zip(X, controls)):
        J = render_jacobian(h)
        cov = widen**2 * sigma_x**2 * np.linalg.inv(J @ J.T + 1e-9 * np.eye(N_CONTROL))
        log_lik = lambda hs: -np.sum((x - render_splines(hs)) ** 2, axis=1) / (2 * sigma_x**2)
        out[n] = importance_dl(log_lik, h, cov, lo, hi, n_samples, rng)[:2]
    return out[:, 0], out[:, 1]


def generator_bits_8bit(V, controls, n_samples=1000, rng=None, widen=1.5, adapt=3):
    """The true generator's own code length for 8-bit images V (N, 96) uint8 with their
    controls (N, 5): -log2 P(the 5 uniform heights render to exactly V), per image, and the
    standard errors.  The likelihood is the indicator that the rendering rounds to V, so
    the region of heights is a small polytope around the true ones.  A first proposal of
    (0.3 of) the least-squares covariance (J^T J)^-1 / 12 of rounding errors finds it; each
    of `adapt` further rounds takes the mean and covariance (times widen^2) of the previous
    round's weighted hits, and the last round alone is the estimate."""
    rng = rng if rng is not None else np.random.default_rng(0)
    lo, hi = CONTROL_RANGE
    out = np.zeros((len(V), 2))
    for n, (v, h) in enumerate(zip(V, controls)):
        J = render_jacobian(h) * (bbc.PIXEL_LEVELS - 1)
        centre, cov = h, 0.3**2 / 12 * np.linalg.inv(J @ J.T + 1e-9 * np.eye(N_CONTROL))
        log_lik = lambda hs: np.where(np.all(quantise_images(render_splines(hs)) == v, axis=1),
                                      0.0, -np.inf)
        for _ in range(adapt + 1):
            bits, se, (hs, w) = importance_dl(log_lik, centre, cov, lo, hi, n_samples, rng)
            if np.count_nonzero(w) > N_CONTROL:
                centre, cov = np.average(hs, axis=0, weights=w), widen**2 * np.cov(hs.T, aweights=w)
        out[n] = bits, se
    return out[:, 0], out[:, 1]


# --- the earlier reproduction's recipe --------------------------------------------------------
#
# The earlier public reproduction trained a standard 24-VQ, "four separate" 4x6 VQs and the
# factorial 4x6 VQ, and scored them and a 5-component PCA by a number that leaves out the
# variance of the stochastic code (free_energy with variance=False), on its 200 training
# images (stream 0 of this generator draws exactly those).  Its recipe, the settings it
# states and the ones only its code fixes: per factor a recognition network 96 -> 64 -> K
# with ReLU; weights N(0, 0.3^2), codewords N(0, 0.09^2), zero biases, no output bias; a
# uniform prior it never learns; sigma_x = 0.15; 800 Adam steps at 0.005 on minibatches of 32
# drawn with replacement (its "epochs"), the KL weight rising linearly from 0.1 to 1 over all
# of them.  Its draws: the standard VQ's weights from default_rng(seed), factor d's from
# default_rng(1000 seed + d + 1), the minibatches from default_rng(seed + 1000).  Its "four
# separate" VQs: factor d trained alone, each step, on what the factors before it left of the
# minibatch, and scored, like the factorial VQ, with x fed to every factor.  Its PCA: the 5
# principal directions, posterior N(score, 0.1^2), prior N(0, the score's sd^2).  Every model
# is also scored by the valid F (variance=True) on the same training images and held out.

EARLIER = {"steps": 800, "batch": 32, "lr": 0.005, "kl": (0.1, 1.0), "hidden": 64,
           "weight_sd": 0.3, "codeword_sd": 0.09, "sigma_x": 0.15, "pca_sd": 0.1,
           "eval_every": 10}            # the trajectory's resolution, in steps
# the table of its README (seed 0, training images): (recon, code, total) bits
EARLIER_TABLE = {"standard_vq": (63.10, 2.20, 65.30), "separate_vq": (122.11, 2.80, 124.91),
                 "factorial_vq": (19.84, 2.16, 22.00), "pca5": (85.32, 15.11, 100.44)}
EARLIER_TOTALS = {"factorial_vq": (22.00, 22.70, 23.01, 25.05, 22.65),    # seeds 0-4
                  "standard_vq": (65.30, 61.76, 55.10, 56.06, 64.55)}
EARLIER_LABELS = {"standard_vq": "standard 24-VQ", "separate_vq": "four separate 4x6 VQs",
                  "factorial_vq": "factorial 4x6 VQ", "pca5": "PCA, 5 components"}


def earlier_shape(n_factors, n_codes):
    """Its VQ's shape, all zero: a FactorialVQ whose masks make it one 96 -> 64 -> K
    network per factor, with no bias and a fixed uniform prior."""
    M, K, H = n_factors, n_codes, EARLIER["hidden"]
    model = FactorialVQ(M, K, EARLIER["sigma_x"], n_hidden=H * M, learn_prior=False, act="relu")
    model.mask["b"][...] = 0.0
    model.mask["W2"][...] = np.kron(np.eye(M), np.ones((H, K)))        # units of d -> q_d only
    return model


def earlier_vq(n_codes, factor_seeds):
    """Its VQ of len(factor_seeds) factors of n_codes codes (earlier_shape), factor d's
    weights and codewords drawn from default_rng(factor_seeds[d]) as it draws them."""
    K, H, s = n_codes, EARLIER["hidden"], EARLIER["weight_sd"]
    model = earlier_shape(len(factor_seeds), K)
    p = model.p
    for d, seed in enumerate(factor_seeds):
        rng = np.random.default_rng(seed)
        units, codes = slice(d * H, (d + 1) * H), slice(d * K, (d + 1) * K)
        p["W1"][:, units] = s * rng.standard_normal((D, H))
        p["W2"][units, codes] = s * rng.standard_normal((H, K))
        p["C"][d] = EARLIER["codeword_sd"] * rng.standard_normal((K, D))
    return model


def join_factors(stages):
    """The separate VQs' single-factor models as one model with x fed to every factor."""
    H, K = EARLIER["hidden"], stages[0].n_codes
    joined = earlier_shape(len(stages), K)
    for d, stage in enumerate(stages):
        units, codes = slice(d * H, (d + 1) * H), slice(d * K, (d + 1) * K)
        for name, where in (("W1", np.s_[:, units]), ("c1", units), ("W2", (units, codes)),
                            ("c2", codes)):
            joined.p[name][where] = stage.p[name]
        joined.p["C"][d] = stage.p["C"][0]
    return joined


def earlier_scores(model, X, Xt):
    """Bits per image {recon, code, total} of its number on training images X ("its") and
    held out ("its_heldout"), and of the valid F on both ("valid", "valid_heldout")."""
    out = {}
    for key, images, variance in (("its", X, False), ("its_heldout", Xt, False),
                                  ("valid", X, True), ("valid_heldout", Xt, True)):
        dl = model.description_length(images, refine=0, variance=variance)
        out[key] = {k: float(v.mean()) for k, v in dl.items()}
    return out


def earlier_pca(X, Xt):
    """Its PCA fitted to X, scored like earlier_scores.  Its posterior N(z, s^2 I) around the
    score z has the valid F of its number plus the expected squared error of the spread,
    5 s^2 / (2 sigma_x^2) nats (the directions are orthonormal)."""
    sigma, s, n = EARLIER["sigma_x"], EARLIER["pca_sd"], 5
    mean = X.mean(axis=0)
    V = np.linalg.svd(X - mean, full_matrices=False)[2][:n].T                   # (96, 5)
    sd_p = np.maximum(((X - mean) @ V).std(axis=0), 1e-3)                      # (5,)
    out = {}
    for key, images, variance in (("its", X, False), ("its_heldout", Xt, False),
                                  ("valid", X, True), ("valid_heldout", Xt, True)):
        z = (images - mean) @ V
        resid = images - mean - z @ V.T
        recon = (np.einsum("nd,nd->n", resid, resid) + variance * n * s**2) / (2 * sigma**2)
        code = ((s**2 + z**2) / (2 * sd_p**2) - 0.5 + np.log(sd_p / s)).sum(axis=1)
        out[key] = {"recon": float(recon.mean()) / LN2, "code": float(code.mean()) / LN2,
                    "total": float((recon + code).mean()) / LN2}
    return out


def earlier_run(seed, X, Xt):
    """Its three VQs trained by its recipe and its PCA, on X (200, 96): per model the scores
    of earlier_scores, and the training trajectory (at step 0, every eval_every steps and the
    last) of its number on X and of the valid F on X and Xt."""
    c = EARLIER
    factor_seeds = [1000 * seed + d + 1 for d in range(4)]
    stages = {"standard_vq": [earlier_vq(24, [seed])],
              "separate_vq": [earlier_vq(6, [f]) for f in factor_seeds],
              "factorial_vq": [earlier_vq(6, factor_seeds)]}
    opts = {name: [Adam([m.theta], lr=c["lr"]) for m in ms] for name, ms in stages.items()}
    batches = {name: np.random.default_rng(seed + 1000) for name in stages}  # each its own
    scored = lambda name: (join_factors(stages[name]) if name == "separate_vq"
                           else stages[name][0])
    trajectory = {"step": [], **{name: {"its": [], "valid": [], "valid_heldout": []}
                                 for name in stages}}

    def record(step):
        trajectory["step"].append(step)
        for name in stages:
            model = scored(name)
            for key, images, variance in (("its", X, False), ("valid", X, True),
                                          ("valid_heldout", Xt, True)):
                dl = model.description_length(images, refine=0, variance=variance)
                trajectory[name][key].append(float(dl["total"].mean()))

    record(0)
    for t in range(c["steps"]):
        weight = c["kl"][0] + (c["kl"][1] - c["kl"][0]) * t / (c["steps"] - 1)
        for name, models in stages.items():
            R = X[batches[name].integers(0, len(X), size=c["batch"])]
            for d, (model, opt) in enumerate(zip(models, opts[name])):
                opt.step([model.loss_and_grad(R, kl_weight=weight, variance=False)[1]])
                if d + 1 < len(models):         # what this factor leaves, after its update
                    R = R - model.mean_reconstruction(R)
        if (t + 1) % c["eval_every"] == 0 or t + 1 == c["steps"]:
            record(t + 1)
    no_code = Xt - X.mean(axis=0)                # the training mean image sent, nothing else
    return {"models": {**{name: earlier_scores(scored(name), X, Xt) for name in stages},
                       "pca5": earlier_pca(X, Xt)},
            "trajectory": trajectory,
            "no_code_heldout": float(np.mean(np.einsum("nd,nd->n", no_code, no_code))
                                     / (2 * c["sigma_x"]**2) / LN2)}


def below_both(trajectory, key):
    """When the factorial VQ's `key` total is below both other VQs': the first and the last
    recorded step ("first", "last") and the step from which it stays below to the end
    ("stays"), each None if never."""
    others = np.minimum(trajectory["standard_vq"][key], trajectory["separate_vq"][key])
    below = np.asarray(trajectory["factorial_vq"][key]) < others
    above, steps = np.flatnonzero(~below), trajectory["step"]
    return {"first": int(steps[np.argmax(below)]) if below.any() else None,
            "last": int(steps[np.flatnonzero(below)[-1]]) if below.any() else None,
            "stays": None if not below[-1] else int(steps[above[-1] + 1 if len(above) else 0])}


def earlier_summary(runs, seeds):
    """The JSON entry from {seed: earlier_run(...)}: per model and score the mean and sd of
    recon, code and total over seeds; its number per seed beside its README's; the largest
    misses of its seed-0 table and its five-seed totals (over the seeds run); the step from
    which the factorial VQ stays below both others, by its number and by the valid F."""
    stats = lambda v: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
    first = runs[seeds[0]]["models"]
    table = {name: {key: {f"{term}_{s}": v for term in ("recon", "code", "total")
                          for s, v in zip(("mean", "sd"),
                                          stats([runs[sd]["models"][name][key][term]
                                                 for sd in seeds]))}
                    for key in first[name]}
             for name in first}
    its = {name: [runs[s]["models"][name]["its"]["total"] for s in seeds] for name in first}
    misses = [abs(runs[0]["models"][name]["its"][term] - reported)
              for name, split in EARLIER_TABLE.items() if 0 in runs
              for term, reported in zip(("recon", "code", "total"), split)]
    reported_seeds = [s for s in seeds if s < len(EARLIER_TOTALS["factorial_vq"])]
    totals_misses = [abs(runs[s]["models"][name]["its"]["total"] - EARLIER_TOTALS[name][s])
                     for name in EARLIER_TOTALS for s in reported_seeds]
    return {"seeds": list(seeds), "table": table, "its_totals": its,
            "reported_table": {k: list(v) for k, v in EARLIER_TABLE.items()},
            "reported_totals": {k: list(v) for k, v in EARLIER_TOTALS.items()},
            "seed0": {name: runs[0]["models"][name]["its"] for name in first} if 0 in runs
            else None,
            "seed0_miss": max(misses) if misses else None,
            "totals_miss": max(totals_misses) if totals_misses else None,
            "below_both": {key: [below_both(runs[s]["trajectory"], key) for s in seeds]
                           for key in ("its", "valid_heldout")},
            "no_code_heldout": list(stats([runs[s]["no_code_heldout"] for s in seeds])),
            "trajectory": {"seed": seeds[0], **runs[seeds[0]]["trajectory"]},
            "steps": EARLIER["steps"], "batch": EARLIER["batch"],
            "eval_every": EARLIER["eval_every"]}


def recipe_step(key, X, seed):
    """The factorial 4x6 VQ trained by one step of RECIPE_STEPS; returns the model."""
    rng = np.random.default_rng([seed, 1000 + model_stream("factorial_vq")])
    model = FactorialVQ(4, 6, refine=50, rng=rng)
    model.init_from_hard_code(X, iters=0 if key == "adam_codeword_start" else HARD_ITERS)
    if key.startswith("adam"):
        train(model, X, ADAM_ALONE_STEPS, lr=ADAM_ALONE_LR, schedule="sigma")
    else:
        model.fit(X, steps=STEPS if key == "recipe" else 0, select=key != "em_hard_start")
    return model


def experiment_task(task):
    """Worker: one factorial model fitted and scored, or one chunk of the limit."""
    kind, seed, arg = task
    X, Xt = load_data(seed)
    if kind == "movement":
        return kind, seed, arg, training_movement(arg, X, Xt, seed)
    if kind == EARLIER_EXPERIMENT:
        return kind, seed, arg, earlier_run(seed, X, Xt)
    if kind == "recipe":
        model = recipe_step(arg, X, seed)
        res = {"total": float(model.description_length(Xt)["total"].mean())}
        if arg == "recipe":
            res["hard"] = float(model.hard_code().description_length(Xt)["total"].mean())
        return kind, seed, arg, res
    if kind == "sigma":                   # recon, code and total only: no DL* enumeration
        models = run_comparison(seed=seed, sigma_x=arg, models=SIGMA_MODELS)["models"]
        return kind, seed, arg, {name: {k: float(v.mean()) for k, v in
                                        model.description_length(Xt).items()
                                        if k in ("recon", "code", "total")}
                                 for name, model in models.items()}
    if kind == "limit":
        start, stop, n_samples = arg
        controls = generate_spline_images(stop, seed, stream=1)[1][start:stop]
        bits, se = generator_dl(Xt[start:stop], controls,
                                rng=np.random.default_rng([seed, 11, start]), n_samples=n_samples)
        return kind, seed, arg, {"bits": bits, "se": se}
    M, K, schedule, init, want_alignment = arg
    model, _ = fit_model("factorial_vq", X, seed=seed, n_dims=M, n_units_per_dim=K,
                         schedule=schedule, init=init)
    exact = model.exact_dl(Xt)
    res = {"total": float(model.description_length(Xt)["total"].mean()),
           "exact": None if exact is None else float(exact.mean())}
    if want_alignment:
        res["alignment"] = alignment(model, Xt, generate_spline_images(len(Xt), seed, stream=1)[1])
    return kind, seed, arg, res


def run_experiments(names, seeds=(0, 1, 2, 3, 4), workers=2, limit_images=200,
                    limit_samples=1000, log=None):
    """Run the open-question experiments; returns the JSON-ready dict, one key per name, and
    every task's result under "experiment_runs" (for --merge)."""
    log = log or kit.progress_logger(True)
    fits = {}
    if "sweep" in names:
        fits.update({(M, K, "sigma", "band"): False for M, K in SWEEP_FIXED + SWEEP_LARGER})
    if "alignment" in names:
        fits.update({(M, K, "sigma", "band"): True for M, K in ALIGNMENT_MODELS})
    if "annealing" in names:
        fits.update({(4, 6, s, i): fits.get((4, 6, s, i), False) for s, i in ANNEALING_RUNS})
    # the biggest enumerations first, so that the two workers finish together
    tasks = [("fit", s, key + (want,)) for key, want in
             sorted(fits.items(), key=lambda kv: -kv[0][1] ** kv[0][0]) for s in seeds]
    if "training" in names:
        tasks += [("recipe", s, key) for key, _ in RECIPE_STEPS for s in seeds]
    if EARLIER_EXPERIMENT in names:
        tasks += [(EARLIER_EXPERIMENT, s, None) for s in seeds]
    if "movement" in names:                 # the costliest first
        tasks = [("movement", s, name) for name in ("residual_vq", "factorial_vq",
                                                    "separate_slices", "standard_vq", "pca24")
                 for s in seeds] + tasks
    if "sigma" in names:                    # the smallest sigma_x trains longest
        tasks += [("sigma", s, sigma) for sigma in SIGMA_SWEEP for s in seeds]
    if "limit" in names:
        chunk = LIMIT_CHUNK                  # fixed: each chunk draws from its own stream
        tasks += [("limit", seeds[0], (a, min(a + chunk, limit_images), limit_samples))
                  for a in range(0, limit_images, chunk)]
    for s in seeds:
        load_data(s)                         # render once here; forked workers inherit it
    done, t0, results = 0, time.perf_counter(), []
    for item in kit.map_workers(experiment_task, tasks, workers):
        results.append(item)
        done += 1
        kind, seed, arg, _ = item
        what = ("limit images %d-%d" % arg[:2] if kind == "limit" else
                f"sigma_x = {arg}" if kind == "sigma" else
                f"{kind}: {arg}" if kind in ("recipe", "movement") else
                "the earlier reproduction's recipe" if kind == EARLIER_EXPERIMENT else
                "%dx%d %s/%s" % arg[:4])
        log(f"[{done}/{len(tasks)}] seed {seed} {what}  ({time.perf_counter() - t0:.1f} s)")
    runs = experiment_runs(kit.plain(results))          # as a JSON file holds them
    return {**summarise_experiments(names, runs, seeds), "experiment_runs": runs}


def experiment_runs(runs):
    """Task results [kind, seed, arg, result] in one order, the limit's of one seed only (the
    least: a single run's first seed, whose are the only ones it has), so that a run and a
    merge of runs split by seed hold the same list."""
    limit = min((r[1] for r in runs if r[0] == "limit"), default=None)
    return sorted((r for r in runs if r[0] != "limit" or r[1] == limit),
                  key=lambda r: (r[0], r[1], str(r[2])))


# The paper's findings, each as a held-out difference in bits that is > 0 where it holds:
# the factorial VQ beats the standard VQ; the separate slices are worse than the factorial
# VQ (by "about 5 bits"); the linear 24-unit code reconstructs slightly better, pays a much
# higher code cost, and is worse in total.
PAPER_RANKINGS = (
    ("factorial_beats_standard", "factorial VQ below standard VQ",
     ("standard_vq", "total"), ("factorial_vq", "total")),
    ("slices_worse", "separate slices above factorial VQ",
     ("separate_slices", "total"), ("factorial_vq", "total")),
    ("linear_recon_lower", "PPCA-24 reconstruction below factorial VQ's",
     ("factorial_vq", "recon"), ("pca24", "recon")),
    ("linear_code_higher", "PPCA-24 code cost above factorial VQ's",
     ("pca24", "code"), ("factorial_vq", "code")),
    ("linear_worse", "PPCA-24 total above factorial VQ's",
     ("pca24", "total"), ("factorial_vq", "total")),
)


def sigma_summary(runs):
    """The sigma_x sweep's JSON entry from {sigma: [per-seed {model: {recon, code, total}}]}:
    per sigma and model the mean and sd of each term; per ranking of PAPER_RANKINGS the
    difference (mean, sd over seeds) and the seeds where it holds; and the sigma whose
    factorial and standard (recon, code) lie nearest the paper's (Euclidean, in bits)."""
    stats = lambda v: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
    table, rankings, distance = {}, {key: {} for key, *_ in PAPER_RANKINGS}, {}
    for sigma, per_seed in runs.items():
        key = f"{sigma:g}"
        table[key] = {name: {f"{term}_{s}": v for term in ("recon", "code", "total")
                             for s, v in zip(("mean", "sd"),
                                             stats([r[name][term] for r in per_seed]))}
                      for name in per_seed[0]}
        for rk, _, (a, ta), (b, tb) in PAPER_RANKINGS:
            diffs = [r[a][ta] - r[b][tb] for r in per_seed]
            mean, sd = stats(diffs)
            rankings[rk][key] = {"diff_mean": mean, "diff_sd": sd,
                                 "seeds_holding": int(sum(d > 0 for d in diffs))}
        ours = [table[key][name][f"{term}_mean"] for name in PAPER_SPLIT
                for term in ("recon", "code")]
        paper = [v for split in PAPER_SPLIT.values() for v in split]
        distance[key] = float(np.linalg.norm(np.subtract(ours, paper)))
    best = min(distance, key=distance.get)
    return {"sigmas": [float(s) for s in runs], "models": list(next(iter(runs.values()))[0]),
            "table": table, "rankings": rankings, "paper_distance": distance,
            "paper_sigma": float(best),
            "per_seed": {f"{s:g}": per_seed for s, per_seed in runs.items()}}


def summarise_experiments(names, results, seeds):
    """Collect the worker results into the experiments' JSON entries."""
    fit = {}
    for kind, seed, arg, res in results:
        if kind == "fit":
            fit.setdefault(tuple(arg[:4]), {})[seed] = res
    stats = lambda v: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
    out = {}
    if "movement" in names:
        runs = {(arg, seed): res for kind, seed, arg, res in results if kind == "movement"}
        out["movement"] = {}
        for name in MOVEMENT_MODELS:
            per_seed = [runs[(name, s)] for s in seeds]
            entry = {"runs": per_seed}
            for key in ("dmc_to_train", "heldout", "steps_to_1bit"):
                entry[f"{key}_mean"], entry[f"{key}_sd"] = stats([r[key] for r in per_seed])
            out["movement"][name] = entry
    if "training" in names:
        runs = {(arg, seed): res for kind, seed, arg, res in results if kind == "recipe"}
        hard = [runs[("recipe", s)]["hard"] for s in seeds]
        out["training"] = {"hard_code": dict(zip(("heldout_total_mean", "heldout_total_sd"),
                                                 stats(hard)), totals=hard)}
        for key, _ in RECIPE_STEPS:
            totals = [runs[(key, s)]["total"] for s in seeds]
            mean, sd = stats(totals)
            out["training"][key] = {"heldout_total_mean": mean, "heldout_total_sd": sd,
                                    "totals": totals,
                                    "at_most_hard": sum(t <= h for t, h in zip(totals, hard))}
    if "sweep" in names:
        out["sweep"] = {}
        for M, K in SWEEP_FIXED + SWEEP_LARGER:
            runs = fit[(M, K, "sigma", "band")]
            mean, sd = stats([runs[s]["total"] for s in seeds])
            exact = [runs[s]["exact"] for s in seeds]
            out["sweep"][f"{M}x{K}"] = {
                "heldout_total_mean": mean, "heldout_total_sd": sd,
                "exact_mean": None if None in exact else float(np.mean(exact)),
                "exact_sd": None if None in exact else stats(exact)[1],
                "codewords": M * K, "joint_codes": K**M}
    if "alignment" in names:
        out["alignment"] = {}
        for M, K in ALIGNMENT_MODELS:
            runs = fit[(M, K, "sigma", "band")]
            score, sd = stats([runs[s]["alignment"]["score"] for s in seeds])
            seg, seg_sd = stats([runs[s]["alignment"]["score_segments"] for s in seeds])
            first = runs[seeds[0]]["alignment"]
            out["alignment"][f"{M}x{K}"] = {
                "score": score, "score_sd": sd, "score_segments": seg, "score_segments_sd": seg_sd,
                "seed": seeds[0], "mi_controls": first["mi_controls"],
                "mi_segments": first["mi_segments"]}
    if "annealing" in names:
        out["annealing"] = {}
        best = {s: min(fit[(4, 6) + r][s]["total"] for r in ANNEALING_RUNS) for s in seeds}
        for schedule, init in ANNEALING_RUNS:
            totals = [fit[(4, 6, schedule, init)][s]["total"] for s in seeds]
            mean, sd = stats(totals)
            poor = sum(t > best[s] + POOR_OPTIMUM_BITS for t, s in zip(totals, seeds))
            key = schedule if init == "band" else f"{schedule}/random-init"
            out["annealing"][key] = {"heldout_total_mean": mean, "heldout_total_sd": sd,
                                     "poor_optima": poor, "runs": len(seeds),
                                     "totals": totals}
    if "sigma" in names:
        runs = {(arg, seed): res for kind, seed, arg, res in results if kind == "sigma"}
        out["sigma"] = sigma_summary({sigma: [runs[(sigma, s)] for s in seeds]
                                      for sigma in SIGMA_SWEEP})
    if EARLIER_EXPERIMENT in names:
        out[EARLIER_EXPERIMENT] = earlier_summary(
            {seed: res for kind, seed, _, res in results if kind == EARLIER_EXPERIMENT}, seeds)
    if "limit" in names:                    # on one seed: the first run's, or a merge's least
        seed = min(seed for kind, seed, _, _ in results if kind == "limit")
        parts = sorted((arg, res) for kind, s, arg, res in results if kind == "limit" and s == seed)
        out["limit"] = {**limit_summary(np.concatenate([res["bits"] for _, res in parts]),
                                        np.concatenate([res["se"] for _, res in parts])),
                        "n_samples": parts[0][0][2], "seed": seed}
    return out


# --- data movement of training ----------------------------------------------------------------
#
# The earlier reproduction's last open question: what does training cost in data movement,
# the quantity that dominates energy on real hardware?  Each phase's step is traced once
# (data_movement.py: the tracer, its conventions and the exact LRU stack distances).

MOVEMENT_MODELS = ("standard_vq", "separate_slices", "residual_vq", "factorial_vq", "pca24")
MOVEMENT_TEST = 500            # held-out images of the training curves behind "steps to 1 bit"
PHASES = ("hard", "em", "adam")


def traced_model(model):
    """A copy of model whose parameters, and so everything computed from them, are Traced."""
    state = model.__getstate__()
    state["theta"] = state["theta"].copy().view(dm.Traced)
    state["trainable"] = state["trainable"].view(dm.Traced)
    clone = type(model).__new__(type(model))
    clone.__setstate__(state)
    return clone


def trace_adam_step(model, X):
    """Movement of one Adam step (loss, gradient, update) of a copy of a trained model."""
    clone, Xt = traced_model(model), X.view(dm.Traced)
    opt = Adam([clone.theta], lr=LR)
    return dm.movement(*dm.trace(lambda: opt.step([clone.loss_and_grad(Xt)[1]])))


def trace_hard_step(X, starts, sigma_x, groups):
    """Movement of one alternation of the batched hard-code search from these starts."""
    stack = lambda key: np.stack([f[key] for f in starts])
    C, b, a = stack("C"), stack("b"), stack("a")
    codes = shortest_codes(X, C, b, a, sigma_x)
    C, b, a, Xt = (x.view(dm.Traced) for x in (C, b, a, X))
    return dm.movement(*dm.trace(lambda: refit_hard_code(
        Xt, shortest_codes(Xt, C, b, a, sigma_x, codes.view(dm.Traced)), C, groups)))


def training_movement(name, X, X_eval, seed=0):
    """Data movement of training model `name` on X (N, 96) with the project's recipe.

    Each phase's step is traced once, on the model's own arrays: one alternation of the
    hard-code search (all starts), one EM iteration (all starts), one Adam step; PCA's fit
    is one step.  The held-out F on the first MOVEMENT_TEST images of X_eval after every EM
    iteration and Adam step gives the step at which it first comes within 1 bit of its
    final value; "dmc_to_train" is the movement of the steps up to there (the whole search,
    then EM iterations, then Adam steps).  Returns {phase: {"steps", "reads", "dmc",
    "ard"}, "steps_to_1bit", "dmc_to_train", "heldout"}, heldout = the final F on X_eval.
    """
    rng = np.random.default_rng([seed, 1000 + model_stream(name)])
    model = build_model(name, rng=rng)
    if isinstance(model, PCA):
        fresh = PCA(model.n_components, model.sigma_x)
        fit = dm.movement(*dm.trace(lambda: fresh.fit(X.view(dm.Traced))))
        model.fit(X)
        return {"fit": {"steps": 1, **fit}, "steps_to_1bit": 1, "dmc_to_train": fit["dmc"],
                "heldout": float(model.description_length(X_eval)["total"].mean())}
    model.init_from_hard_code(X)
    out = {}
    if isinstance(model, FactorialVQ):
        groups = pixel_groups(model.n_dims, model.bands)
        out["hard"] = {"steps": model.starts[0]["iters"],
                       **trace_hard_step(X, model.starts, model.sigma_x, groups)}
        stack = lambda key: np.stack([f[key] for f in model.starts])
        C, b, a = stack("C"), stack("b"), np.maximum(stack("a"), math.log(START_FREQ_FLOOR))
        q = em_step(X, C, b, a, np.full(a.shape[:1] + (len(X),) + a.shape[1:], 1 / model.n_codes),
                    model.sigma_x, groups, sweeps=5 * EM_SWEEPS)[3]
        C, b, a, q, Xt = (x.view(dm.Traced) for x in (C, b, a, q, X))
        out["em"] = {"steps": EM_ITERS, **dm.movement(*dm.trace(lambda: em_step(
            Xt, C, b, a, q, model.sigma_x, groups)))}
        em_steps = EM_ITERS
    else:                                         # the chain: its stages' searches, no EM
        search = hard_code_search(X, 1, model.n_codes, model.sigma_x,
                                  np.random.default_rng([seed, 7]))
        out["hard"] = {"steps": model.hard.iters,
                       **trace_hard_step(X, search, model.sigma_x, pixel_groups(1))}
        out["em"], em_steps = {"steps": 0, "reads": 0, "dmc": 0.0, "ard": 0.0}, 0
    history = model.fit(X, X_eval=X_eval[:MOVEMENT_TEST], eval_every=1)
    out["adam"] = {"steps": STEPS, **trace_adam_step(model, X)}
    curve = np.array(history["heldout"])
    reached = int(np.array(history["eval_step"])[np.argmax(curve <= curve[-1] + 1.0)])
    out["steps_to_1bit"] = reached
    out["dmc_to_train"] = (out["hard"]["steps"] * out["hard"]["dmc"]
                           + min(reached, em_steps) * out["em"]["dmc"]
                           + max(0, reached - em_steps) * out["adam"]["dmc"])
    out["heldout"] = float(model.description_length(X_eval)["total"].mean())
    return out


# ----------------------------------------------------------------------------- coding the 1994 models
#
# The paper's argument made real with the bits-back coder (bits_back_coder.py: its chain,
# its integer tables and the rule that makes them the same on every CPU).  Here the 1994
# discrete models become coding models: their parameters rounded to fixed point, and every
# table the chain asks for computed from them in integer arithmetic.

COMPRESS_CHUNK = 2_000_000             # (image, joint code) pairs the bound holds at once
LOGIT_BITS = 10                        # recognition weights and prior logits, 2^-10
Q_BITS = 15                            # posterior probabilities inside the refinement
CODER_FORMS = ("factorial", "residual")


class CodingModel:
    """A discrete model as the coder sees it: its parameters in fixed point (int64), and
    every table the chain needs computed from them in integer arithmetic.

    form "factorial" covers the standard VQ, the slices and the factorial VQ (with up to
    `refine` mean-field sweeps, also in fixed point); "residual" is the residual chain.
    """

    def __init__(self, form, n_dims, n_codes, sigma_x, refine, params):
        if form not in CODER_FORMS:
            raise ValueError(f"unknown coder form {form!r}")
        self.form, self.n_dims, self.n_codes = form, int(n_dims), int(n_codes)
        self.sigma_x, self.refine = float(sigma_x), int(refine)
        self.params = {k: np.asarray(v, dtype=np.int64) for k, v in params.items()}
        for name, shape in self.shapes().items():
            if self.params[name].shape != shape:
                raise ValueError(f"parameter {name} has shape {self.params[name].shape}, "
                                 f"expected {shape}")
        self._check_range()

    def shapes(self):
        return self.param_shapes(self.form, self.n_dims, self.n_codes)

    @staticmethod
    def param_shapes(form, M, K):
        """{name: shape} of the parameters, in the order a bitstream stores them."""
        rec = {"W": (D, M * K), "c": (M * K,)} if form == "factorial" else \
              {"W": (M, D, K), "c": (M, K)}
        return {"C": (M, K, D), "b": (D,), "a": (M, K), **rec}

    @classmethod
    def from_model(cls, model):
        """Round a fitted FactorialVQ (linear recognition) or ResidualVQ to fixed point."""
        if isinstance(model, ResidualVQ):
            form = "residual"
        elif isinstance(model, FactorialVQ) and not model.n_hidden:
            form = "factorial"
        else:
            raise ValueError("the coder takes linear-recognition VQs and the residual chain")
        p = model.p
        scale = {"C": bbc.PARAM_BITS, "b": bbc.PARAM_BITS, "a": LOGIT_BITS, "W": LOGIT_BITS,
                 "c": LOGIT_BITS}
        params = {k: np.rint(p[k] * 2.0**s).astype(np.int64) for k, s in scale.items()}
        return cls(form, model.n_dims, model.n_codes, model.sigma_x,
                   getattr(model, "refine", 0), params)

    def _check_range(self):
        """Refuse parameters whose integer products could overflow int64: the bound on the
        residual each dot product reads, times its weights, times 96 pixels."""
        top = lambda name: int(np.abs(self.params[name]).max(initial=0))
        c_max, b_max = top("C"), top("b")
        L = bbc.PIXEL_LEVELS - 1
        # mean field: x - b - sum of the other factors' means, units 2^-(12 + 15) / 255
        r_field = (L << (bbc.PARAM_BITS + Q_BITS)) + (L * (b_max + self.n_dims * c_max) << Q_BITS)
        # residual chain and recognition: x - b - earlier codewords, units 2^-12 / 255
        r_chain = L * ((1 << bbc.PARAM_BITS) + b_max + self.n_dims * c_max)
        if (D * c_max * r_field >= 2**62 or D * top("W") * r_chain >= 2**62
                or top("a") >= 2**40 or top("c") >= 2**40):
            raise ValueError("model parameters too large for the fixed-point coder")

    # --- the coding-model protocol (bits_back_coder.py) ------------------------------------

    n_pixels = D

    @property
    def sequential(self):
        """The residual chain's stage tables need the earlier stages' codes."""
        return self.form == "residual"

    def pixel_bits(self, V, codes):
        """-log2 of the coder's table probability of every pixel of V (N, 96) given codes."""
        return bbc.pixel_table_bits(self.reconstruct(codes), self.sigma_x, V)

    def bound(self, V):
        """The coder's own bound of V (N, 96): (F_t (N,), err (N,)), see discrete_bound."""
        return discrete_bound(self, V)


    def prior_table(self):
        """Frequencies (M, K) of the prior p(k_d)."""
        return bbc.softmax_table(self.params["a"] / 2.0**LOGIT_BITS)

    def pixel_weights(self, codes):
        """The pixel tables given codes (N, M) as constriction takes them: frequencies minus
        one, float32 (N, 96, 256), one precomputed row per pixel (see bits_back_coder.pixel_rows)."""
        rows = bbc.pixel_rows(self.sigma_x)
        return rows[bbc.edge_shift(self.reconstruct(codes)) - bbc.SHIFT_LOW]

    def reconstruct(self, codes):
        """Fixed-point xhat(k) (N, 96), units 2^-12."""
        C = self.params["C"]
        return self.params["b"] + C[np.arange(self.n_dims), codes].sum(axis=1)

    def posterior_table(self, V):
        """Frequencies (N, M, K) of the factorial posterior q(k|v), v (N, 96) 8-bit."""
        p, M, K = self.params, self.n_dims, self.n_codes
        V = V.astype(np.int64)
        amortised = (V @ p["W"] + (bbc.PIXEL_LEVELS - 1) * p["c"]).reshape(len(V), M, K)
        logits = amortised / float((bbc.PIXEL_LEVELS - 1) << LOGIT_BITS)
        if self.refine:
            logits = self._mean_field(V, logits)
        return bbc.softmax_table(logits)

    def _mean_field(self, V, logits):
        """Mean-field sweeps in fixed point; an image stops when a sweep
        changes none of its probabilities.  Returns each factor's last logits (N, M, K)."""
        p, M = self.params, self.n_dims
        C, prior = p["C"], p["a"] / 2.0**LOGIT_BITS
        sq = np.einsum("mkd,mkd->mk", C, C)                          # units 2^-24
        q = bbc.softmax_table(logits, Q_BITS)                            # (N, M, K), sum 2^15
        mu = np.einsum("nmk,mkd->mnd", q, C)                         # units 2^-27
        # x - b - sum_d mu_d in units 2^-27 / 255, exact
        base = (V << (bbc.PARAM_BITS + Q_BITS)) - (bbc.PIXEL_LEVELS - 1) * (p["b"] << Q_BITS)
        unit = float((bbc.PIXEL_LEVELS - 1) << (2 * bbc.PARAM_BITS + Q_BITS))
        s2 = self.sigma_x**2
        logits = logits.copy()
        active = np.arange(len(V))
        for _ in range(self.refine):
            changed = np.zeros(len(active), dtype=bool)
            total = mu[:, active].sum(axis=0)
            for d in range(M):
                r = base[active] - (bbc.PIXEL_LEVELS - 1) * (total - mu[d, active])
                dot = r @ C[d].T                                     # (A, K), exact
                ld = prior[d] + (dot / unit - sq[d] / 2.0**(2 * bbc.PARAM_BITS + 1)) / s2
                new = bbc.softmax_table(ld, Q_BITS)
                changed |= np.any(new != q[active, d], axis=1)
                logits[active, d], q[active, d] = ld, new
                new_mu = new @ C[d]
                total += new_mu - mu[d, active]
                mu[d, active] = new_mu
            active = active[changed]
            if not len(active):
                break
        return logits

    def stage_table(self, V, codes, d):
        """Frequencies (N, K) of stage d of the residual chain, given the earlier codes."""
        p = self.params
        prefix = p["C"][np.arange(d), codes[:, :d]].sum(axis=1) if d else 0
        R = (V.astype(np.int64) << bbc.PARAM_BITS) - (bbc.PIXEL_LEVELS - 1) * (p["b"] + prefix)
        L = R @ p["W"][d] + ((bbc.PIXEL_LEVELS - 1) << bbc.PARAM_BITS) * p["c"][d]
        return bbc.softmax_table(L / float((bbc.PIXEL_LEVELS - 1) << (bbc.PARAM_BITS + LOGIT_BITS)))

    def chain_tables(self, V):
        """Every path of the residual chain for V (N, 96): log2 of its table probability
        q(k|v) (N, P) and the joint codes (P, M), P = K^M in lexicographic order."""
        p, M, K = self.params, self.n_dims, self.n_codes
        T = (V.astype(np.int64) << bbc.PARAM_BITS) - (bbc.PIXEL_LEVELS - 1) * p["b"]
        prefix = np.zeros((1, D), dtype=np.int64)
        log2_q = np.zeros((len(V), 1))
        for d in range(M):
            # integer arithmetic is exact, so the stage's logits split into image and path parts
            L = ((T @ p["W"][d])[:, None, :] - ((bbc.PIXEL_LEVELS - 1) * prefix @ p["W"][d])[None]
                 + ((bbc.PIXEL_LEVELS - 1) << bbc.PARAM_BITS) * p["c"][d])
            f = bbc.softmax_table(L / float((bbc.PIXEL_LEVELS - 1) << (bbc.PARAM_BITS + LOGIT_BITS)))
            log2_q = (log2_q[:, :, None] + np.log2(f) - bbc.PRECISION).reshape(len(V), -1)
            prefix = (prefix[:, None, :] + p["C"][d][None]).reshape(-1, D)
        return log2_q, all_codes(M, K)


# --- the coder's own bound -------------------------------------------------------------------


def discrete_bound(cm, V, prune=1e-9, n_draws=64, rng=None):
    """The coder's own bound F_t (bits per image, (N,)): what the chain pays on average,

        F_t(v) = E_q[-log2 P(v|k) - log2 p(k) + log2 q(k|v)],

    with P, p and q the coder's integer tables.  Returns (F_t, err).  While K^M <= 65,536 the
    expectation runs over every joint code of table weight > prune; every table entry is at
    least 2^-24, so each code costs at most 96*24 + 2*M*24 bits and err bounds what the skipped
    codes could add.  Beyond that, Monte Carlo with n_draws draws per image, err its standard
    error.  Images are taken in chunks so that at most COMPRESS_CHUNK (image, code) pairs
    are held at once.
    """
    M, K = cm.n_dims, cm.n_codes
    log2_pi = np.log2(cm.prior_table()) - bbc.PRECISION                              # (M, K)
    if K**M > MAX_ENUMERATION:
        return bbc.sampled_bound(cm, V, n_draws, rng or np.random.default_rng(0))
    codes = all_codes(M, K)
    prior_bits = -log2_pi[np.arange(M), codes].sum(axis=1)                      # (P,)
    bound, err = np.zeros(len(V)), np.zeros(len(V))
    step = max(1, COMPRESS_CHUNK // len(codes))
    worst = D * bbc.PRECISION + 2 * M * bbc.PRECISION
    for s in range(0, len(V), step):
        v = V[s:s + step]
        if cm.sequential:
            log2_q, _ = cm.chain_tables(v)                                       # (n, P)
        else:
            log2_q = (np.log2(cm.posterior_table(v)) - bbc.PRECISION)[:, np.arange(M), codes].sum(-1)
        w = np.exp2(log2_q)
        n, j = np.nonzero(w > prune)
        cost = prior_bits[j] + log2_q[n, j]
        for a in range(0, len(n), 20_000):               # bounded memory: 20,000 x 96 at a time
            sl = slice(a, a + 20_000)
            cost[sl] += cm.pixel_bits(v[n[sl]], codes[j[sl]]).sum(axis=1)
        bound[s:s + step] = np.bincount(n, weights=w[n, j] * cost, minlength=len(v))
        kept = np.bincount(n, weights=w[n, j], minlength=len(v))
        err[s:s + step] = np.maximum(1.0 - kept, 0.0) * worst
    return bound, err


# The compression experiment, the bitstream file and the baselines.

# every coded model, and the factorial VQ's recognition network alone ("amortised")
CODER_MODELS = (*(name for name, spec in MODELS.items() if spec.coded), "factorial_vq_amortised")


def coder_variant(models, name):
    """The fitted model behind a coder row; the amortised row is the factorial model with
    its refinement switched off."""
    if name == "factorial_vq_amortised":
        model = copy.deepcopy(models["factorial_vq"])
        model.refine = 0
        return model
    return models[name]


def t_to_8bit(sigma_x):
    """Bits per image that turn a description length at quantisation width t = sigma_x
    sqrt(2 pi) into one at the 8-bit width 1/255."""
    return D * math.log2(sigma_x * math.sqrt(2 * math.pi) * (bbc.PIXEL_LEVELS - 1))


def code_and_check(model, V, seed=0, lanes=bbc.CODER_LANES, draws=1):
    """Encode and decode V (N, 96) uint8 (from `draws` sets of initial bits, see
    bits_back_coder.round_trip); returns the numbers of one coder row (with the model's own
    F at 8-bit width as density_bound) and the (coding model, encoded words)."""
    cm = CodingModel.from_model(model)
    row, words = bbc.round_trip(cm, V, lambda: cm.bound(V), seed, lanes, draws)
    density = (float(model.description_length(V / (bbc.PIXEL_LEVELS - 1))["total"].mean())
               + t_to_8bit(model.sigma_x))
    return {**row, "density_bound": density}, (cm, words)


def compress_comparison(seed=0, n_test=2000, models=CODER_MODELS, workers=2, log=None,
                        folder=None, **fit_kw):
    """Train the discrete models, then code the 8-bit held-out set with each.

    Returns ({NAME: coder row, "baselines": {...}, "seconds": encode + decode wall time of
    all rows, run one after another}, {NAME: (CodingModel, encoded words per lane)}).
    """
    log = log or kit.progress_logger(True)
    fitted = sorted({m.replace("_amortised", "") for m in models})
    out = run_comparison(seed=seed, n_test=n_test, models=fitted, workers=workers, folder=folder,
                         **fit_kw)
    V = quantise_images(out["heldout"])
    rows, streams = {}, {}
    for name in models:
        rows[name], streams[name] = code_and_check(coder_variant(out["models"], name), V, seed)
        log(f"{name:24s} {rows[name]['actual_bits']:8.2f} bits per image "
            f"({rows[name]['overhead_pct']:+.3f}% over F_t), round trip "
            f"{kit.round_trip_cell(rows[name]['roundtrip'])}, {rows[name]['seconds']:.2f} s")
    rows["seconds"] = sum(rows[name]["seconds"] for name in models)
    rows["baselines"] = compressors.baseline_bits(V, HEIGHT, WIDTH)
    return rows, streams


# every header field of a bitstream file, and what a valid value is
HEADER_FIELDS = {
    "model": lambda v: v in CODER_MODELS,
    "seed": fc.whole(0, MAX_SEED),
    "n_dims": fc.whole(1, MAX_DIMS),
    "n_units_per_dim": fc.whole(2, MAX_CODES),
    "sigma_x": lambda v: isinstance(v, float) and SIGMA_RANGE[0] <= v <= SIGMA_RANGE[1],
    "refine": fc.whole(0, 10_000),
    "n_test": fc.whole(1, MAX_IMAGES),
    "n_images": fc.whole(1, MAX_IMAGES),
    "lanes": fc.whole(1, 10_000),
    "form": lambda v: v in CODER_FORMS,
    "n_params": fc.whole(1, 2**31),
    "images_sha256": fc.is_sha256,
}


def write_bitstream(path, name, cm, words, config, V):
    """Write one model's message in the coder's container (bits_back_coder.pack_stream):
    the header (config and what the receiver needs), the fixed-point parameters and the
    message.  Returns the file's size in bytes."""
    import hashlib
    params = np.concatenate([cm.params[k].ravel() for k in cm.shapes()])
    header = {**config, "model": name, "n_images": len(V), "lanes": len(words),
              "form": cm.form, "n_params": int(params.size),
              "images_sha256": hashlib.sha256(V.tobytes()).hexdigest()}
    blob = fc.pack_stream(header, params, words)
    kit.write_bytes(path, blob)
    return len(blob)


def _parse_bitstream(path, blob):
    """Header (checked field by field), CodingModel and per-lane words of a file's bytes."""
    header, rest = fc.unpack_stream(path, blob, HEADER_FIELDS, elsewhere={
        m: "neural_codes.py --decode" for m in ("vae", "pixel_vae", "acn")})
    if header["n_images"] != header["n_test"]:
        raise ValueError(f"{path}: header fields 'n_images' and 'n_test' disagree")
    if (header["form"] == "residual") != (header["model"] == "residual_vq"):
        raise ValueError(f"{path}: header field 'form' does not fit model {header['model']}")
    M, K = header["n_dims"], header["n_units_per_dim"]
    if header["model"] == "standard_vq":
        M, K = 1, header["n_dims"] * header["n_units_per_dim"]
    shapes = CodingModel.param_shapes(header["form"], M, K)
    sizes = [int(np.prod(shape)) for shape in shapes.values()]
    if header["n_params"] != sum(sizes):
        raise ValueError(f"{path}: header field 'n_params' does not fit the model, or the "
                         f"file is truncated")
    flat, words = fc.split_payload(path, rest, sum(sizes), header["lanes"])
    parts = np.split(flat, np.cumsum(sizes)[:-1])
    params = {k: v.reshape(shape) for (k, shape), v in zip(shapes.items(), parts)}
    refine = 0 if header["model"].endswith("_amortised") else header["refine"]
    try:
        cm = CodingModel(header["form"], M, K, header["sigma_x"], refine, params)
    except ValueError as err:          # parameters outside the coder's fixed-point range
        raise ValueError(f"{path}: {err}") from None
    return header, cm, words


def read_bitstream(path):
    """Decode a bitstream file: returns (header, images (N, 96) uint8).

    Raises ValueError with a plain message on any damage, naming a bad header field;
    images are only returned when the checksum, the decoded images' hash and the recovered
    initial bits all agree.
    """
    with open(path, "rb") as f:
        blob = f.read()
    header, cm, words = _parse_bitstream(path, blob)
    return header, bbc.decode_checked(path, cm, words, header["n_images"], header["seed"],
                                      header["images_sha256"])


# ----------------------------------------------------------------------------- CLI

def format_table(results, cfg, markdown=False):
    """The results table: mean (and +- sd over seeds) in bits per image; plain or Markdown."""
    seeds, M, K = list(results), cfg["n_dims"], cfg["n_units_per_dim"]
    legacy = cfg["objective"] == "meanfield"

    def stat(name, split, key):
        vals = [results[s][name][split].get(key) for s in seeds]
        if any(v is None for v in vals):
            return "skipped" if key == "exact" else "-"
        return kit.mean_sd(vals)

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
    reading = data_reading(cfg)
    head = (f"Bits-back description length, bits per image, {cfg['n_test']} held-out images, "
            f"{seed_text}; sigma_x = {cfg['sigma_x']}, t = sigma_x*sqrt(2 pi)" +
            ("" if reading == data_reading({}) else f"; images blurred by "
             f"{reading['blur_sigma']:g} pixels, heights {heights_text(reading)}"))
    table = kit.table(head, cols, rows, markdown)
    pairs = [(name, hard) for hard, name in HARD_CODES.items()
             if name in cfg["models"] and hard in cfg["models"]]
    if pairs:
        wins = lambda name, hard: sum(results[s][name]["heldout"]["total"]
                                      <= results[s][hard]["heldout"]["total"] for s in seeds)
        table += ("\n\nHeld-out F no worse than the hard code of the same family, seeds: " +
                  ", ".join(f"{model_label(name, M, K)} {wins(name, hard)}/{len(seeds)}"
                            for name, hard in pairs))
    return table


def format_compress_table(rows, cfg, markdown=False):
    """The coder table: bits per image of the 8-bit held-out images, per model."""
    cols = ["model", "actual bits", "F_t", "overhead", "density bound", "round trip", "seconds"]
    table = []
    for name, r in rows.items():
        if name in ("baselines", "seconds"):
            continue
        label = (model_label("factorial_vq", cfg["n_dims"], cfg["n_units_per_dim"]) + ", amortised"
                 if name == "factorial_vq_amortised"
                 else model_label(name, cfg["n_dims"], cfg["n_units_per_dim"]))
        table.append([label, kit.num(r["actual_bits"]), kit.num(r["bound_t"]),
                      kit.num(r["overhead_pct"], "+.3f") + "%", kit.num(r["density_bound"]),
                      kit.round_trip_cell(r["roundtrip"]), f"{r['seconds']:.2f}"])
    b = rows["baselines"]
    head = (f"Bits-back coding of {cfg['n_test']} held-out images (8-bit pixels), seed "
            f"{cfg['seed']} (one set of the coder's initial bits), bits per image; sigma_x = "
            f"{cfg['sigma_x']}")
    tail = ("Same images, general-purpose compressors, each on its best layout of the set: "
            + ", ".join(f"{n if n != 'png' else 'PNG'} {b[n]:.1f} ({b['layout'][n]})"
                        for n in compressors.COMPRESSORS) + " bits per image; raw 768.")
    return kit.table(head, cols, table, markdown) + ("\n\n" if markdown else "\n") + tail


def format_earlier(v, markdown=False):
    """The earlier reproduction's table rerun by its recipe, with the valid F beside it."""
    pm, seeds = kit.pm, v["seeds"]
    split = lambda r, c, t: f"{r:.2f} + {c:.2f} = {t:.2f}"
    cell = lambda name, key: pm(v["table"][name][key]["total_mean"],
                                v["table"][name][key]["total_sd"])
    rows = [[label, split(*v["reported_table"][name]),
             split(*(v["seed0"][name][k] for k in ("recon", "code", "total")))
             if v["seed0"] else "-",
             cell(name, "its"), cell(name, "its_heldout"), cell(name, "valid"),
             cell(name, "valid_heldout")] for name, label in EARLIER_LABELS.items()]
    seed_text = f"seeds {', '.join(map(str, seeds))}"
    parts = [kit.table(
        f"The earlier reproduction's recipe ({v['steps']} Adam steps on minibatches of "
        f"{v['batch']}, its initialisation and draws) and its number, recon + code on its "
        f"training images, which leaves out the variance of the stochastic code and is not a "
        f"code length; beside it the valid F of the same models. Bits per image; mean ± sd "
        f"over {seed_text}",
        ["model", "its README, seed 0", "rerun, seed 0", "its number", "its number, held-out",
         "valid F, training", "valid F, held-out"], rows, markdown)]
    shown = [s for s in seeds if s < len(EARLIER_TOTALS["factorial_vq"])]
    if shown:
        rows = [[EARLIER_LABELS[name]] + [f"{v['its_totals'][name][seeds.index(s)]:.2f} "
                                          f"({v['reported_totals'][name][s]:.2f})" for s in shown]
                for name in EARLIER_TOTALS]
        parts.append(kit.table("Its number per seed, rerun (its README's in brackets)",
                               ["model", *(f"seed {s}" for s in shown)], rows, markdown))
    steps = lambda key, which: ", ".join("-" if b[which] is None else str(b[which])
                                         for b in v["below_both"][key])

    def below(key, what):
        at_end = sum(b["stays"] is not None for b in v["below_both"][key])
        return (f"By {what} the factorial VQ is below both other VQs first at step "
                f"{steps(key, 'first')}, last at step {steps(key, 'last')}, and at the end of "
                f"training at {at_end} of {len(seeds)} seeds"
                + (f", throughout from step {steps(key, 'stays')}." if at_end else "."))

    misses = [f"its seed-0 table {v['seed0_miss']:.2f}" if v["seed0_miss"] is not None else "",
              f"its totals {v['totals_miss']:.2f}" if v["totals_miss"] is not None else ""]
    parts.append(f"Largest miss of the rerun: {'; '.join(m for m in misses if m) or '-'} bits. "
                 f"A step is one minibatch of {v['batch']} images, recorded every "
                 f"{v['eval_every']}; per seed ({seed_text}): "
                 f"{below('its', 'its number')} "
                 f"{below('valid_heldout', 'the held-out valid F')} "
                 f"Sending the training mean image and no code costs "
                 f"{pm(*v['no_code_heldout'])} bits per held-out image.")
    return "\n\n".join(parts)


def format_experiments(out, seeds, markdown=False):
    """Tables of the open-question experiments, in the order they were asked."""
    pm = kit.pm
    seed_text = f"seeds {', '.join(map(str, seeds))}"
    parts = []
    if "training" in out:
        v = out["training"]
        rows = [["hard code: factorial 4x6", pm(v["hard_code"]["heldout_total_mean"],
                                                v["hard_code"]["heldout_total_sd"]), "-"]]
        rows += [[text, pm(v[key]["heldout_total_mean"], v[key]["heldout_total_sd"]),
                  f"{v[key]['at_most_hard']}/{len(seeds)}"] for key, text in RECIPE_STEPS]
        parts.append(kit.table(
            f"The training recipe built up step by step, factorial 4x6 VQ: held-out F in bits "
            f"per image, mean ± sd over {seed_text}; at most hard = seeds where it is no worse "
            f"than the hard code", ["training", "held-out F", "at most hard"], rows, markdown))
    if "movement" in out:
        rows = []
        for name, v in out["movement"].items():
            phases = ("fit",) if "fit" in v["runs"][0] else PHASES

            def cells(key, scale, spec):
                mean = lambda p: np.mean([r[p][key] for r in v["runs"]])
                return " / ".join(format(mean(p) / scale, spec) if v["runs"][0][p]["steps"]
                                  else "-" for p in phases)

            rows.append([model_label(name, 4, 6), cells("steps", 1, ".0f"),
                         cells("reads", 1e6, ".2f"), cells("dmc", 1e9, ".3f"),
                         cells("ard", 1e3, ".0f"),
                         f"{v['steps_to_1bit_mean']:.1f}",
                         pm(v["dmc_to_train_mean"] / 1e9, v["dmc_to_train_sd"] / 1e9),
                         pm(v["heldout_mean"], v["heldout_sd"])])
        ratio = out["movement"]["factorial_vq"]["dmc_to_train_mean"] / \
            out["movement"]["standard_vq"]["dmc_to_train_mean"]
        parts.append(kit.table(
            f"Data movement of training, mean over {seed_text}: per phase (hard-code search "
            f"alternations / EM iterations / Adam steps; PCA: its fit) the steps run, and per "
            f"step the elements read (millions), DMC (10^9) and ARD (thousands of elements); "
            f"steps to 1 bit = EM iterations and Adam steps until the held-out F is within 1 bit "
            f"of its final value; DMC to train (10^9) counts the search and those steps; "
            f"held-out F in bits. Every read and write moves an element to the top of the LRU "
            f"stack; an operation reads each operand once. Factorial / standard DMC to train: "
            f"{ratio:.1f}",
            ["model", "steps", "reads / step", "DMC / step", "ARD", "steps to 1 bit",
             "DMC to train", "held-out F"], rows, markdown))
    if "sweep" in out:
        rows = [[k, str(v["codewords"]), str(v["joint_codes"]),
                 pm(v["heldout_total_mean"], v["heldout_total_sd"]),
                 "skipped" if v["exact_mean"] is None else pm(v["exact_mean"], v["exact_sd"])]
                for k, v in out["sweep"].items()]
        parts.append(kit.table(
            f"Factor-count sweep: factorial M x K VQ, held-out F and exact DL* in bits per "
            f"image, mean ± sd over {seed_text}",
            ["M x K", "codewords", "joint codes", "held-out F", "exact DL*"], rows, markdown))
    if "limit" in out:
        v = out["limit"]
        parts.append(f"Limit: the true generator (5 uniform heights, renderer, noise sigma_x) "
                     f"needs {v['bits']:.2f} ± {v['se']:.2f} bits per image ({v['n_images']} "
                     f"held-out images of seed {v['seed']}, {v['n_samples']} importance samples "
                     f"each; importance-sampling error {v['importance_se']:.3f})")
    if "alignment" in out:
        for key, v in out["alignment"].items():
            rows = [[f"factor {d + 1}"] + [kit.num(x) for x in mc] + [kit.num(x) for x in ms]
                    for d, (mc, ms) in enumerate(zip(v["mi_controls"], v["mi_segments"]))]
            cols = ["", *(f"h{j + 1}" for j in range(N_CONTROL)),
                    *(f"seg{j + 1}" for j in range(N_CONTROL - 1))]
            parts.append(kit.table(
                f"Alignment of the factorial {key} VQ (seed {v['seed']}): MI in bits between "
                f"each factor's code and each control height h_j and segment mean height seg_j; "
                f"score {pm(v['score'], v['score_sd'])} (controls), "
                f"{pm(v['score_segments'], v['score_segments_sd'])} (segments) over {seed_text}",
                cols, rows, markdown))
    if "sigma" in out:
        parts.append(format_sigma(out["sigma"], seeds, markdown))
    if EARLIER_EXPERIMENT in out:
        parts.append(format_earlier(out[EARLIER_EXPERIMENT], markdown))
    if "annealing" in out:
        rows = [[k, pm(v["heldout_total_mean"], v["heldout_total_sd"]),
                 f"{v['poor_optima']}/{v['runs']}"] for k, v in out["annealing"].items()]
        parts.append(kit.table(
            f"Warm-up schedules for the factorial 4x6 VQ: held-out F in bits per image, mean ± sd "
            f"over {seed_text}; poor = more than {POOR_OPTIMUM_BITS:g} bits above the best run "
            f"at its seed", ["schedule", "held-out F", "poor optima"], rows, markdown))
    return "\n\n".join(parts)


PAPER_TEXT = {"factorial_vq": "18 + 7 = 25", "standard_vq": "36 + 4 = 40",
              "separate_slices": "about 5 bits above factorial",
              "pca24": "recon slightly lower, code much higher"}


def format_sigma(v, seeds, markdown=False):
    """The sigma_x sweep: the full table at the sigma nearest the paper, the total of every
    model at every sigma, and where each of the paper's rankings holds."""
    pm = kit.pm
    seed_text, n_seeds = f"seeds {', '.join(map(str, seeds))}", len(seeds)
    names, sigmas = v["models"], [f"{s:g}" for s in v["sigmas"]]
    at = f"{v['paper_sigma']:g}"
    rows = [[model_label(n, 4, 6)] + [pm(v["table"][at][n][f"{t}_mean"], v["table"][at][n][f"{t}_sd"])
                                      for t in ("recon", "code", "total")]
            + [PAPER_TEXT.get(n, "-")] for n in names]
    parts = [kit.table(
        f"At sigma_x = {at}, the sweep's nearest match to the paper's four numbers (factorial "
        f"and standard recon + code; distance {kit.num(v['paper_distance'][at])} bits): held-out "
        f"bits per image, mean ± sd over {seed_text}",
        ["model", "recon", "code", "total F", "paper"], rows, markdown)]
    rows = [[s] + [kit.num(v["table"][s][n]["total_mean"]) for n in names]
            + [kit.num(v["paper_distance"][s])] for s in sigmas]
    parts.append(kit.table(
        f"Held-out total F in bits per image against sigma_x, mean over {seed_text}; "
        f"distance = how far the factorial and standard (recon, code) lie from the paper's",
        ["sigma_x", *(model_label(n, 4, 6) for n in names), "distance"], rows, markdown))
    rows = [[s] + [f"{kit.num(v['rankings'][k][s]['diff_mean'])} ({v['rankings'][k][s]['seeds_holding']}"
                   f"/{n_seeds})" for k, *_ in PAPER_RANKINGS] for s in sigmas]
    parts.append(kit.table(
        f"The paper's findings against sigma_x: each a held-out difference in bits, > 0 "
        f"where the finding holds (seeds where it holds, of {n_seeds})",
        ["sigma_x", *(text for _, text, *_ in PAPER_RANKINGS)], rows, markdown))
    lines = []
    for key, text, *_ in PAPER_RANKINGS:
        r = v["rankings"][key]
        mean = [s for s in sigmas if r[s]["diff_mean"] > 0]
        every = [s for s in sigmas if r[s]["seeds_holding"] == n_seeds]
        lines.append(f"- {text}: on the mean at sigma_x = {', '.join(mean) or 'none'}; "
                     f"on every seed at {', '.join(every) or 'none'}")
    parts.append("\n".join(lines))
    return "\n\n".join(parts)


def estimate_cost(cfg, n_seeds=1, workers=1, compress=False):
    """A rough (peak bytes, seconds) of a run: the largest arrays one worker holds at once,
    times the workers; and the time of the hard-code search, the EM, the Adam steps,
    refinement and enumeration, at 0.1 ns per multiply-add, 1 ns per elementwise operation
    on the (images x joint codes) arrays of the search and the chain, and 0.25 ms per
    optimiser step, as measured on this 2-core machine (the default comparison takes about
    1 s)."""
    M, K, n, nt = cfg["n_dims"], cfg["n_units_per_dim"], cfg["n_samples"], cfg["n_test"]
    peak, work = 8.0 * 4 * (n + nt) * D, 0.0
    for name in cfg["models"]:
        shape = model_shape(name, M, K)
        if shape is None:
            work += 3.0 * (n + nt) * D * D
            continue
        m, k = shape
        params = 2.0 * m * k * D * HARD_RESTARTS
        biggest = max(n, nt)
        arrays = 8.0 * (6 * params + 10 * biggest * m * k * HARD_RESTARTS + 6 * biggest * m * D)
        joint = float(k) ** m
        if joint <= MAX_ENUMERATION:
            arrays += 8.0 * (joint * (D + m) + 3 * 4_000_000)
            work += 3.0 * joint * nt * D
            # the search: about 20 alternations of every start over all joint codes
            work += 10.0 * 20 * HARD_RESTARTS * n * joint * m
        if name == "residual_vq":
            if joint <= MAX_ENUMERATION:            # the chain's exact F over all its paths
                arrays += 8.0 * 5 * n * joint
                work += 10.0 * 30 * cfg["steps"] * n * joint
            else:
                arrays += 8.0 * 3 * 64 * nt * D
            work += 64.0 * nt * m * k * D
        if compress and joint <= MAX_ENUMERATION:
            arrays += 8.0 * 6 * COMPRESS_CHUNK
            work += 4.0 * joint * nt * D
        if name in HARD_CODES.values() and name != "residual_vq":
            # the EM from every start: its mean-field sweeps (mean_field: N m k min(m k, 3 D)
            # each) and least-squares codebooks (the (N, P)^T (N, P) product, then per pixel
            # group two LU solves, P_g^3 / 3 each, of P_g unknowns), then the refinement
            sweep = m * k * min(m * k, 3 * D)
            P, g = 1 + m * k, (m if name == "separate_slices" else 1)
            Pg = 1 + m * k // g
            solve = n * P * P + g * (2 / 3 * Pg**3 + 4 * Pg * Pg * D / g)
            work += HARD_RESTARTS * ((EM_ITERS + 10) * EM_SWEEPS * n * sweep
                                     + (EM_ITERS + 1) * solve)
            work += cfg["refine"] * (n + nt) * sweep
        peak = max(peak, 8.0 * 4 * (n + nt) * D + arrays)
        work += 6.0 * (cfg["steps"] + HARD_RESTARTS * EM_ITERS) * n * m * k * D
        work += 6.0 * cfg["refine"] * nt * m * k * D
        work += 2.5e6 * (cfg["steps"] + EM_ITERS)                   # per-step overhead
    parallel = max(1, min(workers, n_seeds * len(cfg["models"])))
    return peak * parallel, 1e-10 * work * n_seeds / parallel


def check_resources(ap, cfg, n_seeds, workers, log, compress=False):
    """Refuse a run that cannot fit in memory; print an estimate for a long one."""
    need, seconds = estimate_cost(cfg, n_seeds, workers, compress)
    kit.check_memory(ap, need, "--n-units-per-dim, --n-dims, --n-samples, --n-test or --workers")
    kit.warn_long_run(seconds, log)


def check_models_fit(ap, models, n_samples):
    """Error unless every model among `models` can be fitted to n_samples images (a PCA
    needs at least as many images as components)."""
    small = [n for n in models if n.startswith("pca") and int(n[3:]) > n_samples]
    if small:
        ap.error(f"--n-samples {n_samples} is too small for {small[0]} (needs >= "
                 f"{small[0][3:]}); raise it or leave {small[0]} out of --models")


def parse_args(argv=None):
    ap = kit.CLIParser(prog="spline_images_factorial_vq.py",
                   description="Factorial stochastic VQ of spline images (Hinton & Zemel 1994), "
                               "scored by bits-back description length in bits per image.")
    seeds = ap.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=kit.int_at_least(0, MAX_SEED), default=0,
                       help="random seed")
    seeds.add_argument("--seeds", type=kit.int_at_least(0, MAX_SEED), nargs="+", metavar="S",
                       help="several seeds: mean ± sd, run in parallel worker processes")
    ap.add_argument("--n-dims", type=kit.int_at_least(1, MAX_DIMS), default=4,
                    help="factors M (VQs) of the factorial model; also the slices and the "
                         "residual chain's stages")
    ap.add_argument("--n-units-per-dim", type=kit.int_at_least(2, MAX_CODES), default=6,
                    help="codes K per factor; the standard VQ gets M*K codes")
    ap.add_argument("--n-samples", type=kit.int_at_least(1, MAX_IMAGES), default=200,
                    help="training images (200 as in the paper)")
    ap.add_argument("--n-test", type=kit.int_at_least(1, MAX_IMAGES), default=2000,
                    help="held-out images")
    ap.add_argument("--steps", "--n-epochs", dest="steps", type=kit.int_at_least(1, MAX_STEPS),
                    default=STEPS, help="full-batch Adam steps of each model after its "
                    "hard-code start and EM (one step is one epoch)")
    ap.add_argument("--sigma-x", type=kit.float_between(*SIGMA_RANGE), default=0.15,
                    help="std of the Gaussian pixel noise model")
    ap.add_argument("--blur", dest="blur_sigma", type=kit.float_between(*BLUR_RANGE),
                    default=BLUR_SIGMA, help="the generator's Gaussian blur, std in pixels "
                    "(the paper does not state it)")
    ap.add_argument("--heights", nargs=2, type=kit.float_between(*HEIGHTS_RANGE),
                    default=list(CONTROL_RANGE), metavar=("LOW", "HIGH"), help="the range "
                    "of the control heights, in pixel rows (the paper does not state it)")
    ap.add_argument("--heights-dist", choices=("uniform", "normal"), default="uniform",
                    help="how the heights are drawn: uniform on the range, or normal with "
                         "its centre as mean and a quarter of its width as sd")
    ap.add_argument("--objective", choices=("bits-back", "meanfield"), default="bits-back",
                    help="train on the valid free energy, or on the earlier reproduction's loss "
                         "without the code variance")
    ap.add_argument("--schedule", choices=SCHEDULES, default="sigma",
                    help="warm-up of the EM's E-step over its first half: sigma annealed from "
                         "3 sigma_x, a KL weight rising from 0.1, or none")
    ap.add_argument("--init", choices=("band", "random"), default="band",
                    help="start of the factorial hard-code search: image deviations confined "
                         "to column bands, or scaled by 0.1")
    ap.add_argument("--refine", type=kit.int_at_least(0, 10_000), default=50,
                    help="max mean-field sweeps that refine the posterior at evaluation "
                         "(0: the recognition network's posterior alone)")
    ap.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES),
                    metavar="NAME", help=f"models to run, any of: {' '.join(MODEL_NAMES)}")
    ap.add_argument("--workers", type=kit.int_at_least(1, 64), default=min(2, os.cpu_count() or 1),
                    help="worker processes (up to 2 by default)")
    ap.add_argument("--json", metavar="PATH", help="write config, versions and all numbers here")
    ap.add_argument("--compress", action="store_true",
                    help="code the 8-bit held-out set with every discrete model (bits-back "
                         "coding), decode it, and compare with gzip, bz2, lzma and PNG")
    ap.add_argument("--bitstream", metavar="PATH",
                    help="write one model's coded held-out set to PATH (see --bitstream-model)")
    ap.add_argument("--bitstream-model", choices=CODER_MODELS, default="factorial_vq",
                    help="the model whose message --bitstream writes")
    ap.add_argument("--decode", metavar="PATH",
                    help="decode a --bitstream file and check it against the held-out set; "
                         "everything else is read from the file")
    ap.add_argument("--experiment", nargs="+", choices=EXPERIMENTS + (EARLIER_EXPERIMENT, "all"),
                    metavar="NAME",
                    help="answer open questions: training (the training recipe step by step), "
                         "sweep (factor counts), alignment (factors vs control points), "
                         "annealing (warm-up schedules), limit (the true generator's DL), "
                         "movement (data movement of training), sigma (every model against "
                         "sigma_x), or all of these; earlier (the earlier reproduction's "
                         "recipe and table, with the valid F beside it); over --seeds "
                         "(default 0 1 2 3 4)")
    args, given = ap.parse_run(argv, "every model trained", "print the table as Markdown")
    training = ("seed", "seeds", "n_dims", "n_units_per_dim", "n_samples", "n_test", "steps",
                "sigma_x", "blur_sigma", "heights", "heights_dist", "objective", "schedule",
                "init", "refine", "models")
    ap.refuse_together(given, "decode", training + ("json", "compress", "bitstream",
                                                    "bitstream_model", "experiment", "markdown",
                                                    "workers", "save_models", "load_models"),
                       "reads everything from the file")
    ap.refuse_together(given, "experiment", tuple(t for t in training if t != "seeds") +
                       ("save_models", "load_models"), "runs fixed configurations over --seeds")
    ap.refuse_together(given, "compress", ("models",), "codes with every discrete model")
    if "bitstream_model" in given and not args.bitstream:
        ap.error("--bitstream-model chooses what --bitstream writes: give --bitstream PATH too")
    ap.each_once("--seeds", args.seeds, "seed")
    ap.each_once("--models", args.models, "model")
    if args.heights[0] >= args.heights[1]:
        ap.error(f"--heights {args.heights[0]:g} {args.heights[1]:g}: LOW must be below HIGH")
    if "separate_slices" in args.models and args.n_dims > WIDTH:
        ap.error(f"--n-dims {args.n_dims}: separate_slices needs at most {WIDTH} bands")
    check_models_fit(ap, args.models, args.n_samples)
    if (args.compress or args.bitstream) and args.seeds:
        ap.error("--compress and --bitstream code one seed: use --seed")
    if (args.compress or args.bitstream) and {"blur_sigma", "heights", "heights_dist"} & given:
        ap.error("--compress and --bitstream code the default generator's images: leave out "
                 "--blur, --heights and --heights-dist")
    if args.experiment and (args.compress or args.bitstream):
        ap.error("--experiment runs on its own: leave out --compress and --bitstream")
    ap.each_once("--experiment", args.experiment, "name")
    if args.experiment and "all" in args.experiment and len(args.experiment) > 1:
        ap.error("--experiment all runs every experiment: give it alone")
    if args.json is not None:
        ap.output_file("--json", args.json)
    if args.bitstream is not None:
        ap.output_file("--bitstream", args.bitstream)
    if args.decode is not None:
        ap.input_file("--decode", args.decode)
    args.folder = ap.model_folder(args, lambda path, mode: fc.ModelFolder(
        path, mode, SAVED_CLASSES))
    return args, ap


def merged(kind, parts, config, markdown=False):
    """--merge (kit.merge_runs): the entries and tables of one run over the seeds of runs
    split by seed, the default comparison or the same --experiment."""
    seeds = config["seeds"]
    if kind == "results":
        results = {r["seed"]: r["models"] for p in parts for r in p["results"]}
        results = {s: results[s] for s in seeds}
        return ({"results": [{"seed": s, "models": results[s]} for s in seeds],
                 "summary": summarise(results, config["models"])},
                format_table(results, config, markdown))
    runs = experiment_runs([run for p in parts for run in p["experiment_runs"]])
    out = summarise_experiments(config["experiments"], runs, seeds)
    return {**out, "experiment_runs": runs}, format_experiments(out, seeds, markdown)


def decode_main(path):
    """--decode: decode a bitstream and check it; 0 when every image is recovered, else 2."""
    try:
        header, V = read_bitstream(path)
        expected = quantise_images(generate_spline_images(header["n_test"], header["seed"],
                                                          stream=1)[0])
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"spline_images_factorial_vq.py: error: {err}", file=sys.stderr)
        return 2
    if not np.array_equal(V, expected):
        print(f"spline_images_factorial_vq.py: error: {path} decodes to images that differ from "
              f"the held-out set of seed {header['seed']}", file=sys.stderr)
        return 2
    print(f"decoded {len(V)} images with {header['model']} (seed {header['seed']}): identical to "
          f"the held-out set, initial bits recovered, file {os.path.getsize(path)} bytes")
    return 0


def compress_main(args, cfg, log):
    """--compress / --bitstream: train, code, decode, print the coder table."""
    models = CODER_MODELS if args.compress else (args.bitstream_model,)
    if args.bitstream_model not in models:
        models = models + (args.bitstream_model,)
    fit_kw = {k: cfg[k] for k in ("n_dims", "n_units_per_dim", "n_samples", "steps", "sigma_x",
                                  "objective", "schedule", "init", "refine")}
    rows, streams = compress_comparison(args.seed, cfg["n_test"], models, args.workers, log,
                                        args.folder, **fit_kw)
    print(format_compress_table(rows, {**cfg, "seed": args.seed}, markdown=args.markdown))
    if args.bitstream:
        cm, words = streams[args.bitstream_model]
        V = quantise_images(load_data(args.seed, cfg["n_samples"], cfg["n_test"])[1])
        keys = ("n_dims", "n_units_per_dim", "sigma_x", "refine", "n_test")
        try:
            size = write_bitstream(args.bitstream, args.bitstream_model, cm, words,
                                   {"seed": args.seed, **{k: cfg[k] for k in keys}}, V)
        except ValueError as err:         # parameters beyond the file's 32-bit integers
            sys.exit(f"spline_images_factorial_vq.py: error: cannot write {args.bitstream}: "
                     f"{err}")
        log(f"wrote {args.bitstream}: {size} bytes ({8 * size / len(V):.1f} bits per image "
            f"with header and model parameters)")
    return rows


def main(argv=None):
    args, ap = parse_args(argv)
    log = kit.progress_logger(args.quiet)
    if args.decode:
        return decode_main(args.decode)
    if args.merge:
        return kit.merge_runs(args, ("results", "experiment_runs"),
                              functools.partial(merged, markdown=args.markdown), log)
    t0 = time.perf_counter()
    seeds = args.seeds if args.seeds else [args.seed]
    cfg = {k: getattr(args, k) for k in ("n_dims", "n_units_per_dim", "n_samples", "n_test",
                                         "steps", "sigma_x", "blur_sigma", "heights",
                                         "heights_dist", "objective", "schedule", "init",
                                         "refine", "models")}
    if args.compress or args.bitstream:
        cfg["models"] = sorted({m.replace("_amortised", "") for m in CODER_MODELS})
    if not args.experiment:
        check_resources(ap, cfg, len(seeds), args.workers, log,
                        compress=bool(args.compress or args.bitstream))
    compress = results = experiments = None
    if args.experiment:
        names = EXPERIMENTS if args.experiment == ["all"] else tuple(
            n for n in EXPERIMENTS + (EARLIER_EXPERIMENT,) if n in args.experiment)
        seeds = args.seeds or [0, 1, 2, 3, 4]
        log(f"experiments {', '.join(names)} over seeds {seeds}, {args.workers} worker(s)")
        cfg["experiments"] = list(names)
        experiments = run_experiments(names, seeds, workers=args.workers, log=log)
        print(format_experiments(experiments, seeds, markdown=args.markdown))
    elif args.compress or args.bitstream:
        compress = compress_main(args, cfg, log)
    else:
        log(f"training {len(cfg['models'])} models x {len(seeds)} seed(s), {args.steps} steps "
            f"each, {min(args.workers, len(seeds) * len(cfg['models']))} worker(s)")
        results = run_seeds(cfg, seeds, workers=args.workers, log=log, folder=args.folder)
        print(format_table(results, cfg, markdown=args.markdown))
    wall = time.perf_counter() - t0
    if results and args.objective == "meanfield":
        print("legacy = ||x - E[xhat]||^2/(2 sigma^2) + KL, the earlier reproduction's number: it "
              "omits the variance of the stochastic code and is not a code length; total F is.")
    log(f"done in {wall:.2f} s wall")
    if args.json:
        payload = {"config": {**cfg, "seeds": seeds}, "versions": kit.versions(),
                   "wall_seconds": wall}
        if results:
            payload["results"] = [{"seed": s, "models": results[s]} for s in seeds]
            payload["summary"] = summarise(results, cfg["models"])
        if compress:
            payload["compress"] = compress
        if experiments:
            payload.update(experiments)
        try:
            kit.write_json(args.json, payload)
        except OSError as err:
            print(f"spline_images_factorial_vq.py: error: cannot write {args.json}: {err}",
                  file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(kit.run_main(main, "spline_images_factorial_vq.py"))
