"""The modern codes as a library: Gaussian VAE, 8-bit VAE, ACN, one-bit VAE and VQ-VAE.

Each is scored in exactly the core's convention (docs/paper.md, "Conventions"): bits per
image on the same 2000 held-out images, pixel noise sigma_x, data quantised at width
t = sigma_x * sqrt(2 pi), so that every row sits next to every row of the core's table with
no conversion; the 8-bit VAE leaves the convention for actual bits on 8-bit pixels.

- Gaussian VAE: its negative ELBO is the bits-back free energy F with a continuous code,
  E_q ||x - f(z)||^2 / (2 sigma_x^2) + KL(q(z|x) || N(0, I)), in nats, over ln 2.
- 8-bit VAE: a mean and a scale per pixel, the Gaussian's mass on each 8-bit level.
- ACN: the VAE with a prior conditioned on a neighbour's posterior mean.
- one-bit VAE: two data points, one latent, one- and two-layer VAEs.
- VQ-VAE: a deterministic code, so its valid code length is the reconstruction term plus
  -log2 P(codes) under code frequencies fitted on the training images.

Here: the networks (every one built from the MLP block of mlp.py, forward and hand-written
backward), their training (the core's Adam) and their saved form.  neural_coding.py holds
the VAEs' coding models for the bits-back coder, their files and the model counted;
neural_codes.py runs the experiments and the command line; the core imports none of them.
"""

import copy
import math
import time

import spline_images_factorial_vq as sv  # first: it sets the BLAS thread count

import bits_back_coder as bbc  # noqa: E402
import file_container as fc  # noqa: E402
import mlp  # noqa: E402

np = sv.np
D, LN2 = sv.D, sv.LN2

LATENTS = 5                    # the data's intrinsic dimension: 5 control heights
HIDDEN = (256, 256)            # hidden widths of every encoder and decoder
BATCH = 128
LR = 1e-3                      # Adam's rate, warmed up and cosine-decayed (sv.learning_rate_factor)
MAX_LATENTS = 64
MAX_HIDDEN = 4096
EVAL_SAMPLES = 32              # reparameterised samples per image behind a reported recon term
TRAVERSAL = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)   # latent values, prior sds
IW_SAMPLES = 64                # importance samples per image behind the importance-weighted bound
IW_REPEATS = 2                 # independent sets of them, whose spread gives its standard error


# Adam steps against training-set size, interpolated linearly in log N between these points
# and held constant beyond them: budgets of run time.  The VAE's validation score is still
# improving at the end of each (its best step is within the last few scores: the sweep's
# JSON), so training is early-stopped on validation only and no held-out score set them.
STEPS_AT = {200: 2000, 2000: 50_000, 20_000: 100_000}
# The 8-bit VAE (the scoreboard's) has its own recipe: batches of 64 and a step budget that
# keeps the scoreboard to a few minutes; at each size its rate is the one that
# `neural_codes.py --choose` picks on seed 0's validation images (a test holds these to
# viz/choices.json).
PIXEL_STEPS_AT = {200: 2000, 20_000: 28_000}
PIXEL_BATCH = 64
PIXEL_LR_AT = {200: 1e-2, 20_000: 2e-2}
PIXEL_AR_LR = 5e-3            # the autoregressive decoder's rate (chosen likewise, at N = 20000)
PIXEL_EVAL_EVERY = 1000        # a validation score of 2000 images costs 45 training steps
EVAL_EVERY = 250               # steps between validation scores
PATIENCE = 0.2                 # stop after this fraction of the run (at least 8 scores) brings
                               # no new best validation score


def batch_size(n, largest=BATCH):
    """Minibatch size for n training images: `largest`, or a quarter of a small set (at
    least 32), so that an epoch is several steps and a step costs less."""
    return int(min(largest, max(32, n // 4)))


def training_steps(n, table=STEPS_AT):
    """Adam steps for n training images (`table`, interpolated in log n)."""
    sizes = sorted(table)
    return int(round(np.interp(math.log(n), np.log(sizes), [table[s] for s in sizes])))


def patience_scores(steps, eval_every=EVAL_EVERY):
    """Validation scores without a new best after which a run of `steps` stops."""
    return max(8, int(PATIENCE * steps / eval_every))


# ----------------------------------------------------------------------------- data


def validation_size(n_train):
    """Validation images beside n_train training images: a tenth, 100 to 2000."""
    return int(min(2000, max(100, n_train // 10)))


def load_split(seed, n_train, n_val=None, n_test=2000):
    """(train (n_train, 96), validation (n_val, 96), held-out (n_test, 96), held-out controls).

    Training images come from the core's training stream (stream 0), so N = 200 is exactly
    the core's training set and every smaller set is a prefix of a larger one; validation
    from stream 2; held-out from stream 1, the core's held-out set.  n_val defaults to a
    tenth of n_train, between 100 and 2000 images."""
    n_val = n_val if n_val is not None else validation_size(n_train)
    X = sv.generate_spline_images(n_train, seed)[0]
    V = sv.generate_spline_images(n_val, seed, stream=2)[0]
    T, controls = sv.generate_spline_images(n_test, seed, stream=1)
    return X, V, T, controls


# ----------------------------------------------------------------------------- networks


class Networks:
    """Several MLPs whose weights are consecutive views of one flat vector `theta`, so that
    one Adam updates them all: nets = {name: (sizes, act)}."""

    def __init__(self, nets, dtype=np.float64):
        total = sum(mlp.MLP.n_params(sizes) for sizes, _ in nets.values())
        self.theta = np.zeros(total, dtype=dtype)
        self.nets, self._slices, offset = {}, {}, 0
        for name, (sizes, act) in nets.items():
            n = mlp.MLP.n_params(sizes)
            self._slices[name] = slice(offset, offset + n)
            self.nets[name] = mlp.MLP(sizes, self.theta[offset:offset + n], act)
            offset += n

    mask = None                # or 0/1 like theta: the weights a model holds at zero

    def n_params(self):
        """The parameters that exist: theta's, less those the mask holds at zero."""
        return self.theta.size if self.mask is None else int(np.count_nonzero(self.mask))

    def gather(self, grads):
        """{net name: flat gradient} -> one flat gradient like theta (zeros elsewhere, and
        where the model's mask is 0: Adam never moves a weight whose gradient stays 0)."""
        if list(grads) == list(self.nets):             # every net, in theta's order
            out = np.concatenate([grads[name] for name in self.nets], dtype=self.theta.dtype)
        else:
            out = np.zeros_like(self.theta)
            for name, g in grads.items():
                out[self._slices[name]] += g
        if self.mask is not None:
            out *= self.mask                           # out is ours: no second copy a step
        return out

    def training_state(self):
        """What training changes besides theta (copied with the best theta)."""
        return None

    def new_epoch(self, X, rng):
        """Called before every pass over the training images X (the ACN's neighbours)."""

    def set_progress(self, t, steps):
        """Called before training step t of `steps` (schedules a model keeps itself)."""

    def curve_terms(self, X):
        """Numbers recorded beside the validation score (the training curves): {}."""
        return {}

    def minibatch(self, X, idx, rng):
        """What loss_and_grad takes for the training images X[idx]."""
        return X[idx]

    def restore_training_state(self, state):
        pass

    def astype(self, dtype):
        """A copy whose float arrays (theta, codebooks) have this dtype: training runs in
        float32, scoring in float64."""
        state = {k: v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f"
                 else copy.deepcopy(v) for k, v in self.__getstate__().items()}
        new = object.__new__(type(self))
        new.__setstate__(state)
        return new

    # copies and pickles must rebuild the views into theta
    def __getstate__(self):
        return {**self.__dict__, "nets": {k: (m.sizes, m.act) for k, m in self.nets.items()}}

    def __setstate__(self, state):
        nets = state.pop("nets")
        self.__dict__.update(state)
        self.nets = {k: mlp.MLP(sizes, self.theta[self._slices[k]], act)
                     for k, (sizes, act) in nets.items()}


# ----------------------------------------------------------------------------- Gaussian VAE


class GaussianVAE(Networks):
    """q(z|x) = N(mu(x), diag s(x)^2) from an MLP encoder, prior N(0, I), decoder MLP f(z),
    p(x|z) = N(f(z), sigma_x^2 I) at the core's quantisation width t, so that

        F(x) = ( E_q ||x - f(z)||^2 / (2 sigma_x^2) + KL(q(z|x) || N(0, I)) ) / ln 2

    is a bits-back code length in the core's convention (the VAE's negative ELBO).
    A beta-VAE trains on recon + beta KL (and stops early on it); it is scored by F all the
    same: beta changes what is learned, never how its bits are counted.
    """

    beta = 1.0                 # the KL's weight in training (and early stopping) alone
    reads_pixels = False       # whether the decoder reads the image too (autoregressive)

    def __init__(self, n_latent=LATENTS, hidden=HIDDEN, sigma_x=0.15, act="relu", rng=None,
                 n_out=D, extra=None):
        if n_latent < 1 or min(hidden, default=1) < 1:
            raise ValueError("need n_latent >= 1 and hidden widths >= 1")
        L = self.n_latent = int(n_latent)
        self.sigma_x, self.hidden = float(sigma_x), tuple(hidden)
        super().__init__({"enc": ((D, *hidden, 2 * L), act),
                          "dec": ((L + D * self.reads_pixels, *hidden, n_out), act),
                          **(extra or {})})
        rng = rng if rng is not None else np.random.default_rng(0)
        self.nets["enc"].init(rng, last_scale=0.1)      # start near the prior: small KL
        self.nets["dec"].init(rng)
        self.nets["dec"].p[f"b{len(hidden)}"][...] = 0.1   # near the mean image brightness

    def encode(self, X):
        """(mu (N, L), log s (N, L), cache) of q(z|x)."""
        out, cache = self.nets["enc"].forward(X)
        return out[:, :self.n_latent], out[:, self.n_latent:], cache

    def decoder_input(self, Z, X):
        """What the decoder is fed for codes Z (N, L) of images X (N, 96): Z (an
        autoregressive decoder takes X too)."""
        return Z

    def decode(self, Z, X=None):
        """The decoder's output for Z (N, L) (and images X, if the decoder reads them)."""
        return self.nets["dec"].forward(self.decoder_input(Z, X))[0]

    def pixel_nll(self, X, out, grad=False):
        """-log p(x|z) in nats per image (N,) in the t-convention, from the decoder's output
        (N, 96); with grad also its gradient with respect to the output."""
        R = out - X
        nll = np.einsum("nd,nd->n", R, R) / (2 * self.sigma_x**2)
        return (nll, R / self.sigma_x**2) if grad else nll

    def mean_image(self, out):
        """The decoder's mean image (N, 96) from its output."""
        return out

    def loss_and_grad(self, X, rng):
        """Mean F in nats over X (one reparameterised sample per image) and its gradient,
        a flat array like theta."""
        N = len(X)
        mu, log_s, enc_cache = self.encode(X)
        s = np.exp(log_s)
        eps = rng.standard_normal(mu.shape, dtype=mu.dtype)
        Z = mu + s * eps
        out, dec_cache = self.nets["dec"].forward(self.decoder_input(Z, X))
        recon, g_out = self.pixel_nll(X, out, grad=True)
        kl = 0.5 * np.sum(mu * mu + s * s - 1.0 - 2.0 * log_s, axis=1)
        g_dec, g_in = self.nets["dec"].backward(dec_cache, g_out / N)
        g_Z = g_in[:, :self.n_latent]
        b = self.beta
        g_mu = g_Z + b * mu / N
        g_log_s = g_Z * eps * s + b * (s * s - 1.0) / N
        g_enc, _ = self.nets["enc"].backward(enc_cache, np.concatenate([g_mu, g_log_s], axis=1),
                                            input_grad=False)
        return float(np.mean(recon + b * kl)), self.gather({"enc": g_enc, "dec": g_dec})

    def description_length(self, X, n_samples=EVAL_SAMPLES, rng=None, chunk=500):
        """Per-image bits {"recon", "code", "total"}: the recon term averaged over n_samples
        reparameterised draws, the KL in closed form.  The draws come from rng (default: a
        fixed one), so a score repeats exactly."""
        rng = rng if rng is not None else np.random.default_rng(12345)
        recon, code = np.empty(len(X)), np.empty(len(X))
        for i in range(0, len(X), chunk):
            x = X[i:i + chunk]
            mu, log_s, _ = self.encode(x)
            s = np.exp(log_s)
            code[i:i + chunk] = 0.5 * np.sum(mu * mu + s * s - 1.0 - 2.0 * log_s, axis=1)
            eps = rng.standard_normal((n_samples,) + mu.shape)
            xs = np.tile(x, (n_samples, 1))
            out = self.decode((mu + s * eps).reshape(-1, self.n_latent), xs)
            err = self.pixel_nll(xs, out).reshape(n_samples, len(x))
            recon[i:i + chunk] = err.mean(axis=0)
        recon, code = recon / LN2, code / LN2
        return {"recon": recon, "code": code, "total": recon + code}

    def log_weights(self, X, n_samples, rng):
        """log p(x, z_s) - log q(z_s | x) in nats for n_samples draws z_s ~ q: (S, N), with
        p(x|z) in the t-convention (no normaliser), as in F."""
        mu, log_s, _ = self.encode(X)
        s = np.exp(log_s)
        eps = rng.standard_normal((n_samples,) + mu.shape)
        Z = mu + s * eps
        Xs = np.tile(X, (n_samples, 1))
        log_px = -self.pixel_nll(Xs, self.decode(Z.reshape(-1, self.n_latent), Xs)
                                 ).reshape(n_samples, len(X))
        log_pz = -0.5 * np.sum(Z * Z, axis=2)
        log_qz = -0.5 * np.sum(eps * eps, axis=2) - np.sum(log_s, axis=1)
        return log_px + log_pz - log_qz          # the (2 pi)^(L/2) of p(z) and q(z|x) cancel

    def importance_bound(self, X, n_samples=IW_SAMPLES, rng=None, chunk=100,
                         repeats=IW_REPEATS):
        """The importance-weighted bound -log2 mean_s p(x, z_s) / q(z_s|x) per image (N,),
        averaged over `repeats` independent sets of n_samples draws, and the standard error
        of its mean over images from the spread of those repeats: each image's variance
        over its repeats, pooled over the images.  (The delta method over one set's weights
        understates it: the weights are heavy-tailed.)"""
        rng = rng if rng is not None else np.random.default_rng(54321)
        est = np.empty((repeats, len(X)))
        for r in range(repeats):
            for i in range(0, len(X), chunk):
                lw = self.log_weights(X[i:i + chunk], n_samples, rng)
                top = lw.max(axis=0)
                est[r, i:i + chunk] = -(np.log(np.exp(lw - top).mean(axis=0)) + top) / LN2
        se = math.sqrt(est.var(axis=0, ddof=1).sum() / repeats) / len(X)
        return est.mean(axis=0), se

    def validation_bits(self, X):
        """The training objective, recon + beta KL (F itself at beta = 1), in bits on X with
        few samples: the early-stopping criterion."""
        dl = self.description_length(X, n_samples=4, rng=np.random.default_rng(7))
        return (dl["recon"] + self.beta * dl["code"]).mean()

    def traversals(self, values=TRAVERSAL):
        """Decoded images (L, len(values), 96) as latent l runs over values, the other
        latents at the prior mean 0."""
        L = self.n_latent
        Z = np.zeros((L, len(values), L))
        Z[np.arange(L), :, np.arange(L)] = values
        return self.mean_image(self.decode(Z.reshape(-1, L))).reshape(L, len(values), D)

    def active_latents(self, X, threshold=0.01):
        """Latents whose posterior mean varies over images by more than threshold (var)."""
        mu = self.encode(X)[0]
        return int(np.sum(mu.var(axis=0) > threshold))


# --- the 8-bit VAE ---------------------------------------------------------------------------
#
# On 8-bit images a fixed sigma_x is a poor likelihood: 37% of the pixels are exactly 0 and
# the rest need a scale that follows the image.  The 8-bit VAE's decoder gives every pixel a
# mean and a log-scale, and p(v|z) is the Gaussian's mass on v's bin [(v - 1/2)/255,
# (v + 1/2)/255], the end levels taking the tails: a normalised distribution over the 256
# levels, exactly what the coder codes (with the scale on SCALE_GRID).  Its F is then an
# 8-bit code length, no t-convention.

SCALE_LOW, SCALE_STEP, N_SCALES = -28_376, 355, 64   # log-scales (units 2^-12 nats) of the grid
LOG_SCALE_RANGE = (SCALE_LOW / 4096, (SCALE_LOW + (N_SCALES - 1) * SCALE_STEP) / 4096)
#                 = 0.25 to 59 levels
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def discretised_gaussian(levels, mu, log_s):
    """log P(v | mu, s) in nats (N, D) of 8-bit levels (N, D) under N(mu, s^2) on the [0, 1]
    scale, binned as above; and its gradients (N, D) with respect to mu and log_s.

    Both edges in one tail lose the difference to rounding, so the upper tail is reflected
    onto the lower one; the log of a difference of CDFs is taken from their logs."""
    from scipy.special import log_ndtr
    L = bbc.PIXEL_LEVELS - 1
    s = np.exp(log_s)
    a = np.where(levels <= 0, -np.inf, (levels - 0.5) / L - mu) / s
    b = np.where(levels >= L, np.inf, (levels + 0.5) / L - mu) / s
    flip = a > 0
    lo, hi = np.where(flip, -b, a), np.where(flip, -a, b)            # P = Phi(hi) - Phi(lo)
    log_hi = log_ndtr(hi)
    with np.errstate(divide="ignore"):
        logp = log_hi + np.log1p(-np.exp(log_ndtr(lo) - log_hi))
    za, zb = np.where(np.isfinite(a), a, 0.0), np.where(np.isfinite(b), b, 0.0)
    density = lambda z, finite: np.exp(np.where(finite, -0.5 * z * z - LOG_SQRT_2PI - logp,
                                                -np.inf))
    ra, rb = density(za, np.isfinite(a)), density(zb, np.isfinite(b))   # phi(a)/P, phi(b)/P
    return logp, (ra - rb) / s, za * ra - zb * rb


class PixelVAE(GaussianVAE):
    """The Gaussian VAE for 8-bit images: the decoder gives (mean, log-scale) per pixel, the
    log-scale clipped to LOG_SCALE_RANGE, and p(v|z) is the discretised Gaussian above.
    Its input is x = v / 255; F is in bits of the 8-bit image."""

    def __init__(self, n_latent=LATENTS, hidden=HIDDEN, act="relu", rng=None):
        super().__init__(n_latent, hidden, sigma_x=math.nan, act=act, rng=rng, n_out=2 * D)
        self.nets["dec"].p[f"b{len(hidden)}"][D:] = math.log(0.05)

    def pixel_nll(self, X, out, grad=False):
        levels = np.rint(X * (bbc.PIXEL_LEVELS - 1))
        raw = out[:, D:].astype(np.float64)
        lo, hi = LOG_SCALE_RANGE
        logp, g_mu, g_ls = discretised_gaussian(levels, out[:, :D].astype(np.float64),
                                                np.clip(raw, lo, hi))
        nll = -logp.sum(axis=1)
        if not grad:
            return nll
        g_ls = np.where((raw > lo) & (raw < hi), g_ls, 0.0)
        return nll, np.concatenate([-g_mu, -g_ls], axis=1).astype(out.dtype)

    def mean_image(self, out):
        return out[:, :D]


# --- the 8-bit VAE with an autoregressive decoder --------------------------------------------
#
# Given z, the plain 8-bit VAE's pixels are independent, and its decoder cannot place the
# curve finely enough: its reconstruction term is about 240 bits.  Here the decoder also
# reads the pixels sent before each one, column by column from the left (the curve is a
# function of x), as a masked MLP (MADE, Germain et al. 2015): every input, hidden unit and
# output has a degree, pixel k of the order degree k, the latents 0; a weight exists where
# the degree does not fall (input to hidden, hidden to hidden) and to the outputs of pixel k
# only from degrees below k.  So pixel k's (mean, log-scale) is a function of z and the
# pixels before it: the image's likelihood is the product of the pixels' in that order, a
# normalised 8-bit distribution, and the decoder runs once on the whole image in training.
# A quarter of each hidden layer has degree 0 (z alone), so that the first pixels are
# predicted from z with capacity; the rest take the degrees 1 ... 95 in turn.  The masks
# follow from the sizes alone, so a receiver rebuilds them.

PIXEL_ORDER = np.lexsort((np.arange(D) // sv.WIDTH, np.arange(D) % sv.WIDTH))  # column, row
Z_UNITS = 0.25                 # the fraction of each hidden layer that sees z alone


def made_masks(n_latent, hidden):
    """0/1 masks (float) of the autoregressive decoder's weights, one per layer:
    [(L + 96, h_1), ..., (h_last, 192)], the outputs (mean, log-scale) per pixel index."""
    rank = np.empty(D, dtype=np.int64)
    rank[PIXEL_ORDER] = np.arange(1, D + 1)                 # pixel index -> degree 1 ... 96
    degrees = [np.concatenate([np.zeros(n_latent, dtype=np.int64), rank])]
    for h in hidden:
        z_only = int(Z_UNITS * h)
        degrees.append(np.concatenate([np.zeros(z_only, dtype=np.int64),
                                       np.arange(h - z_only) % (D - 1) + 1]))
    masks = [(d_out[None, :] >= d_in[:, None]).astype(np.float64)
             for d_in, d_out in zip(degrees[:-1], degrees[1:])]
    masks.append((np.tile(rank, 2)[None, :] > degrees[-1][:, None]).astype(np.float64))
    return masks


class ARPixelVAE(PixelVAE):
    """The 8-bit VAE whose decoder reads z and the pixels before each one (made_masks):
    p(v|z) = prod_k p(v_k | z, v_<k), each the discretised Gaussian of PixelVAE.  Masked
    weights are zero and stay zero (their gradient is masked: Networks.gather)."""

    reads_pixels = True

    def __init__(self, n_latent=LATENTS, hidden=HIDDEN, act="relu", rng=None):
        super().__init__(n_latent, hidden, act=act, rng=rng)
        self.mask = np.ones_like(self.theta)
        views = self.nets["dec"]._views(self.mask[self._slices["dec"]])
        for i, m in enumerate(made_masks(n_latent, hidden)):
            views[f"W{i}"][...] = m
        self.theta *= self.mask

    def decoder_input(self, Z, X):
        if X is None:
            raise ValueError("the autoregressive decoder reads the image: decode(Z, X)")
        return np.concatenate([Z, X.astype(Z.dtype)], axis=1)


# ----------------------------------------------------------------------------- ACN
#
# An associative compression network (Graves, Menick & van den Oord 2018) is the Gaussian VAE
# with its prior N(0, I) replaced by p(z | z_n) = N(m(z_n), diag sd(z_n)^2), a prior network
# fed the posterior mean z_n of a neighbouring image.  A set is sent along a greedy
# nearest-neighbour tour in latent space: each image's code is priced under the prior given
# the image sent before it, which the receiver has decoded and encodes itself; the first
# image uses N(0, I).  The prior network's input is a constant (no gradient reaches the
# neighbour's encoder pass), so the receiver's prior is exactly the sender's.

ACN_NEIGHBOURS = 5             # K: training neighbours per image, refreshed every epoch
ACN_RULES = ("uniform", "once")   # how a training image's neighbour is drawn (see ACN)
ONCE_CANDIDATES = 4            # "once" looks among this many times K nearest first
PRIOR_HIDDEN = (128, 128)      # hidden widths of the prior network
ACN_FINE_TUNE = 0.25           # an ACN started from a trained VAE trains this fraction of
ACN_FINE_TUNE_LR = 0.3         # the VAE's steps, at this fraction of its rate
ACN_CODER_MIX = 16             # the coder's prior gives 1/16 of each latent's mass to N(0, 1)


def gaussian_kl(mu, log_s, m, log_sd):
    """KL(N(mu, s^2) || N(m, sd^2)) summed over the last axis, in nats (N,)."""
    r = np.exp(2.0 * (log_s - log_sd)) + (mu - m)**2 * np.exp(-2.0 * log_sd)
    return 0.5 * np.sum(r - 1.0, axis=-1) + np.sum(log_sd - log_s, axis=-1)


def greedy_tour(M, start=None):
    """A greedy nearest-neighbour tour through points M (N, L): start (default: the point
    nearest the origin, the cheapest under N(0, I)), then always the nearest point not yet
    visited.  Returns the visiting order (N,)."""
    M = np.asarray(M, dtype=np.float64)
    n = len(M)
    cur = int(np.argmin(np.einsum("nl,nl->n", M, M))) if start is None else int(start)
    order, left = np.empty(n, dtype=np.int64), np.ones(n, dtype=bool)
    for i in range(n):
        order[i], left[cur] = cur, False
        if i + 1 < n:
            d = np.einsum("nl,nl->n", M - M[cur], M - M[cur])
            cur = int(np.argmin(np.where(left, d, np.inf)))
    return order


def nearest_neighbours(M, k):
    """Indices (N, k) of the k nearest other points of each point of M (N, L)."""
    from scipy.spatial import cKDTree
    idx = cKDTree(M).query(M, k=k + 1)[1]
    self_first = np.argsort(idx != np.arange(len(M))[:, None], axis=1, kind="stable")
    return np.take_along_axis(idx, self_first, axis=1)[:, 1:]   # self removed wherever it sat


class ACN(GaussianVAE):
    """The Gaussian VAE with a prior conditioned on a neighbour's code (see above).

    Training batches pair every image with one of its K = ACN_NEIGHBOURS nearest neighbours
    in posterior-mean space (the means and neighbours refreshed every epoch); F is the VAE's
    with KL(q(z|x) || p(z | mu(x_n))).  The neighbour is drawn by `rule`:
      "uniform": uniformly from the K nearest, with repetition across the epoch;
      "once":    uniformly from the K nearest images not yet used as a neighbour this
                 epoch, in the order the epoch's batches visit the images, so that every
                 image is a neighbour once per epoch (when fewer than K are left, the nearest
                 left; when none is, the K nearest).
    The prior network starts at zero output, so an untrained ACN is the VAE with prior
    N(0, I)."""

    rule = "uniform"

    def __init__(self, n_latent=LATENTS, hidden=HIDDEN, sigma_x=0.15, prior_hidden=PRIOR_HIDDEN,
                 rng=None):
        L = int(n_latent)
        super().__init__(L, hidden, sigma_x, rng=rng,
                         extra={"prior": ((L, *prior_hidden, 2 * L), "relu")})
        self.nets["prior"].init(rng if rng is not None else np.random.default_rng(0),
                                last_scale=0.0)
        self.means = self.neighbours = self.used = None

    @classmethod
    def from_vae(cls, vae, prior_hidden=PRIOR_HIDDEN, rng=None):
        """An ACN whose encoder and decoder are the trained VAE's (its prior N(0, I) at start)."""
        acn = cls(vae.n_latent, vae.hidden, vae.sigma_x, prior_hidden, rng).astype(vae.theta.dtype)
        for name in ("enc", "dec"):
            acn.nets[name].params[...] = vae.nets[name].params
        return acn

    def prior(self, M):
        """(m (N, L), log sd (N, L), cache) of p(z | z_n) for neighbour means M (N, L)."""
        out, cache = self.nets["prior"].forward(M)
        return out[:, :self.n_latent], out[:, self.n_latent:], cache

    def new_epoch(self, X, rng):
        """Every image's posterior mean and its nearest neighbours among them (K, or the
        "once" rule's first candidates), held for the epoch; no image used yet."""
        self.means = np.concatenate([self.encode(X[i:i + 5000])[0]
                                     for i in range(0, len(X), 5000)])
        k = ACN_NEIGHBOURS * (ONCE_CANDIDATES if self.rule == "once" else 1)
        self.neighbours = nearest_neighbours(self.means.astype(np.float64), min(k, len(X) - 1))
        self.used = np.zeros(len(X), dtype=bool)

    def minibatch(self, X, idx, rng):
        """(X[idx], the epoch's posterior mean of one neighbour of each): a constant of the
        step, as the receiver's is."""
        if self.rule == "once":
            return X[idx], self.means[[self._unused_neighbour(i, rng) for i in idx]]
        pick = rng.integers(0, min(ACN_NEIGHBOURS, self.neighbours.shape[1]), size=len(idx))
        return X[idx], self.means[self.neighbours[idx, pick]]

    def _unused_neighbour(self, i, rng):
        """The "once" rule for image i: one of its K nearest images not yet used this
        epoch, drawn uniformly and marked used."""
        K = min(ACN_NEIGHBOURS, len(self.used) - 1)
        near = self.neighbours[i]
        free = near[~self.used[near]][:K]
        if len(free) < K:                 # its candidates are used up: search all unused
            rest = np.flatnonzero(~self.used)
            rest = rest[rest != i]
            if len(rest):
                d = np.einsum("nl,nl->n", self.means[rest] - self.means[i],
                              self.means[rest] - self.means[i])
                free = rest[np.argsort(d, kind="stable")[:K]]
            else:                         # every other image is used: the K nearest
                free = near[:K]
        j = free[rng.integers(len(free))]
        self.used[j] = True
        return j

    def loss_and_grad(self, batch, rng):
        """Mean F in nats over a batch (X (N, 96), neighbour means (N, L)) and its gradient,
        a flat array like theta."""
        X, Mn = batch
        N = len(X)
        mu, log_s, enc_cache = self.encode(X)
        m, log_sd, prior_cache = self.prior(Mn)
        s, inv = np.exp(log_s), np.exp(-2.0 * log_sd)
        eps = rng.standard_normal(mu.shape, dtype=mu.dtype)
        Z = mu + s * eps
        out, dec_cache = self.nets["dec"].forward(Z)
        recon, g_out = self.pixel_nll(X, out, grad=True)
        kl = gaussian_kl(mu, log_s, m, log_sd)
        g_dec, g_Z = self.nets["dec"].backward(dec_cache, g_out / N)
        g_m = (m - mu) * inv / N
        g_mu = g_Z - g_m
        g_log_s = g_Z * eps * s + (s * s * inv - 1.0) / N
        g_log_sd = (1.0 - (s * s + (mu - m)**2) * inv) / N
        g_enc, _ = self.nets["enc"].backward(enc_cache, np.concatenate([g_mu, g_log_s], axis=1),
                                            input_grad=False)
        g_prior, _ = self.nets["prior"].backward(prior_cache,
                                                 np.concatenate([g_m, g_log_sd], axis=1),
                                                 input_grad=False)
        return float(np.mean(recon + kl)), self.gather({"enc": g_enc, "dec": g_dec,
                                                        "prior": g_prior})

    def tour(self, X):
        """The greedy tour through X's posterior means: the order X is sent in."""
        return greedy_tour(self.encode(X)[0])

    def description_length(self, X, n_samples=EVAL_SAMPLES, rng=None, chunk=500):
        """Per-image bits of X sent as a sequence in the given order: the VAE's recon term,
        and image i's code priced under p(z | mu(x_{i-1})), the first under N(0, I)."""
        out = super().description_length(X, n_samples, rng, chunk)
        mu, log_s, _ = self.encode(X)
        m, log_sd, _ = self.prior(mu[:-1])
        zero = np.zeros((1, self.n_latent))
        code = gaussian_kl(mu, log_s, np.concatenate([zero, m]),
                           np.concatenate([zero, log_sd])) / LN2
        return {"recon": out["recon"], "code": code, "total": out["recon"] + code}

    def validation_bits(self, X):
        """Mean F in bits of X sent in tour order, with few samples (early stopping)."""
        return self.description_length(X[self.tour(X)], n_samples=4,
                                       rng=np.random.default_rng(7))["total"].mean()


# ----------------------------------------------------------------------------- the one-bit VAE
#
# Two data points, all zeros and all ones in n dimensions, each with probability 1/2: the
# data's entropy is exactly 1 bit, and any code's expected length is at least that.  The
# decoder is independent Bernoulli per dimension given a single Gaussian latent (prior
# N(0, 1)), so with n = 1 it can explain the data with its bias alone, while with large n
# only the latent can make the n dimensions agree.  The one-layer VAE has q(z|x) Gaussian;
# the two-layer VAE has z2 -> z1 -> x with q(z1|x) and q(z2|z1) Gaussian and a learned
# p(z1|z2), so that p(z1), a Gaussian mixture over z2, can be shaped to the posterior's
# (ideally half a Gaussian on either side of a split).  Every network is ELU, hidden layers
# ONE_BIT_HIDDEN, on 1-D inputs and outputs save x's.
#
# The recipe trains at every ndims: three hidden layers, a rate decayed geometrically over
# the run, and ONE_BIT_RESTARTS starts of which the one with the lowest loss on the two
# data points (their whole distribution, so the training objective itself; fresh draws)
# is kept.  A single start at ndims = 1000 ends anywhere between about 1.5 and 8 bits.

ONE_BIT_DIMS = (1, 2, 5, 10, 100, 1000)
ONE_BIT_HIDDEN = (10, 10, 10)
ONE_BIT_STEPS = 3000           # full-batch Adam steps ...
ONE_BIT_DRAWS = 64             # ... with this many latent draws per data point
ONE_BIT_LR = (5e-3, 1e-4)      # the rate, decayed geometrically from the first to the second
ONE_BIT_RESTARTS = 12          # starts per model, the lowest loss kept
ONE_BIT_EVAL = 20000           # latent draws per data point behind the reported bits
ONE_BIT_IW = 10000             # importance samples per data point behind -log p(x)
LOG_SD_BOUND = 5.0             # every log-std is B tanh(a / B): sd within e^-5 .. e^5, since
                               # the two-layer VAE's best code has q(z1|x) and p(z1|z2) ever
                               # sharper, which overflows without a floor


def bounded_log_sd(a):
    """(B tanh(a / B), its derivative) for raw network outputs a."""
    t = np.tanh(a / LOG_SD_BOUND)
    return LOG_SD_BOUND * t, 1.0 - t * t


def one_bit_data(n_dims):
    """The two data points (2, n_dims): all zeros, all ones."""
    return np.repeat(np.array([[0.0], [1.0]]), n_dims, axis=1)


def bernoulli_nll(X, logits):
    """-log p(x|z) in nats per row (N,) of independent Bernoullis with these logits, and its
    gradient with respect to the logits."""
    e = np.exp(-np.abs(logits))                      # never overflows
    nll = np.sum(np.maximum(logits, 0.0) + np.log1p(e) - X * logits, axis=1)
    return nll, np.where(logits >= 0, 1.0, e) / (1.0 + e) - X


class OneBitVAE(Networks):
    """The one-bit VAE with layers = 1 or 2 stochastic layers of one latent each (see above)."""

    def __init__(self, n_dims, layers=1, hidden=ONE_BIT_HIDDEN, rng=None):
        if layers not in (1, 2):
            raise ValueError("layers must be 1 or 2")
        self.n_dims, self.layers = int(n_dims), layers
        h = tuple(int(w) for w in np.atleast_1d(hidden))
        nets = {"enc": ((self.n_dims, *h, 2), "elu"), "dec": ((1, *h, self.n_dims), "elu")}
        if layers == 2:
            nets.update(enc2=((1, *h, 2), "elu"), prior1=((1, *h, 2), "elu"))
        super().__init__(nets)
        rng = rng if rng is not None else np.random.default_rng(0)
        # every network starts at random, the upper layer's too: started as the identity on
        # priors (q(z2|z1) = p(z1|z2) = N(0, 1)) the two-layer VAE is the one-layer VAE,
        # and most starts stay there
        for name in nets:
            self.nets[name].init(rng)

    def terms(self, X, eps):
        """Per-row (recon, code) in nats and what their gradient needs, for data X (N, n)
        and standard normal draws eps (N, layers): recon = -log p(x|z1), code = log q - log p
        of the latents (KL(q(z2|z1) || N(0, 1)) in closed form, the rest sampled)."""
        out, c_enc = self.nets["enc"].forward(X)
        mu1, (log_s1, d1) = out[:, :1], bounded_log_sd(out[:, 1:])
        s1 = np.exp(log_s1)
        z1 = mu1 + s1 * eps[:, :1]
        logits, c_dec = self.nets["dec"].forward(z1)
        recon, g_logits = bernoulli_nll(X, logits)
        v = dict(mu1=mu1, s1=s1, d1=d1, z1=z1, c_enc=c_enc, c_dec=c_dec, g_logits=g_logits)
        if self.layers == 1:
            code = 0.5 * (mu1**2 + s1**2 - 1.0)[:, 0] - log_s1[:, 0]
            return recon, code, v
        out2, c_enc2 = self.nets["enc2"].forward(z1)
        mu2, (log_s2, d2) = out2[:, :1], bounded_log_sd(out2[:, 1:])
        s2 = np.exp(log_s2)
        z2 = mu2 + s2 * eps[:, 1:]
        out_p, c_prior = self.nets["prior1"].forward(z2)
        m1, (log_sd1, d_sd1) = out_p[:, :1], bounded_log_sd(out_p[:, 1:])
        r = (z1 - m1) * np.exp(-log_sd1)
        # log q(z1|x) - log p(z1|z2) + KL(q(z2|z1) || N(0, 1)); the 2 pi terms cancel
        code = (-0.5 * eps[:, :1]**2 - log_s1 + 0.5 * r**2 + log_sd1
                + 0.5 * (mu2**2 + s2**2 - 1.0) - log_s2)[:, 0]
        v.update(mu2=mu2, s2=s2, d2=d2, c_enc2=c_enc2, c_prior=c_prior, r=r,
                 sd1=np.exp(log_sd1), d_sd1=d_sd1)
        return recon, code, v

    def stratified_draws(self, rng, n_points, per_point):
        """Standard normal draws (n_points * per_point, layers), rows grouped by point: for
        each point and latent one draw in each of per_point equal-mass strata, each latent's
        strata in their own random order (Latin hypercube sampling; an unbiased estimate of
        the expectation with far less noise than independent draws, which matters at large
        n, where a draw in the wrong half costs n bits)."""
        from scipy.special import ndtri
        strata = np.argsort(rng.random((n_points, self.layers, per_point)), axis=-1)
        u = (strata + rng.random(strata.shape)) / per_point
        return ndtri(u).transpose(0, 2, 1).reshape(-1, self.layers).astype(self.theta.dtype)

    def loss_and_grad(self, X, rng):
        """Mean (recon + code) in nats over the rows of X (the two points, each repeated
        the same number of times, in that order), one draw per row, and its gradient (flat
        like theta)."""
        N = len(X)
        eps = self.stratified_draws(rng, 2, N // 2)
        recon, code, v = self.terms(X, eps)
        g_dec, g_z1 = self.nets["dec"].backward(v["c_dec"], v["g_logits"] / N)
        grads = {"dec": g_dec}
        g_log_s1 = np.full_like(v["s1"], -1.0 / N) if self.layers == 2 else (v["s1"]**2 - 1.0) / N
        g_mu1 = np.zeros_like(v["mu1"]) if self.layers == 2 else v["mu1"] / N
        if self.layers == 2:
            r, sd1 = v["r"], v["sd1"]
            g_m1, g_log_sd1 = -r / sd1 / N, (1.0 - r**2) / N
            grads["prior1"], g_z2 = self.nets["prior1"].backward(
                v["c_prior"], np.concatenate([g_m1, g_log_sd1 * v["d_sd1"]], axis=1))
            g_mu2 = g_z2 + v["mu2"] / N
            g_log_s2 = g_z2 * eps[:, 1:] * v["s2"] + (v["s2"]**2 - 1.0) / N
            grads["enc2"], g_from2 = self.nets["enc2"].backward(
                v["c_enc2"], np.concatenate([g_mu2, g_log_s2 * v["d2"]], axis=1))
            g_z1 = g_z1 + r / sd1 / N + g_from2
        g_mu1 = g_mu1 + g_z1
        g_log_s1 = g_log_s1 + g_z1 * eps[:, :1] * v["s1"]
        grads["enc"], _ = self.nets["enc"].backward(
            v["c_enc"], np.concatenate([g_mu1, g_log_s1 * v["d1"]], axis=1), input_grad=False)
        return float(np.mean(recon + code)), self.gather(grads)

    def bits(self, draws=ONE_BIT_EVAL, rng=None):
        """(loss, recon, code) in bits per data point, the mean over both points of
        draws samples each (the negative ELBO and its two parts)."""
        rng = rng if rng is not None else np.random.default_rng(0)
        X = np.repeat(one_bit_data(self.n_dims), draws, axis=0)
        recon, code, _ = self.terms(X, self.stratified_draws(rng, 2, draws))
        recon, code = float(recon.mean()) / LN2, float(code.mean()) / LN2
        return recon + code, recon, code

    def neg_log_likelihood(self, samples=ONE_BIT_IW, rng=None):
        """-log2 p(x) in bits per data point, the mean over both points, importance-weighted
        with `samples` independent draws per point from the defensive mixture of q and the
        prior, r = (q(z|x) + p(z)) / 2.  q alone as the proposal gives weights with heavy
        tails wherever the posterior is wider than q, and an estimate below 1 bit at
        ndims = 1000; against r every weight p(x, z) / r(z) is at most 2 p(x|z) <= 2.  The
        loss minus it estimates KL(q(z|x) || p(z|x)), the posterior's gap."""
        rng = rng if rng is not None else np.random.default_rng(1)
        X = np.repeat(one_bit_data(self.n_dims), samples, axis=0)
        N = len(X)
        eps = rng.standard_normal((N, self.layers))         # q's draws ...
        from_q = rng.random(N) < 0.5
        z2 = rng.standard_normal((N, 1))                    # ... and the prior's: z2, z1 | z2
        m1, sd1 = self._prior1(z2) if self.layers == 2 else (0.0, 1.0)
        log_normal = lambda z, mu, log_sd: (-0.5 * ((z - mu) * np.exp(-log_sd)) ** 2 - log_sd
                                            - 0.5 * math.log(2 * math.pi))[:, 0]
        enc = self.nets["enc"].forward(X)[0]
        mu1, log_s1 = enc[:, :1], bounded_log_sd(enc[:, 1:])[0]
        z1 = np.where(from_q[:, None], mu1 + np.exp(log_s1) * eps[:, :1],
                      m1 + sd1 * rng.standard_normal((N, 1)))
        log_q = log_normal(z1, mu1, log_s1)
        if self.layers == 2:                                # q(z2|z1) at the z1 drawn
            enc2 = self.nets["enc2"].forward(z1)[0]
            mu2, log_s2 = enc2[:, :1], bounded_log_sd(enc2[:, 1:])[0]
            z2 = np.where(from_q[:, None], mu2 + np.exp(log_s2) * eps[:, 1:], z2)
            log_q += log_normal(z2, mu2, log_s2)
        log_prior = self._log_prior(z1, z2)
        log_lik = -bernoulli_nll(X, self.nets["dec"].forward(z1)[0])[0]
        log_r = np.logaddexp(log_q, log_prior) - math.log(2.0)
        logw = (log_lik + log_prior - log_r).reshape(2, samples)
        log_p = sv.logsumexp(logw, axis=1) - math.log(samples)
        return float(-log_p.mean() / LN2)

    def _prior1(self, z2):
        """p(z1|z2): (mean, sd), each (N, 1)."""
        out = self.nets["prior1"].forward(z2)[0]
        return out[:, :1], np.exp(bounded_log_sd(out[:, 1:])[0])

    def _log_prior(self, z1, z2):
        """log p(z1) (one layer) or log p(z2) + log p(z1|z2) per row, nats."""
        if self.layers == 1:
            return (-0.5 * z1**2)[:, 0] - 0.5 * math.log(2 * math.pi)
        m1, sd1 = self._prior1(z2)
        return (-0.5 * z2**2 - 0.5 * ((z1 - m1) / sd1) ** 2 - np.log(sd1))[:, 0] \
            - math.log(2 * math.pi)

    def support(self):
        """A half-width that holds q(z1|x) of both points and the prior of z1 (for a grid)."""
        enc = self.nets["enc"].forward(one_bit_data(self.n_dims))[0]
        reach = np.abs(enc[:, 0]) + 8.0 * np.exp(bounded_log_sd(enc[:, 1])[0])
        if self.layers == 2:
            m1, sd1 = self._prior1(np.linspace(-6.0, 6.0, 2001)[:, None])
            reach = np.append(reach, np.abs(m1) + 8.0 * sd1)
        return float(max(8.0, reach.max()))

    def latent_prior(self, z, n_grid=4001, chunk=2000):
        """log p(z1) at the points z (G,): N(0, 1), or the two-layer's mixture over z2 on a
        grid of z2 in [-8, 8]."""
        if self.layers == 1:
            return -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
        z2 = np.linspace(-8.0, 8.0, n_grid)
        m1, sd1 = (a[:, 0] for a in self._prior1(z2[:, None]))
        log_w = -0.5 * z2**2 - 0.5 * math.log(2 * math.pi) + math.log(z2[1] - z2[0])
        log_n = lambda x: -0.5 * ((x[:, None] - m1) / sd1) ** 2 - np.log(sd1 * math.sqrt(
            2 * math.pi))
        return np.concatenate([sv.logsumexp(log_n(z[i:i + chunk]) + log_w, axis=1)
                               for i in range(0, len(z), chunk)])

    def joint_grid(self, step=0.001):
        """(z (G,), log p(x, z1) of both data points (2, G) in nats) on a grid of the given
        step over the support: what the quadrature and the posterior figure integrate."""
        half = self.support()
        z = np.arange(-half, half + step / 2, step)
        logits = self.nets["dec"].forward(z[:, None])[0]
        return z, np.array([-bernoulli_nll(np.broadcast_to(x, logits.shape), logits)[0]
                            for x in one_bit_data(self.n_dims)]) + self.latent_prior(z)

    def neg_log_likelihood_quadrature(self, step=0.001, grid=None):
        """-log2 p(x) in bits per data point, the mean over both points, by quadrature of
        p(x, z1) over z1 (and z2) on joint_grid(step) (or the grid given): no sampling, the
        check of the importance-weighted one."""
        z, log_joint = grid if grid is not None else self.joint_grid(step)
        log_p = sv.logsumexp(log_joint, axis=1) + math.log(z[1] - z[0])
        return float(-log_p.mean() / LN2)


def fit_one_bit(n_dims, layers, seed=0, restart=0, steps=ONE_BIT_STEPS, draws=ONE_BIT_DRAWS,
                lr=ONE_BIT_LR, hidden=ONE_BIT_HIDDEN):
    """One start of a OneBitVAE trained by full-batch Adam (draws rows per data point), the
    rate decayed geometrically from lr[0] to lr[1]."""
    rng = np.random.default_rng([seed, 16, n_dims, layers, restart])
    model = OneBitVAE(n_dims, layers, hidden, rng=rng).astype(np.float32)
    X = np.repeat(one_bit_data(n_dims), draws, axis=0).astype(np.float32)
    opt = sv.Adam([model.theta], lr=lr[0])
    for t in range(steps):
        _, g = model.loss_and_grad(X, rng)
        opt.step([g], lr=lr[0] * (lr[1] / lr[0]) ** (t / steps))
    return model.astype(np.float64)


def fit_one_bit_best(n_dims, layers, seed=0, restarts=ONE_BIT_RESTARTS, **kw):
    """The OneBitVAE of the start, of `restarts`, whose loss on the two data points (from
    draws of their own stream, not the reported ones) is lowest: (model, {"restart",
    "losses"})."""
    losses, best = [], None
    for r in range(restarts):
        model = fit_one_bit(n_dims, layers, seed, r, **kw)
        losses.append(model.bits(rng=np.random.default_rng([seed, 17, n_dims, layers, r]))[0])
        if losses[-1] == min(losses):
            best = model
    return best, {"restart": int(np.argmin(losses)), "losses": losses}


# ----------------------------------------------------------------------------- VQ-VAE


VQ_FORMS = ("product", "residual")
VQ_UPDATES = ("ema", "loss")   # how codebooks learn: moving averages, or the codebook loss
EMBED_DIM = 8                  # dimension of each codebook vector
COMMITMENT = 0.25
EMA_DECAY = 0.99
DEAD_COUNT = 1.0               # a code whose EMA count falls below this is restarted


class VQVAE(Networks):
    """An MLP encoder to latent vectors e, each snapped to its nearest codebook vector, an
    MLP decoder from the quantised vectors z_q.

    form "product": M latent vectors e_m (the encoder's output split in M), each snapped to
    the nearest of codebook m's K vectors; the decoder reads the M codes concatenated (the
    factorial VQ's code shape: M choices of K).  form "residual": one latent vector, its
    stage-m code the nearest vector of codebook m to what stages 1..m-1 left over; the
    decoder reads their sum.

    Training: straight-through gradients (the decoder's input gradient is passed to e as if
    z_q were e), the commitment term COMMITMENT ||e - sg(z_q)||^2, and codebooks (update
    "ema") as exponential moving averages of the encoder outputs assigned to them
    (Laplace-smoothed counts) or (update "loss") by Adam on the codebook loss
    ||sg(e) - z_q||^2, at the networks' rate and schedule.  Either way a code whose EMA
    count of assignments falls below DEAD_COUNT is restarted at a random encoder output.

    The code is deterministic, so its description length is recon + (-log2 P(codes)), with
    P per codebook the code frequencies on the training images plus one (fit_prior).
    """

    update = "ema"
    codebook_lr, lr_factor, codebook_opt = LR, 1.0, None   # the codebook loss's Adam

    def __init__(self, n_codebooks=4, n_codes=6, form="product", hidden=HIDDEN, sigma_x=0.15,
                 embed=EMBED_DIM, act="relu", rng=None, dtype=np.float64):
        if form not in VQ_FORMS:
            raise ValueError(f"form must be one of {VQ_FORMS}")
        if n_codebooks < 1 or n_codes < 1 or embed < 1 or not hidden or min(hidden) < 1:
            raise ValueError("need codebooks, codes, embedding and hidden widths >= 1")
        self.M, self.K, self.form, self.embed = int(n_codebooks), int(n_codes), form, int(embed)
        self.sigma_x, self.hidden = float(sigma_x), tuple(hidden)
        width = self.M * self.embed if form == "product" else self.embed
        super().__init__({"enc": ((D, *hidden, width), act), "dec": ((width, *hidden, D), act)},
                         dtype)
        rng = rng if rng is not None else np.random.default_rng(0)
        self.nets["enc"].init(rng)
        self.nets["dec"].init(rng)
        self.nets["dec"].p[f"b{len(hidden)}"][...] = 0.1
        self.codebooks = np.zeros((self.M, self.K, self.embed), dtype)     # (M, K, d)
        self.ema_count = np.ones((self.M, self.K), dtype)
        self.ema_sum = np.zeros((self.M, self.K, self.embed), dtype)
        self.log_prior = np.full((self.M, self.K), -math.log(self.K))        # nats
        self.restarts = 0

    def init_codebooks(self, X, rng):
        """Codebooks seeded by k-means++ on the encoder outputs (residuals, stage by stage)."""
        E = self.encode(X)
        for m in range(self.M):
            target = E[:, m] if self.form == "product" else E
            C = target[sv.kmeans_pp(target, self.K, rng)]
            self.codebooks[m], self.ema_sum[m], self.ema_count[m] = C, C, 1.0
            if self.form == "residual":
                E = E - C[self._nearest(E, C)]

    def encode(self, X):
        """Encoder outputs: (N, M, d) for a product code, (N, d) for a residual one."""
        out = self.nets["enc"].forward(X)[0]
        return out.reshape(len(X), self.M, self.embed) if self.form == "product" else out

    @staticmethod
    def _nearest(E, C):
        """Index of the nearest row of C (K, d) to each row of E (N, d)."""
        return np.argmin(np.sum(C * C, axis=1) - 2.0 * E @ C.T, axis=1)

    def quantise(self, E):
        """(codes (N, M), z_q like E, per-stage inputs (N, M, d) that were snapped)."""
        codes = np.empty((len(E), self.M), dtype=np.int64)
        if self.form == "product":
            for m in range(self.M):
                codes[:, m] = self._nearest(E[:, m], self.codebooks[m])
            zq = self.codebooks[np.arange(self.M), codes]
            return codes, zq, E
        inputs, rest = np.empty((len(E), self.M, self.embed), E.dtype), E
        for m in range(self.M):
            inputs[:, m] = rest
            codes[:, m] = self._nearest(rest, self.codebooks[m])
            rest = rest - self.codebooks[m][codes[:, m]]
        return codes, E - rest, inputs

    def codes(self, X):
        return self.quantise(self.encode(X))[0]

    def decode_codes(self, codes):
        """Codes (N, M) -> decoder means (N, 96)."""
        zq = self.codebooks[np.arange(self.M), codes]
        zq = zq.reshape(len(codes), -1) if self.form == "product" else zq.sum(axis=1)
        return self.nets["dec"].forward(zq)[0]

    def surrogate_loss_and_grad(self, X, offset, target, encoded=None):
        """The straight-through surrogate, mean over X in nats, and its gradient (flat).

        The decoder reads e + offset and the commitment term pulls e towards target; with
        offset = sg(z_q - e) and target = sg(z_q) (loss_and_grad) the decoder reads z_q in
        value, and the gradient of

            L(theta) = ||x - f(e + offset)||^2 / (2 sigma_x^2) + COMMITMENT ||e - target||^2

        with offset and target held fixed is the straight-through gradient.  encoded: the
        encoder's (output, cache) on X, when the caller has it already."""
        N, s2 = len(X), self.sigma_x**2
        out, enc_cache = encoded if encoded is not None else self.nets["enc"].forward(X)
        Xhat, dec_cache = self.nets["dec"].forward(out + offset)
        R = Xhat - X
        commit = out - target
        loss = (np.einsum("nd,nd->n", R, R) / (2 * s2)
                + COMMITMENT * np.einsum("nd,nd->n", commit, commit))
        g_dec, g_in = self.nets["dec"].backward(dec_cache, R / (s2 * N))
        g_enc, _ = self.nets["enc"].backward(enc_cache, g_in + 2.0 * COMMITMENT * commit / N,
                                            input_grad=False)
        return float(loss.mean()), self.gather({"enc": g_enc, "dec": g_dec})

    def loss_and_grad(self, X, rng):
        """One training step's loss and straight-through gradient; updates the codebooks by
        EMA from this batch's assignments and restarts dead codes (a side effect)."""
        out, cache = self.nets["enc"].forward(X)
        E = out.reshape(len(X), self.M, self.embed) if self.form == "product" else out
        codes, zq, inputs = self.quantise(E)
        zq = zq.reshape(len(X), -1)
        loss, grad = self.surrogate_loss_and_grad(X, zq - out, zq, encoded=(out, cache))
        self.ema_update(codes, inputs, rng)
        return loss, grad

    def set_progress(self, t, steps):
        self.lr_factor = sv.learning_rate_factor(t, steps)

    def codebook_grad(self, codes, inputs):
        """The gradient (M, K, d) of the batch's mean codebook loss
        sum_m ||sg(input_m) - C_m[code_m]||^2 with respect to the codebooks."""
        g = np.zeros_like(self.codebooks)
        for m in range(self.M):
            np.add.at(g[m], codes[:, m], 2.0 * (self.codebooks[m][codes[:, m]] - inputs[:, m]))
        return g / len(codes)

    def codebook_step(self, codes, inputs):
        """One Adam step of the codebooks on the codebook loss (update "loss")."""
        if self.codebook_opt is None:
            self.codebook_opt = sv.Adam([self.codebooks], lr=self.codebook_lr)
        self.codebook_opt.step([self.codebook_grad(codes, inputs)],
                               lr=self.codebook_lr * self.lr_factor)

    def ema_update(self, codes, inputs, rng):
        """Codebook m <- EMA of the inputs assigned to each code, counts Laplace-smoothed
        (update "ema"; update "loss" takes a step on the codebook loss instead and keeps
        the counts alone), and dead codes restarted."""
        g = EMA_DECAY
        if self.update == "loss":
            self.codebook_step(codes, inputs)
        for m in range(self.M):
            onehot = sv.one_hot(codes[:, m], self.K).astype(inputs.dtype)     # (N, K)
            self.ema_count[m] = g * self.ema_count[m] + (1 - g) * onehot.sum(axis=0)
            if self.update == "ema":
                self.ema_sum[m] = g * self.ema_sum[m] + (1 - g) * onehot.T @ inputs[:, m]
                n = self.ema_count[m].sum()
                smoothed = (self.ema_count[m] + 1e-5) / (n + self.K * 1e-5) * n
                self.codebooks[m] = self.ema_sum[m] / smoothed[:, None]
            dead = np.flatnonzero(self.ema_count[m] < DEAD_COUNT)
            if len(dead):
                pick = rng.integers(len(inputs), size=len(dead))
                self.codebooks[m, dead] = inputs[pick, m]
                self.ema_sum[m, dead], self.ema_count[m, dead] = inputs[pick, m], 1.0
                self.restarts += len(dead)

    def training_state(self):
        return copy.deepcopy((self.codebooks, self.ema_count, self.ema_sum))

    def restore_training_state(self, state):
        if state is not None:
            self.codebooks[...], self.ema_count[...], self.ema_sum[...] = state

    def fit_prior(self, X):
        """P per codebook: the training images' code counts plus one, normalised."""
        codes = self.codes(X)
        for m in range(self.M):
            counts = np.bincount(codes[:, m], minlength=self.K) + 1.0
            self.log_prior[m] = np.log(counts / counts.sum())
        return codes

    def description_length(self, X, codes=None):
        """Per-image bits {"recon", "code", "total"} of the deterministic code under the
        fitted prior (call fit_prior on the training images first)."""
        codes = self.codes(X) if codes is None else codes
        R = self.decode_codes(codes) - X
        recon = np.einsum("nd,nd->n", R, R) / (2 * self.sigma_x**2) / LN2
        code = -self.log_prior[np.arange(self.M), codes].sum(axis=1) / LN2
        return {"recon": recon, "code": code, "total": recon + code}

    def validation_bits(self, X):
        """Mean code length on X with the EMA counts as the prior: the stopping criterion."""
        codes = self.codes(X)
        log_p = np.log((self.ema_count + 1.0) / (self.ema_count + 1.0).sum(axis=1, keepdims=True))
        R = self.decode_codes(codes) - X
        return float(np.mean(np.einsum("nd,nd->n", R, R) / (2 * self.sigma_x**2)
                             - log_p[np.arange(self.M), codes].sum(axis=1)) / LN2)

    def curve_terms(self, X):
        """The training curves' terms on X: recon bits, the commitment term
        ||e - z_q||^2 and the codes' perplexity (mean over codebooks)."""
        E = self.encode(X)
        codes, zq, _ = self.quantise(E)
        R = self.decode_codes(codes) - X
        commit = (E - zq).reshape(len(X), -1)
        return {"recon": float(np.mean(np.einsum("nd,nd->n", R, R)) / (2 * self.sigma_x**2) / LN2),
                "commitment": float(np.mean(np.einsum("nd,nd->n", commit, commit))),
                "perplexity": float(np.mean(self.usage(X, codes)["perplexity"]))}

    def usage(self, X, codes=None):
        """Per codebook: perplexity exp(H) of the code frequencies on X and the number of
        codes X never uses."""
        codes = self.codes(X) if codes is None else codes
        perplexity, dead = [], []
        for m in range(self.M):
            f = np.bincount(codes[:, m], minlength=self.K) / len(X)
            nz = f[f > 0]
            perplexity.append(float(np.exp(-np.sum(nz * np.log(nz)))))
            dead.append(int(np.sum(f == 0)))
        return {"perplexity": perplexity, "dead_codes": dead}


# --- an autoregressive prior over a deterministic code --------------------------------------

AR_PENALTIES = (0.01, 0.1, 1.0, 10.0, 100.0)   # L2 weights tried, chosen on validation codes


class AutoregressivePrior:
    """p(k) = prod_m p(k_m | k_<m) over M codes of K each: p(k_m | k_<m) = softmax(W_m
    onehot(k_<m) + b_m), W_m (K, (m-1) K), so the first code's is a softmax of b_1 alone.
    Fitted by maximum likelihood on training codes with the penalty (lam / 2) ||W_m, b_m||^2
    (convex: L-BFGS to convergence); lam chosen among AR_PENALTIES on validation codes."""

    def __init__(self, n_codebooks, n_codes):
        self.M, self.K, self.penalty = int(n_codebooks), int(n_codes), None
        self.weights = [np.zeros((self.K, m * self.K + 1)) for m in range(self.M)]  # [W | b]

    def features(self, codes, m):
        """The inputs of conditional m: one-hots of codes[:, :m] and a 1, (N, m K + 1)."""
        F = np.zeros((len(codes), m * self.K + 1))
        for j in range(m):
            F[np.arange(len(codes)), j * self.K + codes[:, j]] = 1.0
        F[:, -1] = 1.0
        return F

    @staticmethod
    def objective(w, F, k, penalty):
        """The penalised negative log-likelihood (nats) of codes k (N,) given features F
        (N, P) under weights w (K P,) flat, and its gradient."""
        log_p = sv.log_softmax(F @ w.reshape(-1, F.shape[1]).T)             # (N, K)
        G = np.exp(log_p)
        G[np.arange(len(k)), k] -= 1.0
        return (-log_p[np.arange(len(k)), k].sum() + 0.5 * penalty * w @ w,
                (G.T @ F).ravel() + penalty * w)

    def fit(self, codes, penalty):
        """Each conditional fitted on codes (N, M) with the penalty lam = penalty."""
        from scipy.optimize import minimize
        self.penalty = float(penalty)
        for m in range(self.M):
            args = (self.features(codes, m), codes[:, m], self.penalty)
            self.weights[m] = minimize(self.objective, self.weights[m].ravel(), args, jac=True,
                                       method="L-BFGS-B", options={
                                           "maxiter": 5000, "ftol": 1e-14, "gtol": 1e-9},
                                       ).x.reshape(self.K, -1)
        return self

    def bits(self, codes):
        """-log2 p(codes) per code (N,)."""
        total = np.zeros(len(codes))
        for m in range(self.M):
            log_p = sv.log_softmax(self.features(codes, m) @ self.weights[m].T)
            total -= log_p[np.arange(len(codes)), codes[:, m]]
        return total / LN2

    @classmethod
    def chosen(cls, train, val, n_codebooks, n_codes, penalties=AR_PENALTIES):
        """The prior fitted on the training codes with the penalty whose validation codes
        cost least: (prior, {penalty: mean validation bits})."""
        scores, best = {}, None
        for lam in penalties:
            prior = cls(n_codebooks, n_codes).fit(train, lam)
            scores[lam] = float(prior.bits(val).mean())
            if scores[lam] == min(scores.values()):
                best = prior
        return best, scores


# --- the Gumbel VQ-VAE: the stochastic VQ with neural encoder and decoder --------------------

# The relaxation's temperature, annealed geometrically over training: chosen on validation
# images (seed 0, N = 2000) among three schedules (docs/vq_vae.md says which and how).
GUMBEL_TAU = (2.0, 0.5)


class GumbelVQVAE(Networks):
    """The 1994 factorial stochastic VQ with an MLP encoder and an MLP decoder: M codebooks
    of K codes, q(k|x) = prod_m q_m(k_m|x), each q_m a softmax of the encoder's logits
    (N, M, K); the decoder maps the M codes (one-hot, concatenated) to the mean image f(k);
    the prior p(k) = prod_m p_m(k_m).  Its free energy is the core's,

        F(x) = ( sum_k q(k|x) ||x - f(k)||^2 / (2 sigma_x^2) + sum_m KL(q_m || p_m) ) / ln 2,

    the expectation exact over the K^M joint codes (description_length), a bits-back code
    length like every discrete model's here.

    Training: the straight-through Gumbel-softmax estimator.  A batch's codes are drawn as
    h = one-hot argmax(logits + g), g Gumbel noise; the decoder reads h, and its input
    gradient reaches the logits through s = softmax((logits + g) / tau), as if it had read
    s (surrogate: the decoder reads s + sg(h - s)).  tau falls from taus[0] to taus[1] over
    the run (GUMBEL_TAU unless given).  The KL's prior is a running mean of q over the
    batches (a constant of each step, like the VQ-VAE's EMA counts); after training
    fit_prior sets p_m to the training images' mean posterior (plus one pseudo-count per
    code)."""

    def __init__(self, n_codebooks=4, n_codes=6, hidden=HIDDEN, sigma_x=0.15, act="relu",
                 rng=None, dtype=np.float64, taus=GUMBEL_TAU):
        if n_codebooks < 1 or n_codes < 2 or not hidden or min(hidden) < 1:
            raise ValueError("need codebooks >= 1, codes >= 2 and hidden widths >= 1")
        self.M, self.K = int(n_codebooks), int(n_codes)
        self.sigma_x, self.hidden = float(sigma_x), tuple(hidden)
        MK = self.M * self.K
        super().__init__({"enc": ((D, *hidden, MK), act), "dec": ((MK, *hidden, D), act)}, dtype)
        rng = rng if rng is not None else np.random.default_rng(0)
        self.nets["enc"].init(rng)
        self.nets["dec"].init(rng)
        self.nets["dec"].p[f"b{len(hidden)}"][...] = 0.1
        self.usage = np.full((self.M, self.K), 1.0 / self.K, dtype)   # training's prior
        self.log_prior = np.full((self.M, self.K), -math.log(self.K))  # nats, fit_prior's
        self.taus = tuple(float(t) for t in taus)      # tau's schedule: first, last
        self.tau = self.taus[0]

    def log_posteriors(self, X):
        """log q_m(k|x): (N, M, K)."""
        return sv.log_softmax(self.nets["enc"].forward(X)[0].reshape(len(X), self.M, self.K))

    def decode_codes(self, codes):
        """Codes (N, M) -> decoder means (N, 96)."""
        onehot = np.zeros((len(codes), self.M, self.K), self.theta.dtype)
        np.put_along_axis(onehot, codes[:, :, None], 1.0, axis=2)
        return self.nets["dec"].forward(onehot.reshape(len(codes), -1))[0]

    def surrogate_loss_and_grad(self, X, noise, offset, log_prior, encoded=None):
        """Mean over X in nats of recon(f(s + offset)) + sum_m KL(q_m || p_m), s the
        relaxed sample softmax((logits + noise) / tau), and its exact gradient (flat) with
        noise, offset and log_prior held fixed.  With offset = sg(h - s) the decoder reads
        the drawn codes h and the gradient is the straight-through one (loss_and_grad).
        encoded: the encoder's (output, cache) on X, when the caller has it already."""
        N, s2 = len(X), self.sigma_x**2
        out, enc_cache = encoded if encoded is not None else self.nets["enc"].forward(X)
        logits = out.reshape(N, self.M, self.K)
        log_q = sv.log_softmax(logits)
        q = np.exp(log_q)
        s = np.exp(sv.log_softmax((logits + noise) / self.tau))
        Xhat, dec_cache = self.nets["dec"].forward((s + offset).reshape(N, -1))
        R = Xhat - X
        ratio = log_q - log_prior
        kl = np.sum(q * ratio, axis=2)                                       # (N, M)
        loss = np.einsum("nd,nd->n", R, R) / (2 * s2) + kl.sum(axis=1)
        g_dec, g_in = self.nets["dec"].backward(dec_cache, R / (s2 * N))
        g_s = g_in.reshape(N, self.M, self.K)
        g_logits = s * (g_s - np.sum(s * g_s, axis=2, keepdims=True)) / self.tau
        g_logits += q * (ratio - kl[:, :, None]) / N
        g_enc, _ = self.nets["enc"].backward(enc_cache, g_logits.reshape(N, -1),
                                            input_grad=False)
        return float(loss.mean()), self.gather({"enc": g_enc, "dec": g_dec})

    def set_progress(self, t, steps):
        """tau at step t: geometric from taus[0] to taus[1] at the last step."""
        first, last = self.taus
        self.tau = first * (last / first) ** (t / max(steps - 1, 1))

    def loss_and_grad(self, X, rng):
        """One training step's loss and straight-through gradient; moves the running prior
        towards this batch's mean posterior (a side effect)."""
        u = rng.random((len(X), self.M, self.K), dtype=self.theta.dtype)
        noise = -np.log(-np.log(np.clip(u, 1e-20, 1.0 - 1e-7)))
        out, cache = self.nets["enc"].forward(X)          # one encoder pass a step
        logits = out.reshape(len(X), self.M, self.K)
        z = logits + noise
        s = np.exp(sv.log_softmax(z / self.tau))
        h = (z == z.max(axis=2, keepdims=True)).astype(s.dtype)
        loss, grad = self.surrogate_loss_and_grad(X, noise, h - s, np.log(self.usage),
                                                  encoded=(out, cache))
        q = np.exp(sv.log_softmax(logits)).mean(axis=0)
        self.usage = EMA_DECAY * self.usage + (1 - EMA_DECAY) * q
        return loss, grad

    def training_state(self):
        return self.usage.copy()

    def restore_training_state(self, state):
        if state is not None:
            self.usage[...] = state

    def fit_prior(self, X, chunk=5000):
        """p_m: the training images' mean posterior, one pseudo-count per code added."""
        total = sum(np.exp(self.log_posteriors(X[i:i + chunk])).sum(axis=0)
                    for i in range(0, len(X), chunk))
        self.log_prior = np.log((total + 1.0) / (len(X) + self.K))

    def description_length(self, X, log_prior=None, chunk=2000):
        """Per-image bits {"recon", "code", "total"}: the recon term's expectation exact
        over the K^M joint codes, the KL to the prior (fit_prior's unless given)."""
        log_prior = self.log_prior if log_prior is None else log_prior
        codes = sv.all_codes(self.M, self.K)                                 # (K^M, M)
        F = self.decode_codes(codes)                                         # (K^M, 96)
        FF = np.einsum("kd,kd->k", F, F)
        recon, code = np.empty(len(X)), np.empty(len(X))
        for i in range(0, len(X), chunk):
            x = X[i:i + chunk]
            log_q = self.log_posteriors(x)                                   # (n, M, K)
            joint = np.exp(sum(log_q[:, m, codes[:, m]] for m in range(self.M)))  # (n, K^M)
            err = np.einsum("nd,nd->n", x, x)[:, None] - 2.0 * x @ F.T + FF[None]
            recon[i:i + chunk] = np.sum(joint * np.maximum(err, 0.0), axis=1) / (
                2 * self.sigma_x**2)
            code[i:i + chunk] = np.sum(np.exp(log_q) * (log_q - log_prior), axis=(1, 2))
        recon, code = recon / LN2, code / LN2
        return {"recon": recon, "code": code, "total": recon + code}

    def validation_bits(self, X):
        """Mean F on X with the running prior: the stopping criterion."""
        return float(self.description_length(X, np.log(self.usage))["total"].mean())

    def usage_stats(self, X):
        """Per codebook: the perplexity exp(H) of the mean posterior on X, the codes whose
        mean posterior is below 1/(100 K) (unused), and each code's expected count (M, K)."""
        counts = np.exp(self.log_posteriors(X)).sum(axis=0)                  # (M, K)
        p = counts / len(X)
        return {"perplexity": np.exp(-np.sum(p * np.log(np.maximum(p, 1e-300)), axis=1)).tolist(),
                "dead_codes": np.sum(p < 0.01 / self.K, axis=1).astype(int).tolist(),
                "counts": counts}


# ----------------------------------------------------------------------------- training


def flush_subnormals(opt, tiny=1e-30):
    """Zero Adam's moments below tiny.  A weight whose gradient is zero for a while (a ReLU
    unit no image in the batches turns on) has its first moment shrink by beta_1 a step into
    float32's subnormal range, where every arithmetic operation on this CPU is many times
    slower: left alone they halve the training speed.  Called every 100 steps; from 1e-30
    the moments need about 175 steps to become subnormal, and a moment this small moves no
    weight (the update is m / (sqrt(v) + 1e-8))."""
    for moments in (opt.m, opt.v):
        for a in moments:
            a[np.abs(a) < tiny] = 0.0


def train_network(model, X, X_val, rng, steps, batch=None, lr=LR, eval_every=EVAL_EVERY,
                  patience=None, log=None):
    """Minibatch Adam (the core's) on model.loss_and_grad, the rate warmed up and
    cosine-decayed (sv.learning_rate_factor).  Every eval_every steps F on the validation
    images is measured and the best theta so far kept; training stops after `patience`
    scores with no new best (patience_scores(steps) by default) and ends on the best theta,
    so a small training set is scored before it overfits.  Minibatches are drawn without
    replacement, reshuffled every epoch.
    Returns a history dict (steps run, validation curve, best step, seconds)."""
    opt = sv.Adam([model.theta], lr=lr)
    patience = patience_scores(steps, eval_every) if patience is None else patience
    n = len(X)
    batch = min(batch or batch_size(n), n)
    order, pos = rng.permutation(n), 0
    model.new_epoch(X, rng)
    best, best_theta, best_step = math.inf, model.theta.copy(), 0
    best_state = None
    history = {"step": [], "val": [], "loss": []}
    start, running = time.perf_counter(), []
    for t in range(steps):
        if pos + batch > n:
            order, pos = rng.permutation(n), 0
            model.new_epoch(X, rng)
        idx = order[pos:pos + batch]
        pos += batch
        model.set_progress(t, steps)
        loss, g = model.loss_and_grad(model.minibatch(X, idx, rng), rng)
        opt.step([g], lr=lr * sv.learning_rate_factor(t, steps))
        if t % 100 == 0:
            flush_subnormals(opt)
        running.append(loss)
        if (t + 1) % eval_every == 0 or t + 1 == steps:
            val = float(model.validation_bits(X_val))
            history["step"].append(t + 1)
            history["val"].append(val)
            for key, value in model.curve_terms(X_val).items():
                history.setdefault(key, []).append(value)
            history["loss"].append(float(np.mean(running)) / LN2)
            running = []
            if val < best:
                best, best_theta, best_step = val, model.theta.copy(), t + 1
                best_state = model.training_state()
            if log and (t + 1) % (20 * eval_every) == 0:
                log(f"  step {t + 1}/{steps}: train {history['loss'][-1]:.2f}, validation "
                    f"{val:.2f} bits ({time.perf_counter() - start:.0f} s)")
            if len(history["val"]) - history["step"].index(best_step) - 1 >= patience:
                break
    model.theta[...] = best_theta
    model.restore_training_state(best_state)
    history.update(best_val=best, best_step=best_step, steps_run=t + 1,
                   seconds=time.perf_counter() - start)
    return history


def fit_vae(X, X_val, seed=0, n_latent=LATENTS, hidden=HIDDEN, sigma_x=0.15, steps=None,
            batch=None, lr=LR, beta=1.0, log=None):
    """A GaussianVAE trained in float32 (twice the speed of float64 on this CPU) and returned
    in float64 for scoring, with its training history.  beta: the KL's weight in training
    (a beta-VAE; the same recipe at every beta)."""
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    rng = np.random.default_rng([seed, 12])
    model = GaussianVAE(n_latent, hidden, sigma_x, rng=rng).astype(np.float32)
    if beta != 1.0:
        model.beta = float(beta)
    steps = training_steps(len(X)) if steps is None else steps
    history = train_network(model, X.astype(np.float32), X_val.astype(np.float32), rng, steps,
                            batch, lr, log=log)
    return model.astype(np.float64), history


def pixel_rate(n):
    """The 8-bit VAE's Adam rate for n training images: PIXEL_LR_AT's at the size nearest
    in log n."""
    return PIXEL_LR_AT[min(PIXEL_LR_AT, key=lambda size: abs(math.log(size / n)))]


def fit_pixel_vae(V, V_val, seed=0, n_latent=LATENTS, hidden=HIDDEN, steps=None, batch=None,
                  lr=None, autoregressive=False, log=None):
    """A PixelVAE (an ARPixelVAE if autoregressive) trained on 8-bit images V (N, 96) uint8
    (validation V_val), in float32, by its own recipe (PIXEL_STEPS_AT, PIXEL_BATCH,
    pixel_rate, or PIXEL_AR_LR), returned in float64 with its training history."""
    if lr is None:
        lr = PIXEL_AR_LR if autoregressive else pixel_rate(len(V))
    rng = np.random.default_rng([seed, 14])
    model = (ARPixelVAE if autoregressive else PixelVAE)(n_latent, hidden, rng=rng)
    model = model.astype(np.float32)
    x = lambda A: (A / np.float32(bbc.PIXEL_LEVELS - 1)).astype(np.float32)
    steps = training_steps(len(V), PIXEL_STEPS_AT) if steps is None else steps
    batch = batch_size(len(V), PIXEL_BATCH) if batch is None else batch
    history = train_network(model, x(V), x(V_val), rng, steps, batch, lr, PIXEL_EVAL_EVERY,
                            log=log)
    return model.astype(np.float64), history


def fit_acn(X, X_val, seed=0, vae=None, n_latent=LATENTS, hidden=HIDDEN, sigma_x=0.15,
            steps=None, batch=None, lr=LR, rule="uniform", log=None):
    """An ACN trained in float32 and returned in float64, with its training history.  Given
    a trained VAE it starts from the VAE's encoder and decoder (and the prior N(0, I)) and
    trains ACN_FINE_TUNE of the VAE's steps at ACN_FINE_TUNE_LR; otherwise the VAE's recipe
    from scratch.  rule: how training neighbours are drawn (ACN_RULES)."""
    if rule not in ACN_RULES:
        raise ValueError(f"rule must be one of {ACN_RULES}, got {rule!r}")
    rng = np.random.default_rng([seed, 15])
    if vae is None:
        model = ACN(n_latent, hidden, sigma_x, rng=rng).astype(np.float32)
        steps = training_steps(len(X)) if steps is None else steps
    else:
        model = ACN.from_vae(vae.astype(np.float32), rng=rng)
        steps = int(ACN_FINE_TUNE * training_steps(len(X))) if steps is None else steps
        lr = lr * ACN_FINE_TUNE_LR
    if rule != "uniform":
        model.rule = rule
    history = train_network(model, X.astype(np.float32), X_val.astype(np.float32), rng, steps,
                            batch, lr, log=log)
    return model.astype(np.float64), history


def fit_vqvae(X, X_val, seed=0, n_codebooks=4, n_codes=6, form="product", hidden=HIDDEN,
              sigma_x=0.15, steps=None, batch=None, lr=LR, update="ema", log=None):
    """A VQVAE trained in float32, codebooks seeded by k-means++ on the first encoder
    outputs and learned by `update` (VQ_UPDATES); returned in float64 with its prior fitted
    on the training codes."""
    if update not in VQ_UPDATES:
        raise ValueError(f"update must be one of {VQ_UPDATES}, got {update!r}")
    rng = np.random.default_rng([seed, 13])
    model = VQVAE(n_codebooks, n_codes, form, hidden, sigma_x, rng=rng, dtype=np.float32)
    if update != "ema":
        model.update, model.codebook_lr = update, lr
    X32 = X.astype(np.float32)
    model.init_codebooks(X32[:2000], rng)
    steps = training_steps(len(X)) if steps is None else steps
    history = train_network(model, X32, X_val.astype(np.float32), rng, steps, batch, lr, log=log)
    model.codebook_opt = None                   # training's state, not the model's
    model = model.astype(np.float64)
    model.fit_prior(X)
    return model, history


def fit_gumbel_vqvae(X, X_val, seed=0, n_codebooks=4, n_codes=6, hidden=HIDDEN, sigma_x=0.15,
                     steps=None, batch=None, lr=LR, taus=GUMBEL_TAU, log=None):
    """A GumbelVQVAE trained in float32 by the VAE's recipe (steps, batch, rate, early
    stopping on the validation F), tau annealed over the run; returned in float64 with its
    prior fitted on the training images."""
    rng = np.random.default_rng([seed, 24])
    model = GumbelVQVAE(n_codebooks, n_codes, hidden, sigma_x, rng=rng, dtype=np.float32,
                        taus=taus)
    steps = training_steps(len(X)) if steps is None else steps
    history = train_network(model, X.astype(np.float32), X_val.astype(np.float32), rng, steps,
                            batch, lr, log=log)
    model = model.astype(np.float64)
    model.fit_prior(X)
    return model, history


# --- saved networks ---------------------------------------------------------------------------

SAVED_CLASSES = {**sv.SAVED_CLASSES, **{c.__name__: c for c in (GaussianVAE, PixelVAE,
                                                                ARPixelVAE, ACN, OneBitVAE,
                                                                VQVAE, GumbelVQVAE)}}


def model_folder(path, mode):
    """A ModelFolder for every model of both scripts."""
    return fc.ModelFolder(path, mode, SAVED_CLASSES)


def network_config(seed, n_train, steps=None, batch=None, largest=BATCH, table=STEPS_AT,
                   **settings):
    """What trains a network on the first n_train training images of a seed: its settings,
    with the recipe's steps, minibatch and validation size resolved."""
    return {"seed": seed, "n_samples": n_train, "n_val": validation_size(n_train),
            "steps": training_steps(n_train, table) if steps is None else steps,
            "batch": min(batch or batch_size(n_train, largest), n_train), **settings}
