"""Coding the 1994 models: their fixed-point tables, round trips, bounds and files."""

import numpy as np
import pytest

import spline_images_factorial_vq as sv
import bits_back_coder as bbc
import file_container as fc
import compressors
from tests.helpers import NO_AVX512, ROOT, rewrite, run_python, run_script



def test_pixel_tables_sum_to_2_to_the_24_with_no_zero_and_agree_with_the_cdf():
    params = {"C": np.zeros((2, 3, sv.D), np.int64), "b": np.zeros(sv.D, np.int64),
              "a": np.zeros((2, 3), np.int64), "W": np.zeros((sv.D, 6), np.int64),
              "c": np.zeros(6, np.int64)}
    rng = np.random.default_rng(1)
    params["C"][...] = rng.integers(-3 * 4096, 3 * 4096, params["C"].shape)
    for sigma in (0.001, 0.15, 1000.0):
        cm = sv.CodingModel("factorial", 2, 3, sigma, 0, params)
        codes = sv.all_codes(2, 3)
        w = cm.pixel_weights(codes).astype(np.int64) + 1
        assert np.all(w >= 1) and np.all(w.sum(axis=-1) == 1 << 24)
        C = bbc.pixel_cdf(cm.reconstruct(codes)[..., None], sigma, np.arange(257))
        np.testing.assert_array_equal(np.diff(C, axis=-1), w)


@pytest.fixture(scope="module")
def small_models():
    out = sv.run_comparison(seed=3, n_samples=200, n_test=240,
                            models=["standard_vq", "separate_slices", "residual_vq", "factorial_vq"])
    return out["models"], sv.quantise_images(out["heldout"])


@pytest.mark.parametrize("name", sv.CODER_MODELS)
def test_every_model_round_trips_and_pays_its_own_bound(small_models, name):
    models, V = small_models
    row, _ = sv.code_and_check(sv.coder_variant(models, name), V, seed=3, lanes=12)
    assert row["roundtrip"]                           # the images and the initial bits
    # net bits vs the coder's expected cost; the states' unused bits, log-uniform, make
    # about +-16 bits per lane of noise over 240 images
    assert abs(row["overhead_pct"]) < 0.5
    assert row["bound_t"] < row["density_bound"]      # folded tails: most pixels are 0


def test_monte_carlo_bound_agrees_with_enumeration(small_models):
    models, V = small_models
    cm = sv.CodingModel.from_model(models["residual_vq"])
    exact, err = sv.discrete_bound(cm, V[:40])
    assert np.all(err < 1e-3)
    limit, sv.MAX_ENUMERATION = sv.MAX_ENUMERATION, 1
    try:
        mc, se = sv.discrete_bound(cm, V[:40], n_draws=3000, rng=np.random.default_rng(0))
    finally:
        sv.MAX_ENUMERATION = limit
    pooled = np.sqrt(np.sum(se**2)) / 40
    assert pooled > 0 and abs(mc.mean() - exact.mean()) < 4 * pooled + 1e-9


def test_fixed_point_posterior_is_close_to_the_float_one(small_models):
    models, V = small_models
    X = V / 255.0
    for name in ("factorial_vq", "standard_vq"):
        model = models[name]
        q = sv.CodingModel.from_model(model).posterior_table(V) / 2.0**24
        assert np.abs(q - model._q(X)).mean() < 0.01, name


def write_stream(small_models, tmp_path, name="factorial_vq", n=60):
    models, _ = small_models
    V = sv.quantise_images(sv.generate_spline_images(n, 3, stream=1)[0])
    cm = sv.CodingModel.from_model(sv.coder_variant(models, name))
    words, _ = bbc.bits_back_encode(cm, V, lanes=7, seed=3)
    path = tmp_path / "s.svqb"
    config = {"seed": 3, "n_test": n, "n_dims": 4, "n_units_per_dim": 6, "sigma_x": 0.15,
              "refine": cm.refine}
    sv.write_bitstream(path, name, cm, words, config, V)
    return path, V


def test_bitstream_round_trip_and_damage_is_detected(small_models, tmp_path):
    path, V = write_stream(small_models, tmp_path)
    header, decoded = sv.read_bitstream(path)
    np.testing.assert_array_equal(decoded, V)
    blob = path.read_bytes()
    for damaged in (blob[:-7], blob[: len(blob) // 2],
                    blob[:200] + bytes([blob[200] ^ 0x10]) + blob[201:],
                    blob[:-3] + bytes([blob[-3] ^ 0x01]) + blob[-2:], b"XXXX" + blob[4:]):
        path.write_bytes(damaged)
        with pytest.raises(ValueError):
            sv.read_bitstream(path)


@pytest.mark.parametrize("field,value", [
    ("lanes", 0), ("n_images", 10**12), ("n_test", 10**12), ("sigma_x", "0.15"),
    ("n_dims", 2.5), ("model", "nonsense"), ("refine", -1), ("images_sha256", 7),
    ("seed", True), ("form", "residual"), ("lanes", 8), ("n_params", 5)])
def test_hand_edited_headers_are_named(small_models, tmp_path, field, value):
    path, _ = write_stream(small_models, tmp_path)
    rewrite(path, lambda h: h.__setitem__(field, value))
    with pytest.raises(ValueError, match=field if field != "n_test" else "n_"):
        sv.read_bitstream(path)


def test_an_unknown_header_field_is_named(small_models, tmp_path):
    path, _ = write_stream(small_models, tmp_path)
    rewrite(path, lambda h: h.__setitem__("sigma", 0.2))
    with pytest.raises(ValueError, match="'sigma' is not one of"):
        sv.read_bitstream(path)


def test_a_missing_header_field_is_named(small_models, tmp_path):
    path, _ = write_stream(small_models, tmp_path)
    rewrite(path, lambda h: h.pop("refine"))
    with pytest.raises(ValueError, match="'refine' is missing"):
        sv.read_bitstream(path)


def _huge_first_parameter(rest):
    return (2**31 - 1).to_bytes(4, "little") + rest[4:]


@pytest.mark.parametrize("edit_rest,reason", [
    (lambda rest: rest + b"\0", "not a whole number of 32-bit words"),
    (lambda rest: rest[:-4], "'lanes' does not fit"),
    (_huge_first_parameter, "too large for the fixed-point coder")])
def test_hand_edited_parameters_and_message_are_named(small_models, tmp_path, edit_rest, reason):
    path, _ = write_stream(small_models, tmp_path)
    rewrite(path, edit_rest=edit_rest)
    with pytest.raises(ValueError, match=reason) as err:
        sv.read_bitstream(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_short_files_are_called_truncated_and_other_versions_named(small_models, tmp_path):
    path, _ = write_stream(small_models, tmp_path)
    blob = path.read_bytes()
    path.write_bytes(blob[:30])
    with pytest.raises(ValueError, match="truncated"):
        sv.read_bitstream(path)
    path.write_bytes(blob[:4] + bytes([fc.STREAM_VERSION + 1]) + blob[5:])
    with pytest.raises(ValueError, match=f"version {fc.STREAM_VERSION + 1} "):
        sv.read_bitstream(path)


def run(*args):
    return run_script("spline_images_factorial_vq.py", *args)


def test_cli_compress_decode_and_damage(tmp_path):
    stream, out = tmp_path / "h.svqb", tmp_path / "c.json"
    small = ["--n-test", "40", "--steps", "30", "--quiet"]
    res = run(*small, "--compress", "--bitstream", str(stream), "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert "exact" in res.stdout and "lzma" in res.stdout
    import json
    compress = json.loads(out.read_text())["compress"]
    assert set(compress) == set(sv.CODER_MODELS) | {"baselines", "seconds"}
    assert set(compress["baselines"]) == {*compressors.COMPRESSORS, "layout"}
    assert all(compress[m]["roundtrip"] for m in sv.CODER_MODELS)
    ok = run("--decode", str(stream))
    assert ok.returncode == 0 and "identical to the held-out set" in ok.stdout, ok.stderr
    blob = stream.read_bytes()
    stream.write_bytes(blob[:-100])
    bad = run("--decode", str(stream))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "damaged" in bad.stderr


WRITE = """
import pickle, sys, bits_back_coder as bbc, spline_images_factorial_vq as sv
folder, tag, fitted = sys.argv[1], sys.argv[2], sys.argv[3]
with open(fitted, "rb") as f:
    models, V = pickle.load(f)
for name in sv.CODER_MODELS:
    cm = sv.CodingModel.from_model(sv.coder_variant(models, name))
    words, _ = bbc.bits_back_encode(cm, V, lanes=10, seed=0)
    config = {"seed": 0, "n_test": len(V), "n_dims": 4, "n_units_per_dim": 6, "sigma_x": 0.15,
              "refine": cm.refine}
    sv.write_bitstream(f"{folder}/{tag}_{name}.svqb", name, cm, words, config, V)
"""
READ = """
import sys, spline_images_factorial_vq as sv
for path in sys.argv[1:]:
    sv.read_bitstream(path)
    print("decoded", path)
"""




def test_bitstreams_decode_under_other_floating_point_kernels(tmp_path):
    """Written with numpy's default kernels and decoded with its AVX-512 kernels off, and
    the other way round, for every coder row: the tables are the same integers."""
    if run_python("import numpy", env=NO_AVX512).returncode:
        pytest.skip("this numpy cannot switch its AVX-512 kernels off")
    import pickle
    X, T = sv.load_data(0, 200, 120)
    models = {name: sv.fit_model(name, X, seed=0, steps=30)[0]
              for name in ("standard_vq", "separate_slices", "residual_vq", "factorial_vq")}
    fitted = tmp_path / "fitted.pickle"         # fitted once: the tables are what is tested
    fitted.write_bytes(pickle.dumps((models, sv.quantise_images(T))))
    for writer, reader, tag in ((None, NO_AVX512, "default"), (NO_AVX512, None, "noavx")):
        res = run_python(WRITE, str(tmp_path), tag, str(fitted), env=writer)
        assert res.returncode == 0, res.stderr
        files = sorted(str(p) for p in tmp_path.glob(f"{tag}_*.svqb"))
        assert len(files) == len(sv.CODER_MODELS)
        res = run_python(READ, *files, env=reader)
        assert res.returncode == 0, res.stderr
        assert res.stdout.count("decoded") == len(files)


@pytest.mark.parametrize("name", ["v2_factorial.svqb", "v2_residual.svqb"])
def test_files_of_format_version_2_written_by_an_earlier_release_still_decode(cli, name):
    """Two files written by the release before the coder became its own module (24 held-out
    images of seed 0): the format and every table the decoder rebuilds are unchanged."""
    status, out, err = cli(sv.main, "--decode", str(ROOT / "tests" / "data" / name))
    assert status == 0 and "identical to the held-out set" in out, err
