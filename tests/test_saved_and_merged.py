"""Saved models and merged runs.

Every model family of both scripts, saved after training and loaded instead of trained,
scores exactly as the model saved; a wrong, damaged or mismatched file is refused with one
line.  Runs split by seed (the scoreboard: by model) and merged give the single run's
numbers, number for number."""
import json

import numpy as np
import pytest

import file_container as fc
import neural_codes as nc
import neural_models as nm
import spline_images_factorial_vq as sv
from tests.helpers import ROOT, run_script

TIMINGS = ("seconds", "train_seconds", "wall_seconds", "vae_seconds", "acn_seconds",
           "merged_from", "versions")


def numbers(payload):
    """A payload without its timings and provenance, which a merge cannot reproduce."""
    if isinstance(payload, dict):
        return {k: numbers(v) for k, v in payload.items()
                if k not in TIMINGS and not k.startswith("train_seconds")}
    if isinstance(payload, list):
        return [numbers(v) for v in payload]
    return payload


# ----------------------------------------------------------------------------- saved models


def save_then_load(tmp_path, key, config, fit, classes=nm.SAVED_CLASSES):
    saving = fc.ModelFolder(str(tmp_path), "save", classes)
    model, history, _ = fc.fit_or_load(saving, key, config, fit)
    loading = fc.ModelFolder(str(tmp_path), "load", classes)
    fail = lambda: pytest.fail("a loading folder trained")
    loaded, loaded_history, _ = fc.fit_or_load(loading, key, config, fail)
    assert type(loaded) is type(model) and loaded_history == numbers_of(history)
    return model, loaded


def numbers_of(history):
    return json.loads(json.dumps(history, default=lambda a: a.tolist()))


def same_scores(a, b):
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", sv.MODEL_NAMES)
def test_every_1994_model_scores_exactly_as_saved(tmp_path, name):
    X, T = sv.load_data(0, 200, 100)
    cfg = {**nc.CORE_TRAINING, "steps": 20, "n_samples": 200}
    fit = lambda: sv.fit_model(name, X, 0, **{k: cfg[k] for k in sv.TRAINING_KEYS[1:]})
    model, loaded = save_then_load(tmp_path, fc.model_key(name, 0, 200),
                                   sv.training_config(name, 0, cfg), fit, sv.SAVED_CLASSES)
    rng = lambda: np.random.default_rng(5)
    assert sv.evaluate(model, T, rng=rng()) == sv.evaluate(loaded, T, rng=rng())
    if name in ("factorial_vq", "standard_vq", "separate_slices"):
        assert same_scores(model.description_length(T, refine=0),
                           loaded.description_length(T, refine=0))


def test_every_network_scores_exactly_as_saved(tmp_path):
    X, V, T, _ = nm.load_split(0, 200, n_test=60)
    q = sv.quantise_images
    small = {"hidden": (16,), "steps": 20}
    fits = {"vae": lambda: nm.fit_vae(X, V, 0, **small),
            "vae_beta4": lambda: nm.fit_vae(X, V, 0, beta=4.0, **small),
            "pixel_vae": lambda: nm.fit_pixel_vae(q(X), q(V), 0, **small),
            "pixel_vae_ar": lambda: nm.fit_pixel_vae(q(X), q(V), 0, autoregressive=True,
                                                     **small),
            "gumbel_vq_vae_4x6": lambda: nm.fit_gumbel_vqvae(X, V, 0, **small),
            **{name: (lambda form=form, M=M, K=K, u=u: nm.fit_vqvae(X, V, 0, M, K, form,
                                                                   update=u, **small))
               for name, (form, M, K, u) in nc.VQ_VARIANTS.items()}}
    models, reloaded = {}, {}
    for name, fit in fits.items():
        model, loaded = save_then_load(tmp_path, name, {"model": name}, fit)
        images = q(T) / 255.0 if name.startswith("pixel_vae") else T
        assert same_scores(model.description_length(images), loaded.description_length(images))
        models[name], reloaded[name] = model, loaded
    vae = models["vae"]
    for rule in nm.ACN_RULES:
        acn, loaded = save_then_load(tmp_path, f"acn_{rule}", {"model": "acn"},
                                     lambda: nm.fit_acn(X, V, 0, vae=vae, steps=10, rule=rule))
        tour = acn.tour(T)
        assert np.array_equal(tour, loaded.tour(T)) and loaded.rule == rule
        assert same_scores(acn.description_length(T[tour]), loaded.description_length(T[tour]))
    assert models["vae_beta4"].beta == 4.0
    assert np.array_equal(models["pixel_vae_ar"].mask, reloaded["pixel_vae_ar"].mask)
    vae, loaded = save_then_load(tmp_path, "vae_iw", {"model": "vae"}, lambda: (vae, {}))
    rng = lambda: np.random.default_rng(3)
    (bits, se), (bits_loaded, se_loaded) = (m.importance_bound(T[:10], rng=rng())
                                            for m in (vae, loaded))
    assert np.array_equal(bits, bits_loaded) and se == se_loaded
    for layers in (1, 2):
        one_bit, loaded = save_then_load(tmp_path, f"one_bit_{layers}", {"layers": layers},
                                         lambda: (nm.fit_one_bit(10, layers, 0, steps=20), {}))
        assert one_bit.bits() == loaded.bits()


def test_a_wrong_damaged_or_mismatched_file_is_refused_in_one_line(tmp_path):
    X, _ = sv.load_data(0, 200, 10)
    folder = fc.ModelFolder(str(tmp_path), "save", sv.SAVED_CLASSES)
    fc.fit_or_load(folder, "pca", {"seed": 0, "sigma_x": 0.15},
                   lambda: sv.fit_model("pca5", X, 0))
    path = tmp_path / "pca.svqm"
    blob = path.read_bytes()
    loading = fc.ModelFolder(str(tmp_path), "load", sv.SAVED_CLASSES)
    damaged = bytearray(blob)
    damaged[len(blob) // 2] ^= 1
    cases = [(bytes(damaged), {"seed": 0, "sigma_x": 0.15}, "checksum mismatch"),
             (blob[:-8], {"seed": 0, "sigma_x": 0.15}, "checksum mismatch"),
             (b"SVQB" + blob[4:], {"seed": 0, "sigma_x": 0.15}, "not a saved model"),
             (blob, {"seed": 1, "sigma_x": 0.15}, "trained with seed = 0; this run asks for 1"),
             (blob, {"seed": 0, "sigma_x": 0.2}, "sigma_x = 0.15; this run asks for 0.2")]
    for data, config, reason in cases:
        path.write_bytes(data)
        with pytest.raises(fc.FileError, match=reason) as err:
            loading.load("pca", config)
        assert "\n" not in str(err.value)
    path.write_bytes(blob)
    (tmp_path / "other.svqm").write_bytes(blob)
    with pytest.raises(fc.FileError, match="holds model pca; this run asks for other"):
        loading.load("other", {"seed": 0, "sigma_x": 0.15})
    with pytest.raises(fc.FileError, match="holds a PCA, which this program does not load"):
        fc.ModelFolder(str(tmp_path), "load", {}).load("pca", {"seed": 0, "sigma_x": 0.15})
    with pytest.raises(fc.FileError, match="cannot be read"):
        loading.load("absent", {})


def test_the_scripts_save_load_and_refuse_models(tmp_path):
    args = ["--models", "factorial_vq", "pca5", "hard_factorial", "--n-test", "100",
            "--steps", "20", "--quiet"]
    core = "spline_images_factorial_vq.py"
    saved = run_script(core, *args, "--save-models", str(tmp_path / "m"),
                       "--json", str(tmp_path / "a.json"))
    loaded = run_script(core, *args, "--load-models", str(tmp_path / "m"),
                        "--json", str(tmp_path / "b.json"))
    assert saved.returncode == loaded.returncode == 0, saved.stderr + loaded.stderr
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert numbers(a["results"]) == numbers(b["results"])
    refused = run_script(core, *args, "--load-models", str(tmp_path / "m"), "--sigma-x", "0.2")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "trained with sigma_x = 0.15; this run asks for 0.2" in refused.stderr
    (tmp_path / "m" / "pca5_N200_seed0.svqm").write_bytes(b"not a model")
    refused = run_script(core, *args, "--load-models", str(tmp_path / "m"))
    assert refused.returncode == 2 and "not a saved model" in refused.stderr
    assert refused.stderr.count("\n") == 1
    missing = run_script("neural_codes.py", "--models", "pca24", "--load-models",
                         str(tmp_path / "m"), "--quiet")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "pca24_N200_seed0.svqm: cannot be read" in missing.stderr


# ----------------------------------------------------------------------------- merged runs


MAINS = {"spline_images_factorial_vq.py": sv.main, "neural_codes.py": nc.main}


def merge(cli, script, tmp_path, parts, *args):
    """Write each part's payload as a JSON file, merge them with the script's main (in this
    process: `cli` is the fixture): (merged payload, stdout)."""
    paths = []
    for i, part in enumerate(parts):
        paths.append(str(tmp_path / f"part{i}.json"))
        (tmp_path / f"part{i}.json").write_text(json.dumps(part))
    status, out, err = cli(MAINS[script], "--merge", *paths, "--json",
                           str(tmp_path / "merged.json"), "--quiet", *args)
    assert status == 0, err
    return json.loads((tmp_path / "merged.json").read_text()), out


def split_by_seed(payload, kind):
    """One part per seed of a committed multi-seed run, as its one-seed run would write it."""
    parts = []
    for seed in reversed(payload["config"]["seeds"]):        # any order merges
        part = {**payload, "config": {**payload["config"], "seeds": [seed]}}
        key = str(seed)
        if kind == "results":
            part["results"] = [r for r in payload["results"] if r["seed"] == seed]
            part["summary"] = "a one-seed summary, which the merge recomputes"
        elif kind == "acn":
            part["acn"] = {n: {key: r[key]} for n, r in payload["acn"].items()}
        elif kind == "one_bit":
            one = payload["one_bit"]
            part["one_bit"] = {
                "one_bit": {k: {n: {key: r[key]} for n, r in d.items()}
                            for k, d in one["one_bit"].items()},
                "collapse": {s: {key: r[key]} for s, r in one["collapse"].items()}}
        parts.append(part)
    return parts


@pytest.mark.parametrize("script, name, kind", [
    ("neural_codes.py", "neural_seeds", "results"), ("neural_codes.py", "acn", "acn"),
    ("neural_codes.py", "one_bit_vae", "one_bit")])
def test_a_committed_run_split_by_seed_merges_back_to_itself(tmp_path, cli, script, name, kind):
    payload = json.loads((ROOT / "viz" / f"{name}.json").read_text())
    merged, stdout = merge(cli, script, tmp_path, split_by_seed(payload, kind), "--markdown")
    assert numbers(merged) == numbers(payload)
    assert stdout.strip() == nc.report(payload, markdown=True).strip()


def test_the_scoreboard_split_by_model_merges_back_to_itself(tmp_path, cli):
    payload = json.loads((ROOT / "viz" / "scoreboard.json").read_text())
    rows, cfg = payload["scoreboard"]["rows"], payload["config"]
    halves = [[m for m in cfg["models"] if m != "pixel_vae"], ["pixel_vae"]]
    parts = [{**payload, "config": {**cfg, "models": models},
              "scoreboard": {**payload["scoreboard"],
                             "rows": {k: r for k, r in rows.items()
                                      if k.startswith("pixel_vae") == (models == ["pixel_vae"])}}}
             for models in reversed(halves)]
    merged, stdout = merge(cli, "neural_codes.py", tmp_path, parts)
    assert numbers(merged) == numbers(payload)
    assert stdout.strip() == nc.report(payload).strip()


@pytest.mark.parametrize("script, args, timed", [
    ("spline_images_factorial_vq.py", ["--models", "factorial_vq", "pca5", "hard_factorial",
                                       "--n-test", "150", "--steps", "20"], True),
    ("neural_codes.py", ["--models", "vae", "vq_vae_4x6", "pca24", "--n-test", "80",
                         "--steps", "30", "--hidden", "32"], False)])
def test_runs_one_seed_each_merge_to_the_two_seed_run(tmp_path, cli, script, args, timed):
    runs = {}
    for name, seeds in (("both", ["0", "1"]), ("one", ["1"]), ("zero", ["0"])):
        status, out, err = cli(MAINS[script], *args, "--seeds", *seeds, "--quiet",
                               "--json", str(tmp_path / f"{name}.json"))
        assert status == 0, err
        runs[name] = (json.loads((tmp_path / f"{name}.json").read_text()), out)
    merged, stdout = merge(cli, script, tmp_path, [runs["one"][0], runs["zero"][0]])
    assert numbers(merged) == numbers(runs["both"][0])
    # the core's table ends in a seconds column, the one thing a merge cannot repeat
    strip = lambda text: [line.rsplit(None, 1)[0] if timed and line.strip() else line
                          for line in text.strip().splitlines()]
    assert strip(stdout) == strip(runs["both"][1])


def test_the_limit_of_a_merge_is_the_smallest_seeds_as_in_the_single_run(tmp_path, cli):
    runs = {}
    for seeds in ([0, 1], [1], [0]):
        out = sv.run_experiments(("limit",), seeds, workers=1, limit_images=30, limit_samples=40)
        runs[tuple(seeds)] = {"config": {"seeds": seeds, "experiments": ["limit"]}, **out}
    merged, stdout = merge(cli, "spline_images_factorial_vq.py", tmp_path,
                           [runs[(1,)], runs[(0,)]])
    assert merged["limit"] == runs[(0, 1)]["limit"] and merged["limit"]["seed"] == 0
    assert merged["experiment_runs"] == runs[(0, 1)]["experiment_runs"]
    assert stdout.strip() == sv.format_experiments(runs[(0, 1)], [0, 1]).strip()


def test_parts_that_do_not_make_one_run_are_refused_in_one_line(tmp_path, cli):
    payload = json.loads((ROOT / "viz" / "acn.json").read_text())
    one, two = split_by_seed(payload, "acn")[:2]
    cases = [([one, one], "seed 4 is in"),
             ([one, {**two, "config": {**two["config"], "n_test": 7}}], "was run with n_test = 7"),
             ([one, json.loads((ROOT / "viz" / "scoreboard.json").read_text())],
              "runs of different kinds"),
             ([one, json.loads((ROOT / "viz" / "choices.json").read_text())],
              "a run that does not merge")]
    for parts, reason in cases:
        for i, part in enumerate(parts):
            (tmp_path / f"p{i}.json").write_text(json.dumps(part))
        out = run_script("neural_codes.py", "--merge", str(tmp_path / "p0.json"),
                         str(tmp_path / "p1.json"))
        assert out.returncode == 2 and reason in out.stderr, out.stderr
        assert out.stderr.count("\n") == 1
    status, _, err = cli(sv.main, "--merge", str(tmp_path / "p0.json"), "--seed", "3")
    assert status == 2 and "--merge reads its runs: leave out --seed" in err
