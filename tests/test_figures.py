"""The figure and GIF scripts render from a tiny configuration and write decodable files."""
import json
import re

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

import make_spline_images_factorial_vq_gif as gif
import spline_images_factorial_vq as sv
import visualize_spline_images_factorial_vq as viz
from tests.helpers import ROOT, run_script

TINY = ["--steps", "12", "--n-test", "24", "--quiet"]
SCRIPTS = {"visualize_spline_images_factorial_vq.py": viz,
           "make_spline_images_factorial_vq_gif.py": gif}


def run(script, *args):
    return run_script(script, *args)


def test_every_figure_is_written_at_its_drawn_size_and_decodes(tmp_path, monkeypatch, cli):
    """The figure script, run in this process: every figure is written, decodes, and has
    the pixel size it was drawn at (nothing cropped by a tight bounding box)."""
    drawn, close = [], viz.plt.close

    def record(fig):
        drawn.append(fig.get_size_inches() * 50)
        close(fig)

    monkeypatch.setattr(viz.plt, "close", record)
    folder = tmp_path / "new" / "viz"
    status, _, err = cli(viz.main, *TINY, "--eval-every", "4", "--dpi", "50",
                         "--outdir", str(folder))
    assert status == 0, err
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.png" for n in viz.FIGURES)
    assert len(drawn) == len(viz.FIGURES)
    for name, (w, h) in zip(viz.FIGURES, drawn):
        img = iio.imread(folder / f"{name}.png")
        assert img.ndim == 3 and min(img.shape[:2]) > 100 and img.std() > 0, name
        assert abs(img.shape[0] - h) <= 1 and abs(img.shape[1] - w) <= 1, name  # rounding only


def test_mosaic_places_each_image_in_its_tile():
    images = np.arange(2 * 3 * sv.D, dtype=float).reshape(2, 3, sv.D)
    m = viz.mosaic(images)
    assert m.shape == (2 * 9 - 1, 3 * 13 - 1)
    x0, y0 = viz.tile_origin(1, 2)
    np.testing.assert_array_equal(m[y0:y0 + 8, x0:x0 + 12], images[1, 2].reshape(8, 12))
    assert np.isnan(m[8]).all() and np.isnan(m[:, 12]).all()


def test_gif_frames_loop_and_reported_count(tmp_path, cli):
    out = tmp_path / "anim" / "train.gif"
    status, _, err = cli(gif.main, "--steps", "12", "--n-test", "24", "--snapshot-every", "5",
                         "--fps", "10", "--out", str(out))
    assert status == 0, err
    reported = int(re.search(r"(\d+) frames", err).group(1))
    frames = iio.imread(out, index=None)
    em = len(range(0, sv.EM_ITERS + 1, 5))                      # EM iterations 0, 5, ..
    assert reported == len(frames) == em + 3                    # then Adam steps 5, 10, 12
    assert frames.shape[1:3] == (448, 720)
    assert Image.open(out).info.get("loop") == 0               # loops forever
    assert not [p for p in out.parent.iterdir() if p.name != "train.gif"]   # no temp left


@pytest.mark.parametrize("script,args", [
    ("visualize_spline_images_factorial_vq.py", ["--outdir"]),
    ("make_spline_images_factorial_vq_gif.py", ["--out"]),
])
def test_unwritable_output_exits_2_with_one_line(tmp_path, script, args):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    target = str(blocker / "sub" / ("x.gif" if "gif" in script else ""))
    res = run(script, *TINY, *args, target)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.parametrize("args", [["--snapshot-every", "0"], ["--fps", "-2"], ["--fps", "1000"],
                                  ["--seed", "x"]])
def test_gif_bad_values_exit_2(args, cli):
    status, _, err = cli(gif.main, *args)
    assert status == 2 and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("script,args", [
    ("visualize_spline_images_factorial_vq.py", ["--dpi", "20000"]),
    ("visualize_spline_images_factorial_vq.py", ["--out", "x"]),           # no prefix matching
    ("visualize_spline_images_factorial_vq.py", ["--experiments", "no_such.json"]),
    ("visualize_spline_images_factorial_vq.py", ["--experiments", "README.md", "--seed", "1"]),
    ("visualize_spline_images_factorial_vq.py", ["--neural", "no_such.json"]),
    ("visualize_spline_images_factorial_vq.py", ["--neural", "README.md", "--steps", "3"]),
    ("visualize_spline_images_factorial_vq.py", ["--neural", "README.md", "--experiments",
                                                 "README.md"]),
    ("make_spline_images_factorial_vq_gif.py", ["--fps", "0.001"]),
    ("make_spline_images_factorial_vq_gif.py", ["--out", "viz"]),           # a folder
    ("make_spline_images_factorial_vq_gif.py", ["--out", ""]),
    ("make_spline_images_factorial_vq_gif.py", ["--steps", "1000000", "--snapshot-every", "1"]),
    ("make_spline_images_factorial_vq_gif.py", ["--out", "x.png"]),         # not a GIF's name
    ("make_spline_images_factorial_vq_gif.py", ["--out", "x"]),
    ("visualize_spline_images_factorial_vq.py", ["--experiments", "/tmp"]),   # a folder
    ("visualize_spline_images_factorial_vq.py", ["--neural", "/dev/null"]),   # not a file
    ("visualize_spline_images_factorial_vq.py", ["--seed", "1", "--seed", "2"]),
])
def test_bad_figure_flags_exit_2_with_one_line_and_make_nothing(script, args, cli,
                                                                monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    made = lambda: {p.name for p in ROOT.iterdir()        # caches come and go with the
                    if p.name != "__pycache__" and not p.name.startswith(".")}   # workers
    before = made()
    status, _, err = cli(SCRIPTS[script].main, *args, "--quiet")
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert made() == before


@pytest.mark.parametrize("args,why", [(["--experiments", "/tmp"], "is a folder"),
                                      (["--neural", "/dev/null"], "not a regular file")])
def test_input_paths_say_what_is_wrong(args, why, cli):
    status, _, err = cli(viz.main, *args)
    assert status == 2 and why in err, err


MALFORMED = {
    "a list": [1, 2],
    "no seeds": {"sweep": {"4x6": {}}},
    "an empty sweep": {"config": {"seeds": [0]}, "sweep": {}},
    "a wrong field type": {"config": {"seeds": [0]},
                           "annealing": {"sigma": {"totals": "82", "poor_optima": 0, "runs": 1}}},
    "a missing field": {"config": {"seeds": [0]},
                        "sweep": {"4x6": {"heldout_total_mean": 80.0}}},
    "nothing to draw": {"config": {"seeds": [0]}, "limit": {"bits": 20.8, "se": 0.1}},
    "short MI rows": {"config": {"seeds": [0]}, "alignment": {"4x6": {
        "mi_controls": [[0.1, 0.2]], "mi_segments": [[0.1] * 4], "score": 0.5,
        "score_segments": 0.5, "seed": 0}}},
    "a sigma table without a model": {"config": {"seeds": [0]}, "sigma": {
        "sigmas": [0.1], "paper_sigma": 0.1, "models": ["pca24"], "table": {"0.1": {}}}},
    "a sigma model the figure cannot draw": {"config": {"seeds": [0]}, "sigma": {
        "sigmas": [0.1], "paper_sigma": 0.1, "models": ["vae"], "table": {}}},
    "an earlier entry without its trajectory": {"config": {"seeds": [0]}, "earlier": {
        "table": {name: {key: {f"{t}_{s}": 1.0 for t in ("recon", "code", "total")
                               for s in ("mean", "sd")} for key in ("its", "valid_heldout")}
                  for name in sv.EARLIER_LABELS}}},
}


@pytest.mark.parametrize("what", MALFORMED)
def test_malformed_experiment_json_is_named_and_draws_nothing(tmp_path, what, cli):
    path = tmp_path / "e.json"
    path.write_text(json.dumps(MALFORMED[what]))
    status, _, err = cli(viz.main, "--experiments", str(path), "--outdir", str(tmp_path / "figs"))
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "figs").exists()


def test_committed_experiment_json_passes_the_check():
    data = viz.read_experiments(ROOT / "viz" / "experiments.json")
    assert {"sweep", "alignment", "annealing", "limit"} <= set(data)


def test_earlier_recipe_figure_is_drawn_from_its_committed_run(tmp_path, cli):
    status, _, err = cli(viz.main, "--experiments", str(ROOT / "viz" / "earlier.json"),
                         "--outdir", str(tmp_path), "--quiet", "--dpi", "40")
    assert status == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["earlier_recipe.png"]
    img = iio.imread(tmp_path / "earlier_recipe.png")
    assert img.ndim == 3 and min(img.shape[:2]) > 100 and img.std() > 0


def test_sigma_figure_is_drawn_from_the_committed_sweep(tmp_path, cli):
    status, _, err = cli(viz.main, "--experiments", str(ROOT / "viz" / "sigma.json"),
                         "--outdir", str(tmp_path), "--quiet")
    assert status == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["dl_vs_sigma.png"]
    assert Image.open(tmp_path / "dl_vs_sigma.png").size[0] > 1000


def neural_sweep(n_latent=2):
    """A small sweep payload in the shape `neural_codes.py --sweep --json` writes."""
    rng = np.random.default_rng(0)
    vae = lambda n: {"total": 30.0 - n / 1000, "iw_bound": 29.0 - n / 1000, "active_latents": 2,
                     "traversals": rng.random((n_latent, 9, sv.D)).tolist()}
    return {"config": {"seeds": [0]}, "sweep": [{
        "seed": 0, "sizes": [200, 2000], "limit": 20.8,
        "models": {"vae": {str(n): vae(n) for n in (200, 2000)},
                   "factorial_vq": {str(n): {"total": 70.0} for n in (200, 2000)}}}]}


def test_neural_figures_are_written_from_a_sweep_file(tmp_path):
    path = tmp_path / "n.json"
    path.write_text(json.dumps(neural_sweep()))
    res = run("visualize_spline_images_factorial_vq.py", "--neural", str(path), "--outdir",
              str(tmp_path / "figs"), "--quiet", "--dpi", "50")
    assert res.returncode == 0, res.stderr
    for name in ("dl_vs_training_size", "vae_traversals"):
        img = iio.imread(tmp_path / "figs" / f"{name}.png")
        assert img.ndim == 3 and min(img.shape[:2]) > 100 and img.std() > 0, name


NEURAL_MALFORMED = {
    "no sweep": {"results": []},
    "a missing size": lambda d: d["sweep"][0]["models"]["vae"].pop("2000"),
    "a text total": lambda d: d["sweep"][0]["models"]["factorial_vq"]["200"].update(total="70"),
    "short traversal images": lambda d: d["sweep"][0]["models"]["vae"]["200"].update(
        traversals=[[[0.5] * 12] * 9]),
    "no limit": lambda d: d["sweep"][0].pop("limit"),
}


@pytest.mark.parametrize("what", NEURAL_MALFORMED)
def test_malformed_neural_json_is_named_and_draws_nothing(tmp_path, what, cli):
    data, spoil = neural_sweep(), NEURAL_MALFORMED[what]
    if callable(spoil):
        spoil(data)
    else:
        data = spoil
    path = tmp_path / "n.json"
    path.write_text(json.dumps(data))
    status, _, err = cli(viz.main, "--neural", str(path), "--outdir", str(tmp_path / "figs"))
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "figs").exists()


def test_committed_neural_json_passes_the_check():
    data = viz.read_neural(ROOT / "viz" / "neural_sweep.json")
    assert {"vae", "vq_vae_4x6", "factorial_vq", "pca24"} <= set(data["sweep"][0]["models"])


@pytest.mark.parametrize("source, figure", [("acn.json", "acn"),
                                            ("acn_daydream.json", "acn_daydream"),
                                            ("vae_pictures.json", "vae_pictures"),
                                            ("one_bit_vae.json", "one_bit_vae"),
                                            ("scoreboard.json", "scoreboard"),
                                            ("beta_vae.json", "beta_vae"),
                                            ("acn_variants.json", "acn_variants")])
def test_acn_one_bit_and_scoreboard_figures_are_drawn_from_their_committed_runs(
        tmp_path, cli, source, figure):
    status, _, err = cli(viz.main, "--neural", str(ROOT / "viz" / source), "--outdir",
                         str(tmp_path), "--quiet", "--dpi", "40")
    assert status == 0, err
    also = {"one_bit_vae": ["one_bit_posteriors"], "acn_daydream": ["acn_curves"],
            "scoreboard": ["model_counted"]}
    for name in [figure] + also.get(figure, []):
        img = iio.imread(tmp_path / f"{name}.png")
        assert img.ndim == 3 and min(img.shape[:2]) > 100 and img.std() > 0


def small_acn():
    return {"acn": {"2000": {"0": {"vae": 26.0, "vae_set": 17.0, "acn_set": 20.0,
                                   "acn_ordered": 29.0}}}}


def committed_one_bit():
    with open(ROOT / "viz" / "one_bit_vae.json") as f:
        return json.load(f)


@pytest.mark.parametrize("make, spoil", [
    (small_acn, lambda d: d["acn"]["2000"]["0"].pop("acn_set")),
    (small_acn, lambda d: d["acn"]["2000"].clear()),
    (committed_one_bit, lambda d: d["one_bit"]["one_bit"].pop("2")),
    (committed_one_bit, lambda d: d["one_bit"]["one_bit"]["1"]["5"]["0"].update(loss="1.5")),
])
def test_malformed_acn_or_one_bit_json_is_named_and_draws_nothing(tmp_path, cli, make, spoil):
    data = make()
    spoil(data)
    path = tmp_path / "n.json"
    path.write_text(json.dumps(data))
    status, _, err = cli(viz.main, "--neural", str(path), "--outdir", str(tmp_path / "figs"))
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "figs").exists()


@pytest.mark.parametrize("edit,where", [
    (lambda b: b["rows"]["factorial_vq"].__setitem__("actual_bits", "x"), "actual_bits"),
    (lambda b: b["rows"]["factorial_vq"].__setitem__("actual_bits_sd", -1.0), "actual_bits_sd"),
    (lambda b: b["baselines"]["layout"].pop("bz2"), "layout"),
    (lambda b: b["limit"].pop("se"), "limit.se")])
def test_a_malformed_scoreboard_is_named_and_draws_nothing(tmp_path, cli, edit, where):
    import json
    data = json.loads((ROOT / "viz" / "scoreboard.json").read_text())
    edit(data["scoreboard"])
    path = tmp_path / "board.json"
    path.write_text(json.dumps(data))
    status, _, err = cli(viz.main, "--neural", str(path), "--outdir", str(tmp_path / "out"))
    assert status == 2 and where in err and not (tmp_path / "out").exists(), err
