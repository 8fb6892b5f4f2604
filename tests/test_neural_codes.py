"""neural_codes.py: gradients against finite differences, the VAE's
analytic F against sampling, the VQ-VAE's code lengths, the VAE's bits-back code, the CLI."""
import math

import numpy as np
import pytest

import neural_codes as nc
import neural_coding as coding
import neural_models as nm
from tests.helpers import finite_difference
import bits_back_coder as bbc
import spline_images_factorial_vq as sv

TINY = (9, 7)                  # hidden widths small enough for full finite differences


def images(n, seed=0):
    return sv.generate_spline_images(n, seed)[0]


# ----------------------------------------------------------------------------- the MLP block


def test_networks_share_one_parameter_vector_and_survive_copies():
    vae = nm.GaussianVAE(3, TINY, rng=np.random.default_rng(0))
    vae.theta[:] = np.arange(vae.theta.size)
    copy32 = vae.astype(np.float32)
    assert copy32.theta.dtype == np.float32
    assert np.shares_memory(copy32.nets["dec"].p["W0"], copy32.theta)
    copy32.theta[:] = 0
    assert vae.theta[-1] == vae.theta.size - 1          # the original is untouched


# ----------------------------------------------------------------------------- Gaussian VAE


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_vae_gradient_matches_finite_differences(act):
    X = images(12)
    vae = nm.GaussianVAE(3, TINY, act=act, rng=np.random.default_rng(2))
    vae.theta += np.random.default_rng(3).normal(0, 0.05, vae.theta.size)
    loss = lambda: vae.loss_and_grad(X, np.random.default_rng(4))[0]   # the same eps each call
    _, grad = vae.loss_and_grad(X, np.random.default_rng(4))
    idx = np.random.default_rng(5).choice(vae.theta.size, 120, replace=False)
    np.testing.assert_allclose(grad[idx], finite_difference(loss, vae.theta, idx),
                               rtol=1e-4, atol=1e-6)


def test_vae_analytic_free_energy_agrees_with_sampled_log_ratio():
    """F with the KL in closed form equals E_q[log q - log p(z) - log p(x|z)] / ln 2, the
    expectation estimated by sampling (log_weights), within four standard errors."""
    X = images(40)
    vae = nm.GaussianVAE(3, TINY, rng=np.random.default_rng(6))
    vae.theta += np.random.default_rng(7).normal(0, 0.1, vae.theta.size)
    S = 4000
    sampled = -vae.log_weights(X, S, np.random.default_rng(8)) / math.log(2)     # (S, N)
    analytic = vae.description_length(X, n_samples=S, rng=np.random.default_rng(9))["total"]
    se = sampled.std(axis=0, ddof=1) / math.sqrt(S)
    assert np.all(np.abs(sampled.mean(axis=0) - analytic) < 4 * np.hypot(se, se) + 1e-9)


def test_importance_bound_is_below_f_and_tightens_with_samples():
    X = images(60)
    vae = nm.GaussianVAE(3, TINY, rng=np.random.default_rng(10))
    vae.theta += np.random.default_rng(11).normal(0, 0.1, vae.theta.size)
    F = vae.description_length(X, n_samples=2000)["total"].mean()
    iw4, _ = vae.importance_bound(X, n_samples=4)
    iw256, se = vae.importance_bound(X, n_samples=256)
    assert iw256.mean() < iw4.mean() < F
    assert se > 0


def test_importance_bound_standard_error_matches_the_spread_of_independent_runs():
    """The stated standard error against the spread of 30 runs from independent draws: their
    ratio is within sampling error (a delta-method error over one set of heavy-tailed
    weights came out 1.5 times too small on the trained VAE)."""
    X = images(40)
    vae = nm.GaussianVAE(3, TINY, rng=np.random.default_rng(10))
    vae.theta += np.random.default_rng(11).normal(0, 0.3, vae.theta.size)
    runs = [vae.importance_bound(X, n_samples=16, rng=np.random.default_rng(100 + r))
            for r in range(30)]
    spread = np.std([iw.mean() for iw, _ in runs], ddof=1)
    stated = np.sqrt(np.mean([se**2 for _, se in runs]))
    assert 0.6 < stated / spread < 1.6, (stated, spread)


# --- the 8-bit VAE ---------------------------------------------------------------------------


def test_discretised_gaussian_is_the_binned_mass_and_its_gradient_is_exact():
    """log P against scipy's normal CDF where that is accurate; the 256 levels sum to one;
    both gradients against finite differences, deep in the tails too."""
    from scipy.stats import norm
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, (4, 50)).astype(float)
    levels[:, :2] = [0, 255]
    mu, log_s = rng.normal(0.5, 0.4, levels.shape), rng.uniform(-6.9, -1.5, levels.shape)
    logp, g_mu, g_ls = nm.discretised_gaussian(levels, mu, log_s)
    s = np.exp(log_s)
    lo = np.where(levels == 0, -np.inf, (levels - 0.5) / 255)
    hi = np.where(levels == 255, np.inf, (levels + 0.5) / 255)
    P = norm.cdf((hi - mu) / s) - norm.cdf((lo - mu) / s)
    ok = P > 1e-6
    np.testing.assert_allclose(logp[ok], np.log(P[ok]), rtol=1e-8)
    every = np.arange(256.0)[:, None] * np.ones((1, 3))
    total = np.exp(nm.discretised_gaussian(every, np.array([0.3, -2.0, 7.0]),
                                           np.log([0.01, 0.1, 0.2]))[0]).sum(axis=0)
    np.testing.assert_allclose(total, 1.0, rtol=1e-9)
    h = 1e-6
    for grad, shift in ((g_mu, (h, 0)), (g_ls, (0, h))):
        up = nm.discretised_gaussian(levels, mu + shift[0], log_s + shift[1])[0]
        down = nm.discretised_gaussian(levels, mu - shift[0], log_s - shift[1])[0]
        np.testing.assert_allclose(grad, (up - down) / (2 * h), rtol=1e-4, atol=1e-3)
    assert np.all(np.isfinite(nm.discretised_gaussian(np.array([100.0]), np.array([0.0]),
                                                      np.array([-6.9]))))


def test_pixel_vae_gradient_matches_finite_differences():
    V = sv.quantise_images(images(12))
    vae = nm.PixelVAE(3, TINY, rng=np.random.default_rng(2))
    vae.theta += np.random.default_rng(3).normal(0, 0.05, vae.theta.size)
    X = V / 255.0
    loss = lambda: vae.loss_and_grad(X, np.random.default_rng(4))[0]
    _, grad = vae.loss_and_grad(X, np.random.default_rng(4))
    idx = np.random.default_rng(5).choice(vae.theta.size, 120, replace=False)
    # the loss is thousands of nats (pixels deep in the tails of narrow scales), each summed
    # to ~1e-14 relative: a step of 1e-4 keeps that rounding below the tolerance
    np.testing.assert_allclose(grad[idx], finite_difference(loss, vae.theta, idx, h=1e-4),
                               rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def coded_pixel_vae():
    X, Xv, T, _ = nm.load_split(0, 300, n_val=100, n_test=60)
    q = sv.quantise_images
    vae, _ = nm.fit_pixel_vae(q(X), q(Xv), seed=0, hidden=(32, 32), steps=400, lr=3e-3)
    return vae, q(T)


def test_pixel_vae_tables_are_the_discretised_gaussian(coded_pixel_vae):
    """The coder's pixel tables sum to 2^24, match pixel_bits, and are the float model's
    binned Gaussian (at the grid's scale) to rounding."""
    vae, V = coded_pixel_vae
    cm = coding.PixelVAECodingModel.of(vae)
    codes = np.random.default_rng(1).integers(400, 600, (6, vae.n_latent))
    w = cm.pixel_weights(codes).astype(np.int64) + 1
    assert w.shape == (6, sv.D, 256) and np.all(w.sum(axis=-1) == 1 << bbc.PRECISION)
    bits = cm.pixel_bits(V[:6], codes)
    np.testing.assert_array_equal(bits, bbc.PRECISION - np.log2(
        np.take_along_axis(w, V[:6, :, None].astype(np.int64), -1)[..., 0]))
    out = cm.reconstruct(codes) / 2.0**coding.FIX
    row = np.clip(np.rint((out[:, sv.D:] * 4096 - nm.SCALE_LOW) / nm.SCALE_STEP), 0,
                  nm.N_SCALES - 1)
    log_s = (nm.SCALE_LOW + row * nm.SCALE_STEP) / 4096
    logp = nm.discretised_gaussian(V[:6].astype(float), out[:, :sv.D], log_s)[0]
    float_bits = -logp / math.log(2)
    # the mean is rounded to 1/16 of a level for the table
    assert np.abs(bits - float_bits)[float_bits < 10].max() < 0.1


def test_pixel_vae_code_round_trips_within_one_percent_of_its_bound(coded_pixel_vae):
    """One image a lane, so that every code is popped from the initial random bits: a
    lane that codes several images pops bits the previous image pushed, which follow the
    previous code, and this briefly trained model's codes are far from its prior (the
    chained rows of the scoreboard report their overhead)."""
    vae, V = coded_pixel_vae
    assert coding.code_vae(vae, V[:12], seed=3, lanes=3)["roundtrip"]
    row = coding.code_vae(vae, V, seed=3, lanes=len(V))
    assert row["roundtrip"]
    assert abs(row["overhead_pct"]) < 1.0
    # the tables' floor of 2^-24 a level caps what a far-off pixel costs; the float
    # likelihood has no floor, so the coder may only be cheaper (or a rounding dearer)
    assert row["bound_t"] < 1.01 * row["density_bound"]


def test_linear_vae_is_ppca_with_standardised_latents():
    """PPCA as a VAE without hidden layers: the same posterior, reconstruction and code
    cost, so that the VAE's coder codes PPCA's own density."""
    X = images(300)
    pca = sv.PCA(5, 0.05).fit(X)
    vae = nc.linear_vae(pca)
    mu, log_s, _ = vae.encode(X[:20])
    m, S = pca._posterior(X[:20])
    np.testing.assert_allclose(mu * np.sqrt(pca.lam), m, atol=1e-12)
    np.testing.assert_allclose(np.exp(2 * log_s) * pca.lam, np.broadcast_to(S, mu.shape))
    np.testing.assert_allclose(vae.decode(mu), pca.reconstruct(X[:20]), atol=1e-12)
    dl = vae.description_length(X[:20], n_samples=4000)
    np.testing.assert_allclose(dl["code"], pca.description_length(X[:20])["code"], rtol=1e-10)
    np.testing.assert_allclose(dl["total"], pca.description_length(X[:20])["total"], rtol=2e-3)


def test_scoreboard_counts_parameters_and_break_even():
    model = sv.build_model("factorial_vq")
    # codebooks 4*6*96, bias 96, prior 24, recognition 96*24 + 24, and sigma_x
    assert nc.core_params("factorial_vq", model) == 2304 + 96 + 24 + 2304 + 24 + 1
    pca = sv.PCA(24).fit(images(100))
    assert nc.core_params("pca24", pca) == 96 + 96 * 24 + 24 + 1
    assert nc.break_even(1000, 470.0, 480.0) == 3200             # 32,000 bits / 10 per image
    assert nc.break_even(1000, 480.0, 480.0) is None
    row = nc.scoreboard_row({"actual_bits": 470.0}, 1000, 2000, {"lzma": 480.0})
    assert row["params_bits_per_image"] == 16.0 and row["with_params"] == 486.0


def test_training_lowers_validation_f_and_keeps_the_best():
    data = nm.load_split(0, 300, n_val=100, n_test=50)
    vae, hist = nm.fit_vae(data[0], data[1], seed=0, hidden=(32, 32), steps=600, lr=3e-3)
    assert hist["val"][-1] < hist["val"][0] - 10
    assert hist["best_val"] == min(hist["val"])
    again = nm.fit_vae(data[0], data[1], seed=0, hidden=(32, 32), steps=600, lr=3e-3)[0]
    np.testing.assert_array_equal(vae.theta, again.theta)      # a seed gives the same model


def test_flushing_subnormal_moments_zeroes_only_tiny_values():
    opt = sv.Adam([np.zeros(3, dtype=np.float32)])
    opt.m[0][:] = [1e-39, 1e-3, -1e-31]
    opt.v[0][:] = [2e-30, 1e-40, 5e-3]
    nm.flush_subnormals(opt)
    np.testing.assert_array_equal(opt.m[0], np.float32([0, 1e-3, 0]))
    np.testing.assert_array_equal(opt.v[0], np.float32([2e-30, 0, 5e-3]))


# ----------------------------------------------------------------------------- VQ-VAE


@pytest.mark.parametrize("form", nm.VQ_FORMS)
def test_vqvae_straight_through_gradient_matches_finite_differences(form):
    """With the offset sg(z_q - e) and the commitment target sg(z_q) held fixed, the
    surrogate is a smooth function of theta whose gradient is the straight-through one."""
    X = images(10)
    vq = nm.VQVAE(3, 4, form, TINY, embed=3, act="tanh", rng=np.random.default_rng(12))
    vq.init_codebooks(X, np.random.default_rng(13))
    out = vq.nets["enc"].forward(X)[0]
    E = out.reshape(len(X), 3, 3) if form == "product" else out
    _, zq, _ = vq.quantise(E)
    zq = zq.reshape(len(X), -1)
    offset, target = zq - out, zq
    _, grad = vq.surrogate_loss_and_grad(X, offset, target)
    loss = lambda: vq.surrogate_loss_and_grad(X, offset, target)[0]
    idx = np.random.default_rng(14).choice(vq.theta.size, 120, replace=False)
    np.testing.assert_allclose(grad[idx], finite_difference(loss, vq.theta, idx),
                               rtol=1e-4, atol=1e-6)


def test_vqvae_quantises_to_the_nearest_codes():
    rng = np.random.default_rng(15)
    vq = nm.VQVAE(3, 5, "product", TINY, embed=2, rng=rng)
    vq.codebooks[...] = rng.normal(size=vq.codebooks.shape)
    E = rng.normal(size=(50, 3, 2))
    codes, zq, _ = vq.quantise(E)
    brute = np.argmin(((E[:, :, None] - vq.codebooks[None]) ** 2).sum(-1), axis=2)
    np.testing.assert_array_equal(codes, brute)
    res = nm.VQVAE(2, 5, "residual", TINY, embed=2, rng=rng)
    res.codebooks[...] = rng.normal(size=res.codebooks.shape)
    e = rng.normal(size=(50, 2))
    codes, zq, _ = res.quantise(e)
    first = np.argmin(((e[:, None] - res.codebooks[0][None]) ** 2).sum(-1), axis=1)
    rest = e - res.codebooks[0][first]
    second = np.argmin(((rest[:, None] - res.codebooks[1][None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(codes, np.stack([first, second], axis=1))
    np.testing.assert_allclose(zq, res.codebooks[0][first] + res.codebooks[1][second])


def test_vqvae_code_length_is_recon_plus_smoothed_prior_bits():
    data = nm.load_split(0, 300, n_val=100, n_test=50)
    vq, _ = nm.fit_vqvae(data[0], data[1], seed=0, hidden=(32, 32), steps=300)
    codes = vq.codes(data[0])
    counts = np.stack([np.bincount(codes[:, m], minlength=6) for m in range(4)]) + 1.0
    np.testing.assert_allclose(np.exp(vq.log_prior), counts / counts.sum(axis=1, keepdims=True))
    dl = vq.description_length(data[2])
    T_codes = vq.codes(data[2])
    bits = -np.log2(counts / counts.sum(axis=1, keepdims=True))[np.arange(4), T_codes].sum(1)
    np.testing.assert_allclose(dl["code"], bits)
    R = vq.decode_codes(T_codes) - data[2]
    np.testing.assert_allclose(dl["recon"], (R**2).sum(1) / (2 * 0.15**2) / math.log(2))
    use = vq.usage(data[0])
    assert all(1.0 <= p <= 6.0 for p in use["perplexity"])
    assert all(0 <= d < 6 for d in use["dead_codes"])


def test_dead_codes_restart_at_encoder_outputs():
    rng = np.random.default_rng(16)
    vq = nm.VQVAE(1, 3, "product", TINY, embed=2, rng=rng)
    vq.codebooks[0] = [[0, 0], [1, 1], [50, 50]]
    vq.ema_sum[0], vq.ema_count[0] = vq.codebooks[0], [1.0, 1.0, 1.0]
    inputs = rng.normal(0, 0.1, (40, 1, 2))
    codes = vq.quantise(inputs)[0]
    for _ in range(200):           # code 2 is never chosen: its count decays below 1
        vq.ema_update(codes, inputs, rng)
    assert vq.restarts >= 1
    assert np.abs(vq.codebooks[0, 2]).max() < 1.0      # moved to where the data are


# ----------------------------------------------------------------------------- the VAE's code


@pytest.fixture(scope="module")
def coded_vae():
    data = nm.load_split(0, 300, n_val=100, n_test=60)
    vae, _ = nm.fit_vae(data[0], data[1], seed=0, hidden=(32, 32), steps=400, lr=3e-3)
    return vae, sv.quantise_images(data[2])


def test_vae_tables_are_exact_and_do_not_depend_on_the_batch(coded_vae):
    vae, V = coded_vae
    cm = coding.VAECodingModel.of(vae)
    q = cm.posterior_table(V)
    assert q.shape == (len(V), vae.n_latent, coding.LATENT_BINS) and q.min() >= 1
    assert np.all(q.sum(axis=-1) == 1 << bbc.PRECISION)
    assert np.all(cm.prior_table().sum(axis=-1) == 1 << bbc.PRECISION)
    for i in (0, 17, 59):
        np.testing.assert_array_equal(cm.posterior_table(V[i:i + 1])[0], q[i])
    codes = np.random.default_rng(0).integers(0, coding.LATENT_BINS, (20, vae.n_latent))
    means = cm.reconstruct(codes)
    np.testing.assert_array_equal(cm.reconstruct(codes[::-1])[::-1], means)
    # the fixed-point decoder agrees with the float one at the bin centres, to a level
    z = coding.latent_grid()[2][codes] / coding.Z_UNIT
    np.testing.assert_allclose(means / 2.0**bbc.PARAM_BITS, vae.decode(z), atol=1 / 255)


def test_vae_prior_bins_have_equal_mass_and_posterior_follows_q(coded_vae):
    vae, V = coded_vae
    cm = coding.VAECodingModel.of(vae)
    prior = cm.prior_table()[0] / 2.0**bbc.PRECISION
    np.testing.assert_allclose(prior, 1.0 / coding.LATENT_BINS, rtol=0.07)
    mu, log_s, _ = vae.encode(V[:5] / 255.0)
    q = cm.posterior_table(V[:5]) / 2.0**bbc.PRECISION
    _, edges, centres = coding.latent_grid()
    mean = (q * centres / coding.Z_UNIT).sum(axis=-1)
    np.testing.assert_allclose(mean, mu, atol=0.02)


def test_vae_bits_back_code_round_trips_within_one_percent_of_its_bound(coded_vae):
    vae, V = coded_vae
    row = coding.code_vae(vae, V, seed=3)
    assert row["roundtrip"]
    assert abs(row["overhead_pct"]) < 1.0
    assert row["bound_t_err"] < 0.01 * row["bound_t"]


# ----------------------------------------------------------------------------- ACN


def test_gaussian_kl_is_zero_at_equality_and_matches_sampling():
    rng = np.random.default_rng(0)
    mu, log_s, m, log_sd = (rng.normal(0, 0.5, (1, 3)) for _ in range(4))
    assert abs(nm.gaussian_kl(mu, log_s, mu, log_s)[0]) < 1e-12
    z = mu + np.exp(log_s) * rng.standard_normal((400_000, 3))
    log_ratio = (-0.5 * ((z - mu) / np.exp(log_s))**2 - log_s
                 + 0.5 * ((z - m) / np.exp(log_sd))**2 + log_sd).sum(axis=1)
    assert abs(log_ratio.mean() - nm.gaussian_kl(mu, log_s, m, log_sd)[0]) < 0.01


def test_acn_gradient_matches_finite_differences_prior_network_included():
    rng = np.random.default_rng(2)
    X = images(12)
    acn = nm.ACN(3, TINY, prior_hidden=(6,), rng=rng)
    acn.theta += rng.normal(0, 0.05, acn.theta.size)     # the prior network away from zero
    batch = (X, rng.normal(0, 1, (12, 3)))
    loss = lambda: acn.loss_and_grad(batch, np.random.default_rng(4))[0]
    _, grad = acn.loss_and_grad(batch, np.random.default_rng(4))
    view = acn.nets["prior"].params                     # its place in theta
    start = (view.__array_interface__["data"][0]
             - acn.theta.__array_interface__["data"][0]) // acn.theta.itemsize
    idx = np.concatenate([np.random.default_rng(5).choice(acn.theta.size, 150, replace=False),
                          np.arange(start, start + view.size, 3)])
    np.testing.assert_allclose(grad[idx], finite_difference(loss, acn.theta, idx),
                               rtol=1e-4, atol=1e-6)


def test_untrained_acn_is_the_vae_with_its_standard_prior():
    rng = np.random.default_rng(0)
    vae = nm.GaussianVAE(3, TINY, rng=rng)
    acn = nm.ACN.from_vae(vae, prior_hidden=(6,), rng=rng)
    X = images(20)
    a = acn.description_length(X, rng=np.random.default_rng(1))
    b = vae.description_length(X, rng=np.random.default_rng(1))
    np.testing.assert_allclose(a["total"], b["total"], rtol=1e-12)


def test_greedy_tour_and_neighbours():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(60, 2))
    order = nm.greedy_tour(M)
    assert sorted(order) == list(range(60))
    assert order[0] == np.argmin((M**2).sum(axis=1))
    for i in range(1, 60):        # each step goes to the nearest point not yet visited
        left = order[i:]
        d = ((M[left] - M[order[i - 1]])**2).sum(axis=1)
        assert order[i] == left[np.argmin(d)]
    nn = nm.nearest_neighbours(M, 4)
    brute = np.argsort(((M[:, None] - M[None])**2).sum(-1) + np.diag([np.inf] * 60), axis=1)
    np.testing.assert_array_equal(nn, brute[:, :4])
    same = nm.nearest_neighbours(np.zeros((5, 1)), 4)   # ties: never the point itself
    assert all(i not in row for i, row in enumerate(same))


def test_acn_tour_code_round_trips_and_prices_each_code_given_the_one_before(coded_vae):
    vae, _ = coded_vae
    X, X_val, T, _ = nm.load_split(0, 300, n_val=100, n_test=60)
    acn, _ = nm.fit_acn(X, X_val, seed=0, vae=vae, steps=300, lr=3e-3)
    V = sv.quantise_images(T)
    V = V[acn.tour(V / 255.0)]
    cm = coding.ACNCodingModel.of(acn)
    ctx = cm.context_prior_table(V[:3])
    assert ctx.shape == (3, acn.n_latent, coding.LATENT_BINS)
    assert np.all(ctx.sum(axis=-1) == 1 << bbc.PRECISION)
    np.testing.assert_array_equal(cm.context_prior_table(V[1:2])[0], ctx[1])
    # each latent's table gives at least 1/ACN_CODER_MIX of N(0, 1)'s mass to every bin
    assert np.all(ctx >= cm.prior_table()[None] // nm.ACN_CODER_MIX)
    row = coding.code_vae(acn, V, seed=3)
    assert row["roundtrip"] and row["lanes"] == 1
    # the coder pays what its bound with the context priors says, not the i.i.d. prior's
    iid, _ = coding.VAECodingModel.of(acn).bound(V)
    assert iid.mean() > row["bound_t"] + 5.0
    assert abs(row["actual_bits"] - row["bound_t"]) < abs(row["actual_bits"] - iid.mean())
    assert abs(row["overhead_pct"]) < 1.0, row


def test_set_saving_is_log2_factorial_over_n():
    for n in (1, 2, 7, 30):
        assert nc.set_saving(n) == pytest.approx(math.log2(math.factorial(n)) / n, abs=1e-12)
    assert nc.set_saving(2000) == pytest.approx(9.53, abs=0.01)


# ----------------------------------------------------------------------------- the one-bit VAE


def test_bernoulli_nll_is_the_log_loss_without_overflow():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 40, (30, 6))
    X = (rng.random((30, 6)) < 0.5).astype(float)
    nll, g = nm.bernoulli_nll(X, logits)
    p = 1.0 / (1.0 + np.exp(-np.clip(logits, -700, 700)))
    np.testing.assert_allclose(nll, np.sum(np.logaddexp(0, logits) - X * logits, axis=1))
    np.testing.assert_allclose(g, p - X, atol=1e-15)
    assert np.all(np.isfinite(nm.bernoulli_nll(X, logits * 100)[0]))


@pytest.mark.parametrize("layers", [1, 2])
def test_one_bit_vae_gradient_matches_finite_differences(layers):
    model = nm.OneBitVAE(3, layers, hidden=4, rng=np.random.default_rng(1))
    model.theta += np.random.default_rng(2).normal(0, 0.5, model.theta.size)  # off the start
    X = np.repeat(nm.one_bit_data(3), 3, axis=0)
    loss = lambda: model.loss_and_grad(X, np.random.default_rng(5))[0]
    grad = model.loss_and_grad(X, np.random.default_rng(5))[1]
    fd = finite_difference(loss, model.theta, range(model.theta.size))
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6)


def test_one_bit_draws_are_stratified_and_the_sampled_kl_is_the_analytic_one():
    model = nm.OneBitVAE(4, 2, rng=np.random.default_rng(0))
    for name in ("enc2", "prior1"):        # the upper layer as the identity on priors
        last = len(model.nets[name].sizes) - 2
        model.nets[name].p[f"W{last}"][...] = 0.0
        model.nets[name].p[f"b{last}"][...] = 0.0
    eps = model.stratified_draws(np.random.default_rng(1), 2, 50)
    from scipy.special import ndtr
    for point in range(2):             # one draw in each of the 50 strata, per latent
        strata = np.sort(np.floor(ndtr(eps[point * 50:(point + 1) * 50]) * 50), axis=0)
        np.testing.assert_array_equal(strata, np.repeat(np.arange(50)[:, None], 2, axis=1))
    # so the upper layer is N(0, 1) on both sides and the two-layer code is the one-layer
    # KL: its sampled log q(z1|x) - log N(z1; 0, 1) against the closed form
    one = nm.OneBitVAE(4, 1, rng=np.random.default_rng(0))
    one.theta[...] = model.theta[:one.theta.size]
    _, _, code2 = model.bits(draws=20000)
    _, _, code1 = one.bits(draws=10)
    assert code2 == pytest.approx(code1, abs=0.02)


@pytest.mark.parametrize("layers", [1, 2])
def test_one_bit_importance_sampled_likelihood_is_the_quadrature_and_below_the_loss(layers):
    model = nm.fit_one_bit(10, layers, 0, steps=300)
    quadrature = model.neg_log_likelihood_quadrature(step=0.004)
    iw = model.neg_log_likelihood(samples=20000)
    assert quadrature - 0.01 <= iw <= model.bits()[0] + 0.01
    assert iw == pytest.approx(quadrature, abs=0.1)
    # brute force: p(x) = E_{z ~ prior} p(x|z), the prior sampled (z2 first, then z1)
    rng = np.random.default_rng(4)
    z2 = rng.standard_normal((100_000, 1))
    if layers == 1:
        z1 = z2
    else:
        out = model.nets["prior1"].forward(z2)[0]
        z1 = out[:, :1] + np.exp(nm.bounded_log_sd(out[:, 1:])[0]) * rng.standard_normal(z2.shape)
    logits = model.nets["dec"].forward(z1)[0]
    lik = [np.mean(np.exp(-nm.bernoulli_nll(np.broadcast_to(x, logits.shape), logits)[0]))
           for x in nm.one_bit_data(10)]
    assert quadrature == pytest.approx(np.mean(-np.log2(lik)), abs=0.02)


def test_one_bit_posterior_grid_integrates_to_one_and_its_kl_is_the_gap():
    from scipy.integrate import trapezoid
    model = nm.fit_one_bit(10, 1, 0, steps=300)
    post = nc.one_bit_posteriors(model)
    z = np.array(post["z"])
    exact, q = np.array(post["exact"]), np.array(post["q"])
    assert trapezoid(exact, z, axis=1) == pytest.approx([1, 1], abs=0.01)
    assert trapezoid(q, z, axis=1) == pytest.approx([1, 1], abs=0.01)
    # the gap, loss - (-log p(x)), is KL(q(z|x) || p(z|x)) averaged over the two points
    kl = np.mean([trapezoid(qi * np.log2(np.maximum(qi, 1e-300) / np.maximum(ei, 1e-300)), z)
                  for qi, ei in zip(q, exact)])
    assert kl == pytest.approx(model.bits()[0] - model.neg_log_likelihood(), abs=0.03)


def test_factorial_vq_collapse_run_reports_codes_in_use():
    r = nc.collapse_run("none", 0, steps=5)
    assert len(r["perplexity"]) == 4 and all(1.0 <= p <= 6.0 + 1e-9 for p in r["perplexity"])
    assert np.isfinite(r["heldout"])


# ----------------------------------------------------------------------------- the CLI

BAD = [["--latents", "0"], ["--latents", "65"], ["--hidden", "0"], ["--hidden", "-5"],
       ["--hidden", "256,abc"], ["--hidden", "1,1,1,1,1"], ["--hidden", "5000"],
       ["--n-samples", "-1"], ["--n-samples", "0"], ["--n-samples", "9000000"],
       ["--n-test", "0"], ["--steps", "0"], ["--batch", "0"], ["--seed", "-1"],
       ["--models", "gan"], ["--models", "vae", "vae"], ["--seeds", "1", "1"],
       ["--sweep", "--n-samples", "300"], ["--compress", "--models", "pca24"],
       ["--json", "/proc/x.json"], ["--json", ""], ["--late", "3"],
       ["--models", "pixel_vae"], ["--scoreboard", "--models", "vae"],
       ["--scoreboard", "--seeds", "0", "1"], ["--scoreboard", "--n-samples", "300"],
       ["--scoreboard", "--sweep"], ["--scoreboard", "--models", "pca5", "pca5"],
       ["--acn", "--models", "vae"], ["--acn", "--latents", "3"], ["--acn", "--sweep"],
       ["--one-bit", "--n-samples", "5"], ["--one-bit", "--acn"], ["--acn", "--n-samples", "1"],
       ["--beta", "--models", "vae"], ["--beta", "--hidden", "8"], ["--beta", "--acn"],
       ["--beta", "--acn-variants"], ["--acn-variants", "--steps", "5"],
       ["--acn-variants", "--n-samples", "3"], ["--acn-variants", "--one-bit"],
       ["--beta", "--bitstream", "x.svqb"],
       ["--n-samples", "1"], ["--n-samples", "10", "--models", "pca24"],
       ["--seed", str(2**63)], ["--seeds", "0", str(2**63)],
       ["--seed", "1", "--seed", "2"], ["--seed", "0", "--seeds", "1"],
       ["--models", "pca24", "--models", "factorial_vq"],
       # flags that would change nothing, or be cut silently
       ["--sweep", "--n-test", "5"], ["--latents", "3", "--models", "factorial_vq", "pca24"],
       ["--hidden", "8", "--models", "factorial_vq"], ["--steps", "5", "--models", "pca24"],
       ["--batch", "8", "--models", "factorial_vq"],
       ["--scoreboard", "--models", "pca5", "--hidden", "8"],
       ["--scoreboard", "--models", "pca5", "--steps", "8"],
       ["--scoreboard", "--models", "pca5", "--batch", "8"],
       ["--batch", "65536"], ["--batch", "201"], ["--sweep", "--batch", "201"],
       ["--n-samples", "2"],
       # files: one code per file, and decoding takes nothing else
       ["--decode", "README.md", "--seed", "1"], ["--decode", "/no/such/file"],
       ["--decode", "/tmp"], ["--bitstream", "x.svqb", "--models", "pca24"],
       ["--bitstream", "x.svqb", "--seeds", "0", "1"], ["--bitstream", "x.svqb", "--sweep"],
       ["--bitstream", "/tmp"], ["--acn", "--bitstream", "x.svqb"]]


@pytest.mark.parametrize("args", BAD, ids=[" ".join(a) for a in BAD])
def test_bad_flags_exit_2_with_one_line(cli, args):
    status, out, err = cli(nc.main, *args)
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "error" in err


def test_cli_runs_small_and_writes_json(cli, tmp_path):
    path = tmp_path / "out.json"
    status, out, _ = cli(nc.main, "--n-samples", "150", "--n-test", "40", "--steps", "60",
                         "--hidden", "16", "--models", "vae", "vq_vae_4x6", "--quiet",
                         "--json", str(path))
    assert status == 0 and "Gaussian VAE, 5 latents" in out and "VQ-VAE product 4x6" in out
    import json
    payload = json.loads(path.read_text())
    vae = payload["results"][0]["models"]["vae"]
    assert vae["total"] == pytest.approx(vae["recon"] + vae["code"])
    assert payload["summary"]["vae"]["total"] == vae["total"]
    assert out.strip() == nc.report(payload).strip()      # what the pages are written from


def test_training_steps_grow_with_the_training_set():
    sizes = [1, 200, 600, 2000, 6000, 20000, 10**7]
    steps = [nm.training_steps(n) for n in sizes]
    assert [nm.training_steps(n) for n in nm.STEPS_AT] == list(nm.STEPS_AT.values())
    assert steps == sorted(steps) and steps[0] == 2000 and steps[-1] == 100_000
    assert nm.patience_scores(2000) == 8 and nm.patience_scores(100_000) == 80
    table = nm.PIXEL_STEPS_AT                                  # the 8-bit VAE's own recipe
    assert [nm.training_steps(n, table) for n in table] == list(table.values())
    assert nm.training_steps(10**7, table) == max(table.values())
    assert nm.batch_size(200, nm.PIXEL_BATCH) == 50 and nm.batch_size(20000, nm.PIXEL_BATCH) == 64


def test_training_stops_after_patience_scores_without_a_new_best():
    X, V, _, _ = nm.load_split(0, 64, n_test=1)
    model = nm.GaussianVAE(2, (8,), rng=np.random.default_rng(0))
    h = nm.train_network(model, X, V, np.random.default_rng(0), 400, batch=32, lr=0.0,
                         eval_every=10, patience=3)
    assert h["best_step"] == 10 and h["steps_run"] == 40        # lr 0: no score improves
    assert model.validation_bits(V) == pytest.approx(h["best_val"])


@pytest.mark.parametrize("args,long", [([], False), (["--hidden", "4096,4096,4096,4096"], True),
                                       (["--acn"], True), (["--sweep"], True),
                                       (["--one-bit"], True)])
def test_long_runs_are_announced_with_an_estimate(args, long, cli):
    """The estimate, before any work, of runs past two minutes (the rates are measured)."""
    assert (nc.estimate_seconds(nc.parse_args(args)) > 120) == long


def test_the_choices_are_made_on_validation_scores_and_named():
    """A small run of --choose: every candidate scored, the pick the lowest, the table says so."""
    c = nc.run_choices(("rate", "mix"), pixel_sizes=(200,), rates=(1e-3, 1e-2), acn_size=200,
                       mixes=(None, 16), steps=30, workers=1)
    assert set(c["pixel_lr"]["200"]) == {"0.001", "0.01"} and set(c["coder_mix"]["200"]) == {
        "None", "16"}
    for key in ("pixel_lr", "coder_mix"):
        scores = c[key]["200"]
        assert c[key + "_pick"]["200"] == min(scores, key=scores.get)
        assert all(np.isfinite(v) for v in scores.values())
    text = nc.report({"choices": c}, markdown=True)
    assert "chosen" in text and "validation" in text


def test_an_acn_daydream_starts_at_its_images_and_dreams_the_prior_s_codes():
    X, X_val, T, _ = nm.load_split(0, 64, n_test=5)
    vae, _ = nm.fit_vae(X, X_val, 0, hidden=(16,), steps=30)
    acn, _ = nm.fit_acn(X, X_val, 0, vae=vae, steps=30)
    dream = nc.daydream(acn, T, steps=3)
    assert dream.shape == (5, 4, sv.D) and np.array_equal(dream[:, 0], T)
    m, _, _ = acn.prior(acn.encode(dream[:, 1])[0])
    np.testing.assert_allclose(dream[:, 2], acn.decode(m))
    drawn = [nc.daydream(acn, T, 3, np.random.default_rng(1)) for _ in range(2)]
    assert np.array_equal(*drawn) and not np.allclose(drawn[0][:, 1:], dream[:, 1:])


def test_vae_pictures_interpolate_between_the_reconstructions_and_the_page_quotes_its_run():
    X, X_val, T, _ = nm.load_split(0, 64, n_test=10)
    vae, _ = nm.fit_vae(X, X_val, 0, hidden=(16,), steps=30)
    p = nc.vae_pictures(vae, T, 0)
    paths, recon = np.array(p["interpolations"]), np.array(p["reconstructions"])
    assert paths.shape == (nc.PICTURE_IMAGES // 2, nc.INTERPOLATION_STEPS, sv.D)
    np.testing.assert_array_equal(paths[:, 0], recon[0::2])      # each path ends at its pair
    np.testing.assert_array_equal(paths[:, -1], recon[1::2])
    assert np.array(p["samples"]).shape == (nc.PICTURE_SAMPLES, sv.D)
    import json
    from tests.helpers import ROOT
    run = json.loads((ROOT / "viz" / "vae_pictures.json").read_text())["results"][0]["models"]
    page = " ".join((ROOT / "docs" / "modern_codes.md").read_text().split())
    quoted = [f"held-out F {run['vae']['total']:.2f} bits", f"recon is {run['vae']['recon']:.1f}",
              f"factorial VQ's {run['factorial_vq']['recon']:.1f}",
              f"PPCA-24's {run['pca24']['recon']:.1f}"]
    assert not [q for q in quoted if q not in page], quoted



def test_a_seeds_models_in_two_workers_give_the_numbers_of_one_process():
    models = ["vq_vae_4x6", "gumbel_vq_vae_4x6", "pca24"]
    kw = dict(steps=60, hidden=(8,))
    one = nc.run_all(0, 200, models, n_test=50, workers=1, **kw)
    two = nc.run_all(0, 200, models, n_test=50, workers=2, **kw)
    assert list(two) == models                        # in the order asked, not finished
    for name in models:
        assert two[name]["total"] == one[name]["total"], name
