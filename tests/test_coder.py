"""The bits-back rANS coder: codecs, tables, message growth, model round trips, the file."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import spline_images_factorial_vq as sv

ROOT = Path(__file__).resolve().parents[1]


def random_message(lanes=7, words=20, seed=0):
    return sv.Message.random(lanes, words, np.random.default_rng(seed))


@pytest.mark.parametrize("precision", [8, 16, 24, 28])
def test_quantised_tables_sum_to_2_to_the_precision_with_no_zero(precision):
    rng = np.random.default_rng(0)
    probs = np.concatenate([rng.dirichlet(np.full(12, 0.05), size=200),       # spiky
                            np.eye(12)[:5],                                    # one-hot
                            np.full((1, 12), 1 / 12)])                          # flat
    f = sv.quantise(probs, precision)
    assert np.all(f >= 1) and np.all(f.sum(axis=1) == 1 << precision)
    assert np.all(np.argmax(f, axis=1) == np.argmax(probs, axis=1))


def test_pixel_table_sums_to_2_to_the_precision_with_no_zero():
    means = np.array([-3.0, -0.2, 0.0, 0.3, 0.5, 1.0, 4.0])           # far outside [0,1] too
    for sigma in (0.001, 0.15, 5.0):
        codec = sv.PixelGaussian(means[:, None], sigma)
        C = codec.cdf(np.arange(257)[None, :].repeat(len(means), 0))
        assert np.all(C[:, 0] == 0) and np.all(C[:, -1] == 1 << sv.PIXEL_PRECISION)
        assert np.all(np.diff(C.astype(np.int64), axis=1) >= 1)


def test_categorical_round_trip_on_random_data():
    rng = np.random.default_rng(1)
    msg = random_message()
    init = msg.copy()
    lanes = np.arange(7)
    pushed = []
    for _ in range(300):
        f = sv.quantise(rng.dirichlet(np.ones(9), size=7), 16)
        s = rng.integers(0, 9, size=7)
        sv.Categorical(f).push(msg, lanes, s)
        pushed.append((f, s))
    for f, s in reversed(pushed):
        np.testing.assert_array_equal(sv.Categorical(f).pop(msg, lanes), s)
    assert msg == init


def test_pixel_round_trip_on_random_data_with_lane_subsets():
    rng = np.random.default_rng(2)
    msg = random_message()
    init = msg.copy()
    pushed = []
    for _ in range(300):
        lanes = np.flatnonzero(rng.random(7) < 0.7)
        means = rng.uniform(-0.3, 1.3, len(lanes))
        v = rng.integers(0, 256, len(lanes))
        sv.PixelGaussian(means, 0.15).push(msg, lanes, v)
        pushed.append((lanes, means, v))
    for lanes, means, v in reversed(pushed):
        np.testing.assert_array_equal(sv.PixelGaussian(means, 0.15).pop(msg, lanes), v)
    assert msg == init


def test_message_bytes_round_trip_and_reject_bad_lengths():
    msg = random_message()
    sv.Categorical(sv.quantise(np.full((7, 4), 0.25), 16)).push(msg, np.arange(7), np.arange(7) % 4)
    assert sv.Message.from_bytes(msg.to_bytes(), 7) == msg
    with pytest.raises(ValueError):
        sv.Message.from_bytes(msg.to_bytes()[:-1], 7)


def test_popping_past_the_initial_bits_is_an_error():
    msg = sv.Message.random(3, 0, np.random.default_rng(0))
    codec = sv.Categorical(sv.quantise(np.full((3, 256), 1 / 256), 16))
    with pytest.raises(ValueError, match="underflow"):
        for _ in range(10):
            codec.pop(msg, np.arange(3))


@pytest.mark.parametrize("precision", [16, 24])
def test_message_growth_is_the_information_content_plus_a_small_epsilon(precision):
    """rANS with heads >= 2^32 loses at most log2(1 + 2^(p-32)) bits a symbol; the heads
    themselves hold up to 32 bits per lane either way."""
    rng = np.random.default_rng(3)
    lanes, n = 16, 2000
    msg = random_message(lanes, 0, seed=4)
    start = msg.bits
    info = 0.0
    for _ in range(n):
        f = sv.quantise(rng.dirichlet(np.full(6, 0.5), size=lanes), precision)
        s = np.array([rng.choice(6, p=row / row.sum()) for row in f])
        sv.Categorical(f, precision).push(msg, np.arange(lanes), s)
        info += np.sum(precision - np.log2(f[np.arange(lanes), s]))
    eps = math.log2(1 + 2.0 ** (precision - 32))
    assert msg.bits - start <= info + n * lanes * eps + 32 * lanes
    assert msg.bits - start >= info - 32 * lanes                     # and no free lunch


@pytest.fixture(scope="module")
def small_models():
    out = sv.run_comparison(seed=3, n_samples=200, n_test=240, steps=120,
                            models=["standard_vq", "separate_slices", "residual_vq", "factorial_vq"])
    return out["models"], sv.quantise_images(out["heldout"])


@pytest.mark.parametrize("name", sv.CODER_MODELS)
def test_every_model_round_trips_and_pays_its_own_bound(small_models, name):
    models, V = small_models
    row, _ = sv.code_and_check(sv._coder_variant(models, name), V, seed=3, lanes=12)
    assert row["roundtrip"]                           # the images and the initial bits
    assert abs(row["overhead_pct"]) < 0.5             # net bits vs the coder's expected cost
    assert row["bound_t"] < row["density_bound"]      # folded tails: most pixels are 0


def test_monte_carlo_bound_agrees_with_enumeration(small_models):
    models, V = small_models
    model = models["residual_vq"]
    exact, err = sv.discrete_bound(model, V[:40])
    assert np.all(err < 1e-3)
    limit, sv.MAX_ENUMERATION = sv.MAX_ENUMERATION, 1
    try:
        mc, se = sv.discrete_bound(model, V[:40], n_draws=3000, rng=np.random.default_rng(0))
    finally:
        sv.MAX_ENUMERATION = limit
    pooled = np.sqrt(np.sum(se**2)) / 40
    assert pooled > 0 and abs(mc.mean() - exact.mean()) < 4 * pooled + 1e-9


def test_bitstream_round_trip_and_damage_is_detected(small_models, tmp_path):
    models, _ = small_models
    V = sv.quantise_images(sv.generate_spline_images(60, 3, stream=1)[0])
    model = models["factorial_vq"]
    msg, _ = sv.bits_back_encode(model, V, seed=3)
    path = tmp_path / "s.svqb"
    config = {"seed": 3, "n_test": 60, "n_dims": 4, "n_units_per_dim": 6, "sigma_x": 0.15,
              "refine": model.refine}
    sv.write_bitstream(path, "factorial_vq", model, msg, config, V)
    header, decoded = sv.read_bitstream(path)
    np.testing.assert_array_equal(decoded, V)
    blob = path.read_bytes()
    for damaged in (blob[:-7], blob[: len(blob) // 2],
                    blob[:200] + bytes([blob[200] ^ 0x10]) + blob[201:],
                    blob[:-3] + bytes([blob[-3] ^ 0x01]) + blob[-2:], b"XXXX" + blob[4:]):
        path.write_bytes(damaged)
        with pytest.raises(ValueError):
            sv.read_bitstream(path)


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "spline_images_factorial_vq.py"), *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_compress_decode_and_damage(tmp_path):
    stream, out = tmp_path / "h.svqb", tmp_path / "c.json"
    small = ["--n-test", "40", "--steps", "30", "--quiet"]
    res = run(*small, "--compress", "--bitstream", str(stream), "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert "exact" in res.stdout and "lzma" in res.stdout
    import json
    compress = json.loads(out.read_text())["compress"]
    assert set(compress) == set(sv.CODER_MODELS) | {"baselines", "seconds"}
    assert set(compress["baselines"]) == {"gzip", "bz2", "lzma", "png"}
    assert all(compress[m]["roundtrip"] for m in sv.CODER_MODELS)
    ok = run("--decode", str(stream))
    assert ok.returncode == 0 and "identical to the held-out set" in ok.stdout, ok.stderr
    blob = stream.read_bytes()
    stream.write_bytes(blob[:-100])
    bad = run("--decode", str(stream))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "damaged" in bad.stderr
