"""Static figures of the spline-image VQ comparison, written as PNGs into --outdir.

    python3 visualize_spline_images_factorial_vq.py --seed 0 --outdir viz

Trains the models once with spline_images_factorial_vq.run_comparison (recording F on the
training and held-out sets during training) and draws six figures from them. Every
number shown is a bits-back description length in bits per image unless a label says
otherwise.  --experiments draws the open-question figures from the core's --experiment JSON,
--neural the modern codes' figures from `neural_codes.py --sweep --json`.
"""

import math
import sys
import textwrap
import time

import cli_kit as kit

if __name__ == "__main__":
    kit.quit_on_interrupt("visualize_spline_images_factorial_vq.py")

# first: the module sets its BLAS thread default before anything imports numpy
import spline_images_factorial_vq as sv  # noqa: E402

import compressors  # noqa: E402
import file_container as fc  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DISCRETE = tuple(name for name, spec in sv.MODELS.items() if spec.coded)   # stochastic VQs
COLORS = {"standard_vq": "tab:red", "separate_slices": "tab:orange", "residual_vq": "tab:purple",
          "factorial_vq": "tab:blue", "pca5": "tab:gray", "pca24": "tab:green"}
FIGURES = ("example_splines", "dl_comparison", "dl_trajectory", "factor_codebooks",
           "per_factor_receptive", "factorial_reconstructions")


H, W, GAP = sv.HEIGHT, sv.WIDTH, 1


def mosaic(images):
    """Tile images (R, C, 96) into one (R*9 - 1, C*13 - 1) array, NaN in the gaps.

    One imshow of a mosaic draws a grid of images far faster than one axes per image.
    """
    R, C = images.shape[:2]
    tiles = np.full((R, C, H + GAP, W + GAP), np.nan)
    tiles[:, :, :H, :W] = images.reshape(R, C, H, W)
    return tiles.transpose(0, 2, 1, 3).reshape(R * (H + GAP), C * (W + GAP))[:-GAP, :-GAP]


def show_mosaic(ax, images, row_labels=None, col_labels=None, **kw):
    """Draw images (R, C, 96) as a mosaic on ax; pixel (0, 0) of each tile at its top left."""
    kw.setdefault("cmap", "gray_r")
    cmap = plt.get_cmap(kw.pop("cmap")).with_extremes(bad="white")
    handle = ax.imshow(mosaic(images), cmap=cmap, interpolation="nearest", **kw)
    R, C = images.shape[:2]
    ax.set_xticks(np.arange(C) * (W + GAP) + (W - 1) / 2, col_labels or [])
    ax.set_yticks(np.arange(R) * (H + GAP) + (H - 1) / 2, row_labels or [])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    return handle


def tile_origin(r, c):
    """Data coordinates of pixel (0, 0) of tile (r, c) in a mosaic."""
    return c * (W + GAP), r * (H + GAP)


def label(name, cfg):
    return sv.model_label(name, cfg["n_dims"], cfg["n_units_per_dim"])


def finish(fig, ax, ylabel, title):
    """Label a one-panel figure's y axis, title it and lay it out."""
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- figures


def fig_example_splines(images, controls):
    """16 training images with their 5 control points."""
    fig, ax = plt.subplots(figsize=(8, 5.4))
    show_mosaic(ax, images[:16].reshape(4, 4, -1), vmin=0, vmax=1)
    for i, ctrl in enumerate(controls[:16]):
        x0, y0 = tile_origin(i // 4, i % 4)
        inside = (ctrl >= -0.5) & (ctrl <= H - 0.5)
        ax.plot(x0 + sv.CONTROL_X[inside], y0 + ctrl[inside], "o", color="red", ms=4)
    ax.set_title("16 training images (8×12 pixels) with their 5 control points (red)")
    fig.subplots_adjust(left=0.02, right=0.98, top=0.93, bottom=0.02)
    return fig


def fig_dl_comparison(scores, cfg):
    """Held-out recon + code as stacked bars, each stochastic model beside the hard code of
    its family (hatched), the exact DL* of each generative model as a marker."""
    order = [m for family in sv.HARD_CODES.items() for m in family[::-1]] + ["pca5", "pca24"]
    names = [n for n in order if n in scores]
    recon = np.array([scores[n]["recon"] for n in names])
    code = np.array([scores[n]["code"] for n in names])
    x = np.arange(len(names)) + np.cumsum([n in sv.HARD_CODES.values() or n == "pca5"
                                           for n in names]) * 0.6      # a gap before each family
    fig, ax = plt.subplots(figsize=(11, 5.2))
    hatch = ["//" if n in sv.HARD_CODES else None for n in names]
    ax.bar(x, recon, color="tab:blue", hatch=hatch, edgecolor="white", label="reconstruction")
    ax.bar(x, code, bottom=recon, color="tab:orange", hatch=hatch, edgecolor="white",
           label="code")
    for i, n in enumerate(names):
        total = recon[i] + code[i]
        ax.text(x[i], total + 2, f"{total:.1f}", ha="center", va="bottom", fontweight="bold",
                fontsize=8)
        ax.text(x[i], recon[i] / 2, f"{recon[i]:.1f}", ha="center", color="white", fontsize=7)
        exact = scores[n]["exact"]
        if exact is not None and not n.startswith("pca"):
            ax.plot(x[i] + 0.3, exact, "D", color="black", ms=5,
                    label="exact DL* of the same generative model" if i == 0 else None)
    handles, texts = ax.get_legend_handles_labels()
    handles.append(matplotlib.patches.Patch(facecolor="white", edgecolor="0.3", hatch="//"))
    texts.append("hard code (one code per image)")
    ax.set_xticks(x, [textwrap.fill(label(n, cfg), 13) for n in names], fontsize=7)
    ax.set_ylabel("bits per image")
    ax.set_ylim(0, 1.3 * max(recon + code))
    ax.set_title(f"Description length, held-out, {cfg['n_test']} images, seed {cfg['seed']} "
                 f"(σ_x = {cfg['sigma_x']}): each bits-back model beside the hard code of its "
                 "family", fontsize=10)
    ax.legend(handles, texts, loc="upper center", ncol=4, fontsize=8)
    fig.tight_layout()
    return fig


def fig_dl_trajectory(histories, scores, cfg):
    """F on both sets against training step, and held-out recon vs code."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5.4))
    top = 0.0
    for n in DISCRETE:
        h = histories.get(n)
        if not h or not h["eval_step"]:
            continue
        # the chain has no EM: its Adam steps are drawn where the others' begin
        steps = np.array(h["eval_step"]) + (sv.EM_ITERS if n == "residual_vq" else 0)
        style = dict(color=COLORS[n], ms=4)
        ax.plot(steps, h["heldout"], "-", label=f"{label(n, cfg)}", **style)
        ax.plot(steps, h["train"], "--", **style)
        ax.plot(steps[-1], scores[n]["total"], "*", color=COLORS[n], ms=12, mec="black")
        ax2.plot(steps, h["heldout_recon"], "-", color=COLORS[n], label=label(n, cfg))
        ax2.plot(steps, h["heldout_code"], ":", color=COLORS[n], lw=2)
        top = max(top, max(h["heldout"]))
    for n in ("pca5", "pca24"):
        if n in scores:
            ax.axhline(scores[n]["total"], color=COLORS[n], lw=1, ls="-.",
                       label=f"{label(n, cfg)} (no training curve)")
    for a in (ax, ax2):
        a.axvline(sv.EM_ITERS, color="0.6", lw=0.8)
        a.set_xlabel(f"training step: {sv.EM_ITERS} EM iterations, then Adam steps (full batch)")
    ax.set_ylim(0.6 * min(s["total"] for s in scores.values()), 1.15 * top)
    ax.set_ylabel("bits per image")
    ax.set_title("F during training: held-out (solid), training (dashed);\n"
                 "★ final held-out F", fontsize=10)
    ax2.set_yscale("log")
    ax2.set_ylabel("bits per image (log scale)")
    ax2.set_title("Held-out reconstruction (solid) vs code cost (dotted)", fontsize=10)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8,
               bbox_to_anchor=(0.5, 0.04))
    fig.text(0.5, 0.005, "F uses the mean-field-refined posterior; during the EM it starts from "
             "the one-step posterior of the current codebooks. The residual chain has no EM: "
             "its curve starts at its hard start.", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    return fig


def fig_factor_codebooks(model):
    """Codewords C_d[k] of the factorial model (one row per factor) and the bias image."""
    C, b = model.p["C"], model.p["b"]
    M, K = C.shape[:2]
    prior = sv.softmax(model.p["a"])
    lim = np.abs(C).max()
    width = 1.2 * K                                 # inches of mosaic; height from its aspect
    height = width * (M * (H + GAP) - GAP) / (K * (W + GAP) - GAP)
    fig_w, fig_h = width + 3.4, height + 0.8
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0.9 / fig_w, 0.1 / fig_h, width / fig_w, height / fig_h))
    handle = show_mosaic(ax, C, row_labels=[f"factor {d + 1}" for d in range(M)],
                         col_labels=[f"code {k + 1}" for k in range(K)],
                         cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.xaxis.tick_top()
    for d in range(M):
        for k in range(K):
            x0, y0 = tile_origin(d, k)
            ax.text(x0 + W - 1.4, y0 + H - 1.2, f"π={prior[d, k]:.2f}", fontsize=6,
                    ha="right", va="center")
    fig.colorbar(handle, ax=ax, fraction=0.04, pad=0.02, label="codeword pixel value")
    bias_ax = fig.add_axes(((width + 1.9) / fig_w, 1 - 1.9 / fig_h, 1.3 / fig_w, 0.9 / fig_h))
    show_mosaic(bias_ax, b[None, None], vmin=0, vmax=1)
    bias_ax.set_title("bias b", fontsize=8)
    fig.suptitle(f"Factorial {M}×{K} VQ: the {K} codewords of each factor (blue −, red +) "
                 "and their prior π", fontsize=10, y=0.99)
    return fig


def fig_per_factor_receptive(model, heldout):
    """Per factor: mean and spread over held-out images of its expected contribution."""
    contrib = model.contributions(heldout)                         # (M, N, D)
    M = contrib.shape[0]
    mean, spread = contrib.mean(axis=1), contrib.std(axis=1)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(2.2 * M + 1.5, 4.4))
    lim = np.abs(mean).max()
    names = [f"factor {d + 1}" for d in range(M)]
    h1 = show_mosaic(ax1, mean[None], col_labels=names, cmap="RdBu_r", vmin=-lim, vmax=lim)
    h2 = show_mosaic(ax2, spread[None], col_labels=names, cmap="magma", vmin=0)
    ax1.set_ylabel("mean")
    ax2.set_ylabel("std")
    fig.colorbar(h1, ax=ax1, fraction=0.03, pad=0.02)
    fig.colorbar(h2, ax=ax2, fraction=0.03, pad=0.02)
    fig.suptitle(f"Each factor's contribution Σ_k q_d(k|x) C_d[k] over {len(heldout)} held-out "
                 "images:\nits average (mean) and where it varies (std)", fontsize=9)
    return fig


def fig_reconstructions(models, heldout, cfg, rng, n=8):
    """Held-out originals, each model's expected reconstruction, one sampled factorial code."""
    x = heldout[:n]
    rows = [("original (held-out)", x)]
    for name in ("standard_vq", "separate_slices", "residual_vq", "factorial_vq", "pca5", "pca24"):
        if name in models:
            rows.append((f"{label(name, cfg)}: E[x̂]", models[name].mean_reconstruction(x)))
        if name == "factorial_vq":
            codes, _ = models[name].sample_codes(x, rng)
            rows.append(("factorial VQ: one sampled code", models[name].reconstruct(codes)))
    # size the figure to the mosaic so that no space is left around it
    width, labels, title = 0.95 * n, 2.4, 0.45
    height = width * (len(rows) * (H + GAP) - GAP) / (n * (W + GAP) - GAP)
    fig = plt.figure(figsize=(width + labels + 0.1, height + title + 0.1))
    ax = fig.add_axes((labels / (width + labels + 0.1), 0.1 / (height + title + 0.1),
                       width / (width + labels + 0.1), height / (height + title + 0.1)))
    show_mosaic(ax, np.stack([imgs for _, imgs in rows]), row_labels=[t for t, _ in rows],
                vmin=0, vmax=1)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title(f"{n} held-out images (top row) and their reconstructions, seed {cfg['seed']}",
                 fontsize=10)
    return fig


# ----------------------------------------------------------------------------- open questions


def fig_sweep(sweep, limit, seeds):
    """Held-out F and exact DL* against the factor count (24 codewords) and the code size."""
    fixed = [k for k in sweep if sweep[k]["codewords"] == 24]
    larger = [k for k in sweep if k.startswith("4x")] 
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for ax, keys, xs, xlabel in (
            (ax1, fixed, [int(k.split("x")[0]) for k in fixed],
             "factors M (with K = 24 / M codes each)"),
            (ax2, larger, [sweep[k]["codewords"] for k in larger], "codewords M·K (M = 4)")):
        F = np.array([sweep[k]["heldout_total_mean"] for k in keys])
        sd = np.array([sweep[k]["heldout_total_sd"] for k in keys])
        ax.errorbar(xs, F, yerr=sd, fmt="-o", color=COLORS["factorial_vq"], capsize=3,
                    label="held-out F (refined posterior)")
        ex = [sweep[k]["exact_mean"] for k in keys]
        ax.plot(xs, ex, "D", color="black", ms=5, mfc="none", label="exact DL* of the model")
        for x, k, f in zip(xs, keys, F):
            ax.annotate(k, (x, f), textcoords="offset points", xytext=(0, 8), ha="center",
                        fontsize=8)
        if limit:
            ax.axhline(limit["bits"], color="tab:green", lw=1.5,
                       label=f"limit: true generator, {limit['bits']:.1f} ± {limit['se']:.1f}")
        ax.set_xscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
    if "5x6" in sweep:
        ax2.errorbar([30], [sweep["5x6"]["heldout_total_mean"]], yerr=[sweep["5x6"]["heldout_total_sd"]],
                     fmt="s", color="tab:orange", capsize=3, label="5x6")
    ax1.set_ylabel("bits per image")
    ax1.set_ylim(0, None)
    ax1.legend(fontsize=8, loc="center")
    ax2.legend(fontsize=8, loc="lower right")
    ax1.set_title("Same 24 codewords, split into M factors", fontsize=10)
    ax2.set_title("Bigger codes", fontsize=10)
    fig.suptitle(f"Factorial VQ description length on 2000 held-out images, mean ± sd over seeds "
                 f"{seeds[0]}–{seeds[-1]}", fontsize=11)
    fig.tight_layout()
    return fig


def fig_alignment(alignment):
    """MI heatmaps: factors against control heights and segment mean heights."""
    keys = list(alignment)
    fig, axes = plt.subplots(len(keys), 2, figsize=(11, 2.2 + 1.9 * len(keys)), squeeze=False,
                             gridspec_kw={"width_ratios": (5, 4)})
    top = max(np.max(alignment[k][f]) for k in keys for f in ("mi_controls", "mi_segments"))
    for row, key in enumerate(keys):
        a = alignment[key]
        for col, (field, names) in enumerate((
                ("mi_controls", [f"h{j + 1}" for j in range(sv.N_CONTROL)]),
                ("mi_segments", [f"seg{j + 1}" for j in range(sv.N_CONTROL - 1)]))):
            ax, mi = axes[row, col], np.array(a[field])
            handle = ax.imshow(mi, cmap="viridis", vmin=0, vmax=top, aspect="auto")
            for (i, j), value in np.ndenumerate(mi):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value < 0.6 * top else "black")
            ax.set_xticks(range(len(names)), names)
            ax.set_yticks(range(len(mi)), [f"factor {d + 1}" for d in range(len(mi))])
            score = a["score"] if col == 0 else a["score_segments"]
            what = "control heights" if col == 0 else "segment mean heights"
            ax.set_title(f"{key} VQ vs {what} (score {score:.2f})", fontsize=9)
    fig.subplots_adjust(left=0.09, right=0.84, wspace=0.3, hspace=0.45, top=0.86, bottom=0.07)
    fig.colorbar(handle, ax=axes, shrink=0.8, label="mutual information (bits)")
    fig.suptitle(f"What each factor's code knows about the curve (held-out images, seed "
                 f"{alignment[keys[0]]['seed']}; a height has 3 bits in 8 equal-frequency bins)",
                 fontsize=10)
    return fig


def fig_annealing(annealing, seeds):
    """Final held-out F of every run, per warm-up schedule and initialisation."""
    keys = list(annealing)
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for i, key in enumerate(keys):
        totals = annealing[key]["totals"]
        color = "tab:blue" if "random" not in key else "tab:red"
        ax.plot(np.full(len(totals), i) + np.linspace(-0.12, 0.12, len(totals)), totals, "o",
                color=color, alpha=0.8)
        ax.hlines(np.mean(totals), i - 0.3, i + 0.3, color="black")
        ax.text(i, max(totals) + 0.8, f"poor {annealing[key]['poor_optima']}/"
                f"{annealing[key]['runs']}", ha="center", fontsize=8)
    top = max(max(annealing[k]["totals"]) for k in keys)
    ax.set_ylim(top=top + 2.5)
    ax.set_xticks(range(len(keys)), [k.replace("/", "\n") for k in keys])
    return finish(fig, ax, "held-out F, bits per image",
                  f"Factorial 4×6 VQ: warm-up schedule and codebook start, one dot per seed "
                  f"({seeds[0]}–{seeds[-1]}), bar = mean")


def fig_training(training, seeds):
    """Held-out F of the factorial 4x6 VQ after each step of the training recipe, one line
    per seed, against the hard code of the same seed."""
    keys = [key for key, _ in sv.RECIPE_STEPS]
    fig, ax = plt.subplots(figsize=(10, 4.6))
    x = np.arange(len(keys))
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(seeds)))
    for j, (seed, color) in enumerate(zip(seeds, colors)):
        ax.plot(x, [training[k]["totals"][j] for k in keys], "-o", color=color, ms=4,
                label=f"seed {seed}")
        ax.hlines(training["hard_code"]["totals"][j], -0.35, len(keys) - 0.65, color=color,
                  ls=":", lw=1)
    ax.plot([], [], ":", color="0.3", label="hard code of the seed")
    ax.set_xticks(x, [textwrap.fill(text, 22) for _, text in sv.RECIPE_STEPS], fontsize=8)
    ax.set_ylabel("held-out F, bits per image")
    ax.set_title("Factorial 4×6 VQ trained by the recipe built up step by step, held-out "
                 "(each line a seed; dotted: that seed's hard code)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def fig_data_movement(movement, seeds):
    """DMC to train against final held-out F, one point per model (mean ± sd over seeds)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, v in movement.items():
        x = v["dmc_to_train_mean"]
        ax.errorbar(x, v["heldout_mean"], xerr=v["dmc_to_train_sd"], yerr=v["heldout_sd"],
                    fmt="o", color=COLORS[name], ms=8, capsize=3)
        ax.annotate(sv.model_label(name, 4, 6), (x, v["heldout_mean"]), fontsize=8,
                    xytext=(6, 6), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("DMC to train (sum of sqrt LRU stack distance over element reads)")
    return finish(fig, ax, "final held-out F, bits per image",
                  f"Data movement of training against description length, mean ± sd over "
                  f"seeds {seeds[0]}–{seeds[-1]}")


# ----------------------------------------------------------------------------- modern codes
#
# Drawn from the --json file of `neural_codes.py --sweep`: a list of seeds, each with
# "sizes", "models": {name: {str(N): result}} and the generator's "limit".

DIFF_LINEAR = 20               # bits: dl_vs_sigma.png's right panel is linear within this


def fig_dl_vs_sigma(v, seeds):
    """Held-out total F of every 1994 model against sigma_x (mean ± sd over the seeds), and
    each model's difference from the factorial VQ, so that the crossings show."""
    sigmas, names = v["sigmas"], v["models"]
    keys = [f"{s:g}" for s in sigmas]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12.5, 4.8))
    base = np.array([v["table"][k]["factorial_vq"]["total_mean"] for k in keys])
    for name in names:
        F = np.array([v["table"][k][name]["total_mean"] for k in keys])
        sd = np.array([v["table"][k][name]["total_sd"] for k in keys])
        text = label(name, {"n_dims": 4, "n_units_per_dim": 6})
        ax1.errorbar(sigmas, F, yerr=sd, fmt="-o", ms=4, color=COLORS[name], capsize=2,
                     label=text)
        ax2.plot(sigmas, F - base, "-o", ms=4, color=COLORS[name], label=text)
    for ax in (ax1, ax2):
        ax.axvline(v["paper_sigma"], color="black", lw=1, ls=":")
        ax.set_xscale("log")
        ticks = [s for i, s in enumerate(sigmas)          # labels at least 12% apart
                 if i == 0 or s == v["paper_sigma"] or s / sigmas[i - 1] > 1.12
                 and abs(math.log(s / v["paper_sigma"])) > 0.1]
        ax.set_xticks(ticks, [f"{s:g}" for s in ticks], fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("sigma_x (pixel noise std, images in [0, 1])")
    ax1.set_yscale("log")
    yticks = [t for t in (20, 30, 50, 100, 200, 300, 500, 1000)
              if ax1.get_ylim()[0] <= t <= ax1.get_ylim()[1]]
    ax1.set_yticks(yticks, [str(t) for t in yticks])
    ax1.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax1.set_ylabel("held-out F, bits per image (log scale)")
    ax1.set_title("Total description length", fontsize=10)
    ax1.annotate(f"nearest the paper: {v['paper_sigma']:g}", (v["paper_sigma"], ax1.get_ylim()[1]),
                 xytext=(4, -12), textcoords="offset points", fontsize=8)
    ax2.axhline(0, color="black", lw=0.8)
    ax2.set_yscale("symlog", linthresh=DIFF_LINEAR)       # every point shows, none is cut
    diffs = [v["table"][k][n]["total_mean"] - v["table"][k]["factorial_vq"]["total_mean"]
             for k in keys for n in names]
    yticks = [t for t in (-500, -200, -100, -50, -20, -10, 0, 10, 20, 50, 100, 200, 500)
              if min(diffs) * 1.3 <= t <= max(diffs) * 1.3]
    ax2.set_yticks(yticks, [f"{t:+d}" if t else "0" for t in yticks])
    ax2.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax2.set_ylabel(f"held-out F minus factorial VQ's, bits per image\n(linear within "
                   f"±{DIFF_LINEAR}, logarithmic beyond)")
    ax2.set_title("Against the factorial VQ (above 0: worse)", fontsize=10)
    ax2.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"The 1994 comparison depends on sigma_x: 2000 held-out images, mean over seeds "
                 f"{seeds[0]}–{seeds[-1]} (error bars: ± 1 sd over the seeds)", fontsize=11)
    fig.tight_layout()
    return fig


NEURAL_COLORS = {"vae": "tab:purple", "vq_vae_4x6": "tab:orange", "vq_vae_4x64": "tab:brown",
                 "vq_vae_residual_4x6": "tab:pink", "factorial_vq": COLORS["factorial_vq"],
                 "pca24": COLORS["pca24"]}


def fig_dl_vs_training_size(sweeps):
    """Held-out total F of every model against the number of training images (mean ± sd over
    the seeds in the file), the VAE's importance-weighted bound dashed, the limit a line."""
    import neural_codes as nc
    sizes = sweeps[0]["sizes"]
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for name in sweeps[0]["models"]:
        F = np.array([[s["models"][name][str(n)]["total"] for n in sizes] for s in sweeps])
        ax.errorbar(sizes, F.mean(axis=0), yerr=F.std(axis=0, ddof=1) if len(F) > 1 else None,
                    fmt="-o", color=NEURAL_COLORS.get(name), capsize=3, label=nc.label(name))
        if name == "vae":
            iw = np.array([[s["models"][name][str(n)]["iw_bound"] for n in sizes]
                           for s in sweeps]).mean(axis=0)
            ax.plot(sizes, iw, "--", color=NEURAL_COLORS["vae"], lw=1,
                    label="Gaussian VAE, importance-weighted bound")
    limit = np.mean([s["limit"] for s in sweeps])
    ax.axhline(limit, color="black", lw=1, ls=":",
               label=f"limit: the true generator, {limit:.1f}")
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_ylim(0, None)
    ax.set_xlabel("training images N")
    ax.set_ylabel("held-out F, bits per image")
    seeds = [s["seed"] for s in sweeps]
    ax.set_title(f"Description length of 2000 held-out images against training-set size "
                 f"(seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fig_vae_traversals(result, n_train, seed):
    """Decoded images as each VAE latent runs over -2..2 prior sds, the others at 0."""
    import neural_models as nm
    images = np.array(result["traversals"])
    L = len(images)
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.75 * L))
    show_mosaic(ax, images, [f"z{l + 1}" for l in range(L)],
                [f"{v:+g}" for v in nm.TRAVERSAL], vmin=0, vmax=1)
    ax.set_xlabel("value of the latent (prior standard deviations); the other latents at 0")
    ax.set_title(f"Gaussian VAE decoder, one latent at a time ({n_train} training images, "
                 f"seed {seed}; {result['active_latents']} active latents)", fontsize=10)
    fig.tight_layout()
    return fig


def fig_vae_pictures(models, n_train, seed):
    """The Gaussian VAE's samples from the prior, its interpolations between held-out images,
    and held-out reconstructions beside the 1994 models' (those among `models`)."""
    p = models["vae"]["pictures"]
    samples, paths = np.array(p["samples"]), np.array(p["interpolations"])
    rows = [("held-out", p["heldout"]), ("Gaussian VAE", p["reconstructions"])]
    rows += [(label(n, {"n_dims": 4, "n_units_per_dim": 6}), models[n]["reconstructions"])
             for n in ("factorial_vq", "pca24") if "reconstructions" in models.get(n, {})]
    fig = plt.figure(figsize=(13, 6.2))
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.1])
    ax = fig.add_subplot(grid[0, 0])
    show_mosaic(ax, samples.reshape(2, -1, sv.D), vmin=0, vmax=1)
    ax.set_title("samples: codes drawn from the prior N(0, I), decoded", fontsize=10)
    ax = fig.add_subplot(grid[0, 1])
    show_mosaic(ax, paths, [f"pair {i + 1}" for i in range(len(paths))],
                ["start"] + [""] * (paths.shape[1] - 2) + ["end"], vmin=0, vmax=1)
    ax.set_title("interpolations: linear between two held-out images' posterior means",
                 fontsize=10)
    ax = fig.add_subplot(grid[1, :])
    show_mosaic(ax, np.array([r for _, r in rows]), [name for name, _ in rows], vmin=0, vmax=1)
    ax.set_title("held-out images and their reconstructions (VAE: decoded posterior mean; "
                 "1994 models: expected reconstruction)", fontsize=10)
    fig.suptitle(f"Gaussian VAE ({models['vae']['n_params']:,} parameters), N = {n_train} "
                 f"training images, seed {seed}; held-out images", fontsize=10)
    fig.tight_layout()
    return fig


def fig_vq_vae(models, n_train, seed):
    """The VQ-VAEs (EMA and codebook-loss codebooks): validation curves of recon,
    commitment and codes in use against Adam steps; each codebook's code use on the
    held-out images; held-out reconstructions beside the Gumbel VQ-VAE's (decoded
    posterior mode) and the factorial VQ's, where the run has them."""
    import neural_codes as nc
    vq = [n for n in models if n in nc.VQ_VARIANTS and "curves" in models[n]]
    fig = plt.figure(figsize=(14, 8.5))
    grid = fig.add_gridspec(3, 3, height_ratios=[1, 1, 1.1])
    for col, (key, text) in enumerate((("recon", "recon term (bits per image, log scale)"),
                                       ("commitment", "commitment ||e - z_q||^2 (log scale)"),
                                       ("perplexity", "codes in use: perplexity / K"))):
        ax = fig.add_subplot(grid[0, col])
        for name in vq:
            c = models[name]["curves"]
            K = nc.VQ_VARIANTS[name][2] if key == "perplexity" else 1
            ax.plot(c["step"], np.array(c[key]) / K, label=nc.LABELS[name])
        ax.set_yscale("linear" if key == "perplexity" else "log")
        ax.set_xlabel("Adam steps")
        ax.set_ylabel(text)
        ax.set_title(f"validation images: {key}", fontsize=10)
        ax.grid(alpha=0.3)
        if col == 0:
            ax.legend(fontsize=7)
    gumbel = [n for n in models if n in nc.GUMBEL_VARIANTS and "usage_heldout" in models[n]]
    few = [n for n in vq if nc.VQ_VARIANTS[n][2] <= 16] + gumbel      # the bars stay legible
    for col, name in enumerate(few[:3]):
        ax = fig.add_subplot(grid[1, col])
        use = np.array(models[name]["usage_heldout"], dtype=float)           # (M, K)
        M, K = use.shape
        width = 0.8 / M
        for m in range(M):
            ax.bar(np.arange(K) + (m - (M - 1) / 2) * width, use[m] / use[m].sum(), width,
                   label=f"codebook {m + 1}")
        ax.set_xticks(range(K)) if K <= 16 else None
        ax.set_xlabel("code")
        ax.set_ylabel("fraction of held-out images" if name in vq else
                      "mean posterior, held-out")
        ax.set_title(f"{nc.LABELS[name]}: code use, held-out", fontsize=10)
        ax.legend(fontsize=7)
    rows = [("held-out", None)] + [(nc.LABELS[n], models[n]["reconstructions"]) for n in vq]
    rows += [(nc.LABELS[n], models[n]["reconstructions"]) for n in nc.GUMBEL_VARIANTS
             if "reconstructions" in models.get(n, {})]
    rows += [(label(n, {"n_dims": 4, "n_units_per_dim": 6}), models[n]["reconstructions"])
             for n in ("factorial_vq",) if "reconstructions" in models.get(n, {})]
    images = [r for _, r in rows[1:]]
    heldout = sv.generate_spline_images(len(images[0]), seed, stream=1)[0]
    ax = fig.add_subplot(grid[2, :])
    show_mosaic(ax, np.array([heldout] + images), [name for name, _ in rows], vmin=0, vmax=1)
    ax.set_title("held-out images and their reconstructions (VQ-VAEs: the decoded code; "
                 "Gumbel: its posterior mode's; factorial VQ: the expected reconstruction)",
                 fontsize=10)
    fig.suptitle(f"VQ-VAEs, N = {n_train} training images, seed {seed}", fontsize=10)
    fig.tight_layout()
    return fig


def fig_acn_daydream(result, n_train, seed):
    """The ACN's daydreams from held-out starts: each row a start and the images the prior's
    mean code (left panel) or a draw from the prior (right panel) decodes to, step by step."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 1.0 + 0.42 * len(result["daydream"]["mean"])))
    for ax, mode, text in zip(axes, ("mean", "sample"), ("the prior's mean code",
                                                         "a draw from the prior")):
        images = np.array(result["daydream"][mode])                       # (starts, steps, 96)
        show_mosaic(ax, images, [f"start {i + 1}" for i in range(len(images))],
                    ["start"] + [str(t) for t in range(1, images.shape[1])], vmin=0, vmax=1)
        ax.set_xlabel("daydream step (0: a held-out image)")
        ax.set_title(f"next image from {text}", fontsize=10)
    fig.suptitle(f"ACN daydreams: encode, hand the code to the prior network as the "
                 f"neighbour's, decode, repeat (N = {n_train} training images, seed {seed})",
                 fontsize=10)
    fig.tight_layout()
    return fig


def fig_acn_curves(result, n_train, seed):
    """Validation F of the VAE and of the ACN fine-tuned from it, against Adam steps."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    vae, acn = result["curves"]["vae"], result["curves"]["acn"]
    ax.plot(vae["step"], vae["val"], "-", color="tab:blue", label="Gaussian VAE (i.i.d. prior)")
    ax.plot(np.array(acn["step"]) + vae["step"][-1], acn["val"], "-", color="tab:red",
            label="ACN, fine-tuned from the VAE (images in tour order)")
    ax.set_xlabel("Adam steps (the ACN's after the VAE's)")
    ax.set_ylabel("validation F (bits per image)")
    top = np.percentile(np.concatenate([vae["val"], acn["val"]]), 95)
    ax.set_ylim(min(min(vae["val"]), min(acn["val"])) - 1, top)
    ax.set_title(f"Training curves on validation images, N = {n_train} training images, "
                 f"seed {seed}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def fig_beta(beta):
    """The beta sweep on held-out images: rate against distortion (each seed a dot, the
    means joined, lines of equal F dashed), alignment and MIG against beta, and what beta
    costs in F against beta = 1 (mean ± sd over seeds)."""
    runs = beta["runs"]
    betas = [float(b) for b in runs]
    get = lambda key: np.array([[r[key] for r in by.values()] for by in runs.values()])
    recon, kl, F = get("recon"), get("kl"), get("F")
    seeds = ", ".join(next(iter(runs.values())))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(betas)))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    ax = axes[0]
    for b, c, r, k in zip(betas, colors, recon, kl):
        ax.plot(k, r, "o", color=c, alpha=0.4, ms=4)
        ax.plot(k.mean(), r.mean(), "o", color=c, ms=8, label=f"beta {b:g}")
    ax.plot(kl.mean(axis=1), recon.mean(axis=1), "-", color="0.4", lw=1)
    lo, hi = ax.get_xlim()
    for f in np.percentile(F, [5, 50, 95]):        # lines of equal F: recon + KL = f
        ax.plot([lo, hi], [f - lo, f - hi], "--", color="0.7", lw=0.8)
        x = min(hi, f - recon.min() - 2) - 0.3
        ax.text(x, f - x, f"F = {f:.0f}", fontsize=7, color="0.5", ha="right", va="bottom")
    ax.set_xlim(lo, hi)
    ax.set_ylim(recon.min() - 2, recon.max() + 2)
    ax.set_xlabel("rate: KL(q(z|x) || N(0, I)) (bits per image)")
    ax.set_ylabel("distortion: recon term (bits per image)")
    ax.set_title("rate against distortion (dashed: equal F)", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    for key, text, m in (("alignment", "alignment score", "o-"), ("mig", "MIG", "s-")):
        v = get(key)
        ax.errorbar(betas, v.mean(axis=1), yerr=v.std(axis=1, ddof=1) if v.shape[1] > 1
                    else None, fmt=m, capsize=3, label=text)
    ax.set_xscale("log", base=2)
    ax.set_xticks(betas, [f"{b:g}" for b in betas])
    ax.set_ylim(0, 1)
    ax.set_xlabel("beta (the KL's weight in training)")
    ax.set_ylabel("score (1: each control height in one latent)")
    ax.set_title("disentanglement against beta", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[2]
    if "1" in runs:
        cost = F - F[betas.index(1.0)]
        ax.errorbar(betas, cost.mean(axis=1), yerr=cost.std(axis=1, ddof=1)
                    if cost.shape[1] > 1 else None, fmt="o-", capsize=3, color="tab:red")
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_ylabel("F - F(beta 1) (bits per image, paired by seed)")
    else:
        ax.errorbar(betas, F.mean(axis=1), fmt="o-", color="tab:red")
        ax.set_ylabel("F (bits per image)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(betas, [f"{b:g}" for b in betas])
    ax.set_xlabel("beta (the KL's weight in training)")
    ax.set_title("what beta costs in the valid F", fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"The beta-VAE on held-out images (N = {beta['n_train']} training images, "
                 f"{beta['n_test']} held-out; seeds {seeds}; error bars ± 1 sd over seeds)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def fig_acn_variants(result):
    """Bits per held-out image sent as a set: the VAE and every ACN variant, each seed a
    dot, the bar their mean."""
    import neural_codes as nc
    runs = result["runs"]
    names = ["vae"] + list(nc.ACN_VARIANTS)
    v = np.array([[runs[s][n]["set"] for s in runs] for n in names])
    labels = ["Gaussian VAE\n(i.i.d. prior)"] + [
        f"ACN {nc.VARIANT_LABELS[a]},\n{'each neighbour once' if r == 'once' else 'with repetition'}"
        for a, r in nc.ACN_VARIANTS.values()]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar(range(len(names)), v.mean(axis=1), color=["tab:blue"] + ["tab:red"] * (len(names) - 1),
           alpha=0.5)
    x = np.arange(len(names))
    ax.plot(x, v, "-", color="0.6", lw=0.7)                  # each seed across the codes
    ax.plot(np.repeat(x[:, None], v.shape[1], axis=1), v, "k.", ms=6)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(v.min() - 3, v.max() + 2)
    ax.set_ylabel("bits per held-out image, sent as a set")
    ax.set_title(f"The ACN's neighbour rule and start against the VAE, N = {result['n_train']} "
                 f"training images, {result['n_test']} held-out images sent\nbars: the mean; "
                 f"dots joined by grey lines: each of seeds {', '.join(runs)}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _runs(data, kind, of):
    """data[kind]["runs"], checked to be a non-empty object, beside whole n_train, n_test."""
    result = data[kind]
    runs = result.get("runs") if isinstance(result, dict) else None
    if not isinstance(runs, dict) or not runs:
        raise ValueError(f"{kind}.runs must be a non-empty object of {of}")
    _check_terms(result, {"n_train": "int", "n_test": "int"}, kind)
    return runs


def check_beta(data):
    """The beta sweep's JSON, checked: every beta holds the same seeds and its terms."""
    runs = _runs(data, "beta", "betas")
    first = next(iter(runs))
    for b, by in runs.items():
        try:
            if not float(b) > 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"beta.runs.{b} is not a positive beta") from None
        if not isinstance(by, dict) or not by or list(by) != list(runs[first]):
            raise ValueError(f"beta.runs.{b} must hold the same seeds as beta.runs.{first}")
        for seed, r in by.items():
            _check_terms(r, {k: "number" for k in ("recon", "kl", "F", "alignment", "mig")},
                         f"beta.runs.{b}.{seed}")
    return data


def check_acn_variants(data):
    """The ACN variants' JSON, checked: every seed holds the VAE and every variant."""
    import neural_codes as nc
    runs = _runs(data, "acn_variants", "seeds")
    for seed, r in runs.items():
        for name in ["vae", *nc.ACN_VARIANTS]:
            _check_terms(r.get(name) if isinstance(r, dict) else None, {"set": "number"},
                         f"acn_variants.runs.{seed}.{name}")
    return data


def read_neural(path):
    """The sweep JSON of neural_codes.py at path, checked; ValueError names the first problem."""
    import json
    with open(path) as f:
        try:
            data = json.load(f)
        except ValueError as err:
            raise ValueError(f"not valid JSON ({err})") from None
    if isinstance(data, dict) and "one_bit" in data:
        return check_one_bit(data)
    if isinstance(data, dict) and "beta" in data:
        return check_beta(data)
    if isinstance(data, dict) and "acn_variants" in data:
        return check_acn_variants(data)
    if isinstance(data, dict) and "acn" in data:
        return check_acn(data)
    if isinstance(data, dict) and "scoreboard" in data:
        return check_scoreboard(data)
    if isinstance(data, dict) and isinstance(data.get("results"), list) and data["results"]:
        first = data["results"][0].get("models", {}) if isinstance(data["results"][0], dict) \
            else {}
        pictures = first.get("vae", {}).get("pictures") if isinstance(first, dict) else None
        import neural_codes as nc
        curves = [r for name, r in first.items() if name in nc.VQ_VARIANTS
                  and isinstance(r, dict) and "usage_heldout" in r]
        if not isinstance(pictures, dict) and curves:
            for r in curves:
                _check(r.get("reconstructions"), [NUMBERS(sv.D), None], "reconstructions")
                _check(r.get("usage_heldout"), [NUMBERS(), None], "usage_heldout")
                _check_terms(r.get("curves"), {k: NUMBERS() for k in (
                    "step", "recon", "commitment", "perplexity")}, "curves")
            return data
        if not isinstance(pictures, dict):
            raise ValueError("a run's results draw only with the VAE's pictures (neural_codes.py "
                             "with vae among --models) or the VQ-VAEs' curves (with a VQ-VAE)")
        for key in ("samples", "reconstructions", "heldout"):
            _check(pictures.get(key), [NUMBERS(sv.D), None], f"vae.pictures.{key}")
        _check(pictures.get("interpolations"), [[NUMBERS(sv.D), None], None],
               "vae.pictures.interpolations")
        return data
    sweeps = data.get("sweep") if isinstance(data, dict) else None
    if not isinstance(sweeps, list) or not sweeps:
        raise ValueError("it holds no training-size sweep, ACN run, one-bit run or scoreboard "
                         "(run neural_codes.py --sweep, --acn, --one-bit or --scoreboard with "
                         "--json)")
    for i, s in enumerate(sweeps):
        where = f"sweep[{i}]"
        if not isinstance(s, dict) or not isinstance(s.get("models"), dict) or not s["models"]:
            raise ValueError(f"{where} must be an object with a non-empty models object")
        _check(s.get("seed"), "int", f"{where}.seed")
        _check(s.get("sizes"), ["int", None], f"{where}.sizes")
        _check(s.get("limit"), "number", f"{where}.limit")
        if s["sizes"] != sweeps[0]["sizes"] or list(s["models"]) != list(sweeps[0]["models"]):
            raise ValueError(f"{where} has other sizes or models than sweep[0]")
        for name, runs in s["models"].items():
            for n in s["sizes"]:
                r = runs.get(str(n)) if isinstance(runs, dict) else None
                if not isinstance(r, dict):
                    raise ValueError(f"{where}.models.{name} lacks N = {n}")
                _check(r.get("total"), "number", f"{where}.models.{name}.{n}.total")
                if name == "vae":
                    _check(r.get("iw_bound"), "number", f"{where}.models.vae.{n}.iw_bound")
                    _check(r.get("active_latents"), "int",
                           f"{where}.models.vae.{n}.active_latents")
                    _check(r.get("traversals"), [[NUMBERS(sv.D), None], None],
                           f"{where}.models.vae.{n}.traversals")
    return data


def check_one_bit(data):
    """The one-bit JSON, checked: both models, the same ndims and seeds throughout."""
    one = data["one_bit"].get("one_bit") if isinstance(data["one_bit"], dict) else None
    if not isinstance(one, dict) or sorted(one) != ["1", "2"]:
        raise ValueError("one_bit.one_bit must hold the models 1 and 2 (stochastic layers)")
    dims = list(one["1"]) if isinstance(one["1"], dict) else []
    for k, runs in one.items():
        if not isinstance(runs, dict) or list(runs) != dims or not dims:
            raise ValueError(f"one_bit.one_bit.{k} must hold the same ndims as model 1")
        for n, seeds in runs.items():
            if not isinstance(seeds, dict) or not seeds:
                raise ValueError(f"one_bit.one_bit.{k}.{n} must hold at least one seed")
            first = one["1"][dims[0]]
            if list(seeds) != list(first):
                raise ValueError(f"one_bit.one_bit.{k}.{n} must hold the same seeds as "
                                 f"one_bit.one_bit.1.{dims[0]} ({', '.join(first)})")
            for seed, r in seeds.items():
                _check_terms(r, {t: "number" for t in ("loss", "recon", "code")},
                             f"one_bit.one_bit.{k}.{n}.{seed}")
    return data


def check_scoreboard(data):
    """The scoreboard JSON, checked for what fig_scoreboard draws; ValueError otherwise."""
    board = data["scoreboard"]
    if not isinstance(board, dict) or not isinstance(board.get("rows"), dict) or not board["rows"]:
        raise ValueError("scoreboard.rows must be a non-empty object")
    for key, r in board["rows"].items():
        vae = key.startswith("pixel_vae")
        if not vae and key not in COLORS:
            raise ValueError(f"scoreboard.rows.{key} is not a model the figure knows")
        _check_terms(r, {"actual_bits": "number", ("n_train" if vae else "sigma_x"): "number"},
                     f"scoreboard.rows.{key}")
        if "actual_bits_sd" in r:
            _check(r["actual_bits_sd"], "sd", f"scoreboard.rows.{key}.actual_bits_sd")
        if "lzma_by_images" in board:
            _check_terms(r, {"model_bits": "number", "model_actual_bits": "number"},
                         f"scoreboard.rows.{key}")
    if "lzma_by_images" in board:
        sent = board["lzma_by_images"]
        if not isinstance(sent, dict) or not sent or not all(k.isdigit() for k in sent):
            raise ValueError("scoreboard.lzma_by_images must map image counts to bits")
        _check_terms(sent, {k: "number" for k in sent}, "scoreboard.lzma_by_images")
    b = board.get("baselines")
    _check_terms(b, {n: "number" for n in compressors.COMPRESSORS}, "scoreboard.baselines")
    if not isinstance(b.get("layout"), dict) or set(b["layout"]) != set(compressors.COMPRESSORS):
        raise ValueError("scoreboard.baselines.layout must name each compressor's layout")
    _check_terms(board.get("limit"), {"bits": "number", "se": "sd"}, "scoreboard.limit")
    _check(board.get("n_test"), "int", "scoreboard.n_test")
    _check(board.get("seed"), "int", "scoreboard.seed")
    return data


def check_acn(data):
    """The ACN JSON, checked: every size holds the same seeds and the four order rows."""
    acn = data["acn"]
    if not isinstance(acn, dict) or not acn:
        raise ValueError("acn must be an object of training-set sizes")
    first = next(iter(acn))
    for n, seeds in acn.items():
        if not isinstance(seeds, dict) or not seeds:
            raise ValueError(f"acn.{n} must hold at least one seed")
        if list(seeds) != list(acn[first]):
            raise ValueError(f"acn.{n} must hold the same seeds as acn.{first} "
                             f"({', '.join(acn[first])})")
        for seed, r in seeds.items():
            _check_terms(r, {k: "number" for k in ("vae", "vae_set", "acn_set", "acn_ordered")},
                         f"acn.{n}.{seed}")
    return data


def fig_one_bit(one):
    """Loss, recon and KL of both one-bit VAEs against ndims (mean over seeds, the bars
    their range), beside the data's entropy of 1 bit."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    dims = [int(n) for n in one["1"]]
    for k, colour in (("1", "tab:blue"), ("2", "tab:red")):
        for ax, term in zip(axes, ("loss", "recon", "code")):
            v = np.array([[r[term] for r in one[k][str(n)].values()] for n in dims])
            m = v.mean(axis=1)
            ax.errorbar(dims, m, yerr=[m - v.min(axis=1), v.max(axis=1) - m], fmt="-o",
                        color=colour, capsize=3, label=f"{'one' if k == '1' else 'two'}-layer VAE")
    seeds = ", ".join(next(iter(one["1"].values())))
    titles = {"loss": "loss (-ELBO)", "recon": "reconstruction", "code": "KL (code)"}
    for ax, term in zip(axes, ("loss", "recon", "code")):
        ax.axhline(1.0, color="black", lw=1, ls=":", label="1 bit: the data's entropy")
        ax.set_xscale("log")
        ax.set_ylim(0, None)
        ax.set_xticks(dims, [str(n) for n in dims])
        ax.minorticks_off()
        ax.set_xlabel("ndims (independent Bernoulli outputs)")
        ax.set_ylabel("bits per data point")
        ax.set_title(titles[term], fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"The one-bit VAE: two data points, one Gaussian latent (training set = the "
                 f"two points; mean over seeds {seeds}, bars the range)", fontsize=10)
    fig.tight_layout()
    return fig


def fig_one_bit_posteriors(one):
    """For trained one-bit VAEs at the largest ndims of the run (the first seed's): the
    decoder's exact posterior of the first latent beside the VAE's q, for both data points
    and both models, with the gap KL(q || p(z|x)) of each model over the seeds."""
    dims = [n for n in one["1"] if "posterior" in next(iter(one["1"][n].values()))]
    fig, axes = plt.subplots(len(dims), 2, figsize=(12, 3.6 * len(dims)), squeeze=False)
    for row, n in zip(axes, dims):
        for ax, k in zip(row, ("1", "2")):
            seed, r = next(iter(one[k][n].items()))
            post = r["posterior"]
            for i, (colour, point) in enumerate((("tab:blue", "all zeros"),
                                                 ("tab:orange", "all ones"))):
                ax.plot(post["z"], post["exact"][i], "-", color=colour, lw=2,
                        label=f"p(z|x), x = {point}")
                ax.plot(post["z"], post["q"][i], "--", color=colour, lw=1.5,
                        label=f"q(z|x), x = {point}")
            gaps = [v["gap"] for v in one[k][n].values()]
            name = "one-layer: z" if k == "1" else "two-layer: z1"
            ax.set_title(f"{name}, ndims {n}, seed {seed}: gap KL(q || p(z|x)) "
                         f"{np.mean(gaps):.2f} bits (mean over {len(gaps)} seeds)", fontsize=9)
            ax.set_xlabel("latent value")
            ax.set_ylabel("density")
            ax.legend(fontsize=7)
    fig.suptitle("The one-bit VAE's posteriors: the trained decoder's exact posterior "
                 "(solid, on a grid) against the encoder's Gaussian q (dashed)", fontsize=10)
    fig.tight_layout()
    return fig


def fig_acn(acn):
    """The four order rows at each training-set size, mean ± sd over seeds."""
    rows = (("vae", "VAE, order given"), ("vae_set", "VAE as a set"),
            ("acn_set", "ACN tour, as a set"), ("acn_ordered", "ACN, order given"))
    sizes = list(acn)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(rows)
    for i, (key, name) in enumerate(rows):
        v = np.array([[r[key] for r in acn[n].values()] for n in sizes])
        ax.bar(np.arange(len(sizes)) + (i - 1.5) * width, v.mean(axis=1), width,
               yerr=v.std(axis=1, ddof=1) if v.shape[1] > 1 else None, capsize=3, label=name)
    ax.set_xticks(range(len(sizes)), [f"N = {n} training images" for n in sizes])
    ax.set_ylabel("bits per held-out image")
    seeds = ", ".join(acn[sizes[0]])
    ax.set_title(f"ACN against the Gaussian VAE, 2000 held-out images sent: mean over seeds "
                 f"{seeds}, error bars ± 1 sd over the seeds", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


SCORE_COLORS = {"pixel_vae": "tab:olive", "compressor": "white"}      # compressors hatched


def vae_label(r):
    """An 8-bit VAE row's name: its widths, and its decoder if autoregressive."""
    return (f"8-bit VAE {'-'.join(map(str, r.get('hidden', [])))}"
            + (", autoregressive" if r.get("autoregressive") else ""))


def fig_scoreboard(board):
    """Actual bits per held-out 8-bit image of every code (mean over the coder's initial
    bits, ± their sd), the compressors beside them, lzma's and the generator's lines."""
    rows = []
    for key, r in board["rows"].items():
        vae = key.startswith("pixel_vae")
        text = (f"{vae_label(r)}, N = {r['n_train']}" if vae else
                f"{sv.model_label(key, 4, 6)}, σ_x = {r['sigma_x']:g}")
        rows.append((text, r["actual_bits"], r.get("actual_bits_sd", 0.0),
                     SCORE_COLORS["pixel_vae"] if vae else COLORS[key]))
    b = board["baselines"]
    rows += [(f"{n} ({b['layout'][n]} layout)", b[n], 0.0, SCORE_COLORS["compressor"])
             for n in compressors.COMPRESSORS]
    rows.sort(key=lambda r: r[1])
    fig, ax = plt.subplots(figsize=(9, 5.2))
    y = np.arange(len(rows))
    ax.barh(y, [r[1] for r in rows], xerr=[r[2] for r in rows], color=[r[3] for r in rows],
            hatch=["//" if r[3] == SCORE_COLORS["compressor"] else None for r in rows],
            edgecolor="0.3", capsize=2)
    for i, (_, bits, _, _) in enumerate(rows):
        ax.text(bits + 4, i, f"{bits:.1f}", va="center", fontsize=8)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(b["lzma"], color="black", ls="--", lw=1, label=f"lzma, {b['lzma']:.1f}")
    lim = board["limit"]
    ax.axvspan(lim["bits"] - lim["se"], lim["bits"] + lim["se"], color="tab:green", alpha=0.4)
    ax.axvline(lim["bits"], color="tab:green", lw=1.5,
               label=f"the true generator, {lim['bits']:.1f} ± {lim['se']:.1f} (floor)")
    ax.set_xlim(0, 1.45 * max(r[1] for r in rows))
    ax.set_xlabel("actual bits per image (8-bit pixels, model parameters not counted)")
    ax.set_title(f"Every code on the {board['n_test']} held-out images of seed {board['seed']} "
                 f"as 8-bit pixels: bits-back codes (error bars: ± 1 sd\nover the coder's "
                 f"initial bits) and general-purpose compressors (hatched) on their best layout",
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def fig_model_counted(board):
    """Bits per held-out image with the model counted, against the number of images sent:
    each code's images' bits plus its coded model spread over them; lzma on as many."""
    fig, ax = plt.subplots(figsize=(9, 5.4))
    n = np.array(sorted(int(k) for k in board["lzma_by_images"]))
    styles, lows = ["-", "--", "-.", ":"], []
    for i, (key, r) in enumerate(board["rows"].items()):
        vae = key.startswith("pixel_vae")
        text = (f"{vae_label(r)}, N = {r['n_train']}" if vae else
                sv.model_label(key, 4, 6))
        text += " (chosen)" if key == board.get("mdl_choice") else ""
        color = plt.cm.tab10(i % 10)
        bits = r["model_actual_bits"] + r["model_bits"] / n
        lows.append(bits.min())
        ax.plot(n, bits, styles[i % 4], color=color,
                lw=2.5 if key == board.get("mdl_choice") else 1.2, label=text)
    lzma = [board["lzma_by_images"][str(k)] for k in n]
    ax.plot(n, lzma, "ko-", ms=4, lw=1.5, label="lzma on as many images")
    ax.axvline(board["n_test"], color="0.6", lw=0.8, ls=":")
    ax.set_ylim(0.85 * min(lows + lzma), 8 * max(lzma))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("held-out images sent (log scale)")
    ax.set_ylabel("bits per image, model included (log scale)")
    ax.set_title(f"Held-out 8-bit images of seed {board['seed']}: each code's bits per image "
                 f"(measured on {board['n_test']}) plus its coded model\nspread over the images "
                 f"sent (dotted: {board['n_test']}, where the model's steps were chosen); the "
                 f"true generator's floor: {board['limit']['bits']:.1f} bits",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def draw_neural(path, outdir, dpi, log):
    """dl_vs_training_size.png and vae_traversals.png (the largest N, first seed) from a
    sweep, one_bit_vae.png and one_bit_posteriors.png from a one-bit run, acn.png from an
    ACN run, scoreboard.png from the 8-bit scoreboard."""
    try:
        data = read_neural(path)
    except (OSError, ValueError) as err:
        raise OSError(f"cannot draw from {path}: {err}") from None
    if "one_bit" in data:
        one = data["one_bit"]["one_bit"]
        makers = {"one_bit_vae": lambda: fig_one_bit(one)}
        if any("posterior" in r for runs in one["1"].values() for r in runs.values()):
            makers["one_bit_posteriors"] = lambda: fig_one_bit_posteriors(one)
        return write_figures(makers,
                             outdir, dpi, log)
    if "beta" in data:
        return write_figures({"beta_vae": lambda: fig_beta(data["beta"])}, outdir, dpi, log)
    if "acn_variants" in data:
        return write_figures({"acn_variants": lambda: fig_acn_variants(data["acn_variants"])},
                             outdir, dpi, log)
    if "results" in data:
        first = data["results"][0]
        n = data["config"]["n_samples"]
        if "vae" not in first["models"]:
            return write_figures({"vq_vae": lambda: fig_vq_vae(first["models"], n,
                                                               first["seed"])}, outdir, dpi, log)
        return write_figures({"vae_pictures": lambda: fig_vae_pictures(
            first["models"], n, first["seed"])}, outdir, dpi, log)
    if "acn" in data:
        n = max(data["acn"], key=int)                  # the largest N, its first seed
        seed, first = next(iter(data["acn"][n].items()))
        # acn.png compares seeds; a one-seed run with daydreams draws those alone
        makers = ({} if "daydream" in first and len(data["acn"][n]) == 1 else
                  {"acn": lambda: fig_acn(data["acn"])})
        if "daydream" in first:
            makers["acn_daydream"] = lambda: fig_acn_daydream(first, n, seed)
            makers["acn_curves"] = lambda: fig_acn_curves(first, n, seed)
        return write_figures(makers, outdir, dpi, log)
    if "scoreboard" in data:
        makers = {"scoreboard": lambda: fig_scoreboard(data["scoreboard"])}
        if "lzma_by_images" in data["scoreboard"]:
            makers["model_counted"] = lambda: fig_model_counted(data["scoreboard"])
        return write_figures(makers, outdir, dpi, log)
    sweeps = data["sweep"]
    makers = {"dl_vs_training_size": lambda: fig_dl_vs_training_size(sweeps)}
    if "vae" in sweeps[0]["models"]:
        n = sweeps[0]["sizes"][-1]
        makers["vae_traversals"] = lambda: fig_vae_traversals(
            sweeps[0]["models"]["vae"][str(n)], n, sweeps[0]["seed"])
    return write_figures(makers, outdir, dpi, log)


def write_figures(makers, outdir, dpi, log):
    """Draw each {file stem: figure maker} and write it as outdir/stem.png; the paths.
    OSError says which file could not be written."""
    written = []
    for name, make in makers.items():
        fig = make()
        target = f"{outdir}/{name}.png"
        try:
            kit.atomic_write(target, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
        except OSError as err:
            raise OSError(f"cannot write {target}: {err}") from None
        finally:
            plt.close(fig)
        log(f"wrote {target}")
        written.append(target)
    return written


# What each figure reads from the --experiment JSON: field -> kind, where "number" is a
# finite int or float, "number?" may be null, "sd" is a number >= 0 (drawn as an error bar),
# and a list [kind, n] is a list of n entries (n = None: any length >= 1).
NUMBERS = lambda n=None: ["number", n]
EXPERIMENT_SCHEMA = {
    "sweep": {"heldout_total_mean": "number", "heldout_total_sd": "sd",
              "exact_mean": "number?", "codewords": "int", "joint_codes": "int"},
    "alignment": {"mi_controls": [NUMBERS(sv.N_CONTROL), None],
                  "mi_segments": [NUMBERS(sv.N_CONTROL - 1), None],
                  "score": "number", "score_segments": "number", "seed": "int"},
    "annealing": {"totals": NUMBERS(), "poor_optima": "int", "runs": "int"},
    "training": {"heldout_total_mean": "number", "totals": NUMBERS()},
    "movement": {"dmc_to_train_mean": "number", "dmc_to_train_sd": "sd",
                 "heldout_mean": "number", "heldout_sd": "sd"},
}
SIGMA_TERMS = {f"{t}_{s}": kind for t in ("recon", "code", "total")
               for s, kind in (("mean", "number"), ("sd", "sd"))}


def _check(value, kind, where):
    """Raise ValueError naming `where` unless value is of `kind` (see EXPERIMENT_SCHEMA)."""
    if isinstance(kind, list):
        inner, n = kind
        if not isinstance(value, list) or not value or (n is not None and len(value) != n):
            size = f"{n} entries" if n is not None else "at least one entry"
            raise ValueError(f"{where} must be a list of {size}")
        for i, v in enumerate(value):
            _check(v, inner, f"{where}[{i}]")
        return
    if value is None and kind == "number?":
        return
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "int" and not (numeric and float(value).is_integer()):
        raise ValueError(f"{where} must be a whole number, got {value!r}")
    if kind in ("number", "number?", "sd") and not (numeric and math.isfinite(value)):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    if kind == "sd" and value < 0:
        raise ValueError(f"{where} is a standard deviation and must be >= 0, got {value!r}")


def _check_terms(entry, kinds, where):
    """Raise ValueError naming `where` unless entry is an object whose fields have `kinds`."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be an object, got {entry!r}")
    for field, kind in kinds.items():
        _check(entry.get(field), kind, f"{where}.{field}")


def _check_sigma(v):
    """The sigma_x sweep's entry: every sigma's table holds every model's terms."""
    if not isinstance(v, dict):
        raise ValueError("sigma must be an object")
    _check(v.get("sigmas"), NUMBERS(), "sigma.sigmas")
    _check(v.get("paper_sigma"), "number", "sigma.paper_sigma")
    models, table = v.get("models"), v.get("table")
    if not isinstance(models, list) or not models or not set(models) <= set(COLORS):
        raise ValueError(f"sigma.models must list models among {', '.join(COLORS)}")
    if not isinstance(table, dict):
        raise ValueError("sigma.table must be an object")
    for s in v["sigmas"]:
        for name in models:
            entry = table.get(f"{s:g}", {}).get(name) if isinstance(table.get(f"{s:g}"),
                                                                    dict) else None
            if not isinstance(entry, dict):
                raise ValueError(f"sigma.table lacks {name} at sigma_x = {s:g}")
            _check_terms(entry, SIGMA_TERMS, f"sigma.table.{s:g}.{name}")


def read_experiments(path):
    """The --experiment JSON at path, checked field by field; ValueError names the first
    problem, so that no figure is drawn from a malformed or empty file."""
    import json
    with open(path) as f:
        try:
            data = json.load(f)
        except ValueError as err:
            raise ValueError(f"not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError("the file must hold a JSON object")
    seeds = data.get("config", {}).get("seeds") if isinstance(data.get("config"), dict) else None
    _check(seeds, ["int", None], "config.seeds")
    if "readings" in data:                  # paper_table.py's search
        for key in ("best", "grid", "seeds"):
            if key not in data:
                raise ValueError(f"the search's {key!r} is missing")
        if not (isinstance(data["readings"], list) and data["readings"] and all(
                isinstance(e, dict) and {"blur", "heights", "heights_dist", "sigma_x",
                                         "validation", "validation_distance"} <= set(e)
                for e in data["readings"])):
            raise ValueError("readings must be a non-empty list of readings")
        return data
    found = [name for name in EXPERIMENT_SCHEMA if name in data]
    if not found and "sigma" not in data and sv.EARLIER_EXPERIMENT not in data:
        raise ValueError("it holds no training, sweep, alignment, annealing, movement, sigma "
                         "or earlier results")
    if sv.EARLIER_EXPERIMENT in data:
        _check_earlier(data[sv.EARLIER_EXPERIMENT])
    for name in found:
        runs = data[name]
        if not isinstance(runs, dict) or not runs:
            raise ValueError(f"{name} must be a non-empty object")
        for key, entry in runs.items():
            if not isinstance(entry, dict):
                raise ValueError(f"{name}.{key} must be an object")
            for field, kind in EXPERIMENT_SCHEMA[name].items():
                if field not in entry:
                    raise ValueError(f"{name}.{key} lacks {field}")
                _check(entry[field], kind, f"{name}.{key}.{field}")
        if name == "sweep" and not all(k.count("x") == 1 and k.replace("x", "").isdigit()
                                       for k in runs):
            raise ValueError("sweep keys must read MxK, e.g. 4x6")
        if name == "alignment":
            for key, entry in runs.items():
                if len(entry["mi_controls"]) != len(entry["mi_segments"]):
                    raise ValueError(f"alignment.{key}: mi_controls and mi_segments differ "
                                     f"in their number of factors")
    if "sigma" in data:
        _check_sigma(data["sigma"])
    if "limit" in data:
        for field in ("bits", "se"):
            _check(data["limit"].get(field) if isinstance(data["limit"], dict) else None,
                   "number", f"limit.{field}")
    return data


EARLIER_VQS = ("standard_vq", "separate_vq", "factorial_vq")
EARLIER_COLORS = {"standard_vq": COLORS["standard_vq"], "separate_vq": "tab:orange",
                  "factorial_vq": COLORS["factorial_vq"], "pca5": COLORS["pca5"]}


def _check_earlier(v):
    """The earlier recipe's entry: every model's scores and the trajectory of its VQs."""
    if not isinstance(v, dict) or not isinstance(v.get("table"), dict):
        raise ValueError("earlier must be an object with a table")
    for name in sv.EARLIER_LABELS:
        for key in ("its", "valid_heldout"):
            _check_terms(v["table"].get(name, {}).get(key), SIGMA_TERMS,
                         f"earlier.table.{name}.{key}")
    trajectory = v.get("trajectory")
    _check_terms(trajectory, {"step": NUMBERS()}, "earlier.trajectory")
    for name in EARLIER_VQS:
        for key in ("its", "valid_heldout"):
            series = trajectory.get(name, {}).get(key) if isinstance(trajectory.get(name), dict) \
                else None
            _check(series, NUMBERS(len(trajectory["step"])),
                   f"earlier.trajectory.{name}.{key}")
    _check(v.get("no_code_heldout"), ["number", 2], "earlier.no_code_heldout")


def fig_earlier(v):
    """The earlier reproduction's recipe: its number and the valid F along training (one
    seed), and every model's final scores over the seeds beside its README's table."""
    t = v["trajectory"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    for name in EARLIER_VQS:
        c = EARLIER_COLORS[name]
        ax1.plot(t["step"], t[name]["its"], "--", color=c)
        ax1.plot(t["step"], t[name]["valid_heldout"], "-", color=c, label=sv.EARLIER_LABELS[name])
    ax1.axhline(v["no_code_heldout"][0], color="0.4", ls=":",
                label="mean image, no code (held-out)")
    ax1.plot([], [], "k--", label="its number, training images")
    ax1.plot([], [], "k-", label="valid F, held-out")
    ax1.set_yscale("log")
    ax1.set_xlabel(f"Adam steps (minibatches of {v['batch']} images)")
    ax1.set_ylabel("bits per image (log scale)")
    ax1.set_title(f"Its recipe, seed {t['seed']}: its number falls, the valid F turns and rises",
                  fontsize=10)
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3, which="both")
    names = list(sv.EARLIER_LABELS)
    x = np.arange(len(names))
    for dx, key, text, hatch in ((-0.2, "its", "its number, training", ""),
                                 (0.2, "valid_heldout", "valid F, held-out", "//")):
        ax2.bar(x + dx, [v["table"][n][key]["total_mean"] for n in names], 0.4,
                yerr=[v["table"][n][key]["total_sd"] for n in names], capsize=3, hatch=hatch,
                color=[EARLIER_COLORS[n] for n in names], edgecolor="black", label=text)
    ax2.plot(x - 0.2, [v["reported_table"][n][2] for n in names], "k*", ms=10,
             label="its README, seed 0")
    ax2.set_yscale("log")
    ax2.set_xticks(x, [textwrap.fill(sv.EARLIER_LABELS[n], 12) for n in names], fontsize=8)
    ax2.set_ylabel("bits per image (log scale)")
    ax2.set_title(f"After {v['steps']} steps, mean ± sd over seeds "
                  f"{', '.join(map(str, v['seeds']))}", fontsize=10)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fig_paper_table(v):
    """The search for the paper's reading: the largest miss over blur x sigma_x at the
    nearest reading's heights, and every reading's factorial code against the gap between
    the two reconstructions, beside the paper's (18 bits, 7 bits)."""
    best = v["readings"][v["best"]]
    blurs, sigmas = v["grid"]["blur"], v["grid"]["sigma_x"]
    same = [e for e in v["readings"] if e["heights"] == best["heights"]
            and e["heights_dist"] == best["heights_dist"]]
    grid = np.full((len(blurs), len(sigmas)), np.nan)
    for e in same:
        grid[blurs.index(e["blur"]), sigmas.index(e["sigma_x"])] = e["validation_distance"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    im = ax1.imshow(grid, origin="lower", cmap="viridis_r", aspect="auto")
    for (i, j), d in np.ndenumerate(grid):
        ax1.text(j, i, f"{d:.1f}", ha="center", va="center", fontsize=8,
                 color="white" if d > np.nanmedian(grid) else "black")
    ax1.plot(sigmas.index(best["sigma_x"]), blurs.index(best["blur"]), "s", ms=26, mfc="none",
             mec="red", mew=2)
    ax1.set_xticks(range(len(sigmas)), [f"{s:g}" for s in sigmas])
    ax1.set_yticks(range(len(blurs)), [f"{b:g}" for b in blurs])
    ax1.set_xlabel("pixel noise sigma_x")
    ax1.set_ylabel("blur (pixels)")
    fig.colorbar(im, ax=ax1, label="largest miss from the paper (bits per image)")
    ax1.set_title(f"Largest miss, validation, heights {sv.heights_text(best)}\n(red: the "
                  f"nearest reading; t chosen per reading)", fontsize=10)
    for dist, marker in (("uniform", "o"), ("normal", "^")):
        pts = [e for e in v["readings"] if e["heights_dist"] == dist]
        gap = [e["validation"]["standard_vq"]["recon_mean"] -
               e["validation"]["factorial_vq"]["recon_mean"] for e in pts]
        code = [e["validation"]["factorial_vq"]["code_mean"] for e in pts]
        dots = ax2.scatter(gap, code, marker=marker, s=18, alpha=0.7, label=f"heights {dist}",
                           c=[e["sigma_x"] for e in pts], cmap="plasma", vmin=min(sigmas),
                           vmax=max(sigmas))
    fig.colorbar(dots, ax=ax2, label="pixel noise sigma_x")
    ax2.plot(18, 7, "*", ms=18, color="red", mec="black", label="the paper (18, 7)")
    ax2.set_xlabel("standard VQ's reconstruction minus the factorial VQ's (bits per image)")
    ax2.set_ylabel("factorial VQ's code cost (bits per image)")
    ax2.set_title(f"Every reading ({len(v['readings'])}), validation, mean over "
                  f"{len(v['seeds'])} seed(s), t = sigma_x sqrt(2 pi)", fontsize=10)
    ax2.legend(fontsize=8, loc="lower right")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def draw_experiments(path, outdir, dpi, log):
    """Draw the figures of the experiments found in a --json file of --experiment."""
    try:
        data = read_experiments(path)
    except (OSError, ValueError) as err:
        raise OSError(f"cannot draw from {path}: {err}") from None
    seeds = data["config"]["seeds"]
    if "readings" in data:
        return write_figures({"paper_table": lambda: fig_paper_table(data)}, outdir, dpi, log)
    makers = {"movement": lambda: fig_data_movement(data["movement"], seeds),
              "training": lambda: fig_training(data["training"], seeds),
              "sweep": lambda: fig_sweep(data["sweep"], data.get("limit"), seeds),
              "alignment": lambda: fig_alignment(data["alignment"]),
              "annealing": lambda: fig_annealing(data["annealing"], seeds),
              "sigma": lambda: fig_dl_vs_sigma(data["sigma"], seeds),
              sv.EARLIER_EXPERIMENT: lambda: fig_earlier(data[sv.EARLIER_EXPERIMENT])}
    stems = {"movement": "data_movement", "sigma": "dl_vs_sigma",
             sv.EARLIER_EXPERIMENT: "earlier_recipe"}
    return write_figures({stems.get(name, name): make
                          for name, make in makers.items() if name in data}, outdir, dpi, log)


# ----------------------------------------------------------------------------- CLI


def parse_args(argv=None):
    ap = kit.CLIParser(prog="visualize_spline_images_factorial_vq.py",
                      description="Write the six PNG figures of the comparison into --outdir.")
    ap.add_argument("--seed", type=kit.int_at_least(0, sv.MAX_SEED), default=0,
                    help="random seed of the data and the models")
    ap.add_argument("--outdir", default="viz", help="output folder, made if missing")
    ap.add_argument("--steps", type=kit.int_at_least(1, sv.MAX_STEPS), default=sv.STEPS,
                    help="Adam steps per model after its hard-code start and EM")
    ap.add_argument("--n-test", type=kit.int_at_least(8, 100_000), default=2000,
                    help="held-out images")
    ap.add_argument("--eval-every", type=kit.int_at_least(1, sv.MAX_STEPS), default=5,
                    help="steps between points of the training curves")
    ap.add_argument("--dpi", type=kit.int_at_least(30, 600), default=100,
                    help="resolution of the PNGs, dots per inch")
    ap.add_argument("--experiments", metavar="JSON",
                    help="instead: draw sweep.png, alignment.png and annealing.png from the "
                         "--json output of spline_images_factorial_vq.py --experiment, or "
                         "paper_table.png from that of paper_table.py")
    ap.add_argument("--neural", metavar="JSON",
                    help="instead: draw dl_vs_training_size.png and vae_traversals.png from "
                         "the --json output of neural_codes.py --sweep, one_bit_vae.png and "
                         "one_bit_posteriors.png from that of --one-bit, acn.png from that of "
                         "--acn, scoreboard.png and model_counted.png from that of "
                         "--scoreboard")
    ap.add_model_folders("the models trained, with their training curves,")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    given = ap.given(argv)
    for source in ("experiments", "neural"):
        ap.refuse_together(given, source, ("seed", "steps", "n_test", "eval_every",
                                           "save_models", "load_models"),
                           "draws from the file alone")
        if getattr(args, source) is not None:
            ap.input_file(f"--{source}", getattr(args, source))
    if args.experiments is not None and args.neural is not None:
        ap.error("--experiments and --neural: give one file at a time")
    if args.steps // args.eval_every > 10_000:
        ap.error(f"--eval-every {args.eval_every}: at most 10000 points per curve")
    ap.output_file("--outdir", args.outdir, folder=True)
    args.folder = ap.model_folder(args, lambda path, mode: fc.ModelFolder(path, mode,
                                                                          sv.SAVED_CLASSES))
    return args


def main(argv=None):
    args = parse_args(argv)
    log = kit.progress_logger(args.quiet)
    if args.experiments or args.neural:
        draw = draw_experiments if args.experiments else draw_neural
        try:
            draw(args.experiments or args.neural, args.outdir, args.dpi, log)
        except OSError as err:
            print(f"visualize_spline_images_factorial_vq.py: error: {err}", file=sys.stderr)
            return 2
        return 0
    t0 = time.perf_counter()
    cfg = {"seed": args.seed, "n_dims": 4, "n_units_per_dim": 6, "n_test": args.n_test,
           "sigma_x": 0.15}
    log(f"training {len(sv.MODEL_NAMES)} models ({args.steps} steps, seed {args.seed}) ...")
    out = sv.run_comparison(seed=args.seed, n_test=args.n_test, steps=args.steps,
                            eval_every=args.eval_every, score=True, workers=2,
                            folder=args.folder)
    models, heldout, scores = out["models"], out["heldout"], out["scores"]
    log(f"trained and scored in {time.perf_counter() - t0:.2f} s; drawing figures")
    images, controls = sv.generate_spline_images(16, args.seed)
    fvq = models["factorial_vq"]
    rng = np.random.default_rng([args.seed, 3])
    makers = {
        "example_splines": lambda: fig_example_splines(images, controls),
        "dl_comparison": lambda: fig_dl_comparison(scores, cfg),
        "dl_trajectory": lambda: fig_dl_trajectory(out["histories"], scores, cfg),
        "factor_codebooks": lambda: fig_factor_codebooks(fvq),
        "per_factor_receptive": lambda: fig_per_factor_receptive(fvq, heldout),
        "factorial_reconstructions": lambda: fig_reconstructions(models, heldout, cfg, rng),
    }
    try:
        write_figures({name: makers[name] for name in FIGURES}, args.outdir, args.dpi, log)
    except OSError as err:
        print(f"visualize_spline_images_factorial_vq.py: error: {err}", file=sys.stderr)
        return 2
    log(f"done in {time.perf_counter() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(kit.run_main(main, "visualize_spline_images_factorial_vq.py"))
