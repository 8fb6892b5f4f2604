"""Bits-back coding with integer tables: the chain, its bound and its file container.

A leaf module: it knows no model, only the coding-model protocol below.  The sender pops a
code k ~ q(k|v) off the message (the "random bits" it later gets back), pushes the image v
given k, then pushes k under the prior; the receiver runs the chain backwards.  The net
growth of the message is -log P(v|k) - log p(k) + log q(k|v) per image: the free energy in
expectation.  constriction's ANS stack coder does the pushing (encode_reverse) and popping
(decode); lanes are independent stacks, each coding every lanes-th image, so that the numpy
work runs over all lanes.

The coding-model protocol.  A model hands the chain integer tables (frequencies >= 1
summing to 2^PRECISION) through these attributes and methods:
- n_dims: the code's M parts; n_pixels: the pixels of an image;
- sequential: False when posterior_table(V) (N, M, K) gives every part's table at once;
  True when stage_table(V, codes, d) (N, K) gives part d's table given codes[:, :d];
- prior_table(): (M, K) the prior of each part;
- pixel_weights(codes): (N, n_pixels, 256) the pixel tables given the codes, as
  constriction's weights (frequencies minus one);
- optionally autoregressive = True: pixel_weights(codes, V) needs the image too, and the
  receiver decodes the pixels one at a time in pixel_order (a permutation of the pixels),
  pixel j's table from pixel_weights_at(codes, V, j) (N, 256) with V's pixels before j in
  that order decoded;
- pixel_bits(V, codes): (N, n_pixels) -log2 of each pixel's table probability;
- optionally context_prior_table(V_ctx): (N, M, K) the prior of an image's code given the
  image sent after it on its lane, which the receiver has decoded first (see _code_priors).

Portability.  The decoder rebuilds every table, so the tables must come out bit for bit the
same on any CPU.  Floating-point kernels differ between CPUs (exp, log and reductions in
numpy, blocking and FMA in BLAS), so a coding model uses none of them:
- the model is coded with its parameters rounded to fixed point (and stored so);
- every dot product is an integer matrix product, exact in any order;
- exp and the normal CDF are read from the tables below, built by IEEE-754 +, *, / in a
  fixed order (correctly rounded, so the same everywhere) from constants decimal computes;
- what remains in floating point is elementwise +, -, *, / and rounding, which IEEE-754
  also fixes to the bit.
constriction's categorical model (perfect=False) turns weights w into the table
floor(cumsum(w) * (2^24 - S) / sum(w)) + i; given the integer weights f - 1, whose sums
are exact, that is exactly the table f.

A file's message is decoded and checked by decode_checked; the file around it is
file_container.py's.
"""

import functools
import hashlib
import math
import time

import numpy as np

PRECISION = 24                         # bits of every table; constriction's default
PIXEL_LEVELS = 256
CODER_LANES = 100
PARAM_BITS = 12                        # pixel means in units of 2^-12 of the [0, 1] range
EXP_STEPS, EXP_RANGE = 256, 48         # exp(-i/256) for i/256 < 48 nats; 0 beyond
PHI_STEPS, PHI_HALF = 16, 16 * 2048    # normal CDF: 16 steps per 8-bit level, +-2048 levels
MEAN_RANGE = (-4, 5)                   # pixel means are clipped to this, in units of the range


# ----------------------------------------------------------------------------- integer tables

@functools.lru_cache(maxsize=None)
def exp_table():
    """round(2^30 exp(-i / 256)) for i < 48 * 256, int64, by a product recurrence, and a
    last entry 0 that stands for everything further down."""
    from decimal import Decimal
    ratio = float((Decimal(-1) / EXP_STEPS).exp())
    values, v = [], 1.0
    for _ in range(EXP_RANGE * EXP_STEPS):
        values.append(v)
        v *= ratio
    values.append(0.0)
    return np.floor(np.array(values) * 2.0**30 + 0.5).astype(np.int64)


@functools.lru_cache(maxsize=None)
def phi_table(sigma):
    """floor(Phi(z_j) (2^24 - 256)) (int64, 2 J + 1 entries) on the grid of the pixel tables:
    z_j = j / (16 * 255 * sigma) for |j| <= J = 16 * 2048, i.e. 16 steps per 8-bit level over
    +-2048 levels.  Phi is 1/2 plus the trapezoid rule over exp(-z^2 / 2), tabulated with a
    product recurrence in integers of 2^-40; only IEEE-754 basic operations are used."""
    from decimal import Decimal, localcontext
    with localcontext() as ctx:
        ctx.prec = 40
        h = Decimal(1) / (PHI_STEPS * (PIXEL_LEVELS - 1) * Decimal(sigma))
        rho = float((-h * h / 2).exp())                      # exp(-h^2 / 2)
        sqrt_2pi = (2 * Decimal("3.141592653589793238462643383279502884")).sqrt()
        c = float(h / (2 * sqrt_2pi * 2**40))
    dens, v, g = [], 1.0, rho
    for _ in range(PHI_HALF + 1):                            # exp(-(i h)^2 / 2) = prod of rho^(2i-1)
        dens.append(v)
        v, g = v * g, g * rho * rho
    w = np.floor(np.array(dens) * 2.0**40 + 0.5).astype(np.int64)
    cum = np.concatenate([[0], np.cumsum(w[:-1] + w[1:])])  # twice the trapezoid sums, exact
    upper = np.minimum(0.5 + cum.astype(np.float64) * c, 1.0)
    phi = np.concatenate([1.0 - upper[:0:-1], upper])
    scale = float((1 << PRECISION) - PIXEL_LEVELS)
    return np.floor(phi * scale).astype(np.int64)


def int_table(masses, precision=PRECISION):
    """Integer masses (..., S) >= 0 -> frequencies >= 1 summing to 2^precision, in
    proportion to the masses; the rounding deficit goes to the first largest mass."""
    S = masses.shape[-1]
    total = np.maximum(masses.sum(axis=-1, keepdims=True), 1)
    freqs = masses * ((1 << precision) - S) // total + 1
    top = np.arange(S) == np.argmax(masses, axis=-1)[..., None]
    return freqs + top * ((1 << precision) - freqs.sum(axis=-1, keepdims=True))


def softmax_table(logits, precision=PRECISION):
    """Integer frequencies (..., S) >= 1 summing to 2^precision from logits (..., S) in nats,
    through exp_table: the same integers on every machine for the same logits."""
    e_tab = exp_table()
    steps = np.rint((logits.max(axis=-1, keepdims=True) - logits) * EXP_STEPS)
    return int_table(e_tab[np.minimum(steps, len(e_tab) - 1).astype(np.int64)], precision)


def edge_shift(means):
    """Grid offset -8 - 16 * 255 * mean of pixel means (fixed point, units 2^-12), int32.
    A mean is first clipped to MEAN_RANGE, a thousand levels beyond anything a model of
    [0, 1] images predicts, so that the offsets, and the pixel tables, are finitely many."""
    means = np.clip(means, MEAN_RANGE[0] << PARAM_BITS, MEAN_RANGE[1] << PARAM_BITS)
    shift = -PHI_STEPS // 2 - (((PIXEL_LEVELS - 1) * means + 128) >> (PARAM_BITS - 4))
    return shift.astype(np.int32)


SHIFT_LOW = int(edge_shift(np.array(MEAN_RANGE[1] << PARAM_BITS)))      # the smallest offset


@functools.lru_cache(maxsize=4)
def pixel_rows(sigma):
    """The pixel table of every offset edge_shift can give, as constriction's weights
    (frequencies minus one), float32 (offsets, 256); row s - SHIFT_LOW is offset s.

    With F(v) = T[idx_v] at the inner edges v = 1..255 and idx_v+1 = idx_v + 16, the weight
    F(v+1) - F(v) of level v is a 16-step difference of T; level 0 weighs F(1) and level 255
    weighs 2^24 - 256 - F(255).  Float32 is exact: entries and the partial sums constriction
    forms of a row are all below 2^24."""
    table = phi_table(sigma)
    high = int(edge_shift(np.array(MEAN_RANGE[0] << PARAM_BITS)))
    first = np.arange(SHIFT_LOW, high + 1) + (PHI_STEPS + PHI_HALF)       # idx_1 per offset
    edges = table[first[:, None] + PHI_STEPS * np.arange(PIXEL_LEVELS - 1)]   # (S, 255)
    rows = np.empty((len(first), PIXEL_LEVELS), dtype=np.float32)
    rows[:, 0] = edges[:, 0]
    rows[:, 1:-1] = np.diff(edges, axis=1)
    rows[:, -1] = ((1 << PRECISION) - PIXEL_LEVELS) - edges[:, -1]
    return rows


def pixel_cdf(means, sigma, v):
    """The pixel tables' CDF C(v) for 8-bit levels v (integers 0..256, broadcast with means).

    means are fixed-point reconstructions (units 2^-12 of the [0, 1] scale); bin v covers
    [(v - 0.5)/255, (v + 0.5)/255] and the end bins take the tails, so C(0) = 0, C(256) = 2^24
    and C(v) = floor(Phi((edge_v - mean) / sigma) (2^24 - 256)) + v between: every level has
    frequency >= 1.  The mean is rounded to 1/16 of a level, so that the grid index of an
    edge is an integer: 16 v - 8 - 16 * 255 * mean (see edge_shift).
    """
    return table_cdf(phi_table(sigma), means, v)


def table_cdf(table, means, v):
    """pixel_cdf with the normal CDF given as a table on the pixel grid (phi_table), or as a
    callable that looks up grid indices (broadcast with means, v) in a table of its own: a
    model with a scale per pixel takes each pixel's from a stack of phi_tables."""
    idx = np.clip(PHI_STEPS * v + edge_shift(means) + PHI_HALF, 0, 2 * PHI_HALF)
    cdf = (table(idx) if callable(table) else table[idx]) + v
    cdf = np.where(v <= 0, 0, cdf)
    return np.where(v >= PIXEL_LEVELS, 1 << PRECISION, cdf)


def pixel_table_bits(means, sigma, V):
    """-log2 of the pixel tables' probability of every pixel of V (N, 96) 8-bit, given the
    fixed-point means (N, 96) (units 2^-12) and the noise sigma."""
    v = V.astype(np.int64)
    return PRECISION - np.log2(pixel_cdf(means, sigma, v + 1) - pixel_cdf(means, sigma, v))



# ----------------------------------------------------------------------------- the chain

@functools.lru_cache(maxsize=1)
def _categorical():
    """constriction's categorical model family, fed integer weights (see above)."""
    import constriction
    return constriction.stream.model.Categorical(perfect=False)


def weights(freqs):
    """Integer tables (..., S) as constriction's weights: frequencies minus one, float64."""
    return (freqs - 1).astype(np.float64)


def _push(coder, symbols, w):
    """Push symbols (n,) under tables given as weights (n, S) onto one lane's stack."""
    coder.encode_reverse(np.asarray(symbols, dtype=np.int32), _categorical(), w)


def _pop(coder, w):
    """Pop n symbols under tables given as weights (n, S) off one lane's stack."""
    return coder.decode(_categorical(), w).astype(np.int64)


def _lane_layout(n_images, lanes):
    """Image index (lanes, steps) per lane and step, -1 where a lane has run out."""
    steps = -(-n_images // lanes)
    idx = np.arange(lanes * steps).reshape(lanes, steps)
    return np.where(idx < n_images, idx, -1)


def _code_priors(cm, V, layout, step, act, prior):
    """Weights (len(act), M, K) of the priors the codes of one step are pushed under.  A
    coding model with a context (a method context_prior_table(V_ctx)) prices each lane's
    code given the image that lane sends at the next step, which its decoder has decoded
    when it gets here; a lane's last image, and every image of a model without one, takes
    the unconditional prior."""
    out = np.broadcast_to(prior, (len(act),) + prior.shape)
    context = getattr(cm, "context_prior_table", None)
    if context is None or step + 1 == layout.shape[1]:
        return out                                       # a view: no copy per step
    nxt = layout[act, step + 1]
    has = nxt >= 0
    out = out.copy()
    out[has] = weights(context(V[nxt[has]]))
    return out


def initial_words(lanes, n_dims, seed, draw=0):
    """The initial random bits: per lane enough 32-bit words for the first M pops; draw > 0
    gives other bits for the same seed (a message's length varies a little with them).

    The last word is the high half of the coder's 64-bit state.  It is drawn log-uniform
    on [1, 2^32), the stationary law of ANS states, so that the net length of a message is
    not biased by how full the states are at the start and at the end (a uniform draw
    would start them nearly full and make every lane look about 15 bits longer)."""
    rng = np.random.default_rng([seed, 7] if draw == 0 else [seed, 7, draw])
    words = rng.integers(0, 1 << 32, size=(lanes, 2 + -(-n_dims * PRECISION // 32)),
                         dtype=np.uint64)
    words[:, -1] = np.maximum(np.floor(2.0 ** (32 * rng.random(lanes))), 1)
    return list(words.astype(np.uint32))


def bits_back_encode(cm, V, lanes=CODER_LANES, seed=0, draw=0):
    """Encode 8-bit images V (N, 96) with bits-back coding under CodingModel cm.

    Returns (final words, initial words), one uint32 array per lane.  Each lane takes its
    images in turn: pop k ~ q(k|v), push the 96 pixels given xhat(k), push k under the prior
    (see _code_priors for a model whose prior has a context).
    """
    import constriction
    layout = _lane_layout(len(V), lanes)
    initial = initial_words(lanes, cm.n_dims, seed, draw)
    coders = [constriction.stream.stack.AnsCoder(w) for w in initial]
    prior = weights(cm.prior_table())
    q_all = None if cm.sequential else weights(cm.posterior_table(V))
    autoregressive = getattr(cm, "autoregressive", False)
    for step in range(layout.shape[1]):
        act = np.flatnonzero(layout[:, step] >= 0)
        v = V[layout[act, step]]
        codes = np.zeros((len(act), cm.n_dims), dtype=np.int64)
        if q_all is not None:
            q = q_all[layout[act, step]]
            for i, lane in enumerate(act):
                codes[i] = _pop(coders[lane], q[i])
        else:
            for d in range(cm.n_dims):                  # stage d's table needs k_<d
                q = weights(cm.stage_table(v, codes, d))
                for i, lane in enumerate(act):
                    codes[i, d] = _pop(coders[lane], q[i:i + 1])[0]
        if autoregressive:               # pushed in pixel_order: popped in it
            pixels = np.ascontiguousarray(cm.pixel_weights(codes, v)[:, cm.pixel_order])
            sent = v[:, cm.pixel_order]
        else:
            pixels, sent = cm.pixel_weights(codes), v
        priors = _code_priors(cm, V, layout, step, act, prior)
        for i, lane in enumerate(act):
            _push(coders[lane], sent[i], pixels[i])
            _push(coders[lane], codes[i], priors[i])
    return [c.get_compressed() for c in coders], initial


def bits_back_decode(cm, words, n_images):
    """Invert bits_back_encode: images (n_images, 96) uint8 and the words left per lane,
    which are the initial bits when the message was whole."""
    import constriction
    lanes = len(words)
    layout = _lane_layout(n_images, lanes)
    coders = [constriction.stream.stack.AnsCoder(w) if len(w) else
              constriction.stream.stack.AnsCoder() for w in words]
    prior = weights(cm.prior_table())
    autoregressive = getattr(cm, "autoregressive", False)
    V = np.zeros((n_images, cm.n_pixels), dtype=np.uint8)
    for step in reversed(range(layout.shape[1])):
        act = np.flatnonzero(layout[:, step] >= 0)
        priors = _code_priors(cm, V, layout, step, act, prior)
        codes = np.array([_pop(coders[lane], priors[i]) for i, lane in enumerate(act)])
        if autoregressive:
            v = np.zeros((len(act), cm.n_pixels), dtype=np.int64)
            for j in cm.pixel_order:     # pixel j's table needs the pixels before it
                w = cm.pixel_weights_at(codes, v, j)
                v[:, j] = [_pop(coders[lane], w[i:i + 1])[0] for i, lane in enumerate(act)]
        else:
            pixels = cm.pixel_weights(codes)
            v = np.array([_pop(coders[lane], pixels[i]) for i, lane in enumerate(act)])
        if cm.sequential:
            q = np.stack([cm.stage_table(v, codes, d) for d in range(cm.n_dims)], axis=1)
        else:
            q = cm.posterior_table(v)
        q = weights(q)
        for i, lane in enumerate(act):
            _push(coders[lane], codes[i], q[i])
        V[layout[act, step]] = v
    return V, [c.get_compressed() for c in coders]


# ----------------------------------------------------------------------------- a model's parameters
#
# A model sent ahead of its images: integer tensors (a model's fixed-point parameters, or a
# network's weights rounded to steps of their own), coded one tensor after another on one
# stack.  A tensor's integers v are split as v = hi 2^low + lo: lo, the `low` bits below what
# a table can hold (none for a tensor within PARAM_RADIUS), is sent as it is, uniform; hi
# under a table of the tensor's own with mass exp(-|hi|^power decay / 2^16) at
# hi = -radius..radius (power 1 a discretised Laplace, 2 a Gaussian).  The four integers of
# each tensor go in the file's header; the table is read from exp_table, so it is the same
# integers everywhere.  The sender picks power and decay for the shortest code (param_spec).

PARAM_DECAYS = tuple(sorted({round(2.0 ** (k / 4)) for k in range(0, 4 * 24)}))  # 1 .. 2^24
PARAM_RADIUS = 1 << 12                 # the widest table


def param_table(radius, power, decay):
    """Frequencies (2 radius + 1,) >= 1 summing to 2^PRECISION of v = -radius..radius."""
    e = exp_table()
    v = np.abs(np.arange(-radius, radius + 1, dtype=np.int64)) ** power
    steps = np.minimum((v * decay) >> 8, len(e) - 1)        # exp(-steps / 256)
    return int_table(e[steps])


def _split(values, low):
    """(hi, lo) with values = hi 2^low + lo, 0 <= lo < 2^low."""
    hi = values >> low
    return hi, values - (hi << low)


def param_spec(values):
    """(radius, power, decay, low) of the code that sends the integers `values` shortest,
    and that code's length in bits (-log2 of the tables' probabilities: the stack adds at
    most a few bits in all)."""
    values = np.asarray(values, dtype=np.int64).ravel()
    top = int(np.abs(values).max(initial=0))
    low = max(0, top.bit_length() - PARAM_RADIUS.bit_length() + 1)
    hi = _split(values, low)[0]
    radius = int(np.abs(hi).max(initial=0))
    counts = np.bincount(hi + radius, minlength=2 * radius + 1)
    bits = lambda power, decay: float(counts @ (PRECISION - np.log2(
        param_table(radius, power, decay)))) + low * len(values)
    best = None
    for power in (1, 2):
        fits = [i for i, d in enumerate(PARAM_DECAYS) if radius**power * d < 1 << 62]
        coarse = min(fits[::4], key=lambda i: bits(power, PARAM_DECAYS[i]))   # every 2x
        near = [i for i in fits if abs(i - coarse) <= 3]                      # then 2^(1/4)x
        i = min(near, key=lambda i: bits(power, PARAM_DECAYS[i]))
        got = ((radius, power, PARAM_DECAYS[i], low), bits(power, PARAM_DECAYS[i]))
        best = got if best is None or got[1] < best[1] else best
    return best


LOW_CHUNK = 16                         # lo is sent in uniform pieces of at most these bits


def _param_models(spec):
    """constriction's models of a spec: hi's table (None when hi is all 0), and per piece of
    lo, lowest first, (its first bit, its uniform table)."""
    import constriction
    radius, power, decay, low = spec
    table = lambda f: constriction.stream.model.Categorical(weights(f), perfect=False)
    pieces = [(j, min(LOW_CHUNK, low - j)) for j in range(0, low, LOW_CHUNK)]
    return (table(param_table(radius, power, decay)) if radius else None,
            [(j, table(np.full(1 << b, 1 << (PRECISION - b)))) for j, b in pieces])


def encode_params(tensors, specs):
    """One stack (uint32 words) holding the integer tensors, each by its spec; decode_params
    reads them back in the same order."""
    import constriction
    coder = constriction.stream.stack.AnsCoder()
    for values, spec in reversed(list(zip(tensors, specs))):    # a stack: the last in first
        hi, lo = _split(np.asarray(values, dtype=np.int64).ravel(), spec[3])
        hi_model, lo_models = _param_models(spec)
        for j, model in reversed(lo_models):
            bits = min(LOW_CHUNK, spec[3] - j)
            coder.encode_reverse(((lo >> j) & ((1 << bits) - 1)).astype(np.int32), model)
        if hi_model is not None:
            coder.encode_reverse((hi + spec[0]).astype(np.int32), hi_model)
    return coder.get_compressed()


def decode_params(words, specs, sizes):
    """The integer tensors (flat int64 arrays of the given sizes) of encode_params."""
    import constriction
    coder = constriction.stream.stack.AnsCoder(np.asarray(words, dtype=np.uint32))
    out = []
    for spec, size in zip(specs, sizes):
        hi_model, lo_models = _param_models(spec)
        size = int(size)
        hi = (coder.decode(hi_model, size).astype(np.int64) - spec[0] if hi_model is not None
              else np.zeros(size, dtype=np.int64))
        lo = np.zeros(size, dtype=np.int64)
        for j, model in lo_models:
            lo += coder.decode(model, size).astype(np.int64) << j
        out.append((hi << spec[3]) + lo)
    if not coder.is_empty():
        raise ValueError("the parameters' message holds more than its tensors")
    return out


# ----------------------------------------------------------------------------- the coder's bound


def message_bits(words):
    """Length in bits of a message held as one uint32 array per lane."""
    return 32 * sum(len(w) for w in words)


def sample_table(freqs, u):
    """Inverse-CDF draw: the symbol (...) whose interval of the tables freqs (..., S)
    holds u (...), an integer in [0, 2^PRECISION)."""
    return (np.cumsum(freqs, axis=-1) <= u[..., None]).sum(axis=-1)


def sampled_bound(cm, V, n_draws=64, rng=None, chunk=250, priors=None):
    """The coder's own bound F_t = E_q[-log2 P(v|k) - log2 p(k) + log2 q(k|v)] under its
    integer tables, bits per image (N,), by Monte Carlo with n_draws codes per image, and
    the standard error of each image's estimate (N,).  priors (N, M, K): each image's prior
    table, if not the unconditional one."""
    rng = rng if rng is not None else np.random.default_rng(0)
    M, P = cm.n_dims, PRECISION
    table = cm.prior_table()[None] if priors is None else priors
    log2_prior_all = np.broadcast_to(np.log2(table) - P, (len(V),) + table.shape[1:])  # a view
    F, se = np.empty(len(V)), np.empty(len(V))
    for i in range(0, len(V), chunk):
        v, log2_prior = V[i:i + chunk], log2_prior_all[i:i + chunk]
        vr = np.repeat(v, n_draws, axis=0)                          # each image per draw
        if cm.sequential:                        # stage d's table needs the codes before it
            codes = np.zeros((len(vr), M), dtype=np.int64)
            log2_q = np.zeros(len(vr))
            for d in range(M):
                q = cm.stage_table(vr, codes, d)
                codes[:, d] = sample_table(q, rng.integers(0, 1 << P, size=len(vr)))
                log2_q += np.log2(q[np.arange(len(vr)), codes[:, d]]) - P
            log2_q = log2_q.reshape(len(v), n_draws)
        else:
            q = cm.posterior_table(v)                                        # (n, M, K)
            codes = sample_table(q[:, None], rng.integers(0, 1 << P, size=(len(v), n_draws, M)))
            log2_q = (np.log2(np.take_along_axis(q[:, None], codes[..., None], -1)[..., 0])
                      - P).sum(axis=-1)                                       # (n, S)
            codes = codes.reshape(-1, M)
        rows = np.repeat(np.arange(len(v)), n_draws)[:, None]
        cost = (cm.pixel_bits(vr, codes).sum(axis=1)
                - log2_prior[rows, np.arange(M), codes].sum(axis=1)).reshape(len(v), n_draws)
        cost += log2_q
        F[i:i + chunk] = cost.mean(axis=1)
        se[i:i + chunk] = cost.std(axis=1, ddof=1) / math.sqrt(n_draws)
    return F, se


def round_trip(cm, V, bound, seed=0, lanes=CODER_LANES, draws=1):
    """Encode and decode V (N, n_pixels) uint8 under cm, check both ways, and compare with
    the coder's bound: returns ({"actual_bits", "bound_t", "bound_t_err", "overhead_pct",
    "roundtrip", "seconds"}, encoded words of the first draw).  bound() gives (F_t (N,),
    err (N,)) of the images in the order they are meant to arrive (the caller may hand the
    coder V in another).  With draws > 1 the message is coded from that many sets of initial
    bits: actual_bits is their mean, with "actual_bits_sd" and "actual_bits_draws"; seconds
    is the mean wall time of one encode and decode."""
    actual, ok, seconds, first = [], True, 0.0, None
    for draw in range(draws):
        t0 = time.perf_counter()
        words, initial = bits_back_encode(cm, V, lanes, seed, draw)
        decoded, left = bits_back_decode(cm, words, len(V))
        seconds += (time.perf_counter() - t0) / draws
        actual.append((message_bits(words) - message_bits(initial)) / len(V))
        ok &= (np.array_equal(decoded, V) and len(left) == len(initial)
               and all(np.array_equal(a, b) for a, b in zip(left, initial)))
        first = words if first is None else first
    F, err = bound()
    mean = float(np.mean(actual))
    row = {"actual_bits": mean, "bound_t": float(F.mean()),
           "bound_t_err": float(np.sqrt(np.sum(err**2)) / len(V)),
           "overhead_pct": 100.0 * (mean / float(F.mean()) - 1.0),
           "roundtrip": bool(ok), "seconds": seconds}
    if draws > 1:
        row.update(actual_bits_sd=float(np.std(actual, ddof=1)), actual_bits_draws=actual)
    return row, first


# ----------------------------------------------------------------------------- decoding a file's message


def decode_checked(where, cm, words, n_images, seed, images_sha256, reverse=False):
    """Decode a file's message under cm: the images (n_images, n_pixels) uint8, reversed
    back if the sender handed them to the coder reversed, once the recovered initial bits
    and the images' SHA-256 both agree with what was sent; ValueError naming `where`
    otherwise (never wrong images)."""
    try:
        V, left = bits_back_decode(cm, words, n_images)
    except Exception as err:          # whatever the coder raises on a message it cannot read
        raise ValueError(f"{where}: the message does not decode ({err})") from None
    V = V[::-1] if reverse else V
    initial = initial_words(len(words), cm.n_dims, seed)
    same = all(np.array_equal(a, b) for a, b in zip(left, initial))
    if hashlib.sha256(V.tobytes()).hexdigest() != images_sha256 or not same:
        raise ValueError(f"{where}: decoding did not reproduce the encoded images")
    return V
