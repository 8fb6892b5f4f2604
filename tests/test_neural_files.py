"""The modern codes' files: the Gaussian VAE, the 8-bit VAE (plain and autoregressive) and
the ACN tour written with their fixed-point networks, decoded by a fresh process under other
floating-point kernels, and damage refused with one line."""
import pickle

import numpy as np
import pytest

import neural_codes as nc
import neural_coding as coding
import neural_models as nm
import spline_images_factorial_vq as sv
from tests.helpers import NO_AVX512, rewrite, run_python

N_TEST = 40


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Small trained models of the three kinds and the images each sends, pickled once: the
    tables the receiver rebuilds are what is tested, not the training."""
    X, X_val, T, _ = nm.load_split(0, 200, n_test=N_TEST)
    q = sv.quantise_images
    vae, _ = nm.fit_vae(X, X_val, 0, hidden=(32,), steps=60)
    pixel, _ = nm.fit_pixel_vae(q(X), q(X_val), 0, hidden=(32,), steps=60)
    ar, _ = nm.fit_pixel_vae(q(X), q(X_val), 0, hidden=(32,), steps=60, autoregressive=True)
    acn, _ = nm.fit_acn(X, X_val, 0, vae=vae, steps=30)
    sends = {"vae": (vae, q(T), "held-out"), "pixel_vae": (pixel, q(T), "held-out"),
             "pixel_ar": (ar, q(T), "held-out"),
             "acn": (acn, q(T)[acn.tour(T)], "tour")}
    path = tmp_path_factory.mktemp("fitted") / "fitted.pickle"
    path.write_bytes(pickle.dumps(sends))
    return path, sends


WRITE = """
import pickle, sys, neural_coding as coding
folder, tag, fitted = sys.argv[1:4]
with open(fitted, "rb") as f:
    sends = pickle.load(f)
for name, (model, V, order) in sends.items():
    coding.write_vae_code(f"{folder}/{tag}_{name}.svqb", model, V, 0, %d, order)
""" % N_TEST
READ = """
import sys, neural_coding as coding
for path in sys.argv[1:]:
    header, V = coding.read_vae_bitstream(path)
    print("decoded", header["model"], len(V))
"""


def test_the_four_codes_decode_under_other_floating_point_kernels(fitted, tmp_path):
    """Written with numpy's default kernels and decoded with its AVX-512 kernels off, and
    the other way round: the receiver rebuilds the very same integer tables."""
    if run_python("import numpy", env=NO_AVX512).returncode:
        pytest.skip("this numpy cannot switch its AVX-512 kernels off")
    for writer, reader, tag in ((None, NO_AVX512, "default"), (NO_AVX512, None, "noavx")):
        res = run_python(WRITE, str(tmp_path), tag, str(fitted[0]), env=writer)
        assert res.returncode == 0, res.stderr
        files = sorted(str(p) for p in tmp_path.glob(f"{tag}_*.svqb"))
        res = run_python(READ, *files, env=reader)
        assert res.returncode == 0, res.stderr
        assert sorted(res.stdout.split()[1::3]) == ["acn", "pixel_ar", "pixel_vae", "vae"]


@pytest.mark.parametrize("name", ["vae", "pixel_vae", "pixel_ar", "acn"])
def test_a_file_round_trips_in_process_and_the_cli_checks_it(fitted, tmp_path, cli, name):
    model, V, order = fitted[1][name]
    path = tmp_path / f"{name}.svqb"
    coding.write_vae_code(path, model, V, 0, N_TEST, order)
    header, got = coding.read_vae_bitstream(path)
    assert np.array_equal(got, V) and header["model"] == name and header["order"] == order
    status, out, err = cli(nc.main, "--decode", str(path))
    assert status == 0 and "the held-out set" in out, err


@pytest.mark.parametrize("edit,reason", [
    (lambda h: h.__setitem__("sigma_x", None), "'sigma_x' and 'mix'"),
    (lambda h: h.__setitem__("mix", 16), "'sigma_x' and 'mix'"),
    (lambda h: h["nets"]["enc"].__setitem__(-1, 7), "'nets'"),
    (lambda h: h["nets"].pop("dec"), "'nets'"),
    (lambda h: h.__setitem__("n_latent", 0), "'n_latent'"),
    (lambda h: h.__setitem__("order", "random"), "'order'"),
    (lambda h: h.__setitem__("extra", 1), "'extra' is not one of"),
    (lambda h: h.__setitem__("model", "factorial_vq"), "spline_images_factorial_vq.py")])
def test_hand_edited_headers_are_named(fitted, tmp_path, edit, reason):
    model, V, order = fitted[1]["vae"]
    path = tmp_path / "vae.svqb"
    coding.write_vae_code(path, model, V, 0, N_TEST, order)
    rewrite(path, edit)
    with pytest.raises(ValueError, match=reason) as err:
        coding.read_vae_bitstream(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_damage_gets_one_line_and_exit_2(fitted, tmp_path, cli):
    model, V, order = fitted[1]["pixel_vae"]
    path = tmp_path / "p.svqb"
    coding.write_vae_code(path, model, V, 0, N_TEST, order)
    blob = path.read_bytes()
    for bad in (blob[:-50], blob[:60] + bytes([blob[60] ^ 1]) + blob[61:]):
        path.write_bytes(bad)
        status, out, err = cli(nc.main, "--decode", str(path))
        assert status == 2 and not out and len(err.strip().splitlines()) == 1, err


def test_weights_beyond_the_files_integers_are_refused(fitted, tmp_path):
    model, V, order = fitted[1]["vae"]
    cm = coding.coding_model(model)
    W, b = cm.nets["enc"][0]
    cm.nets["enc"][0] = (W, b + 2.0**31)
    with pytest.raises(ValueError, match="32-bit"):
        coding.write_vae_bitstream(tmp_path / "x.svqb", cm, [np.ones(4, np.uint32)], V, 0, N_TEST)
