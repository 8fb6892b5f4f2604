"""Static figures of the spline-image VQ comparison, written as PNGs into --outdir.

    python3 visualize_spline_images_factorial_vq.py --seed 0 --outdir viz

Trains the models once with spline_images_factorial_vq.run_comparison (recording F on the
training and held-out sets during training) and draws six figures from them. Every
number shown is a bits-back description length in bits per image unless a label says
otherwise.
"""

import sys
import time

# first: the module sets its BLAS thread default before anything imports numpy
import spline_images_factorial_vq as sv

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DISCRETE = ("standard_vq", "separate_slices", "residual_vq", "factorial_vq")
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
    """Held-out recon + code as stacked bars, the exact DL* as a marker."""
    names = list(scores)
    recon = np.array([scores[n]["recon"] for n in names])
    code = np.array([scores[n]["code"] for n in names])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.bar(x, recon, color="tab:blue", label="reconstruction")
    ax.bar(x, code, bottom=recon, color="tab:orange", label="code (KL)")
    for i, n in enumerate(names):
        total = recon[i] + code[i]
        ax.text(i, total + 2, f"{total:.1f}", ha="center", va="bottom", fontweight="bold")
        ax.text(i, recon[i] / 2, f"{recon[i]:.1f}", ha="center", color="white", fontsize=8)
        ax.text(i, recon[i] + code[i] / 2, f"{code[i]:.1f}", ha="center", va="center", fontsize=8)
        exact = scores[n]["exact"]
        if exact is not None and not n.startswith("pca"):
            ax.plot(i + 0.3, exact, "D", color="black", ms=7,
                    label="exact DL* of the same model" if i == 0 else None)
    ax.set_xticks(x, [label(n, cfg).replace(", ", ",\n") for n in names], fontsize=8)
    ax.set_ylabel("bits per image")
    ax.set_ylim(0, 1.3 * max(recon + code))
    ax.set_title(f"Bits-back description length, held-out, {cfg['n_test']} images, seed "
                 f"{cfg['seed']} (σ_x = {cfg['sigma_x']}); lower is better")
    ax.legend(loc="upper center", ncol=3, fontsize=9)
    fig.tight_layout()
    return fig


def fig_dl_trajectory(histories, scores, cfg):
    """F on both sets against optimiser step, and held-out recon vs code."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    top = 0.0
    for n in DISCRETE:
        h = histories.get(n)
        if not h or not h["eval_step"]:
            continue
        style = dict(color=COLORS[n], marker="o" if n == "residual_vq" else None, ms=4)
        ax.plot(h["eval_step"], h["heldout"], "-", label=f"{label(n, cfg)}", **style)
        ax.plot(h["eval_step"], h["train"], "--", **style)
        ax.plot(h["eval_step"][-1], scores[n]["total"], "*", color=COLORS[n], ms=12, mec="black")
        ax2.plot(h["eval_step"], h["heldout_recon"], "-", color=COLORS[n], label=label(n, cfg))
        ax2.plot(h["eval_step"], h["heldout_code"], ":", color=COLORS[n], lw=2)
        top = max(top, h["heldout"][-1])
    for n in ("pca5", "pca24"):
        if n in scores:
            ax.axhline(scores[n]["total"], color=COLORS[n], lw=1, ls="-.",
                       label=f"{label(n, cfg)} (no training curve)")
    ax.set_ylim(0.6 * min(s["total"] for s in scores.values()), 1.6 * top)
    ax.set_xlabel("optimiser step (full batch: one step = one epoch)")
    ax.set_ylabel("bits per image")
    ax.set_title("F during training: held-out (solid), training (dashed);\n"
                 "★ final held-out F with the refined posterior", fontsize=10)
    ax.legend(fontsize=7)
    ax2.set_yscale("log")
    ax2.set_xlabel("optimiser step")
    ax2.set_ylabel("bits per image (log scale)")
    ax2.set_title("Held-out reconstruction (solid) vs code cost (dotted)", fontsize=10)
    ax2.legend(fontsize=7)
    fig.text(0.5, 0.005, "Curves use the recognition network's posterior alone; the residual "
             "chain is scored after each of its stages.", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
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


# ----------------------------------------------------------------------------- CLI


def parse_args(argv=None):
    ap = sv.CLIParser(prog="visualize_spline_images_factorial_vq.py",
                      description="Write the six PNG figures of the comparison into --outdir.")
    ap.add_argument("--seed", type=sv.int_at_least(0), default=0)
    ap.add_argument("--outdir", default="viz", help="output folder (created if missing)")
    ap.add_argument("--steps", type=sv.int_at_least(1), default=400,
                    help="training steps per model (default 400)")
    ap.add_argument("--n-test", type=sv.int_at_least(8), default=2000,
                    help="held-out images (default 2000)")
    ap.add_argument("--eval-every", type=sv.int_at_least(1), default=25,
                    help="steps between points of the training curves (default 25)")
    ap.add_argument("--dpi", type=sv.int_at_least(30), default=100)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        sv.writable_folder(args.outdir)
    except OSError as err:
        ap.error(str(err))
    return args


def main(argv=None):
    args = parse_args(argv)
    log = sv.progress_logger(args.quiet)
    t0 = time.perf_counter()
    cfg = {"seed": args.seed, "n_dims": 4, "n_units_per_dim": 6, "n_test": args.n_test,
           "sigma_x": 0.15}
    log(f"training {len(sv.MODEL_NAMES)} models ({args.steps} steps, seed {args.seed}) ...")
    out = sv.run_comparison(seed=args.seed, n_test=args.n_test, steps=args.steps,
                            eval_every=args.eval_every, score=True, workers=2)
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
    for name in FIGURES:
        fig = makers[name]()
        path = f"{args.outdir}/{name}.png"
        try:
            sv.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=args.dpi))
        except OSError as err:
            print(f"visualize_spline_images_factorial_vq.py: error: cannot write {path}: {err}",
                  file=sys.stderr)
            return 2
        finally:
            plt.close(fig)
        log(f"wrote {path}")
    log(f"done in {time.perf_counter() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
