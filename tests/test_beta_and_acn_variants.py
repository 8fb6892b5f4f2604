"""The beta-VAE (trained on recon + beta KL, scored by the valid F), the MIG, and the ACN's
"once" neighbour rule and its variants: gradients against finite differences, the rule
against a brute-force replay, the runs' bookkeeping, splits merged back, pages against
their committed runs."""
import json

import numpy as np
import pytest

import file_container as fc
import neural_codes as nc
import neural_models as nm
import spline_images_factorial_vq as sv
from tests.helpers import ROOT, finite_difference, neural_block, readme_block

TINY = (9, 7)


def images(n, seed=0):
    return sv.generate_spline_images(n, seed)[0]


# ----------------------------------------------------------------------------- beta


@pytest.mark.parametrize("beta", [0.25, 4.0])
def test_beta_vae_gradient_matches_finite_differences_and_weights_only_the_kl(beta):
    X = images(12)
    vae = nm.GaussianVAE(3, TINY, rng=np.random.default_rng(2))
    vae.theta += np.random.default_rng(3).normal(0, 0.05, vae.theta.size)
    plain = vae.loss_and_grad(X, np.random.default_rng(4))[0]
    vae.beta = beta
    loss = lambda: vae.loss_and_grad(X, np.random.default_rng(4))[0]   # the same eps each call
    value, grad = vae.loss_and_grad(X, np.random.default_rng(4))
    idx = np.random.default_rng(5).choice(vae.theta.size, 120, replace=False)
    np.testing.assert_allclose(grad[idx], finite_difference(loss, vae.theta, idx),
                               rtol=1e-4, atol=1e-6)
    mu, log_s, _ = vae.encode(X)           # the loss moves by (beta - 1) times the mean KL
    kl = 0.5 * np.sum(mu**2 + np.exp(2 * log_s) - 1 - 2 * log_s, axis=1).mean()
    assert value - plain == pytest.approx((beta - 1) * kl, rel=1e-9)


def test_beta_changes_training_and_early_stopping_never_the_score():
    X = images(30)
    vae = nm.GaussianVAE(3, TINY, rng=np.random.default_rng(1))
    dl = vae.description_length(X, n_samples=4, rng=np.random.default_rng(7))
    assert vae.validation_bits(X) == pytest.approx(dl["total"].mean(), rel=1e-12)
    vae.beta = 3.0
    assert vae.validation_bits(X) == pytest.approx((dl["recon"] + 3 * dl["code"]).mean(),
                                                   rel=1e-12)
    again = vae.description_length(X, n_samples=4, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(again["total"], dl["total"])
    with pytest.raises(ValueError):
        nm.fit_vae(X, X, beta=0.0)


def test_mig_is_one_for_a_latent_per_factor_and_zero_for_a_shared_one():
    ent = np.full(3, 3.0)
    assert nc.mutual_information_gap(np.eye(3) * 3.0, ent) == pytest.approx(1.0)
    shared = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.5]])
    # factor 0 split between two latents: gap 0; factor 1: 2/3; factor 2: 1.5/3
    assert nc.mutual_information_gap(shared, ent) == pytest.approx((0 + 2 / 3 + 0.5) / 3)


def test_mig_of_a_vae_uses_each_height_s_entropy():
    """The VAE's MIG equals the formula over its own MI table, with log2(8) = 3 bits of
    entropy per height (equal-frequency bins)."""
    X, _, T, controls = nm.load_split(0, 60, n_val=20, n_test=400)
    vae = nm.GaussianVAE(5, TINY, rng=np.random.default_rng(0))
    a = nc.vae_alignment(vae, T, controls)
    assert a["mig"] == pytest.approx(nc.mutual_information_gap(np.array(a["mi_controls"]),
                                                               [3.0] * 5), abs=1e-9)
    assert 0.0 <= a["mig"] <= 1.0


def test_beta_run_scores_by_the_valid_f_shares_the_plain_vae_and_merges(tmp_path):
    folder = fc.ModelFolder(str(tmp_path), "save", nm.SAVED_CLASSES)
    run = nc.run_beta(seeds=(0, 1), betas=(1.0, 4.0), n_train=120, n_test=60, steps=30,
                      workers=1, log=lambda *_: None, folder=folder)
    assert list(run["runs"]) == ["1", "4"] and list(run["runs"]["4"]) == ["0", "1"]
    for beta, by in run["runs"].items():
        for r in by.values():
            assert r["F"] == pytest.approx(r["recon"] + r["kl"], rel=1e-12)
            assert r["objective"] == pytest.approx(r["recon"] + float(beta) * r["kl"], rel=1e-12)
    # beta = 1 is the plain VAE, saved under its name (a default run loads it)
    assert (tmp_path / f"{fc.model_key('vae', 0, 120)}.svqm").exists()
    assert (tmp_path / f"{fc.model_key('vae_beta4', 0, 120)}.svqm").exists()
    vae, _ = nm.fit_vae(*nm.load_split(0, 120, n_test=60)[:2], seed=0, steps=30)
    F = vae.description_length(nm.load_split(0, 120, n_test=60)[2])["total"].mean()
    assert run["runs"]["1"]["0"]["F"] == F
    # seeds run apart merge back to the run of both
    parts = [{"config": {"seeds": [s]}, "beta": {**run, "runs": {
        b: {str(s): by[str(s)]} for b, by in run["runs"].items()}}} for s in (1, 0)]
    payload, table = nc.merged("beta", parts, {"seeds": [0, 1]})
    assert payload["beta"] == run
    assert table == nc.format_beta(run)


# ----------------------------------------------------------------------------- ACN rules


def acn_with_means(n, rule, seed=0):
    acn = nm.ACN(2, TINY, prior_hidden=(4,), rng=np.random.default_rng(seed))
    acn.rule = rule
    X = images(n, seed)
    acn.new_epoch(X, np.random.default_rng(1))
    acn.means = np.random.default_rng(seed).normal(size=(n, 2))     # spread-out codes
    k = nm.ACN_NEIGHBOURS * (nm.ONCE_CANDIDATES if rule == "once" else 1)
    acn.neighbours = nm.nearest_neighbours(acn.means, min(k, n - 1))
    return acn, X


def which(acn, M):
    return [int(np.flatnonzero((acn.means == m).all(axis=1))[0]) for m in M]


@pytest.mark.parametrize("n", [40, 300])
def test_once_rule_uses_each_neighbour_once_from_the_k_nearest_unused(n):
    """Replayed by brute force: in the epoch's order every image's neighbour is one of its
    K nearest images not yet used (never itself), and no image is used twice."""
    acn, X = acn_with_means(n, "once")
    rng = np.random.default_rng(3)
    order = rng.permutation(n)[:n - 4]               # an epoch drops its last partial batch
    used, K = set(), nm.ACN_NEIGHBOURS
    for start in range(0, len(order), 16):
        idx = order[start:start + 16]
        _, M = acn.minibatch(X, idx, rng)
        for i, j in zip(idx, which(acn, M)):
            free = [c for c in range(n) if c not in used and c != i]
            d = ((acn.means[free] - acn.means[i])**2).sum(axis=1)
            nearest = {free[t] for t in np.argsort(d, kind="stable")[:K]}
            assert j in nearest and j not in used
            used.add(j)
    assert len(used) == len(order)


def test_uniform_rule_draws_from_the_k_nearest_with_repetition():
    acn, X = acn_with_means(60, "uniform")
    rng = np.random.default_rng(4)
    picks = []
    for _ in range(20):
        idx = rng.permutation(60)[:30]
        _, M = acn.minibatch(X, idx, rng)
        for i, j in zip(idx, which(acn, M)):
            assert j in acn.neighbours[i] and j != i
            picks.append(j)
    assert len(picks) > len(set(picks))               # repetition across an epoch


def test_once_rule_never_runs_dry_and_fit_acn_refuses_an_unknown_rule():
    acn, X = acn_with_means(8, "once")
    rng = np.random.default_rng(0)
    for _ in range(3):                                # past the epoch: the K nearest again
        _, M = acn.minibatch(X, np.arange(8), rng)
        assert np.isfinite(M).all()
    with pytest.raises(ValueError):
        nm.fit_acn(X, X, rule="sometimes")


def test_acn_variants_run_shares_the_acn_runs_models_and_merges(tmp_path, monkeypatch):
    monkeypatch.setitem(nm.STEPS_AT, 200, 60)        # a short recipe at N = 200
    folder = fc.ModelFolder(str(tmp_path), "save", nm.SAVED_CLASSES)
    run = nc.run_acn_variants(seeds=(0,), n_train=200, n_test=40, workers=1,
                              log=lambda *_: None, folder=folder)
    r = run["runs"]["0"]
    assert list(r) == ["vae", *nc.ACN_VARIANTS]
    assert run["set_saving"] == pytest.approx(nc.set_saving(40))
    for name, v in r.items():
        assert v["set"] == pytest.approx(v["recon"] + v["code"] - (
            run["set_saving"] if name == "vae" else 0.0), rel=1e-12)
    # today's ACN is --acn's: the same file name and settings
    assert nc.acn_config(0, 200) == {**nc.vae_config(0, 200), "model": "acn",
                                     "neighbours": nm.ACN_NEIGHBOURS,
                                     "prior_hidden": list(nm.PRIOR_HIDDEN),
                                     "fine_tune": nm.ACN_FINE_TUNE,
                                     "fine_tune_lr": nm.ACN_FINE_TUNE_LR}
    names = sorted(p.stem for p in tmp_path.glob("*.svqm"))
    assert names == sorted(fc.model_key(k, 0, 200) for k in (
        "vae", "acn", "acn_fine_tune_once", "acn_scratch_uniform", "acn_scratch_once"))
    loaded = fc.ModelFolder(str(tmp_path), "load", nm.SAVED_CLASSES)
    again = nc.run_acn_variants(seeds=(0,), n_train=200, n_test=40, workers=1,
                                log=lambda *_: None, folder=loaded)
    assert {k: v["set"] for k, v in again["runs"]["0"].items()} == \
        {k: v["set"] for k, v in r.items()}
    assert "the article's rule" in nc.format_acn_variants(run)


# ----------------------------------------------------------------------------- pages


@pytest.mark.parametrize("name", ["beta", "acn_variants", "vq_codes", "choices_tau"])
def test_pages_tables_are_the_committed_runs(name):
    assert readme_block(name).strip() == neural_block(name).strip()


def test_beta_page_quotes_its_committed_run():
    with open(ROOT / "viz" / "beta_vae.json") as f:
        runs = json.load(f)["beta"]["runs"]
    page = (ROOT / "docs" / "modern_codes.md").read_text()
    text = page.split("## The beta-VAE")[1].split("\n## ")[0]
    mean = lambda b, key: np.mean([r[key] for r in runs[b].values()])
    cost8 = np.mean([runs["8"][s]["F"] - runs["1"][s]["F"] for s in runs["1"]])
    for value in (mean("1", "F"), mean("8", "F"), cost8, mean("1", "mig"), mean("8", "mig"),
                  mean("1", "alignment"), mean("8", "alignment"), mean("1", "kl"),
                  mean("8", "kl")):
        assert f"{value:.2f}" in text, value
    up = sum(runs["8"][s]["alignment"] > runs["1"][s]["alignment"] for s in runs["1"])
    assert f"for {up} of the 5 seeds and lower\n  for {5 - up}" in text
    for b in ("0.25", "0.5", "2", "4"):
        cost = np.mean([runs[b][s]["F"] - runs["1"][s]["F"] for s in runs["1"]])
        assert f"{cost:.2f}" in text, b


# ----------------------------------------------------------------------------- Gumbel VQ-VAE


def gumbel_model(seed=2):
    g = nm.GumbelVQVAE(3, 4, TINY, rng=np.random.default_rng(seed))
    g.theta += np.random.default_rng(seed + 1).normal(0, 0.05, g.theta.size)
    return g


def test_gumbel_vqvae_surrogate_gradient_matches_finite_differences():
    X = images(10)
    g = gumbel_model()
    rng = np.random.default_rng(4)
    noise = -np.log(-np.log(rng.random((10, 3, 4))))
    offset = rng.normal(0, 0.3, (10, 3, 4))                # sg(h - s) in training
    log_prior = np.log(rng.dirichlet(np.ones(4), size=3))
    g.tau = 0.7
    loss = lambda: g.surrogate_loss_and_grad(X, noise, offset, log_prior)[0]
    _, grad = g.surrogate_loss_and_grad(X, noise, offset, log_prior)
    idx = np.random.default_rng(5).choice(g.theta.size, 150, replace=False)
    np.testing.assert_allclose(grad[idx], finite_difference(loss, g.theta, idx),
                               rtol=1e-4, atol=1e-6)


def test_gumbel_vqvae_free_energy_is_the_brute_force_expectation_and_sampling_agrees():
    """The exact recon term against a loop over every joint code, and against the mean over
    codes drawn from q (argmax of logits plus Gumbel noise)."""
    X = images(6)
    g = gumbel_model()
    g.log_prior = np.log(np.random.default_rng(0).dirichlet(np.ones(4), size=3))
    dl = g.description_length(X)
    log_q = g.log_posteriors(X)
    brute = np.zeros(6)
    for k in sv.all_codes(3, 4):
        w = np.exp(log_q[:, np.arange(3), k].sum(axis=1))
        R = g.decode_codes(np.tile(k, (6, 1))) - X
        brute += w * (R**2).sum(axis=1) / (2 * 0.15**2)
    np.testing.assert_allclose(dl["recon"], brute / np.log(2), rtol=1e-10)
    kl = np.sum(np.exp(log_q) * (log_q - g.log_prior), axis=(1, 2)) / np.log(2)
    np.testing.assert_allclose(dl["code"], kl, rtol=1e-12)
    rng = np.random.default_rng(1)
    S = 4000
    z = log_q[None] - np.log(-np.log(rng.random((S, 6, 3, 4))))
    codes = z.argmax(axis=3)                                               # (S, 6, 3)
    R = g.decode_codes(codes.reshape(-1, 3)).reshape(S, 6, -1) - X
    err = (R**2).sum(axis=2) / (2 * 0.15**2) / np.log(2)
    se = err.std(axis=0, ddof=1) / np.sqrt(S)
    assert np.all(np.abs(err.mean(axis=0) - dl["recon"]) < 4 * se + 1e-9)


def test_gumbel_vqvae_trains_anneals_and_fits_its_prior():
    X, V = images(120), images(40, seed=1)
    model, hist = nm.fit_gumbel_vqvae(X, V, seed=0, n_codebooks=2, n_codes=3, hidden=(16,),
                                      steps=60)
    assert hist["steps_run"] <= 60
    assert model.tau == pytest.approx(nm.GUMBEL_TAU[1])         # the last step at its end
    q = np.exp(model.log_posteriors(X)).sum(axis=0)
    np.testing.assert_allclose(np.exp(model.log_prior), (q + 1) / (120 + 3), rtol=1e-10)
    stats = model.usage_stats(V)
    assert len(stats["perplexity"]) == 2 and all(1 <= p <= 3 for p in stats["perplexity"])


# ----------------------------------------------------------------------------- AR prior


def test_autoregressive_prior_is_normalised_and_learns_a_dependence():
    rng = np.random.default_rng(0)
    k1 = rng.integers(0, 3, 600)
    codes = np.stack([k1, (k1 + (rng.random(600) < 0.1)) % 3, rng.integers(0, 3, 600)], axis=1)
    prior = nm.AutoregressivePrior(3, 3).fit(codes, 0.1)
    every = sv.all_codes(3, 3)
    assert np.exp2(-prior.bits(every)).sum() == pytest.approx(1.0, rel=1e-12)
    # the second code follows the first: about H(0.9, 0.1) = 0.47 bits, not log2(3)
    val = np.stack([k1[:200], k1[:200], rng.integers(0, 3, 200)], axis=1)
    assert prior.bits(val).mean() < 2 * np.log2(3) + 0.6
    best, scores = nm.AutoregressivePrior.chosen(codes[:400], codes[400:], 3, 3)
    assert best.penalty == min(scores, key=scores.get)


def test_autoregressive_prior_gradient_matches_finite_differences_and_fits_to_zero():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 4, (300, 2))
    prior = nm.AutoregressivePrior(2, 4)
    F, k = prior.features(codes, 1), codes[:, 1]
    w = rng.normal(0, 0.5, 4 * F.shape[1])
    _, grad = prior.objective(w, F, k, 0.3)
    fd = finite_difference(lambda: prior.objective(w, F, k, 0.3)[0], w, np.arange(w.size))
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6)
    prior.fit(codes, 0.3)                        # convex: fitted to a zero gradient
    assert np.max(np.abs(prior.objective(prior.weights[1].ravel(), F, k, 0.3)[1])) < 1e-4


# ----------------------------------------------------------------------------- VQ-VAE


def test_codebook_loss_gradient_matches_finite_differences_and_adam_descends_it():
    rng = np.random.default_rng(0)
    vq = nm.VQVAE(2, 3, "product", TINY, rng=rng)
    vq.codebooks[...] = rng.normal(size=vq.codebooks.shape)
    inputs = rng.normal(size=(20, 2, nm.EMBED_DIM))
    codes = rng.integers(0, 3, (20, 2))
    loss = lambda: sum(np.sum((vq.codebooks[m][codes[:, m]] - inputs[:, m])**2)
                       for m in range(2)) / 20
    flat = vq.codebooks.reshape(-1)
    fd = finite_difference(loss, flat, np.arange(flat.size)).reshape(vq.codebooks.shape)
    np.testing.assert_allclose(vq.codebook_grad(codes, inputs), fd, rtol=1e-6, atol=1e-8)
    before = loss()
    vq.codebook_lr, vq.lr_factor = 0.01, 1.0
    vq.codebook_step(codes, inputs)
    assert loss() < before


def test_vqvae_variants_record_their_curves_and_refuse_an_unknown_update():
    X, V = images(120), images(40, seed=1)
    for update in nm.VQ_UPDATES:
        model, hist = nm.fit_vqvae(X, V, seed=0, n_codebooks=2, n_codes=3, hidden=(16,),
                                   steps=50, batch=30, update=update)
        for key in ("recon", "commitment", "perplexity"):
            assert len(hist[key]) == len(hist["val"]) and np.all(np.isfinite(hist[key]))
        assert model.codebook_opt is None and model.update == update
    with pytest.raises(ValueError):
        nm.fit_vqvae(X, V, update="sometimes")


def test_cli_runs_the_vq_codes_small_with_their_table_and_figure(cli, tmp_path):
    path = tmp_path / "vq.json"
    status, out, _ = cli(nc.main, "--n-samples", "120", "--n-test", "40", "--steps", "30",
                         "--hidden", "16", "--models", "vq_vae_4x6_loss", "gumbel_vq_vae_4x6",
                         "--quiet", "--json", str(path))
    assert status == 0 and "The VQ codes on the held-out images" in out
    payload = json.loads(path.read_text())
    vq = payload["results"][0]["models"]["vq_vae_4x6_loss"]
    assert vq["code_ar"] > 0 and str(vq["ar_penalty"]) in {f"{p}" for p in nm.AR_PENALTIES}
    assert sum(vq["usage_heldout"][0]) == 40
    g = payload["results"][0]["models"]["gumbel_vq_vae_4x6"]
    assert g["total"] == pytest.approx(g["recon"] + g["code"])
    assert out.strip() == nc.report(payload).strip()
    import visualize_spline_images_factorial_vq as viz
    assert viz.draw_neural(str(path), str(tmp_path), 40, lambda *_: None) == [
        f"{tmp_path}/vq_vae.png"]


def test_tau_choice_is_made_on_validation_scores_and_tabled(monkeypatch):
    monkeypatch.setattr(nc, "TAU_SIZE", 150)
    c = nc.run_choices(("tau",), taus=((1.0, 0.5), (2.0, 0.5)), steps=30, workers=1,
                       log=lambda *_: None)
    assert list(c) == ["gumbel_tau", "gumbel_tau_pick"]
    scores = c["gumbel_tau"]["150"]
    assert c["gumbel_tau_pick"]["150"] == min(scores, key=scores.get)
    X, V, _, _ = nm.load_split(0, 150, n_test=1)
    _, hist = nm.fit_gumbel_vqvae(X, V, 0, steps=30, taus=(2.0, 0.5))
    assert scores["2,0.5"] == min(hist["val"])
    table = nc.format_choices(c)
    assert "tau 2 -> 0.5" in table and "8-bit VAE" not in table


def test_vq_page_quotes_its_committed_runs():
    """The numbers in docs/vq_vae.md's findings come from viz/vq_codes_200.json and
    viz/vq_codes_2000.json."""
    page = (ROOT / "docs" / "vq_vae.md").read_text()
    text = " ".join(page.split("## The Gumbel")[0].split("![VQ-VAE curves")[1].split())
    runs = {n: json.loads((ROOT / "viz" / f"vq_codes_{n}.json").read_text())["results"]
            for n in (200, 2000)}
    get = lambda n, m, k: np.array([r["models"][m][k] for r in runs[n]])
    mean = lambda n, m, k: float(get(n, m, k).mean())
    quoted = []
    for n in (200, 2000):
        diff = get(n, "vq_vae_4x6_loss", "total") - get(n, "vq_vae_4x6", "total")
        quoted += [mean(n, "vq_vae_4x6_loss", "total"), mean(n, "vq_vae_4x6", "total"),
                   abs(diff.mean())]
        assert np.all(diff < 0) if n == 200 else np.all(diff > 0)
        for m in ("vq_vae_4x6", "vq_vae_4x64"):
            quoted.append(mean(n, m, "code") - mean(n, m, "code_ar"))
    g, v, f = (get(2000, m, "total") for m in ("gumbel_vq_vae_4x6", "vq_vae_4x6",
                                                "factorial_vq"))
    assert np.all(g < f) and f"below it at {int(np.sum(g < v))} of the 5 seeds" in text
    quoted += [g.mean(), f.mean(), (f - g).mean(), (g - v).mean(),
               mean(2000, "gumbel_vq_vae_4x6", "code"), mean(2000, "vq_vae_4x6", "code"),
               mean(2000, "gumbel_vq_vae_4x6", "recon"), mean(2000, "vq_vae_4x6", "recon"),
               mean(2000, "vq_vae_4x64", "total"),
               np.mean([np.mean(p) for p in get(2000, "vq_vae_4x64", "perplexity_heldout")])]
    g2, v2, f2 = (get(200, m, "total") for m in ("gumbel_vq_vae_4x6", "vq_vae_4x6",
                                                  "factorial_vq"))
    assert np.all(g2 < v2) and np.all(g2 > f2)
    quoted += [(v2 - g2).mean(), (g2 - f2).mean()]
    for value in quoted:
        assert f"{value:.2f}" in text, value
    for n, m, what in ((2000, "vq_vae_4x6_loss", "restarts"), (2000, "vq_vae_4x6", "restarts"),
                       (200, "vq_vae_4x64", "dead_codes_heldout")):
        v = get(n, m, what)
        assert f"{(v.sum(axis=1) if v.ndim > 1 else v).mean():.1f}" in text, (n, m, what)


def test_committed_vq_codes_match_a_fresh_fit():
    """Spot check of viz/vq_codes_200.json (`python3 -m tests.bench --vq-codes` reruns the
    N = 2000 runs): seed 0's factorial VQ refitted to TOL, and the autoregressive prior's
    penalty choice replayed on codes of the same shape."""
    from tests.helpers import TOL
    want = json.loads((ROOT / "viz" / "vq_codes_200.json").read_text())["results"][0]
    assert want["seed"] == 0
    out = nc.run_core("factorial_vq", nm.load_split(0, 200), 0)
    assert abs(out["total"] - want["models"]["factorial_vq"]["total"]) <= TOL
    vq = want["models"]["vq_vae_4x6"]
    scores = {float(k): v for k, v in vq["ar_validation"].items()}
    assert vq["ar_penalty"] == min(scores, key=scores.get)
    assert vq["code_ar"] < vq["code"] and sorted(scores) == list(nm.AR_PENALTIES)


def test_tau_page_quotes_its_choice():
    c = json.loads((ROOT / "viz" / "choices_tau.json").read_text())["choices"]
    scores = c["gumbel_tau"][str(nc.TAU_SIZE)]
    assert c["gumbel_tau_pick"][str(nc.TAU_SIZE)] == ",".join(f"{t:g}" for t in nm.GUMBEL_TAU)
    page = (ROOT / "docs" / "vq_vae.md").read_text()
    first, last = nm.GUMBEL_TAU
    assert f"temperature falling from {first:g} to {last:g} over the run" in " ".join(page.split())
    text = " ".join(page.split("choices_tau:end")[1].split())
    for value in scores.values():
        assert f"{value:.2f}" in text, value


def test_acn_variants_page_quotes_its_committed_run():
    runs = json.loads((ROOT / "viz" / "acn_variants.json").read_text())["acn_variants"]["runs"]
    page = (ROOT / "docs" / "acn.md").read_text()
    text = " ".join(page.split("## The neighbour rule")[1].split("acn_variants:end")[1].split())
    seeds = list(runs)
    get = lambda name, key="set": np.array([runs[s][name][key] for s in seeds])
    vae = get("vae")
    gain = lambda name: vae - get(name)
    quoted = [vae.mean(), get("scratch_once").mean(), -gain("scratch_once").mean(),
              gain("scratch_once").std(ddof=1), gain("fine_tune_uniform").std(ddof=1),
              gain("fine_tune_once").std(ddof=1), get("scratch_once", "recon").mean(),
              get("vae", "recon").mean(), get("scratch_once", "code").mean(),
              get("vae", "code").mean()]
    wins = np.flatnonzero(gain("scratch_once") > 0)
    assert [seeds[i] for i in wins] == ["2", "4"] and "at 2 of 5 seeds" in text
    quoted += list(vae[wins]) + list(get("scratch_once")[wins])
    quoted += list(get("fine_tune_uniform")[wins]) + list(get("fine_tune_once")[wins])
    losses = -gain("scratch_once")[gain("scratch_once") < 0]
    quoted += [losses.min(), losses.max()]
    rest = [i for i in range(len(seeds)) if i not in wins]
    close = np.abs(get("fine_tune_once") - get("fine_tune_uniform"))[rest].max()
    assert f"within {close:.2f} bits" in text
    for value in quoted:
        assert f"{value:.2f}" in text, value
    assert f"({get('scratch_once', 'steps_run').mean():.0f} on average" in text


@pytest.mark.parametrize("kind, path", [("beta", "beta_vae.json"),
                                        ("acn_variants", "acn_variants.json")])
def test_committed_runs_split_by_seed_merge_back_to_themselves(kind, path, tmp_path, cli):
    data = json.loads((ROOT / "viz" / path).read_text())
    result = data[kind]
    split = (lambda s: {**result, "runs": {b: {s: by[s]} for b, by in result["runs"].items()}}
             ) if kind == "beta" else (lambda s: {**result, "runs": {s: result["runs"][s]}})
    seeds = data["config"]["seeds"]
    parts = [{"config": {**data["config"], "seeds": [s]}, kind: split(str(s))}
             for s in reversed(seeds)]
    payload, table = nc.merged(kind, parts, {**data["config"]})
    assert payload[kind] == result
    assert table == nc.report({"config": data["config"], kind: result})
    files = []
    for i, part in enumerate(parts):                   # and through the command line
        files.append(tmp_path / f"part{i}.json")
        files[-1].write_text(json.dumps(part))
    status, out, _ = cli(nc.main, "--merge", *map(str, files), "--quiet", "--json",
                         str(tmp_path / "all.json"))
    assert status == 0 and out.strip() == table.strip()
    assert json.loads((tmp_path / "all.json").read_text())[kind] == result


def test_vq_page_quotes_its_largest_training_set():
    page = " ".join((ROOT / "docs" / "vq_vae.md").read_text().split())
    text = page.split("**At N = 20000")[1].split("**An autoregressive")[0]
    res = json.loads((ROOT / "viz" / "vq_codes_20000.json").read_text())["results"]
    get = lambda m, k="total": np.array([r["models"][m][k] for r in res])
    g, v, f = get("gumbel_vq_vae_4x6"), get("vq_vae_4x6"), get("factorial_vq")
    assert np.all(g > v) and np.all(g < f) and "each at every seed" in text
    for value in (g.mean(), g.std(ddof=1), (g - v).mean(), v.mean(), (f - g).mean(), f.mean(),
                  get("gumbel_vq_vae_4x6", "code").mean(), get("vq_vae_4x6", "code").mean(),
                  get("gumbel_vq_vae_4x6", "recon").mean(), get("vq_vae_4x6", "recon").mean()):
        assert f"{value:.2f}" in text, value
    steps = get("gumbel_vq_vae_4x6", "steps_run")
    early = steps[steps < 100000]
    count = ["no", "one", "two", "three", "four", "five"][len(early)]
    assert f"{count} of its five runs stopped at {early.min():.0f} to {early.max():.0f}" in text
    first, last = nm.GUMBEL_TAU
    assert np.all(first * (last / first) ** (early / 99999) > 1)
