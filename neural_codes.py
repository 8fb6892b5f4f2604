"""Modern codes on the 1994 yardstick: Gaussian VAE, VQ-VAE and ACN, scored by bits-back.

The core module (spline_images_factorial_vq.py) reproduces Hinton & Zemel (1994).  This one
sets beside it the codes a reader would use today, scored in exactly the core's convention
(docs/paper.md, "Conventions"): bits per image on the same 2000 held-out images, pixel noise
sigma_x, data quantised at width t = sigma_x * sqrt(2 pi), so that every row here sits next
to every row of the core's table with no conversion.

- Gaussian VAE: its negative ELBO is the bits-back free energy F with a continuous code,
  E_q ||x - f(z)||^2 / (2 sigma_x^2) + KL(q(z|x) || N(0, I)), in nats, over ln 2.
- VQ-VAE: a deterministic code, so its valid code length is the reconstruction term plus
  -log2 P(codes) under code frequencies fitted on the training images.
- The 8-bit scoreboard (--scoreboard) leaves the convention for actual bits on 8-bit pixels:
  the 1994 models with sigma_x fitted by maximum likelihood and an 8-bit VAE (a scale per
  pixel, a discretised Gaussian) coded by the bits-back coder, beside gzip, bz2, lzma, PNG
  and the true generator's own 8-bit code length.
- ACN (--acn): the VAE with a prior conditioned on a neighbour's posterior mean; a set is
  sent along a greedy tour, each code priced given the one before, the order counted.
- The one-bit VAE (--one-bit): two data points, one latent, one- and two-layer VAEs; and
  the factorial VQ trained from random codewords with and without KL warm-up.

The models and their training are in neural_models.py, their coding models, files and the
model counted in neural_coding.py; this module runs the experiments and the command line.  Run `python3 neural_codes.py --help`.
"""

import os
import sys

import cli_kit as kit

if __name__ == "__main__":
    kit.quit_on_interrupt("neural_codes.py")

import math  # noqa: E402
import time  # noqa: E402

import spline_images_factorial_vq as sv  # noqa: E402  (sets the BLAS thread count first)

import bits_back_coder as bbc  # noqa: E402
import compressors  # noqa: E402
import file_container as fc  # noqa: E402
import mlp  # noqa: E402
import neural_coding as coding  # noqa: E402
import neural_models as nm  # noqa: E402

np = sv.np
D, LN2 = sv.D, sv.LN2


# ----------------------------------------------------------------------------- experiments

VQ_VARIANTS = {                # name: (form, codebooks M, codes K, codebook update)
    "vq_vae_4x6": ("product", 4, 6, "ema"),
    "vq_vae_4x64": ("product", 4, 64, "ema"),
    "vq_vae_residual_4x6": ("residual", 4, 6, "ema"),
    "vq_vae_4x6_loss": ("product", 4, 6, "loss"),
}
GUMBEL_VARIANTS = {"gumbel_vq_vae_4x6": (4, 6)}     # name: (codebooks M, codes K)
MODELS = ("vae",) + tuple(VQ_VARIANTS) + tuple(GUMBEL_VARIANTS)
LABELS = {"vae": "Gaussian VAE, {L} latents", "vq_vae_4x6": "VQ-VAE product 4x6",
          "vq_vae_4x64": "VQ-VAE product 4x64", "vq_vae_residual_4x6": "VQ-VAE residual 4x6",
          "vq_vae_4x6_loss": "VQ-VAE product 4x6, codebook loss",
          "gumbel_vq_vae_4x6": "Gumbel VQ-VAE 4x6 (stochastic)"}


def by_seed(runs):
    """{str(seed): run} in ascending seed order."""
    return dict(sorted(runs.items(), key=lambda kv: int(kv[0])))


def mutual_information_gap(mi, entropies):
    """MIG (Chen et al. 2018) of an (L, J) MI table between latents and J factors with
    entropies (J,): mean over factors of (largest MI - second largest) / the factor's
    entropy; 1 when each factor is captured by one latent alone, 0 when by two equally."""
    top = np.sort(np.asarray(mi), axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros_like(top[0])
    return float(np.mean((top[0] - second) / np.asarray(entropies)))


def vae_alignment(vae, X, controls, n_bins=8):
    """MI (bits) between each latent's posterior mean, cut into n_bins equal-frequency bins,
    and each control height (L, 5), with the core's score (sv.alignment) and the MIG (each
    height's entropy from its own bins)."""
    mu = vae.encode(X)[0]
    heights = [sv.quantile_bins(h, n_bins) for h in np.asarray(controls).T]
    q = [np.eye(n_bins)[sv.quantile_bins(m, n_bins)] for m in mu.T]
    mi = np.array([[sv.mutual_information(ql, b, n_bins) for b in heights] for ql in q])
    p = [np.bincount(b, minlength=n_bins) / len(b) for b in heights]
    entropy = [-float(np.sum(pb[pb > 0] * np.log2(pb[pb > 0]))) for pb in p]
    return {"mi_controls": mi.tolist(), "score": sv.alignment_score(mi),
            "mig": mutual_information_gap(mi, entropy)}


def vae_config(seed, n_train, n_latent=nm.LATENTS, hidden=nm.HIDDEN, steps=None, batch=None):
    """What trains the Gaussian VAE (nm.fit_vae) at (seed, N)."""
    return nm.network_config(seed, n_train, steps, batch, model="vae", n_latent=n_latent,
                             hidden=list(hidden), lr=nm.LR, sigma_x=0.15)


PICTURE_IMAGES = 8             # held-out images behind the reconstructions and interpolations
PICTURE_SAMPLES = 16           # images decoded from codes drawn from the prior
INTERPOLATION_STEPS = 9


def vae_pictures(vae, T, seed):
    """What a reader of a VAE looks at, as images (lists (.., 96), 4 decimals): decoded
    draws from the prior; linear interpolations between the posterior means of pairs of
    held-out images (the first PICTURE_IMAGES, paired in order), decoded; and the held-out
    images' reconstructions from their posterior means."""
    rng = np.random.default_rng([seed, 23])
    mu = vae.encode(T[:PICTURE_IMAGES])[0]
    w = np.linspace(0.0, 1.0, INTERPOLATION_STEPS)[:, None, None]
    paths = (1 - w) * mu[0::2] + w * mu[1::2]                          # (steps, pairs, L)
    decode = lambda Z: vae.mean_image(vae.decode(Z)).round(4)
    return {"samples": decode(rng.standard_normal((PICTURE_SAMPLES, vae.n_latent))).tolist(),
            "interpolations": decode(paths.reshape(-1, vae.n_latent)).reshape(
                INTERPOLATION_STEPS, -1, sv.D).transpose(1, 0, 2).tolist(),
            "reconstructions": decode(mu).tolist(),
            "heldout": T[:PICTURE_IMAGES].round(4).tolist()}


def run_model(name, data, seed, n_latent=nm.LATENTS, hidden=nm.HIDDEN, steps=None, batch=None,
              compress=False, log=None, folder=None):
    """Train one model on data = (train, validation, held-out, held-out controls) (or load
    it from a ModelFolder `folder`) and score it on the held-out images: a dict of bits
    per image and diagnostics."""
    X, V, T, controls = data
    key = fc.model_key(name, seed, len(X))
    if name == "vae":
        model, hist, _ = fc.fit_or_load(
            folder, key, vae_config(seed, len(X), n_latent, hidden, steps, batch),
            lambda: nm.fit_vae(X, V, seed, n_latent, hidden, steps=steps, batch=batch, log=log))
        dl = model.description_length(T)
        iw, iw_se = model.importance_bound(T)
        out = {"recon": dl["recon"].mean(), "code": dl["code"].mean(), "total": dl["total"].mean(),
               "iw_bound": iw.mean(), "iw_se": iw_se, "iw_samples": nm.IW_SAMPLES,
               "iw_repeats": nm.IW_REPEATS,
               "eval_samples": nm.EVAL_SAMPLES, "active_latents": model.active_latents(T),
               "alignment": vae_alignment(model, T, controls),
               "traversals": model.traversals().tolist(), "pictures": vae_pictures(model, T, seed)}
        if compress:
            out["compress"] = coding.code_vae(model, sv.quantise_images(T), seed)
    elif name in GUMBEL_VARIANTS:
        M, K = GUMBEL_VARIANTS[name]
        config = nm.network_config(seed, len(X), steps, batch, model=name, hidden=list(hidden),
                                   lr=nm.LR, sigma_x=0.15, tau=list(nm.GUMBEL_TAU))
        model, hist, _ = fc.fit_or_load(folder, key, config, lambda: nm.fit_gumbel_vqvae(
            X, V, seed, M, K, hidden, steps=steps, batch=batch, log=log))
        dl = model.description_length(T)
        use = model.usage_stats(T)
        out = {"recon": dl["recon"].mean(), "code": dl["code"].mean(),
               "total": dl["total"].mean(), "perplexity": use["perplexity"],
               "dead_codes": use["dead_codes"], "usage_heldout": use["counts"].round(2).tolist(),
               "reconstructions": model.decode_codes(model.log_posteriors(
                   T[:PICTURE_IMAGES]).argmax(axis=2)).round(4).tolist(),
               "curves": {k: hist[k] for k in ("step", "val")}}
    else:
        form, M, K, update = VQ_VARIANTS[name]
        config = nm.network_config(seed, len(X), steps, batch, model=name, hidden=list(hidden),
                                   lr=nm.LR, sigma_x=0.15)
        model, hist, _ = fc.fit_or_load(folder, key, config, lambda: nm.fit_vqvae(
            X, V, seed, M, K, form, hidden, steps=steps, batch=batch, update=update, log=log))
        dl = model.description_length(T)
        codes = model.codes(T)
        ar, scores = nm.AutoregressivePrior.chosen(model.codes(X), model.codes(V), M, K)
        out = {"recon": dl["recon"].mean(), "code": dl["code"].mean(),
               "total": dl["total"].mean(), **model.usage(X), "restarts": model.restarts,
               "code_ar": ar.bits(codes).mean(), "ar_penalty": ar.penalty,
               "ar_validation": {f"{k:g}": v for k, v in scores.items()},
               **{f"{k}_heldout": v for k, v in model.usage(T, codes).items()},
               "usage_heldout": [np.bincount(codes[:, m], minlength=K).tolist()
                                 for m in range(M)],
               "reconstructions": model.decode_codes(codes[:PICTURE_IMAGES]).round(4).tolist(),
               "curves": {k: hist[k] for k in ("step", "val", "recon", "commitment",
                                                "perplexity")}}
    out.update(steps_run=hist["steps_run"], best_step=hist["best_step"],
               train_seconds=hist["seconds"], n_params=model.n_params())
    return {k: float(v) if isinstance(v, np.floating) else v for k, v in out.items()}, model


CORE_MODELS = ("factorial_vq", "pca24")      # the core's rows beside them, on the same data
ALL_MODELS = MODELS + CORE_MODELS
DEFAULT_MODELS = ("vae", "vq_vae_4x6", "factorial_vq", "pca24")
SWEEP_SIZES = (200, 2000, 20000)
SWEEP_MODELS = ("vae", "vq_vae_4x6", "factorial_vq", "pca24")
LIMIT_IMAGES = 200             # held-out images behind the generator's limit (as the core's)


# the core's default recipe, by which its models train beside the networks
CORE_TRAINING = {"n_dims": 4, "n_units_per_dim": 6, "steps": sv.STEPS, "sigma_x": 0.15,
                 "objective": "bits-back", "schedule": "sigma", "init": "band", "refine": 50}


def fit_core(name, X, seed, folder=None, sigma_x=0.15):
    """One of the core's models by its default recipe (at sigma_x), or loaded from folder."""
    cfg = {**CORE_TRAINING, "n_samples": len(X), "sigma_x": sigma_x}
    key = fc.model_key(name, seed, len(X)) + ("" if sigma_x == 0.15 else f"_sigma{sigma_x:g}")
    return fc.fit_or_load(folder, key, sv.training_config(name, seed, cfg), lambda: sv.fit_model(
        name, X, seed, **{k: cfg[k] for k in sv.TRAINING_KEYS[1:]}))[0]


def run_core(name, data, seed, folder=None):
    """One of the core's models (its default recipe) on the same split, scored as the core
    scores it."""
    X, _, T, _ = data
    t0 = time.perf_counter()
    model = fit_core(name, X, seed, folder)
    out = sv.evaluate(model, T)
    out = {k: out[k] for k in ("recon", "code", "total")}
    out["reconstructions"] = model.mean_reconstruction(T[:PICTURE_IMAGES]).round(4).tolist()
    if name == "factorial_vq":
        a = sv.alignment(model, T, data[3])
        out["alignment"] = {"mi_controls": a["mi_controls"].tolist(), "score": a["score"]}
    return out | {"train_seconds": time.perf_counter() - t0}


# the slowest networks first, so that two workers finish together
SLOW_FIRST = ("vq_vae_4x64", "gumbel_vq_vae_4x6", "vae", "vq_vae_4x6_loss", "vq_vae_4x6",
              "vq_vae_residual_4x6")


def _run_one(name, data, seed, compress, log, folder, kw):
    """One model of run_all on data: (result, the trained network or None)."""
    if name in CORE_MODELS:
        return run_core(name, data, seed, folder), None
    return run_model(name, data, seed, log=log, folder=folder, **kw,
                     compress=compress and name == "vae")


def _model_task(task):
    """Worker: one model of run_all, (name, result, elapsed seconds)."""
    seed, name, n_train, n_test, compress, folder, quiet, kw = task
    t0 = time.perf_counter()
    data = nm.load_split(seed, n_train, n_test=n_test)
    out, _ = _run_one(name, data, seed, compress, kit.progress_logger(quiet), folder, kw)
    return name, out, time.perf_counter() - t0


def run_all(seed, n_train, models, n_test=2000, compress=False, log=None, on_model=None,
            folder=None, workers=1, quiet=True, **kw):
    """{name: result} for neural and core models at one seed and training-set size, each
    saved to or loaded from a ModelFolder `folder` if given; on_model(name, model, data)
    is called with each trained network, if given (in this process: the models then train
    one after another).  Otherwise the models train in `workers` processes, the slowest
    first (each from its own seed: the same numbers either way), their progress lines
    printed unless quiet."""
    log = log or kit.progress_logger(True)

    def say(name, r, seconds):
        steps = (f" after {r['steps_run']} steps (best at {r['best_step']})"
                 if "steps_run" in r else "")
        log(f"{name} (seed {seed}, N = {n_train}): {r['total']:.2f} bits per image "
            f"held-out{steps}, {seconds:.1f} s")

    out = {}
    if on_model is not None or workers < 2:
        data = nm.load_split(seed, n_train, n_test=n_test)
        for name in models:
            t0 = time.perf_counter()
            out[name], model = _run_one(name, data, seed, compress, log, folder, kw)
            if on_model and model is not None:
                on_model(name, model, data)
            say(name, out[name], time.perf_counter() - t0)
        return out
    rank = lambda m: SLOW_FIRST.index(m) if m in SLOW_FIRST else len(SLOW_FIRST)
    tasks = [(seed, name, n_train, n_test, compress, folder, quiet, kw)
             for name in sorted(models, key=rank)]
    for name, r, seconds in kit.map_workers(_model_task, tasks, workers):
        out[name] = r
        say(name, r, seconds)
    return {name: out[name] for name in models}


def generator_limit(seed, n_images=LIMIT_IMAGES):
    """The true generator's own description length on the first held-out images (the
    core's importance-sampled limit): (mean bits, standard error)."""
    T, controls = sv.generate_spline_images(n_images, seed, stream=1)
    dl, se = sv.generator_dl(T, controls)
    return float(dl.mean()), float(np.sqrt(np.sum(se**2)) / len(dl))


def run_sweep(seed=0, sizes=SWEEP_SIZES, models=SWEEP_MODELS, log=None, **kw):
    """Every model at every training-set size against the same held-out set, and the
    generator's limit: {"sizes", "models": {name: {N: result}}, "limit", "limit_se"}."""
    log = log or kit.progress_logger(True)
    out = {"sizes": list(sizes), "models": {m: {} for m in models}}
    for n in sizes:
        log(f"training-set size {n}:")
        for name, r in run_all(seed, n, models, log=log, compress=True, **kw).items():
            out["models"][name][str(n)] = r
    out["limit"], out["limit_se"] = generator_limit(seed)
    return out


# --- the beta-VAE: what the KL's weight buys, and what it costs ------------------------------

BETAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
BETA_SIZE = 2000               # training images of the beta sweep and the ACN variants


def beta_key(beta, seed, n_train):
    """The name a VAE trained with beta is saved under (beta = 1: the plain VAE's)."""
    return fc.model_key("vae" if beta == 1 else f"vae_beta{beta:g}", seed, n_train)


def _beta_task(task):
    """Worker: the Gaussian VAE trained with one beta at (seed, N) by the VAE's recipe,
    scored by the valid F on the held-out images: (seed, beta, result)."""
    seed, beta, n_train, n_test, steps, folder = task
    X, V, T, controls = nm.load_split(seed, n_train, n_test=n_test)
    config = vae_config(seed, n_train, steps=steps) | ({} if beta == 1 else {"beta": beta})
    model, hist, _ = fc.fit_or_load(folder, beta_key(beta, seed, n_train), config,
                                    lambda: nm.fit_vae(X, V, seed, steps=steps, beta=beta))
    dl = model.description_length(T)
    a = vae_alignment(model, T, controls)
    out = {"recon": dl["recon"].mean(), "kl": dl["code"].mean(), "F": dl["total"].mean(),
           "objective": (dl["recon"] + beta * dl["code"]).mean(), "alignment": a["score"],
           "mig": a["mig"], "mi_controls": a["mi_controls"],
           "active_latents": model.active_latents(T), "steps_run": hist["steps_run"],
           "best_step": hist["best_step"], "seconds": hist["seconds"]}
    return seed, beta, {k: float(v) if isinstance(v, np.floating) else v for k, v in out.items()}


def run_beta(seeds=tuple(range(5)), betas=BETAS, n_train=BETA_SIZE, n_test=2000, steps=None,
             workers=2, log=None, folder=None):
    """The beta sweep: {"n_train", "n_test", "runs": {beta (as %g): {str(seed): result}}},
    the (seed, beta) fits in `workers` processes."""
    log = log or kit.progress_logger(True)
    tasks = [(s, b, n_train, n_test, steps, folder) for s in seeds for b in betas]
    runs = {f"{b:g}": {} for b in betas}
    t0 = time.perf_counter()
    for done, (seed, beta, r) in enumerate(kit.map_workers(_beta_task, tasks, workers), 1):
        runs[f"{beta:g}"][str(seed)] = r
        log(f"[{done}/{len(tasks)}] beta {beta:g}, seed {seed}: F {r['F']:.2f} bits held-out "
            f"(recon {r['recon']:.2f} + KL {r['kl']:.2f}), alignment {r['alignment']:.2f}, "
            f"MIG {r['mig']:.2f} ({time.perf_counter() - t0:.0f} s)")
    return {"n_train": n_train, "n_test": n_test,
            "runs": {b: by_seed(r) for b, r in runs.items()}}


def format_beta(result, markdown=False):
    """One row per beta: what it trained on, the valid F and its parts, the cost against
    beta = 1 (paired by seed), the alignment score and the MIG."""
    runs = result["runs"]
    seeds = list(next(iter(runs.values())))
    pm = kit.mean_sd
    base = [r["F"] for r in runs["1"].values()] if "1" in runs else None
    rows = []
    for beta, by in runs.items():
        get = lambda key: [r[key] for r in by.values()]
        cost = pm(np.subtract(get("F"), base)) if base is not None else "-"
        rows.append([beta, pm(get("objective")), pm(get("recon")), pm(get("kl")), pm(get("F")),
                     cost, pm(get("alignment")), pm(get("mig")),
                     f"{np.mean(get('active_latents')):.1f}", f"{np.mean(get('steps_run')):.0f}"])
    head = (f"The beta-VAE, {nm.LATENTS} latents, N = {result['n_train']}: each model trained "
            f"on recon + beta KL by one recipe (the VAE's, stopped early on that objective on "
            f"validation images), scored by the valid F = recon + KL on the {result['n_test']} "
            f"held-out images; bits per image, mean ± sd over seeds {', '.join(seeds)}; F - "
            f"F(beta 1) paired by seed; alignment and MIG of the posterior means against the "
            f"five control heights (1: each height in one latent alone)")
    return kit.table(head, ["beta", "trained objective", "recon (distortion)", "KL (rate)",
                            "F", "F - F(beta 1)", "alignment", "MIG", "active latents",
                            "steps run"], rows, markdown)


# --- associative compression: the order, counted --------------------------------------------

ACN_SIZES = (2000, 20000)      # training-set sizes of the ACN experiment


def set_saving(n):
    """log2(n!) / n: the bits per image any code saves by sending n images as a set, in an
    order of its choosing, rather than in the order given."""
    return math.lgamma(n + 1) / (n * LN2)


DAYDREAM_STARTS, DAYDREAM_STEPS = 6, 10


def daydream(acn, starts, steps=DAYDREAM_STEPS, rng=None):
    """The ACN dreaming on from each start image (N, 96): `steps` times, the image's code
    (its posterior mean) is handed to the prior network as the neighbour's, and the prior's
    mean code (or, given rng, a draw from the prior) is decoded into the next image:
    (N, steps + 1, 96), the starts first."""
    images = [np.asarray(starts, dtype=float)]
    for _ in range(steps):
        m, log_sd, _ = acn.prior(acn.encode(images[-1])[0])
        z = m if rng is None else m + np.exp(log_sd) * rng.standard_normal(m.shape)
        images.append(acn.mean_image(acn.decode(z)))
    return np.stack(images, axis=1)


def acn_config(seed, n_train, start="vae", rule="uniform"):
    """What trains an ACN at (seed, N): fine-tuned from the VAE (start "vae") or trained
    from scratch by the VAE's recipe, its neighbours drawn by `rule` (nm.ACN_RULES)."""
    config = {**vae_config(seed, n_train), "model": "acn", "neighbours": nm.ACN_NEIGHBOURS,
              "prior_hidden": list(nm.PRIOR_HIDDEN)}
    if start == "vae":
        config.update(fine_tune=nm.ACN_FINE_TUNE, fine_tune_lr=nm.ACN_FINE_TUNE_LR)
    else:
        config["start"] = "scratch"
    return config | ({} if rule == "uniform" else {"rule": rule})


def _acn_task(task):
    """Worker: the VAE and the ACN fine-tuned from it at one (seed, N), scored on the
    held-out set: (seed, N, result)."""
    seed, n_train, n_test, bitstream, folder = task
    X, X_val, T, _ = nm.load_split(seed, n_train, n_test=n_test)
    vae, h_vae, _ = fc.fit_or_load(folder, fc.model_key("vae", seed, n_train),
                                   vae_config(seed, n_train), lambda: nm.fit_vae(X, X_val, seed))
    acn, h_acn, _ = fc.fit_or_load(folder, fc.model_key("acn", seed, n_train),
                                   acn_config(seed, n_train),
                                   lambda: nm.fit_acn(X, X_val, seed, vae=vae))
    tour = acn.tour(T)
    if bitstream:
        coding.write_vae_code(bitstream, acn, sv.quantise_images(T)[tour], seed, n_test, "tour")
    iid = vae.description_length(T)
    seq = acn.description_length(T[tour])
    saving = set_saving(n_test)
    coder = coding.code_vae(acn, sv.quantise_images(T)[tour], seed)
    out = {"vae": float(iid["total"].mean()), "vae_recon": float(iid["recon"].mean()),
           "vae_code": float(iid["code"].mean()), "set_saving": saving,
           "vae_set": float(iid["total"].mean()) - saving,
           "acn_set": float(seq["total"].mean()), "acn_recon": float(seq["recon"].mean()),
           "acn_code": float(seq["code"].mean()),
           "acn_ordered": float(seq["total"].mean()) + saving,
           "vae_steps": h_vae["steps_run"], "vae_seconds": h_vae["seconds"],
           "acn_steps": h_acn["steps_run"], "acn_best_step": h_acn["best_step"],
           "acn_seconds": h_acn["seconds"], "n_test": n_test, "coder": coder,
           "curves": {name: {"step": h["step"], "val": h["val"]}
                      for name, h in (("vae", h_vae), ("acn", h_acn))},
           "daydream": {"mean": daydream(acn, T[:DAYDREAM_STARTS]).round(4).tolist(),
                        "sample": daydream(acn, T[:DAYDREAM_STARTS], rng=np.random.default_rng(
                            [seed, 22])).round(4).tolist()}}
    return seed, n_train, out


def run_acn(seeds=(0,), sizes=ACN_SIZES, n_test=2000, workers=2, log=None, bitstream=None,
            folder=None):
    """The ACN experiment: {str(N): {str(seed): result}} for every size and seed, the
    (seed, N) runs in `workers` processes.  bitstream: a path to write the coded tour to,
    for a single (seed, N); folder: an fc.ModelFolder for the VAEs and ACNs."""
    log = log or kit.progress_logger(True)
    tasks = [(s, n, n_test, bitstream, folder) for n in sizes for s in seeds]
    out = {str(n): {} for n in sizes}
    t0 = time.perf_counter()
    for seed, n, r in kit.map_workers(_acn_task, tasks, workers):
        out[str(n)][str(seed)] = r
        c = r["coder"]
        log(f"ACN (seed {seed}, N = {n}): {r['acn_set']:.2f} bits per image as a set against "
            f"the VAE's {r['vae_set']:.2f}; coder {c['actual_bits']:.2f} bits, overhead "
            f"{c['overhead_pct']:+.3f}% on its bound ({time.perf_counter() - t0:.0f} s)")
    return {n: dict(sorted(r.items(), key=lambda kv: int(kv[0]))) for n, r in out.items()}


def format_acn(acn, markdown=False):
    """The four order rows per training-set size, and the tour coder's rows."""
    sizes = list(acn)
    seeds = list(acn[sizes[0]])
    stat = lambda n, key: [r[key] for r in acn[n].values()]
    pm = kit.mean_sd
    saving = acn[sizes[0]][seeds[0]]["set_saving"]
    rows = [["Gaussian VAE, i.i.d. prior, order given"] + [pm(stat(n, "vae")) for n in sizes],
            ["  VAE recon"] + [pm(stat(n, "vae_recon")) for n in sizes],
            ["  VAE code: KL against N(0, I)"] + [pm(stat(n, "vae_code")) for n in sizes],
            [f"Gaussian VAE as a set (minus log2(n!)/n = {saving:.2f})"] +
            [pm(stat(n, "vae_set")) for n in sizes],
            ["ACN along its tour, as a set"] + [pm(stat(n, "acn_set")) for n in sizes],
            ["  ACN recon"] + [pm(stat(n, "acn_recon")) for n in sizes],
            ["  ACN code: KL against the prior given the image before"] +
            [pm(stat(n, "acn_code")) for n in sizes],
            ["ACN, order given (plus log2(n!)/n)"] + [pm(stat(n, "acn_ordered")) for n in sizes],
            ["ACN gain over the VAE, both as sets"] +
            [pm(np.subtract(stat(n, "vae_set"), stat(n, "acn_set"))) for n in sizes]]
    n_test = acn[sizes[0]][seeds[0]]["n_test"]
    head = (f"ACN against the Gaussian VAE: bits per image sending the {n_test} held-out "
            f"images (sigma_x = 0.15), mean ± sd over seeds {', '.join(seeds)}; columns: "
            f"training images")
    parts = [kit.table(head, ["code"] + [f"N = {n}" for n in sizes], rows, markdown)]
    rows = []
    for n in sizes:
        for seed, r in acn[n].items():
            c = r["coder"]
            rows.append([n, seed, f"{c['actual_bits']:.2f}", f"{c['bound_t']:.2f}",
                         f"{c['overhead_pct']:+.3f}%", kit.round_trip_cell(c["roundtrip"]),
                         f"{c['seconds']:.1f}"])
    parts.append(kit.table(
        "The ACN's tour sent by the bits-back coder: 8-bit held-out images, bits per image, "
        "one sequence in tour order", ["training images", "seed", "actual bits",
                                       "coder bound", "overhead", "round trip", "seconds"],
        rows, markdown))
    return "\n\n".join(p.rstrip("\n") for p in parts)


# --- the ACN's neighbour rule and start --------------------------------------------------------

ACN_VARIANTS = {               # name: (start, neighbour rule); the first is --acn's ACN
    "fine_tune_uniform": ("vae", "uniform"),
    "fine_tune_once": ("vae", "once"),
    "scratch_uniform": ("scratch", "uniform"),
    "scratch_once": ("scratch", "once"),
}
VARIANT_LABELS = {"vae": "fine-tuned from the VAE", "scratch": "from scratch",
                  "uniform": "neighbour drawn from the K nearest (with repetition)",
                  "once": "each neighbour once per epoch (the article's rule)"}


def _acn_variant_task(task):
    """Worker: the VAE (name "vae") or one ACN variant at (seed, N), scored on the held-out
    images sent as a set: (seed, name, result, the VAE when name is "vae")."""
    seed, name, n_train, n_test, vae, folder = task
    X, V, T, _ = nm.load_split(seed, n_train, n_test=n_test)
    if name == "vae":
        model, hist, _ = fc.fit_or_load(folder, fc.model_key("vae", seed, n_train),
                                        vae_config(seed, n_train), lambda: nm.fit_vae(X, V, seed))
        dl = model.description_length(T)
        out = {"set": dl["total"].mean() - set_saving(n_test)}
    else:
        start, rule = ACN_VARIANTS[name]
        key = fc.model_key("acn" if name == "fine_tune_uniform" else f"acn_{name}", seed, n_train)
        model, hist, _ = fc.fit_or_load(folder, key, acn_config(seed, n_train, start, rule),
                                        lambda: nm.fit_acn(X, V, seed, vae=vae, rule=rule))
        dl = model.description_length(T[model.tour(T)])
        out = {"set": dl["total"].mean()}
    out.update(recon=dl["recon"].mean(), code=dl["code"].mean(), steps_run=hist["steps_run"],
               best_step=hist["best_step"], seconds=hist["seconds"])
    out = {k: float(v) if isinstance(v, np.floating) else v for k, v in out.items()}
    return seed, name, out, model if name == "vae" else None


def run_acn_variants(seeds=tuple(range(5)), n_train=BETA_SIZE, n_test=2000, workers=2,
                     log=None, folder=None):
    """The VAE and every ACN variant at N over seeds, each scored as a set on the held-out
    images: {"n_train", "n_test", "set_saving", "runs": {str(seed): {name: result}}}.  The
    VAEs and the ACNs from scratch train first, then the fine-tunes of each seed's VAE."""
    log = log or kit.progress_logger(True)
    scratch = [n for n, (start, _) in ACN_VARIANTS.items() if start == "scratch"]
    runs, vaes, t0 = {str(s): {} for s in seeds}, {}, time.perf_counter()
    total = len(seeds) * (1 + len(ACN_VARIANTS))

    def train(tasks):
        for seed, name, r, vae in kit.map_workers(_acn_variant_task, tasks, workers):
            runs[str(seed)][name] = r
            if vae is not None:
                vaes[seed] = vae
            log(f"[{sum(map(len, runs.values()))}/{total}] {name}, seed {seed}: "
                f"{r['set']:.2f} bits per image as a set, {r['steps_run']} steps "
                f"({time.perf_counter() - t0:.0f} s)")

    train([(s, name, n_train, n_test, None, folder) for name in scratch + ["vae"] for s in seeds])
    train([(s, name, n_train, n_test, vaes[s], folder) for name in ACN_VARIANTS
           if name not in scratch for s in seeds])
    order = ["vae"] + list(ACN_VARIANTS)
    return {"n_train": n_train, "n_test": n_test, "set_saving": set_saving(n_test),
            "runs": by_seed({s: {k: r[k] for k in order} for s, r in runs.items()})}


def format_acn_variants(result, markdown=False):
    """The VAE and each ACN variant as a set, and each one's gain over the VAE (by seed)."""
    runs = result["runs"]
    seeds = list(runs)
    pm = kit.mean_sd
    get = lambda name, key: [runs[s][name][key] for s in seeds]
    vae = get("vae", "set")
    rows = [[f"Gaussian VAE, i.i.d. prior, as a set (minus log2(n!)/n = "
             f"{result['set_saving']:.2f})", pm(vae), pm(get("vae", "recon")),
             pm(get("vae", "code")), "-", "-", f"{np.mean(get('vae', 'steps_run')):.0f}",
             f"{np.mean(get('vae', 'seconds')):.0f}"]]
    for name, (start, rule) in ACN_VARIANTS.items():
        gain = np.subtract(vae, get(name, "set"))
        rows.append([f"ACN {VARIANT_LABELS[start]}, {VARIANT_LABELS[rule]}",
                     pm(get(name, "set")), pm(get(name, "recon")), pm(get(name, "code")),
                     pm(gain), f"{int(np.sum(gain > 0))}/{len(gain)}",
                     f"{np.mean(get(name, 'steps_run')):.0f}",
                     f"{np.mean(get(name, 'seconds')):.0f}"])
    head = (f"The ACN's neighbour rule and start, N = {result['n_train']}: bits per image "
            f"sending the {result['n_test']} held-out images as a set (the ACN along its "
            f"tour), mean ± sd over seeds {', '.join(seeds)}; gain = the VAE's set bits minus "
            f"the ACN's, paired by seed; K = {nm.ACN_NEIGHBOURS}; seconds: the mean training "
            f"time of one model")
    return kit.table(head, ["code", "bits as a set", "recon", "code bits", "gain over the VAE",
                            "seeds with a gain", "steps run", "seconds"], rows, markdown)


# ----------------------------------------------------------------------------- the 8-bit scoreboard
#
# Every model codes the 2000 held-out images as 8-bit pixels with the bits-back coder, beside
# general-purpose compressors on the same bytes.  Each gets the likelihood it deserves on
# 8-bit data: the 1994 models their noise scale sigma_x fitted by maximum likelihood on
# their training images (the model refitted at each sigma of SCORE_SIGMAS, the one whose
# training images the coder codes shortest kept), the 8-bit VAE a discretised Gaussian with a
# scale per pixel, and beside it the same VAE with an autoregressive decoder (the pixels
# before each one read too).  A model's parameters, at 32-bit floats, are counted beside its
# bits, and so is its model actually coded (neural_coding's model counted): the integers the
# coder uses, the 8-bit VAEs' rounded to steps chosen on validation images for the smallest
# total over the held-out set (choose_shifts), sent ahead of the images and decoded; each number
# of a file's header the receiver needs besides (each tensor's table and step, the networks'
# sizes, sigma_x) at neural_coding.HEADER_NUMBER_BITS.  Small 8-bit VAEs (SCORE_MDL_HIDDEN,
# on SCORE_MDL_SIZE images, with either decoder) are candidates for the shortest total; the
# one with the least validation total is marked.

SCORE_SIGMAS = (0.01, 0.014, 0.02, 0.028, 0.04, 0.057, 0.08, 0.113, 0.16, 0.226, 0.32)
SCORE_CORE = sv.STOCHASTIC            # every 1994 model but the hard codes
SCORE_MODELS = SCORE_CORE + ("pixel_vae",)
SCORE_VAE_SIZES = (200, 20000)
CODER_DRAWS = 5                # each row's actual bits: the mean over this many initial bits
PARAM_FLOAT_BITS = 32
SCORE_MDL_HIDDEN = (32, 64, 128)         # two hidden layers of this width
SCORE_MDL_SIZE = 20_000
SCORE_AR_SIZE = 20_000         # the 8-bit VAE with an autoregressive decoder
MDL_SEARCH_IMAGES = 500        # validation images the 8-bit VAEs' steps are chosen on
IMAGES_SENT = (100, 300, 1000, 2000, 10_000, 30_000, 100_000)   # the model-counted curve


def linear_vae(pca):
    """PPCA as a VAE without hidden layers, latents standardised to the prior N(0, I), so that
    the VAE's coder codes it: u = z / sqrt(lam), q(u|x) = N(shrink (x - mean) W / sqrt(lam),
    shrink sigma_x^2 / lam), decoder mean + W sqrt(lam) u."""
    n, root = pca.n_components, np.sqrt(pca.lam)
    vae = nm.GaussianVAE(n, (), pca.sigma_x)
    m_weight = pca.W * (pca.lam / (pca.lam + pca.sigma_x**2) / root)          # (D, n)
    log_s = 0.5 * np.log(pca.sigma_x**2 / (pca.lam + pca.sigma_x**2))
    enc, dec = vae.nets["enc"].p, vae.nets["dec"].p
    enc["W0"][...] = np.concatenate([m_weight, np.zeros((D, n))], axis=1)
    enc["b0"][...] = np.concatenate([-pca.mean @ m_weight, log_s])
    dec["W0"][...] = root[:, None] * pca.W.T
    dec["b0"][...] = pca.mean
    return vae


def core_params(name, model):
    """Parameters a receiver needs for a 1994 model: its codebooks, bias, prior and
    recognition weights (or PPCA's mean, directions and variances), and sigma_x."""
    if isinstance(model, sv.PCA):
        return model.mean.size + model.W.size + model.lam.size + 1
    form = "residual" if name == "residual_vq" else "factorial"
    shapes = sv.CodingModel.param_shapes(form, model.n_dims, model.n_codes)
    return sum(math.prod(shape) for shape in shapes.values()) + 1


def training_bits(name, model, V):
    """Mean bits per image the coder's bound gives the 8-bit training images V."""
    if isinstance(model, sv.PCA):
        return float(coding.VAECodingModel.of(linear_vae(model)).bound(V)[0].mean())
    return float(sv.discrete_bound(sv.CodingModel.from_model(model), V)[0].mean())


def break_even(params, bits, reference):
    """Images at which a model's parameters (32-bit floats) are paid for by what it saves per
    image against the reference compressor; None if it saves nothing."""
    saving = reference - bits
    return int(math.ceil(PARAM_FLOAT_BITS * params / saving)) if saving > 0 else None


def scoreboard_row(row, params, n_images, baselines):
    """A coder row with the parameter accounting beside it."""
    amortised = PARAM_FLOAT_BITS * params / n_images
    return {**row, "params": int(params), "params_bits_per_image": amortised,
            "with_params": row["actual_bits"] + amortised,
            "break_even_vs_lzma": break_even(params, row["actual_bits"], baselines["lzma"])}


def _score_core(name, seed, V, baselines, log, folder=None):
    """One 1994 model refitted at every sigma of SCORE_SIGMAS, the sigma whose 8-bit
    training images the coder codes shortest kept, and its held-out images V coded."""
    X = sv.load_data(seed)[0]
    fits = {}
    for sigma in SCORE_SIGMAS:
        model = fit_core(name, X, seed, folder, sigma_x=sigma)
        fits[sigma] = (model, training_bits(name, model, sv.quantise_images(X)))
    sigma = min(SCORE_SIGMAS, key=lambda s: fits[s][1])
    model = fits[sigma][0]
    if isinstance(model, sv.PCA):
        linear = linear_vae(model)
        row = coding.code_vae(linear, V, seed, draws=CODER_DRAWS)
        cm = coding.coding_model(linear)
        sent = coding.rounded_nets(cm.kind, cm.nets, [0] * len(coding.net_tensors(cm.kind, cm.nets)))[1]
    else:
        row, (cm, _) = sv.code_and_check(model, V, seed, draws=CODER_DRAWS)
        sent = list(cm.params.values())
    coded = coding.model_code_row(sent, other_numbers=1)           # its tables' numbers, sigma_x
    row = {**row, **coded, "model_actual_bits": row["actual_bits"],     # the same model
           "with_model": row["actual_bits"] + coded["model_bits"] / len(V)}
    log(f"{name}: sigma_x = {sigma:g} by maximum likelihood, {row['actual_bits']:.2f} bits "
        f"per image, round trip {kit.round_trip_cell(row['roundtrip'])}")
    return {**scoreboard_row(row, core_params(name, model), len(V), baselines),
            "sigma_x": sigma, "training_bits": {f"{s:g}": fits[s][1] for s in SCORE_SIGMAS},
            "n_train": len(X)}


def _score_vae(n, seed, V, baselines, log, bitstream=None, folder=None, **kw):
    """The 8-bit VAE trained on n images (or loaded from folder; with autoregressive=True
    in kw, its autoregressive decoder), its held-out images V coded, also with its model
    (and written to the file bitstream, if given)."""
    t0 = time.perf_counter()
    Xn, Xv, _, _ = nm.load_split(seed, n, n_test=1)
    q = sv.quantise_images
    hidden = tuple(kw.get("hidden") or nm.HIDDEN)
    ar = bool(kw.get("autoregressive"))
    lr = nm.PIXEL_AR_LR if ar else nm.pixel_rate(n)
    config = nm.network_config(seed, n, kw.get("steps"), kw.get("batch"), nm.PIXEL_BATCH,
                               nm.PIXEL_STEPS_AT, model="pixel_ar" if ar else "pixel_vae",
                               n_latent=nm.LATENTS, hidden=list(hidden), lr=lr)
    key = fc.model_key(("pixel_vae_ar" if ar else "pixel_vae") +
                       ("" if hidden == nm.HIDDEN else "_" + "x".join(map(str, hidden))), seed, n)
    vae, hist, _ = fc.fit_or_load(folder, key, config,
                                  lambda: nm.fit_pixel_vae(q(Xn), q(Xv), seed, log=log, **kw))
    dl = vae.description_length(V / (bbc.PIXEL_LEVELS - 1))
    row = coding.code_vae(vae, V, seed, dl=dl, draws=CODER_DRAWS)
    coded, message = coding.code_with_model(vae, q(Xv)[:MDL_SEARCH_IMAGES], V, seed)
    if bitstream:
        coding.write_vae_code(bitstream, vae, V, seed, len(V))
    log(f"8-bit VAE {'x'.join(map(str, hidden))}{', autoregressive' if ar else ''}, N = {n}: "
        f"{row['actual_bits']:.2f} bits per "
        f"image, {coded['with_model']:.2f} with its model coded, round trips "
        f"{kit.round_trip_cell(row['roundtrip'] and coded['model_roundtrip'])}, "
        f"{time.perf_counter() - t0:.0f} s")
    return {**scoreboard_row(row, vae.n_params(), len(V), baselines), **coded, "n_train": n,
            "message": message,                        # run_scoreboard takes it out
            "recon": float(dl["recon"].mean()), "code": float(dl["code"].mean()),
            "steps_run": hist["steps_run"], "best_step": hist["best_step"],
            "batch": kw.get("batch") or nm.batch_size(n, nm.PIXEL_BATCH), "lr": lr,
            "train_seconds": hist["seconds"], "hidden": list(vae.hidden), "autoregressive": ar}


def _score_sent(seed, log, sizes=IMAGES_SENT):
    """lzma's bits per image on the first n held-out images, for each n of sizes."""
    out = {}
    for n in sizes:
        V = sv.quantise_images(sv.generate_spline_images(n, seed, stream=1)[0])
        out[str(n)] = compressors.baseline_bits(V, sv.HEIGHT, sv.WIDTH, names=("lzma",))["lzma"]
    log(f"lzma on {', '.join(out)} held-out images")
    return out


def _score_limit(seed, n_images, log):
    """The true generator's 8-bit code length on n_images held-out images."""
    Tl, controls = sv.generate_spline_images(n_images, seed, stream=1)
    bits, se = sv.generator_bits_8bit(sv.quantise_images(Tl), controls,
                                      rng=np.random.default_rng([seed, 21]))
    out = sv.limit_summary(bits, se)
    log(f"limit: the true generator, {out['bits']:.2f} bits per image")
    return out


def _score_task(task):
    """Worker: one scoreboard task, (key, result) with key a row name or "limit"."""
    key, fn, args, kw, quiet = task
    return key, fn(*args, log=kit.progress_logger(quiet), **kw)


def score_order():
    """The scoreboard's rows in their order: the 1994 models, the 8-bit VAEs, the small ones."""
    return ([name for name in SCORE_CORE] + [f"pixel_vae_{n}" for n in SCORE_VAE_SIZES]
            + [f"pixel_vae_ar_{SCORE_AR_SIZE}"]
            + [f"pixel_vae{ar}_{SCORE_MDL_SIZE}_{w}x{w}" for ar in ("", "_ar")
               for w in SCORE_MDL_HIDDEN])


def mdl_choice(rows):
    """The 8-bit VAE row with the least validation total (model bits plus the images'), or None."""
    valid = {k: r["model_validation"]["total"] for k, r in rows.items()
             if "model_validation" in r}
    return min(valid, key=valid.get) if valid else None

def run_scoreboard(seed=0, models=SCORE_MODELS, n_test=2000, workers=2, quiet=True,
                   limit_images=LIMIT_IMAGES, bitstream=None, counted=None, folder=None, **kw):
    """The 8-bit scoreboard at one seed: {"rows": {label key: row}, "baselines", "limit",
    "n_test", "lzma_by_images", "mdl_choice"}; rows of the 1994 models carry their sigma
    profile on the training images.  bitstream: a path to write the code of the 8-bit VAE on
    the most images to; counted: a path to write the chosen 8-bit VAE's code with its model.

    The tasks are handed to the workers longest first: one worker trains the VAE on 20000
    images while the other does all the rest (progress lines come from the workers)."""
    V = sv.quantise_images(sv.load_data(seed, 200, n_test)[1])
    baselines = compressors.baseline_bits(V, sv.HEIGHT, sv.WIDTH)
    common = (seed, V, baselines)
    vaes = sorted(SCORE_VAE_SIZES, reverse=True) if "pixel_vae" in models else []
    small = SCORE_MDL_HIDDEN if "pixel_vae" in models else ()
    kw = {**kw, "folder": folder}
    mdl_key = lambda w, ar: f"pixel_vae{'_ar' * ar}_{SCORE_MDL_SIZE}_{w}x{w}"   # as score_order
    tasks = ([(f"pixel_vae_ar_{SCORE_AR_SIZE}", _score_vae, (SCORE_AR_SIZE, *common),
               {**kw, "autoregressive": True}, quiet) for _ in vaes[:1]] +
             [(f"pixel_vae_{n}", _score_vae, (n, *common), {**kw, "bitstream": bitstream},
               quiet) for n in vaes[:1]] +
             [(mdl_key(w, ar), _score_vae, (SCORE_MDL_SIZE, *common),
               {**kw, "hidden": (w, w), "autoregressive": ar}, quiet)
              for w in sorted(small, reverse=True) for ar in (True, False)] +
             [(name, _score_core, (name, *common), {"folder": folder}, quiet) for name in models
              if name in SCORE_CORE] +
             [(f"pixel_vae_{n}", _score_vae, (n, *common), kw, quiet) for n in vaes[1:]] +
             [("limit", _score_limit, (seed, limit_images), {}, quiet),
              ("sent", _score_sent, (seed,), {}, quiet)])
    done = dict(kit.map_workers(_score_task, tasks, workers))
    rows = {key: done[key] for key in score_order() if key in done}
    messages = {key: row.pop("message") for key, row in rows.items() if "message" in row}
    choice = mdl_choice(rows)
    if counted and choice:
        coding.write_counted_bitstream(counted, messages[choice], V, seed, n_test)
    return {"seed": seed, "n_test": n_test, "baselines": baselines, "rows": rows,
            "limit": done["limit"], "lzma_by_images": done["sent"], "mdl_choice": choice}



def summarise(results, models):
    """Per model the mean and sd (ddof=1; 0 for one seed) over seeds of each number."""
    out = {}
    for name in models:
        rows = [r[name] for r in results.values()]
        keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and
                not isinstance(v, bool)]
        out[name] = {}
        for k in keys:
            v = np.array([row[k] for row in rows], dtype=float)
            out[name][k] = float(v.mean())
            out[name][k + "_sd"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return out


# --- settings chosen on validation images ---------------------------------------------------
#
# Two settings of the headline rows are choices among candidates: the 8-bit VAE's Adam rate
# and the ACN coder's prior mixture.  Both are chosen here on the validation split of seed 0
# (its own stream, never scored as held-out), and the held-out rows use what this picks.

PIXEL_RATES = (1e-3, 3e-3, 1e-2, 2e-2)
AR_RATES = (2.5e-3, 5e-3, 1e-2, 2e-2)   # the autoregressive decoder's, at SCORE_AR_SIZE
GUMBEL_TAUS = ((0.5, 0.5), (1.0, 0.5), (2.0, 0.5))  # the Gumbel VQ-VAE's temperature schedules
TAU_SIZE = 2000
CHOICES = ("rate", "mix", "tau", "ar_rate")
CODER_MIXES = (None, 32, 16, 8, 4)       # None: the conditional prior alone


def _choice_task(task):
    """Worker: one candidate's validation score: ("rate", N, lr) -> best validation bits of
    the 8-bit VAE; ("mix", N, mixes) -> actual bits of the validation tour per mixture;
    ("tau", N, (first, last)) -> best validation F of the Gumbel VQ-VAE."""
    kind, n, arg, steps = task
    X, X_val, _, _ = nm.load_split(0, n, n_test=1)
    if kind == "tau":
        _, hist = nm.fit_gumbel_vqvae(X, X_val, 0, steps=steps, taus=arg)
        return kind, n, arg, float(min(hist["val"]))
    if kind in ("rate", "ar_rate"):
        q = sv.quantise_images
        _, hist = nm.fit_pixel_vae(q(X), q(X_val), 0, lr=arg, steps=steps,
                                   autoregressive=kind == "ar_rate")
        return kind, n, arg, float(min(hist["val"]))
    vae, _ = nm.fit_vae(X, X_val, 0, steps=steps)
    acn, _ = nm.fit_acn(X, X_val, 0, vae=vae, steps=steps)
    V = sv.quantise_images(X_val)[acn.tour(X_val)]
    return kind, n, None, {str(m): coding.code_vae(acn, V, 0, mix=m)["actual_bits"] for m in arg}


def run_choices(which=CHOICES, pixel_sizes=SCORE_VAE_SIZES, rates=PIXEL_RATES,
                acn_size=max(ACN_SIZES), mixes=CODER_MIXES, taus=GUMBEL_TAUS, ar_rates=AR_RATES,
                steps=None, workers=2, log=None):
    """The choices `which` on seed 0's validation images: {"pixel_lr": {str(N): {str(rate):
    bits}}, "coder_mix": {str(N): {str(mix): bits}}, "gumbel_tau": {str(N): {"first,last":
    bits}}, "pixel_ar_lr": {str(N): {str(rate): bits}}}, with the picks.  steps: every
    network's Adam steps, if not its recipe's."""
    log = log or kit.progress_logger(True)
    tasks = ([("ar_rate", SCORE_AR_SIZE, lr, steps) for lr in ar_rates]
             if "ar_rate" in which else []) + \
        ([("mix", acn_size, mixes, steps)] if "mix" in which else []) + \
        ([("tau", TAU_SIZE, t, steps) for t in taus] if "tau" in which else []) + \
        ([("rate", n, lr, steps) for n in pixel_sizes[::-1] for lr in rates]
         if "rate" in which else [])
    out = {}                                  # sizes in ascending order, whatever finishes first
    if "rate" in which:
        out["pixel_lr"] = {str(n): {} for n in pixel_sizes}
    if "ar_rate" in which:
        out["pixel_ar_lr"] = {str(SCORE_AR_SIZE): {}}
    if "mix" in which:
        out["coder_mix"] = {}
    if "tau" in which:
        out["gumbel_tau"] = {str(TAU_SIZE): {}}
    for kind, n, arg, result in kit.map_workers(_choice_task, tasks, workers):
        if kind in ("rate", "ar_rate"):
            out["pixel_lr" if kind == "rate" else "pixel_ar_lr"][str(n)][f"{arg:g}"] = result
            log(f"8-bit VAE{', autoregressive' * (kind == 'ar_rate')}, N = {n}, rate {arg:g}: "
                f"{result:.2f} validation bits per image")
        elif kind == "tau":
            out["gumbel_tau"][str(n)][",".join(f"{t:g}" for t in arg)] = result
            log(f"Gumbel VQ-VAE, N = {n}, tau {arg[0]:g} -> {arg[1]:g}: {result:.2f} "
                f"validation bits per image")
        else:
            out["coder_mix"][str(n)] = result
            log(f"ACN coder, N = {n}: " + ", ".join(f"{k} {v:.2f}" for k, v in result.items()))
    for key in list(out):
        out[key + "_pick"] = {n: min(v, key=v.get) for n, v in out[key].items()}
    return out


def format_choices(c, markdown=False):
    """The validation scores behind the choices a run made."""
    parts = []
    if "pixel_lr" in c:
        sizes = list(c["pixel_lr"])
        rates = list(c["pixel_lr"][sizes[0]])
        rows = [[f"rate {r}"] + [kit.num(c["pixel_lr"][n][r]) for n in sizes] for r in rates]
        rows.append(["chosen"] + [c["pixel_lr_pick"][n] for n in sizes])
        parts.append(kit.table("The 8-bit VAE's Adam rate: best validation bits per image "
                               "(seed 0, validation split)",
                               ["rate"] + [f"N = {n}" for n in sizes], rows, markdown))
    if "coder_mix" in c:
        n = next(iter(c["coder_mix"]))
        mixes = c["coder_mix"][n]
        prior = lambda m: "conditional prior alone" if m == "None" else f"1/{m} on N(0, 1)"
        rows = [[prior(m), kit.num(bits)] for m, bits in mixes.items()]
        rows.append(["chosen", prior(c["coder_mix_pick"][n])])
        parts.append(kit.table(f"The ACN coder's prior: actual bits per image sending seed 0's "
                               f"{nm.validation_size(int(n))} validation images along their "
                               f"tour (N = {n})", ["prior table", "actual bits"], rows, markdown))
    if "gumbel_tau" in c:
        n = next(iter(c["gumbel_tau"]))
        schedule = lambda key: "tau {} -> {}".format(*key.split(","))
        rows = [[schedule(k), kit.num(bits)] for k, bits in c["gumbel_tau"][n].items()]
        rows.append(["chosen", schedule(c["gumbel_tau_pick"][n])])
        parts.append(kit.table(f"The Gumbel VQ-VAE's temperature schedule: best validation F, "
                               f"bits per image (seed 0, N = {n}, "
                               f"{nm.validation_size(int(n))} validation images)",
                               ["schedule", "validation F"], rows, markdown))
    if "pixel_ar_lr" in c:
        n = next(iter(c["pixel_ar_lr"]))
        rows = [[f"rate {r}", kit.num(bits)] for r, bits in
                sorted(c["pixel_ar_lr"][n].items(), key=lambda item: float(item[0]))]
        rows.append(["chosen", c["pixel_ar_lr_pick"][n]])
        parts.append(kit.table(f"The autoregressive decoder's Adam rate: best validation bits "
                               f"per image (seed 0, N = {n}, {nm.validation_size(int(n))} "
                               f"validation images)", ["rate", "validation bits"], rows,
                               markdown))
    return "\n\n".join(parts)


# --- the one-bit VAE, and the factorial VQ's collapse --------------------------------------

COLLAPSE_STEPS = 800           # the earlier reproduction's 800 epochs of joint training
COLLAPSE_SCHEDULES = ("kl", "none")


POSTERIOR_DIMS = (100, 1000)    # where the posterior figure looks at q against p(z|x)
POSTERIOR_POINTS = 240         # of each curve kept in the JSON


def one_bit_posteriors(model, grid=None):
    """For each data point (zeros, ones): the trained decoder's exact posterior of the
    latent next to the VAE's, p(z1|x) and q(z1|x), as densities on a grid: {"z": (G,),
    "exact": (2, G), "q": (2, G)} over the window that holds both.  grid: model.joint_grid()
    if already computed."""
    z, log_post = grid if grid is not None else model.joint_grid()
    n_grid, dz = len(z), z[1] - z[0]
    exact = np.exp(log_post - log_post.max(axis=1, keepdims=True))
    exact /= exact.sum(axis=1, keepdims=True) * dz
    enc = model.nets["enc"].forward(nm.one_bit_data(model.n_dims))[0]
    sd = np.exp(nm.bounded_log_sd(enc[:, 1])[0])
    q = np.exp(-0.5 * ((z - enc[:, :1]) / sd[:, None]) ** 2) / (sd[:, None] * math.sqrt(2 * math.pi))
    mass = np.cumsum(exact + q, axis=1) * dz / 2                       # (2, G), up to 1
    lo = min(z[np.searchsorted(m, 1e-3)] for m in mass)
    hi = max(z[min(np.searchsorted(m, 1 - 1e-3), n_grid - 1)] for m in mass)
    keep = np.linspace(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), POSTERIOR_POINTS)
    pick = lambda d: np.array([np.interp(keep, z, row) for row in d]).tolist()
    return {"z": keep.tolist(), "exact": pick(exact), "q": pick(q)}


def _one_bit_task(task):
    """Worker: one OneBitVAE fitted (the best of its starts) and scored: (n_dims, layers,
    seed, result)."""
    n_dims, layers, seed, folder = task
    t0 = time.perf_counter()
    config = {"model": "one_bit", "n_dims": n_dims, "layers": layers, "seed": seed,
              "steps": nm.ONE_BIT_STEPS, "draws": nm.ONE_BIT_DRAWS, "lr": list(nm.ONE_BIT_LR),
              "hidden": list(nm.ONE_BIT_HIDDEN), "restarts": nm.ONE_BIT_RESTARTS}
    model, starts, _ = fc.fit_or_load(folder, f"one_bit_{layers}layer_{n_dims}dims_seed{seed}",
                                      config, lambda: nm.fit_one_bit_best(n_dims, layers, seed))
    loss, recon, code = model.bits()
    iw, grid = model.neg_log_likelihood(), model.joint_grid()
    out = {"loss": loss, "recon": recon, "code": code, "neg_log_p": iw, "gap": loss - iw,
           "neg_log_p_quadrature": model.neg_log_likelihood_quadrature(grid=grid),
           "restart": starts["restart"], "restart_losses": starts["losses"],
           "seconds": time.perf_counter() - t0}
    if n_dims in POSTERIOR_DIMS:
        out["posterior"] = one_bit_posteriors(model, grid)
    return n_dims, layers, seed, out


def collapse_run(schedule, seed, steps=COLLAPSE_STEPS):
    """The claim that the factorial VQ collapses to one code without KL warm-up, tried on
    its own terms: the core's 4x6 factorial VQ from random codewords (no hard-code search,
    no EM), trained jointly by full-batch Adam on the valid F for `steps` steps, the KL
    weight warmed up from 0.1 over the first half ("kl") or not ("none").  Held-out F and
    each factor's codes in use: the perplexity of its mean posterior over the held-out
    images (6 = every code equally used, 1 = collapsed to one)."""
    X, T = sv.load_data(seed)
    model = sv.FactorialVQ(4, 6, rng=np.random.default_rng([seed, 20]))
    model.init_from_hard_code(X, start="random", restarts=1, iters=0)
    sv.train(model, X, steps=steps, schedule=schedule)
    usage = np.stack(model.posteriors(T)).mean(axis=1)                      # (M, K)
    perplexity = np.exp(-np.sum(usage * np.log(np.maximum(usage, 1e-300)), axis=1))
    return {"heldout": float(model.description_length(T)["total"].mean()),
            "perplexity": perplexity.tolist()}


def run_one_bit(seeds=tuple(range(5)), dims=nm.ONE_BIT_DIMS, workers=2, log=None, folder=None):
    """The one-bit VAE at every ndims for both models, and the collapse claim, over seeds:
    {"one_bit": {str(layers): {str(n): {str(seed): bits}}}, "collapse": {schedule:
    {str(seed): result}}}."""
    log = log or kit.progress_logger(True)
    t0 = time.perf_counter()
    out = {"one_bit": {str(k): {str(n): {} for n in dims} for k in (1, 2)}, "collapse": {}}
    tasks = [(n, k, s, folder) for n in sorted(dims, reverse=True) for k in (1, 2) for s in seeds]
    for done, (n, k, s, r) in enumerate(kit.map_workers(_one_bit_task, tasks, workers), 1):
        out["one_bit"][str(k)][str(n)][str(s)] = r
        log(f"[{done}/{len(tasks)}] one-bit VAE, {k} layer(s), ndims {n}, seed {s}: "
            f"{r['loss']:.3f} bits (start {r['restart']} of {nm.ONE_BIT_RESTARTS}), "
            f"({time.perf_counter() - t0:.0f} s)")
    for k in out["one_bit"].values():
        for n in k:
            k[n] = dict(sorted(k[n].items(), key=lambda kv: int(kv[0])))
    log(f"one-bit VAE: {len(tasks)} fits ({time.perf_counter() - t0:.1f} s)")
    for sched in COLLAPSE_SCHEDULES:
        out["collapse"][sched] = {str(s): collapse_run(sched, s) for s in seeds}
    log(f"factorial VQ from random codewords, KL warm-up or none: {2 * len(seeds)} fits "
        f"({time.perf_counter() - t0:.1f} s)")
    return out


def format_one_bit(result, markdown=False):
    """The one-bit table (both models at every ndims) and the collapse table."""
    one = result["one_bit"]
    seeds = list(next(iter(next(iter(one.values())).values())))
    pm = kit.mean_sd
    rows = []
    for k, name in (("1", "one-layer"), ("2", "two-layer")):
        for n, runs in one[k].items():
            get = lambda key: [r[key] for r in runs.values()]
            rows.append([f"{name}, ndims {n}", pm(get("loss")), pm(get("recon")),
                         pm(get("code")), kit.num(min(get("loss"))),
                         kit.num(max(get("loss")) - min(get("loss"))), pm(get("neg_log_p")),
                         pm(get("gap"))])
    head = (f"The one-bit VAE: bits per data point (the data's entropy is 1 bit), mean ± sd "
            f"over seeds {', '.join(seeds)}, each from {nm.ONE_BIT_EVAL} latent draws per "
            f"point; -log p(x) importance-weighted ({nm.ONE_BIT_IW} draws per point from the "
            f"mixture of q and the prior), and the gap, the loss minus it: KL(q(z|x) || "
            f"p(z|x))")
    parts = [kit.table(head, ["model", "loss (-ELBO)", "recon", "KL", "best seed's loss",
                              "worst - best seed", "-log p(x)", "gap"], rows, markdown)]
    rows = []
    for sched, runs in result["collapse"].items():
        F = [r["heldout"] for r in runs.values()]
        ppl = np.array([r["perplexity"] for r in runs.values()])
        rows.append([{"kl": "KL weight 0.1 -> 1 over the first half", "none": "no warm-up"}[sched],
                     pm(F), f"{ppl.mean():.2f}", f"{ppl.min():.2f}",
                     f"{int(np.sum(ppl.min(axis=1) < 1.5))}/{len(F)}"])
    parts.append(kit.table(
        f"Factorial 4x6 VQ from random codewords, {COLLAPSE_STEPS} joint Adam steps on the "
        f"valid F: held-out F (bits per image) and codes in use per factor (perplexity of its "
        f"mean held-out posterior, of 6), seeds {', '.join(seeds)}",
        ["schedule", "held-out F", "codes in use, mean", "codes in use, least",
         "runs with a collapsed factor (< 1.5)"], rows, markdown))
    return "\n\n".join(p.rstrip("\n") for p in parts)


# ----------------------------------------------------------------------------- CLI


def label(name, n_latent=nm.LATENTS):
    return LABELS[name].format(L=n_latent) if name in LABELS else \
        sv.model_label(name, 4, 6) + " (core)"


def format_results(summary, cfg, n_seeds, markdown=False):
    """The held-out table: recon, code, total F, and each model's diagnostics."""
    pm = lambda s, k: kit.num(s[k]) + (f" ± {kit.num(s[k + '_sd'])}" if n_seeds > 1 else "")
    rows = []
    for name, s in summary.items():
        if name == "vae":
            extra = (f"IW bound {kit.num(s['iw_bound'])} (se {s['iw_se']:.3f}, "
                     f"{s['iw_repeats']:.0f} x {s['iw_samples']:.0f} samples), "
                     f"{s['active_latents']:.4g} active latents")
        elif name in VQ_VARIANTS:
            extra = f"perplexity {s['perplexity_mean']:.2f}, {s['dead_codes_total']:.3g} dead codes"
        elif name in GUMBEL_VARIANTS:
            extra = (f"held-out perplexity {s['perplexity_mean']:.2f}, "
                     f"{s['dead_codes_total']:.3g} unused codes")
        else:
            extra = ""
        rows.append([label(name, cfg["latents"]), pm(s, "recon"), pm(s, "code"),
                     pm(s, "total"), extra])
    head = (f"Held-out description length, bits per image (sigma_x = 0.15, N = "
            f"{cfg['n_samples']} training images, {cfg['n_test']} held-out, "
            f"{n_seeds} seed(s))")
    return kit.table(head, ["model", "recon", "code", "total F", "notes"], rows, markdown)


def format_vq_codes(summary, cfg, n_seeds, markdown=False):
    """The VQ codes' usage on the held-out images and their code bits under the factorised
    prior and under the autoregressive one (nm.AutoregressivePrior)."""
    pm = lambda s, k: kit.num(s[k]) + (f" ± {kit.num(s[k + '_sd'])}" if n_seeds > 1 else "")
    rows = []
    for name, s in summary.items():
        if name in VQ_VARIANTS and "code_ar" in s:
            rows.append([label(name), pm(s, "perplexity_mean_heldout"),
                         f"{s['dead_codes_total_heldout']:.3g}", f"{s['restarts']:.1f}",
                         pm(s, "code"), pm(s, "code_ar"),
                         kit.num(s["code"] - s["code_ar"]), kit.num(s["total"] - s["code"]
                                                                    + s["code_ar"])])
        elif name in GUMBEL_VARIANTS:
            rows.append([label(name), pm(s, "perplexity_mean"), f"{s['dead_codes_total']:.3g}",
                         "-", pm(s, "code"), "-", "-", pm(s, "total")])
    head = (f"The VQ codes on the held-out images (N = {cfg['n_samples']}, {n_seeds} seed(s)): "
            f"codes in use (perplexity per codebook, mean over codebooks; the Gumbel VQ-VAE's "
            f"of its mean posterior), codes no held-out image uses (Gumbel: mean posterior "
            f"below 1/(100 K)), dead-code restarts in training; code bits per image under the "
            f"factorised prior (training frequencies plus one) and under an autoregressive "
            f"prior p(k1) p(k2|k1) ... fitted on the training codes (its penalty chosen on "
            f"validation codes; its parameters not counted)")
    return kit.table(head, ["model", "perplexity", "unused codes", "restarts",
                            "code bits, factorised", "code bits, autoregressive", "saving",
                            "total F, autoregressive"], rows, markdown)


def format_sweep(sweep, markdown=False):
    sizes = [str(n) for n in sweep["sizes"]]
    rows = []
    for name, r in sweep["models"].items():
        rows.append([label(name)] + [kit.num(r[n]["total"]) for n in sizes])
        if name == "vae":
            rows.append(["Gaussian VAE, importance-weighted bound"] +
                        [kit.num(r[n]["iw_bound"]) for n in sizes])
    rows.append(["true generator (limit)"] + [kit.num(sweep["limit"])] * len(sizes))
    head = (f"Held-out total F (bits per image) against the number of training images "
            f"(seed {sweep['seed']})")
    return kit.table(head, ["model"] + [f"N = {n}" for n in sizes], rows, markdown)


def format_compress(rows, markdown=False):
    cols = ["training images", "actual bits", "coder bound F_t", "overhead", "round trip"]
    out = [[n, f"{r['actual_bits']:.2f}", f"{r['bound_t']:.2f}", f"{r['overhead_pct']:+.3f}%",
            kit.round_trip_cell(r["roundtrip"])] for n, r in rows.items()]
    return kit.table("Gaussian VAE, bits-back code of the 8-bit held-out images "
                           f"({coding.LATENT_BINS} bins per latent)", cols, out, markdown)


def format_alignment(models, n_train, seed, markdown=False):
    """MI of each VAE latent and each factorial-VQ factor with each control height."""
    cols = ["code unit"] + [f"h{j + 1}" for j in range(sv.N_CONTROL)] + ["best height"]
    rows = []
    for name, unit in (("vae", "VAE z{}"), ("factorial_vq", "factorial factor {}")):
        if name not in models or "alignment" not in models[name]:
            continue
        a = models[name]["alignment"]
        for i, mi in enumerate(a["mi_controls"]):
            rows.append([unit.format(i + 1)] + [f"{v:.2f}" for v in mi] +
                        [f"h{int(np.argmax(mi)) + 1}"])
        rows.append([f"{label(name)}: score"] + [""] * sv.N_CONTROL + [f"{a['score']:.2f}"])
    head = (f"Mutual information (bits) of each code unit with each control height, held-out, "
            f"N = {n_train} training images, seed {seed} (3 bits per height: 8 equal-"
            f"frequency bins; score = mean over units of max / sum)")
    return kit.table(head, cols, rows, markdown)


def report(payload, markdown=False):
    """Every table of a run from its JSON payload: what main prints, and what the pages'
    blocks are regenerated from."""
    parts = []
    for kind, formatter in (("scoreboard", format_scoreboard), ("choices", format_choices),
                            ("acn", format_acn), ("one_bit", format_one_bit),
                            ("beta", format_beta), ("acn_variants", format_acn_variants)):
        if kind in payload:                  # a run of one kind: its own tables
            return formatter(payload[kind], markdown)
    if "sweep" in payload:
        for sweep in payload["sweep"]:
            sizes = [str(n) for n in sweep["sizes"]]
            parts.append(format_sweep(sweep, markdown))
            if "vae" in sweep["models"]:
                parts.append(format_compress({n: sweep["models"]["vae"][n]["compress"]
                                              for n in sizes}, markdown))
            top = {name: r[sizes[-1]] for name, r in sweep["models"].items()}
            parts.append(format_alignment(top, sizes[-1], sweep["seed"], markdown))
    else:
        cfg, seeds = payload["config"], payload["config"]["seeds"]
        parts.append(format_results(payload["summary"], cfg, len(seeds), markdown))
        rows = {f"{cfg['n_samples']} (seed {r['seed']})": r["models"]["vae"]["compress"]
                for r in payload["results"] if "compress" in r["models"].get("vae", {})}
        if rows:
            parts.append(format_compress(rows, markdown))
        if any("code_ar" in s or name in GUMBEL_VARIANTS
               for name, s in payload["summary"].items()):
            parts.append(format_vq_codes(payload["summary"], cfg, len(seeds), markdown))
        if len(seeds) > 1 and {"vq_vae_4x6", "factorial_vq"} <= set(payload["summary"]):
            parts.append(format_paired(payload["results"], "vq_vae_4x6", "factorial_vq",
                                       markdown))
    return "\n\n".join(p.rstrip("\n") for p in parts)


SCORE_LABELS = {"pixel_vae": "8-bit VAE {H}, {L} latents, scale per pixel, N = {N}",
                "pixel_vae_ar": "8-bit VAE {H}, {L} latents, autoregressive decoder, N = {N}"}


def format_scoreboard(board, markdown=False):
    """The 8-bit scoreboard: every model's actual bits with its parameters counted, the
    compressors, and the limit."""
    lzma = board["baselines"]["lzma"]
    cols = ["code", "training images", "noise", "actual bits", "coder bound", "round trip",
            "parameters", "parameter bits / image", "total with parameters",
            "break-even images vs lzma", "model coded, bits", "total with its model, coded"]
    rows = []
    for key, r in board["rows"].items():
        name = "pixel_vae" if key.startswith("pixel_vae") else key
        label = SCORE_LABELS.get(name + "_ar" * bool(r.get("autoregressive")))
        text = (label.format(L=nm.LATENTS, N=r["n_train"], H="-".join(map(str, r["hidden"])))
                if label else sv.model_label(name, 4, 6))
        text += " (chosen)" if key == board.get("mdl_choice") else ""
        noise = "per pixel" if name == "pixel_vae" else f"sigma_x = {r['sigma_x']:g}"
        even = r["break_even_vs_lzma"]
        actual = f"{r['actual_bits']:.2f}" + (f" ± {r['actual_bits_sd']:.2f}"
                                              if "actual_bits_sd" in r else "")
        rows.append([text, str(r["n_train"]), noise, actual,
                     f"{r['bound_t']:.2f}", kit.round_trip_cell(r["roundtrip"]),
                     f"{r['params']:,}", f"{r['params_bits_per_image']:.1f}",
                     f"{r['with_params']:.2f}", f"{even:,}" if even else "never",
                     f"{r['model_bits']:,}" if "model_bits" in r else "-",
                     f"{r['with_model']:.2f} ({kit.round_trip_cell(r['model_roundtrip'])})"
                     if "model_bits" in r else "-"])
    for name in compressors.COMPRESSORS:
        layout = board["baselines"]["layout"][name]
        rows.append([f"{name} ({layout} layout)", "-", "-", f"{board['baselines'][name]:.2f}",
                     "-", "exact", "-", "-", "-", "-", "-", "-"])
    lim = board["limit"]
    rows.append([f"limit: the true generator ({lim['n_images']} images)", "-", "-",
                 f"{lim['bits']:.2f} ± {lim['se']:.2f}", "-", "-", "-", "-", "-", "-", "-",
                 "-"])
    draws = next((len(r["actual_bits_draws"]) for r in board["rows"].values()
                  if "actual_bits_draws" in r), 1)
    head = (f"Actual bits per image coding the {board['n_test']} held-out images as 8-bit "
            f"pixels (seed {board['seed']}; "
            + (f"mean ± sd over {draws} sets of the coder's initial bits" if draws > 1
               else "one set of the coder's initial bits")
            + f"); the parameters at {PARAM_FLOAT_BITS}-bit floats, "
            f"amortised over these images; break-even = images at which a model's saving "
            f"against lzma ({lzma:.2f} bits per image here) pays for its parameters. Model "
            f"coded: its parameters sent by the parameter code (the 8-bit VAEs' rounded to "
            f"steps chosen on up to {MDL_SEARCH_IMAGES} validation images) with the numbers of the "
            f"header at {coding.HEADER_NUMBER_BITS} bits; total with its model = the images' actual "
            f"bits under the model as sent (the VAEs': rounded) plus the model's bits over "
            f"these images, model and images decoded from the bits (round trip); chosen = "
            f"the 8-bit VAE with the least such total on validation images")
    return kit.table(head, cols, rows, markdown)


def format_paired(results, a, b, markdown=False):
    """Held-out total F of models a and b seed by seed, and their difference."""
    rows = [[str(r["seed"]), kit.num(r["models"][a]["total"]), kit.num(r["models"][b]["total"]),
             f"{r['models'][a]['total'] - r['models'][b]['total']:+.2f}"] for r in results]
    d = np.array([r["models"][a]["total"] - r["models"][b]["total"] for r in results])
    rows.append(["mean ± sd", "", "", f"{d.mean():+.2f} ± {d.std(ddof=1):.2f}"])
    return kit.table(f"{label(a)} against {label(b)}, held-out total F (bits per "
                           f"image), seed by seed", ["seed", label(a), label(b), "difference"],
                           rows, markdown)


MAX_TRAIN_IMAGES = 10_000_000
MAX_LAYERS = 4


def hidden_widths(text):
    """An argparse type: hidden widths as a comma-separated list, e.g. 256,256."""
    import argparse
    parts = text.split(",")
    if not 1 <= len(parts) <= MAX_LAYERS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_LAYERS} widths like 256,256, "
                                         f"got {text!r}")
    return tuple(kit.int_at_least(1, nm.MAX_HIDDEN)(p.strip()) for p in parts)


def memory_needed(n_train, n_test, hidden, n_latent):
    """Rough peak bytes: rendering the images (the core draws every curve point's bump,
    (N, 200, 8) twice), the images (float64 and a float32 copy, training, validation and
    held-out), the widest scoring batch, and the coder's posterior tables."""
    render = 8.0 * 2 * sv.N_CURVE_POINTS * sv.HEIGHT * max(n_train, n_test)
    images = render + 8.0 * D * (1.5 * n_train + 0.15 * n_train + 2 * n_test)
    scoring = 8.0 * 500 * nm.EVAL_SAMPLES * (max(hidden) + D) * 2
    tables = 8.0 * 4 * n_test * n_latent * coding.LATENT_BINS
    return images + scoring + tables + 8.0 * 8 * mlp.MLP.n_params((D, *hidden, D))


# seconds of one float32 Adam step on 2 cores: a fixed part, and a part per image and
# network parameter (measured at hidden widths 64 to 1024, batch 128; within 30%)
STEP_SECONDS = (2e-4, 1.1e-10)
VAE_CODING_SECONDS = 25        # an 8-bit VAE's coding on the scoreboard: five draws, its steps
ONE_BIT_START_SECONDS = (0.7, 0.0052)   # a one-layer one-bit VAE's start: a + b ndims
NETWORKS = ("vae", "pixel_vae") + tuple(VQ_VARIANTS) + tuple(GUMBEL_VARIANTS)


def network_params(hidden, n_in, n_out):
    """Parameters of an encoder n_in -> hidden -> n_out and its mirror decoder."""
    return mlp.MLP.n_params((n_in, *hidden, n_out)) + mlp.MLP.n_params((n_out, *hidden[::-1], n_in))


def training_seconds(n_train, params, steps=None, batch=None, table=nm.STEPS_AT, largest=nm.BATCH):
    """A rough wall time of training a network of `params` parameters on n_train images."""
    steps = steps or nm.training_steps(n_train, table)
    batch = min(batch or nm.batch_size(n_train, largest), n_train)
    return 1.1 * steps * (STEP_SECONDS[0] + STEP_SECONDS[1] * batch * params)  # + validation


def estimate_seconds(args):
    """A rough wall time of the run args asks for (the networks' training dominates)."""
    vae = network_params(args.hidden, D, 2 * args.latents)
    kw = {"steps": args.steps, "batch": args.batch}
    if args.one_bit:              # every start of both models at every ndims, two at a time
        start = lambda n: ONE_BIT_START_SECONDS[0] + ONE_BIT_START_SECONDS[1] * n
        seeds = len(args.seeds or [0])
        return seeds * nm.ONE_BIT_RESTARTS * 2.25 * sum(map(start, nm.ONE_BIT_DIMS)) / 2 + 30
    if args.choose:               # the ACN's VAE and fine-tune, the schedules' Gumbel VQ-VAEs
        vae = network_params(nm.HIDDEN, D, 2 * nm.LATENTS)  # beside the rates' 8-bit VAEs
        pixel = network_params(nm.HIDDEN, D, 2 * D)
        mix = training_seconds(max(ACN_SIZES), vae) * (1 + 1.5 * nm.ACN_FINE_TUNE) + 300
        tau = len(GUMBEL_TAUS) * training_seconds(TAU_SIZE, network_params(nm.HIDDEN, D, 24))
        rate = len(PIXEL_RATES) * sum(training_seconds(n, pixel, table=nm.PIXEL_STEPS_AT,
                                                       largest=nm.PIXEL_BATCH)
                                      for n in SCORE_VAE_SIZES)
        ar = len(AR_RATES) * training_seconds(SCORE_AR_SIZE, network_params(
            nm.HIDDEN, D + nm.LATENTS, 2 * D), table=nm.PIXEL_STEPS_AT, largest=nm.PIXEL_BATCH)
        return max(sum(t for k, t in (("mix", mix), ("tau", tau), ("ar_rate", ar))
                       if k in args.choose) / 2,
                   rate if "rate" in args.choose else 0.0, mix if "mix" in args.choose else 0.0)
    if args.beta:                 # one VAE a beta, two at a time
        seeds = len(args.seeds or [args.seed])
        return seeds * len(BETAS) * training_seconds(args.n_samples, vae, args.steps) / 2
    if args.acn_variants:         # the VAE, two ACNs from scratch and two fine-tunes
        vae = network_params(nm.HIDDEN, D, 2 * nm.LATENTS)
        one = training_seconds(args.n_samples, vae) * (1 + 3.0 + 3.0 * nm.ACN_FINE_TUNE)
        return one * len(args.seeds or [args.seed]) / 2
    if args.acn:                  # VAE, then the ACN's fine-tune (prior network, two passes)
        vae = network_params(nm.HIDDEN, D, 2 * nm.LATENTS)
        one = [training_seconds(n, vae) * (1 + 1.5 * nm.ACN_FINE_TUNE) for n in args.acn_sizes]
        return sum(one) * len(args.seeds or [args.seed]) / 2               # two at a time
    if args.scoreboard:
        if "pixel_vae" not in args.models:
            return 40.0
        pixel = lambda n, hidden, n_in: training_seconds(
            n, network_params(hidden, n_in, 2 * D), table=nm.PIXEL_STEPS_AT,
            largest=nm.PIXEL_BATCH, **kw)
        work = (sum(pixel(n, args.hidden, D) for n in SCORE_VAE_SIZES)
                + pixel(SCORE_AR_SIZE, args.hidden, D + nm.LATENTS)
                + sum(pixel(SCORE_MDL_SIZE, (w, w), n_in) for w in SCORE_MDL_HIDDEN
                      for n_in in (D, D + nm.LATENTS)))
        vaes = len(SCORE_VAE_SIZES) + 1 + 2 * len(SCORE_MDL_HIDDEN)
        return 60.0 + (work + VAE_CODING_SECONDS * vaes) / 2          # two workers
    sizes = SWEEP_SIZES if args.sweep else (args.n_samples,)
    models = SWEEP_MODELS if args.sweep else args.models
    nets = [m for m in models if m in NETWORKS]
    together = 1 if args.sweep or args.bitstream else min(2, max(1, len(nets)))  # run_all
    return len(args.seeds or [args.seed]) * sum(training_seconds(n, vae, **kw)
                                                for n in sizes for _ in nets) / together


def parse_args(argv=None):
    ap = kit.CLIParser(prog="neural_codes.py",
                      description="A Gaussian VAE, VQ-VAEs and an ACN on the spline images, "
                                  "scored by the same bits-back description length as the "
                                  "1994 models (bits per image, held-out); the one-bit VAE.")
    seeds = ap.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=kit.int_at_least(0, sv.MAX_SEED), default=0,
                       help="random seed")
    seeds.add_argument("--seeds", type=kit.int_at_least(0, sv.MAX_SEED), nargs="+", metavar="S",
                       help="several seeds, one after another (a seed's models two at a "
                            "time): mean ± sd")
    ap.add_argument("--n-samples", type=kit.int_at_least(1, MAX_TRAIN_IMAGES), default=200,
                    help="training images N (200 as in the paper); a validation split of "
                         "N/10 (100 to 2000) images comes from its own stream")
    ap.add_argument("--n-test", type=kit.int_at_least(1, sv.MAX_IMAGES), default=2000,
                    help="held-out images")
    ap.add_argument("--latents", type=kit.int_at_least(1, nm.MAX_LATENTS), default=nm.LATENTS,
                    help="latent dimensions of the VAE")
    ap.add_argument("--hidden", type=hidden_widths, default=nm.HIDDEN, metavar="W[,W...]",
                    help="hidden widths of every encoder and decoder")
    ap.add_argument("--steps", type=kit.int_at_least(1, sv.MAX_STEPS), default=None,
                    help="Adam steps at most (default: 2000 at N = 200, 50000 at 2000, 100000 "
                         "from 20000, log-interpolated; the scoreboard's 8-bit VAE 2000 at "
                         "200, 28000 at 20000; training stops early when a fifth of the run "
                         "brings no better validation score)")
    ap.add_argument("--batch", type=kit.int_at_least(1, 65_536), default=None,
                    help=f"minibatch size (default: {nm.BATCH}, the 8-bit VAE's {nm.PIXEL_BATCH}, or N/4 "
                         f"for small sets, at least 32)")
    ap.add_argument("--models", nargs="+", choices=tuple(dict.fromkeys(ALL_MODELS + SCORE_MODELS)),
                    default=None, metavar="NAME",
                    help=f"models to run, any of: {' '.join(ALL_MODELS)} (default: "
                         f"{' '.join(DEFAULT_MODELS)}); with --scoreboard any of "
                         f"{' '.join(SCORE_MODELS)} (default: all)")
    for flag, text in (                     # the runs of their own kind, and --compress
            ("--sweep", "the training-set size sweep: " + ", ".join(SWEEP_MODELS) +
                " at N = " + ", ".join(map(str, SWEEP_SIZES)) + " and the "
                "generator's limit"),
            ("--compress", "also code the 8-bit held-out set with the VAE (bits-back), decode "
                "it and check the round trip"),
            ("--scoreboard", "code the 8-bit held-out images with every 1994 model (sigma_x fitted "
                "by maximum likelihood) and the 8-bit VAE (N = " +
                " and ".join(map(str, SCORE_VAE_SIZES)) + "), beside gzip, bz2, lzma, "
                "PNG and the true generator"),
            ("--acn", "the associative compression network: a VAE and the ACN fine-tuned "
                "from it at N = " + " and ".join(map(str, ACN_SIZES)) + " (or "
                "--n-samples), the order counted four ways, and the tour sent by the "
                "bits-back coder (two runs at a time)"),
            ("--beta", "the beta-VAE: the Gaussian VAE trained on recon + beta KL for beta in "
                + " ".join(f"{b:g}" for b in BETAS) + f" at N = {BETA_SIZE} (or "
                "--n-samples), scored by the valid F, with alignment and MIG, over "
                "--seeds (default 0-4), two fits at a time"),
            ("--acn-variants", "the ACN fine-tuned from the VAE or trained from scratch, with "
                "neighbours drawn with repetition or each once per epoch, against "
                f"the VAE as a set at N = {BETA_SIZE} (or --n-samples), over --seeds "
                "(default 0-4), two fits at a time"),
            ("--one-bit", "the one-bit VAE (one- and two-layer, ndims " +
                " ".join(map(str, nm.ONE_BIT_DIMS)) + ") and the factorial VQ trained "
                "from random codewords with and without KL warm-up, over --seeds "
                "(default 0-4)")):
        ap.add_argument(flag, action="store_true", help=text)
    ap.add_argument("--choose", nargs="*", choices=CHOICES, metavar="WHAT",
                    help="the validation scores behind settings (default: all of them): "
                         "rate, the 8-bit VAE's Adam rate (" +
                         ", ".join(f"{r:g}" for r in PIXEL_RATES) + "); mix, the ACN coder's "
                         "prior mixture; tau, the Gumbel VQ-VAE's temperature schedule; "
                         "ar_rate, the autoregressive decoder's rate (" +
                         ", ".join(f"{r:g}" for r in AR_RATES) + "); on seed 0's validation "
                         "images")
    ap.add_argument("--bitstream", metavar="PATH",
                    help="write the coded 8-bit held-out set to PATH, with the networks: the "
                         "Gaussian VAE's (a run with vae, one seed), the 8-bit VAE's on "
                         f"{max(SCORE_VAE_SIZES)} images (--scoreboard) or the ACN's tour "
                         "(--acn, one seed and --n-samples)")
    ap.add_argument("--bitstream-counted", metavar="PATH", help="with --scoreboard: write "
                    "the chosen 8-bit VAE's code with its networks coded to PATH")
    ap.add_argument("--decode", metavar="PATH",
                    help="decode a --bitstream or --bitstream-counted file and check it "
                         "against the held-out set; everything else is read from the file")
    ap.add_argument("--json", metavar="PATH", help="write config, versions and all numbers here")
    args, given = ap.parse_run(argv, "every network and 1994 model trained",
                               "print tables as Markdown")
    if args.merge:
        return args
    if args.choose is not None:
        ap.each_once("--choose", args.choose, "setting")
        args.choose = list(args.choose or CHOICES)
    if args.decode is not None:
        ap.refuse_together(given, "decode", tuple(sorted(ap.dests() - {"decode", "quiet"})),
                           "reads everything from the file")
        ap.input_file("--decode", args.decode)
        return args
    ap.refuse_together(given, "sweep", ("n_samples", "n_test", "models", "compress",
                                        "scoreboard"), "sets its own sizes and models")
    ap.refuse_together(given, "scoreboard", ("n_samples", "n_test", "latents", "compress",
                                             "seeds"), "codes one seed's 2000 held-out images "
                                                      "with its own models")
    ap.refuse_together(given, "acn", ("models", "compress", "sweep", "scoreboard", "latents",
                                      "hidden", "steps", "batch"),
                       "trains its own VAE and ACN with the default recipe")
    ap.refuse_together(given, "beta", ("models", "compress", "sweep", "scoreboard", "acn",
                                       "latents", "hidden", "batch", "bitstream"),
                       "trains its own VAEs with the default recipe")
    ap.refuse_together(given, "acn_variants", ("models", "compress", "sweep", "scoreboard",
                                               "acn", "beta", "latents", "hidden", "steps",
                                               "batch", "bitstream"),
                       "trains its own VAE and ACNs with the default recipe")
    ap.refuse_together(given, "one_bit", ("models", "compress", "sweep", "scoreboard", "acn",
                                          "beta", "acn_variants", "latents", "hidden",
                                          "steps", "batch", "n_samples", "n_test"),
                       "has its own data and models")
    ap.refuse_together(given, "choose", ("models", "compress", "sweep", "scoreboard", "acn",
                                         "one_bit", "beta", "acn_variants", "latents",
                                         "hidden", "steps", "batch", "n_samples", "n_test",
                                         "seed", "seeds", "save_models", "load_models"),
                       "runs its own candidates on seed 0")
    if (args.acn or args.acn_variants) and "n_samples" in given and \
            args.n_samples <= nm.ACN_NEIGHBOURS:
        ap.error(f"--n-samples: the ACN needs more than {nm.ACN_NEIGHBOURS} training images "
                 f"(each takes its {nm.ACN_NEIGHBOURS} nearest neighbours), got {args.n_samples}")
    if (args.one_bit or args.beta or args.acn_variants) and "seed" not in given and \
            not args.seeds:
        args.seeds = list(range(5))
    if (args.beta or args.acn_variants) and "n_samples" not in given:
        args.n_samples = BETA_SIZE
    args.acn_sizes = ((args.n_samples,) if "n_samples" in given else ACN_SIZES) if args.acn else ()
    pool = SCORE_MODELS if args.scoreboard else ALL_MODELS
    args.models = list(args.models or (SCORE_MODELS if args.scoreboard else DEFAULT_MODELS))
    wrong = [m for m in args.models if m not in pool]
    if wrong:
        ap.error(f"--models: {wrong[0]} is not a model of "
                 f"{'the scoreboard' if args.scoreboard else 'this run'}; choose from "
                 f"{' '.join(pool)}")
    ap.each_once("--models", args.models, "model")
    ap.each_once("--seeds", args.seeds, "seed")
    own = args.sweep or args.acn or args.one_bit or args.beta or args.acn_variants
    if not (own or args.scoreboard):
        sv.check_models_fit(ap, args.models, args.n_samples)
    if args.compress and "vae" not in args.models:
        ap.error("--compress codes with the VAE: add vae to --models")
    if not own:
        nets = [m for m in args.models if m in NETWORKS]
        for flag in ("hidden", "steps", "batch"):
            if flag in given and not nets:
                ap.error(f"--{flag} sets the networks' training, and none of --models is a "
                         f"network: add one of {' '.join(n for n in NETWORKS if n in pool)}")
        if "latents" in given and "vae" not in args.models:
            ap.error("--latents sets the VAE's latents: add vae to --models")
    smallest = min(SWEEP_SIZES if args.sweep else SCORE_VAE_SIZES if args.scoreboard
                   else args.acn_sizes or (args.n_samples,)) if not args.one_bit else None
    if args.batch is not None and smallest is not None and args.batch > smallest:
        ap.error(f"--batch {args.batch} is more than the {smallest} training images of this "
                 f"run; give at most {smallest}")
    if args.json is not None:
        ap.output_file("--json", args.json)
    if args.bitstream is not None:
        bad = (args.sweep or args.one_bit or args.choose or (args.acn and (
            len(args.seeds or [0]) > 1 or len(args.acn_sizes) > 1)) or (args.scoreboard and
            "pixel_vae" not in args.models) or (not (args.acn or args.scoreboard) and (
                "vae" not in args.models or args.seeds)))
        if bad:
            ap.error("--bitstream writes one code: a run with vae at one seed, --scoreboard "
                     "with pixel_vae, or --acn at one seed and one --n-samples")
        ap.output_file("--bitstream", args.bitstream)
    if args.bitstream_counted is not None:
        if not (args.scoreboard and "pixel_vae" in args.models):
            ap.error("--bitstream-counted writes the scoreboard's chosen 8-bit VAE: give "
                     "--scoreboard with pixel_vae")
        ap.output_file("--bitstream-counted", args.bitstream_counted)
    args.folder = ap.model_folder(args, nm.model_folder)
    n = max(SWEEP_SIZES) if args.sweep else max((args.n_samples,) + args.acn_sizes)
    kit.check_memory(ap, memory_needed(n, args.n_test, args.hidden, args.latents),
                     "--n-samples or --n-test")
    return args


MERGE_KINDS = ("results", "sweep", "acn", "acn_variants", "beta", "one_bit", "scoreboard")


def merged(kind, runs, config, markdown=False):
    """--merge (kit.merge_runs): the entries and tables of one run from runs split by seed
    (the scoreboard: by model)."""
    payload = {}
    if kind == "results":
        results = sorted((r for p in runs for r in p["results"]), key=lambda r: r["seed"])
        flat = {r["seed"]: {name: flatten(v) for name, v in r["models"].items()} for r in results}
        payload.update(results=results, summary=summarise(flat, config["models"]))
    elif kind == "sweep":
        payload["sweep"] = sorted((r for p in runs for r in p["sweep"]), key=lambda r: r["seed"])
    elif kind == "acn":
        payload["acn"] = {n: by_seed({s: r for p in runs for s, r in p["acn"][n].items()})
                          for n in runs[0]["acn"]}
    elif kind == "beta":
        payload["beta"] = {**runs[0]["beta"], "runs": {
            b: by_seed({s: r for p in runs for s, r in p["beta"]["runs"][b].items()})
            for b in runs[0]["beta"]["runs"]}}
    elif kind == "acn_variants":
        payload["acn_variants"] = {**runs[0]["acn_variants"], "runs": by_seed(
            {s: r for p in runs for s, r in p["acn_variants"]["runs"].items()})}
    elif kind == "one_bit":
        union = lambda get: by_seed({s: r for p in runs for s, r in get(p).items()})
        one_bit = {k: {n: union(lambda p: p["one_bit"]["one_bit"][k][n]) for n in dims}
                   for k, dims in runs[0]["one_bit"]["one_bit"].items()}
        payload["one_bit"] = {"one_bit": one_bit, "collapse": {
            sched: union(lambda p: p["one_bit"]["collapse"][sched])
            for sched in runs[0]["one_bit"]["collapse"]}}
    else:
        rows = {k: r for p in runs for k, r in p["scoreboard"]["rows"].items()}
        config["models"] = [m for m in SCORE_MODELS if m in config["models"]]
        rows = {k: rows[k] for k in score_order() if k in rows}
        payload["scoreboard"] = {**runs[0]["scoreboard"], "rows": rows,
                                 "mdl_choice": mdl_choice(rows)}
    return payload, report({"config": config, **payload}, markdown)


def decode_main(path):
    """--decode: decode a file of --bitstream and check it; 0 when every image is recovered
    and they are the held-out images of the file's seed (in the tour's order for an ACN)."""
    try:
        header, V = coding.read_bitstream(path)
        T = sv.quantise_images(sv.generate_spline_images(header["n_test"], header["seed"],
                                                         stream=1)[0])
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"neural_codes.py: error: {err}", file=sys.stderr)
        return 2
    same = (np.array_equal(np.unique(V, axis=0), np.unique(T, axis=0)) and len(V) == len(T)
            if header["order"] == "tour" else np.array_equal(V, T[:len(V)]))
    if not same:
        print(f"neural_codes.py: error: {path} decodes to images that differ from the held-out "
              f"set of seed {header['seed']}", file=sys.stderr)
        return 2
    print(f"decoded {len(V)} images with the {header['model']} (seed {header['seed']}, "
          f"{header['order']} order): the held-out set, initial bits recovered, file "
          f"{os.path.getsize(path)} bytes")
    return 0


def main(argv=None):
    args = parse_args(argv)
    log = kit.progress_logger(args.quiet)
    if args.decode:
        return decode_main(args.decode)
    if args.merge:
        split = lambda kind: "models" if kind == "scoreboard" else "seeds"
        return kit.merge_runs(args, MERGE_KINDS, lambda kind, runs, config: merged(
            kind, runs, config, args.markdown), log, split)
    kit.warn_long_run(estimate_seconds(args), log)
    t0 = time.perf_counter()
    seeds = args.seeds if args.seeds else [args.seed]
    kw = {"n_latent": args.latents, "hidden": args.hidden, "steps": args.steps,
          "batch": args.batch}
    cfg = {"n_samples": args.n_samples, "n_test": args.n_test, "latents": args.latents,
           "hidden": list(args.hidden), "steps": args.steps, "batch": args.batch,
           "models": list(args.models), "sigma_x": 0.15}
    if args.acn:                  # these runs fix their own recipes: record those instead
        cfg = {"sizes": list(args.acn_sizes), "n_test": args.n_test, "latents": nm.LATENTS,
               "hidden": list(nm.HIDDEN), "neighbours": nm.ACN_NEIGHBOURS,
               "prior_hidden": list(nm.PRIOR_HIDDEN), "fine_tune": nm.ACN_FINE_TUNE,
               "fine_tune_lr": nm.ACN_FINE_TUNE_LR, "coder_mix": nm.ACN_CODER_MIX, "sigma_x": 0.15}
    elif args.beta or args.acn_variants:
        cfg = {"n_samples": args.n_samples, "n_test": args.n_test, "latents": nm.LATENTS,
               "hidden": list(nm.HIDDEN), "sigma_x": 0.15}
        cfg.update({"betas": list(BETAS), "steps": args.steps} if args.beta else
                   {"variants": {k: list(v) for k, v in ACN_VARIANTS.items()},
                    "neighbours": nm.ACN_NEIGHBOURS, "prior_hidden": list(nm.PRIOR_HIDDEN),
                    "fine_tune": nm.ACN_FINE_TUNE, "fine_tune_lr": nm.ACN_FINE_TUNE_LR})
    elif args.choose:
        cfg = {"pixel_rates": list(PIXEL_RATES), "coder_mixes": list(CODER_MIXES),
               "pixel_sizes": list(SCORE_VAE_SIZES), "acn_size": max(ACN_SIZES)}
        if args.choose != list(CHOICES):     # a part of them: its own settings
            cfg = {"choose": args.choose,
                   **({"gumbel_taus": [list(t) for t in GUMBEL_TAUS], "tau_size": TAU_SIZE}
                      if "tau" in args.choose else {}),
                   **({"ar_rates": list(AR_RATES), "ar_size": SCORE_AR_SIZE,
                       "ar_hidden": list(nm.HIDDEN)} if "ar_rate" in args.choose else {})}
    elif args.one_bit:
        cfg = {"dims": list(nm.ONE_BIT_DIMS), "hidden": list(nm.ONE_BIT_HIDDEN),
               "steps": nm.ONE_BIT_STEPS, "draws": nm.ONE_BIT_DRAWS, "lr": list(nm.ONE_BIT_LR),
               "restarts": nm.ONE_BIT_RESTARTS, "eval_draws": nm.ONE_BIT_EVAL,
               "iw_samples": nm.ONE_BIT_IW,
               "collapse_steps": COLLAPSE_STEPS}
    payload = {}
    if args.choose:
        payload["choices"] = run_choices(args.choose, log=log)
    elif args.scoreboard:
        payload["scoreboard"] = run_scoreboard(args.seed, args.models, quiet=args.quiet,
                                               hidden=args.hidden, steps=args.steps,
                                               batch=args.batch, bitstream=args.bitstream,
                                               counted=args.bitstream_counted,
                                               folder=args.folder)
    elif args.one_bit:
        payload["one_bit"] = run_one_bit(seeds, log=log, folder=args.folder)
    elif args.beta:
        payload["beta"] = run_beta(seeds, n_train=args.n_samples, n_test=args.n_test,
                                   steps=args.steps, log=log, folder=args.folder)
    elif args.acn_variants:
        payload["acn_variants"] = run_acn_variants(seeds, args.n_samples, args.n_test, log=log,
                                                   folder=args.folder)
    elif args.acn:
        payload["acn"] = run_acn(seeds, args.acn_sizes, args.n_test, log=log,
                                 bitstream=args.bitstream, folder=args.folder)
    elif args.sweep:
        payload["sweep"] = [{"seed": s, **run_sweep(s, log=log, folder=args.folder, **kw)}
                            for s in seeds]
    else:
        def keep(name, model, data):          # the VAE's code of the held-out set, as a file
            if name == "vae":
                coding.write_vae_code(args.bitstream, model, sv.quantise_images(data[2]),
                                  seeds[0], args.n_test)
        results = {s: run_all(s, args.n_samples, args.models, args.n_test, args.compress, log,
                              on_model=keep if args.bitstream else None, folder=args.folder,
                              workers=2, quiet=args.quiet, **kw) for s in seeds}
        flat = {s: {name: flatten(r) for name, r in res.items()} for s, res in results.items()}
        payload.update(results=[{"seed": s, "models": results[s]} for s in seeds],
                       summary=summarise(flat, args.models))
    print(report({"config": {**cfg, "seeds": seeds}, **payload}, markdown=args.markdown))
    wall = time.perf_counter() - t0
    log(f"done in {wall:.2f} s wall")
    if args.json:
        payload = {"config": {**cfg, "seeds": seeds, "sweep": args.sweep,
                              "scoreboard": args.scoreboard, "acn": args.acn,
                              "one_bit": args.one_bit, "choose": args.choose or False,
                              "beta_sweep": args.beta, "acn_variants": args.acn_variants},
                   "versions": kit.versions(),
                   "wall_seconds": wall, **payload}
        try:
            kit.write_json(args.json, payload)
        except OSError as err:
            print(f"neural_codes.py: error: cannot write {args.json}: {err}", file=sys.stderr)
            return 2
    return 0


def flatten(result):
    """A result's numbers for the summary: lists become their mean (perplexity) or total
    (dead codes); nested dicts are left out."""
    out = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    for tail in ("", "_heldout"):
        if "perplexity" + tail in result:
            out["perplexity_mean" + tail] = float(np.mean(result["perplexity" + tail]))
            out["dead_codes_total" + tail] = int(np.sum(result["dead_codes" + tail]))
    if "alignment" in result:
        out["alignment_score"] = result["alignment"]["score"]
    return out


if __name__ == "__main__":
    sys.exit(kit.run_main(main, "neural_codes.py"))
