"""Training animation of the factorial VQ, written as a looping GIF.

    python3 make_spline_images_factorial_vq_gif.py --seed 0 --snapshot-every 2 --fps 8

Each frame is one snapshot of the factorial model's parameters during training (the
variational EM from the hard-code start that training keeps, then the Adam steps): four
held-out images and their expected reconstructions, each factor's posterior q_d(k|x) for
the first of them, the factors' contributions to its reconstruction, and the held-out
free energy so far (bits per image, refined posterior) against the final held-out F of
the baselines.
"""

import os
import sys
import time

import cli_kit as kit

if __name__ == "__main__":
    kit.quit_on_interrupt("make_spline_images_factorial_vq_gif.py")

# first: the module sets its BLAS thread default before anything imports numpy
import spline_images_factorial_vq as sv  # noqa: E402

import imageio.v3 as iio  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from visualize_spline_images_factorial_vq import COLORS, label, mosaic, show_mosaic  # noqa: E402

BASELINES = ("standard_vq", "separate_slices", "pca24")
N_SHOWN = 4


class Animation:
    """One figure drawn once; each frame redraws only the artists that change (blitting)."""

    def __init__(self, model, heldout, baselines, cfg, steps, f_range):
        self.model, self.shown = model, heldout[:N_SHOWN]
        M, K = model.n_dims, model.n_codes
        self.fig = plt.figure(figsize=(9, 5.6), dpi=80)
        grid = self.fig.add_gridspec(2, 2, width_ratios=(1.15, 1), height_ratios=(1.2, 1),
                                     left=0.11, right=0.97, top=0.88, bottom=0.08,
                                     hspace=0.35, wspace=0.22)
        ax = self.fig.add_subplot(grid[0, 0])
        self.images = show_mosaic(ax, np.zeros((2, N_SHOWN, sv.D)),
                                  row_labels=["held-out", "E[x̂]"], vmin=0, vmax=1)
        ax.set_title("held-out images and their reconstructions", fontsize=9)

        ax = self.fig.add_subplot(grid[0, 1])
        x = np.arange(M)[:, None] * (K + 1) + np.arange(K)[None, :]
        self.bars = ax.bar(x.ravel(), np.zeros(M * K),
                           color=np.repeat(plt.cm.tab10(np.arange(M) % 10), K, axis=0))
        ax.set_xticks(x.mean(axis=1), [f"factor {d + 1}" for d in range(M)], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("q_d(k | x)", fontsize=8)
        ax.set_title(f"posterior of each factor over its {K} codes, first image", fontsize=9)

        ax = self.fig.add_subplot(grid[1, 0])
        lim = np.abs(model.contributions(self.shown[:1])).max()     # of the trained model
        self.parts = show_mosaic(ax, np.zeros((1, M, sv.D)), cmap="RdBu_r", vmin=-lim, vmax=lim,
                                 col_labels=[f"factor {d + 1}" for d in range(M)])
        ax.set_title("each factor's contribution Σ_k q_d(k|x) C_d[k], first image", fontsize=9)

        ax = self.fig.add_subplot(grid[1, 1])
        for name, score in baselines.items():
            ax.axhline(score["total"], color=COLORS[name], ls="--", lw=1,
                       label=f"{label(name, cfg)}: {score['total']:.1f}")
        (self.curve,) = ax.plot([], [], "-o", color=COLORS["factorial_vq"], ms=3,
                                label=label("factorial_vq", cfg))
        ax.set_xlim(-steps * 0.02, steps * 1.02)
        ax.set_ylim(*f_range)
        ax.axvline(sv.EM_ITERS, color="0.6", lw=0.8)
        for x, text in ((sv.EM_ITERS / 2, "EM"), ((sv.EM_ITERS + steps) / 2, "Adam")):
            ax.text(x, f_range[0], text, ha="center", va="bottom", fontsize=7, color="0.4")
        ax.set_xlabel("training step (EM iterations, then Adam steps)", fontsize=8)
        ax.set_ylabel("bits per image", fontsize=8)
        ax.set_title(f"held-out F ({len(heldout)} images) vs final baselines", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        self.title = self.fig.suptitle("", fontsize=11)

        self.dynamic = [self.images, *self.bars, self.parts, self.curve, self.title]
        for artist in self.dynamic:
            artist.set_animated(True)
        self.fig.canvas.draw()                                 # everything static, once
        self.background = self.fig.canvas.copy_from_bbox(self.fig.bbox)

    def frame(self, theta, title, steps_so_far, f_so_far):
        """Load a snapshot, redraw what changes and return the frame as (H, W, 3) uint8."""
        self.model.theta[...] = theta
        q = np.stack(self.model.posteriors(self.shown), axis=1)        # (N_SHOWN, M, K), once
        parts = np.matmul(q.transpose(1, 0, 2), self.model.p["C"])     # (M, N_SHOWN, D)
        recon = self.model.p["b"] + parts.sum(axis=0)
        self.images.set_data(mosaic(np.stack([self.shown, recon])))
        for bar, height in zip(self.bars, q[0].ravel()):
            bar.set_height(height)
        self.parts.set_data(mosaic(parts[:, 0][None]))
        self.curve.set_data(steps_so_far, f_so_far)
        self.title.set_text(title)
        canvas = self.fig.canvas
        canvas.restore_region(self.background)
        for artist in self.dynamic:
            self.fig.draw_artist(artist)
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def heldout_curve(model, snapshots, heldout):
    """Held-out F (bits per image, refined posterior) at every snapshot."""
    curve = []
    for _, theta in snapshots:
        model.theta[...] = theta
        curve.append(float(model.description_length(heldout)["total"].mean()))
    return curve


MAX_FRAMES = 2000              # about 1 MB of memory each while the GIF is assembled
FPS_RANGE = (0.1, 100.0)       # GIF frame delays are whole centiseconds, at most 655 s


def parse_args(argv=None):
    ap = kit.CLIParser(prog="make_spline_images_factorial_vq_gif.py",
                      description="Write the factorial VQ training animation as a GIF.")
    ap.add_argument("--seed", type=kit.int_at_least(0, sv.MAX_SEED), default=0,
                    help="random seed of the data and the models")
    ap.add_argument("--snapshot-every", type=kit.int_at_least(1, sv.MAX_STEPS), default=2,
                    help="training steps (EM iterations or Adam steps) between frames")
    ap.add_argument("--fps", type=kit.float_between(*FPS_RANGE), default=8.0,
                    help="frames per second (the last frame stays 2 s)")
    ap.add_argument("--out", default="viz/spline_images_factorial_vq.gif",
                    help="output GIF path; its folder is made if missing")
    ap.add_argument("--steps", type=kit.int_at_least(1, sv.MAX_STEPS), default=sv.STEPS,
                    help="Adam steps after the EM's %d iterations" % sv.EM_ITERS)
    ap.add_argument("--n-test", type=kit.int_at_least(N_SHOWN, 100_000), default=2000,
                    help="held-out images")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    frames = (sv.EM_ITERS + args.steps) // args.snapshot_every + 3
    if frames > MAX_FRAMES:
        ap.error(f"--steps {args.steps} with --snapshot-every {args.snapshot_every} makes "
                 f"{frames} frames; at most {MAX_FRAMES}: raise --snapshot-every")
    if not args.out.lower().endswith(".gif"):
        ap.error(f"--out {args.out!r}: the file is a GIF, so its name must end in .gif")
    ap.output_file("--out", args.out)
    return args


def main(argv=None):
    args = parse_args(argv)
    log = kit.progress_logger(args.quiet)
    t0 = time.perf_counter()
    cfg = {"n_dims": 4, "n_units_per_dim": 6}
    log(f"training the factorial VQ and {len(BASELINES)} baselines, seed {args.seed} ...")
    out = sv.run_comparison(seed=args.seed, n_test=args.n_test, steps=args.steps,
                            models=("factorial_vq",) + BASELINES,
                            snapshot_every=args.snapshot_every, score=True, workers=2)
    snapshots = out["histories"]["factorial_vq"]["snapshots"]
    baselines = {n: out["scores"][n] for n in BASELINES}
    model = out["models"]["factorial_vq"]
    steps = [step for step, _ in snapshots]
    curve = heldout_curve(model, snapshots, out["heldout"])
    values = curve + [s["total"] for s in baselines.values()]
    lo, hi = min(values), max(values)
    anim = Animation(model, out["heldout"], baselines, cfg, sv.EM_ITERS + args.steps,
                     (lo - 0.05 * (hi - lo) - 1, hi + 0.05 * (hi - lo) + 1))
    log(f"trained in {time.perf_counter() - t0:.2f} s; drawing {len(snapshots)} frames")

    def phase(step):
        if step <= sv.EM_ITERS:
            return f"EM iteration {step}/{sv.EM_ITERS}"
        return f"Adam step {step - sv.EM_ITERS}/{args.steps}"

    frames = [anim.frame(theta, f"Factorial {model.n_dims}×{model.n_codes} VQ, {phase(step)}: "
                                f"held-out F = {curve[i]:.1f} bits per image",
                         steps[:i + 1], curve[:i + 1])
              for i, (step, theta) in enumerate(snapshots)]
    plt.close(anim.fig)
    # the last frame stays up for two seconds before the loop restarts
    durations = [1000.0 / args.fps] * (len(frames) - 1) + [2000.0]
    try:
        kit.atomic_write(args.out, lambda tmp: iio.imwrite(tmp, np.stack(frames), extension=".gif",
                                                          duration=durations, loop=0))
    except OSError as err:
        print(f"make_spline_images_factorial_vq_gif.py: error: cannot write {args.out}: {err}",
              file=sys.stderr)
        return 2
    size = os.path.getsize(args.out)
    log(f"wrote {args.out}: {len(frames)} frames, {frames[0].shape[1]}x{frames[0].shape[0]} px, "
        f"{size / 1e6:.2f} MB, in {time.perf_counter() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(kit.run_main(main, "make_spline_images_factorial_vq_gif.py"))
