"""The spline-image generator."""
import numpy as np
import pytest

import spline_images_factorial_vq as sv


def test_shapes_range_and_normalisation():
    X, ctrl = sv.generate_spline_images(50, seed=3)
    assert X.shape == (50, 96) and ctrl.shape == (50, 5)
    assert X.dtype == np.float64
    assert X.min() >= 0.0 and np.allclose(X.max(axis=1), 1.0)
    assert ctrl.min() >= 0.5 and ctrl.max() <= 6.5


def test_training_controls_match_the_earlier_reproduction_stream():
    _, ctrl = sv.generate_spline_images(200, seed=7)
    np.testing.assert_array_equal(ctrl, np.random.default_rng(7).uniform(0.5, 6.5, size=(200, 5)))


def test_deterministic_and_heldout_independent():
    a, _ = sv.generate_spline_images(30, seed=1)
    b, _ = sv.generate_spline_images(30, seed=1)
    np.testing.assert_array_equal(a, b)
    _, c_train = sv.generate_spline_images(2000, seed=1)
    _, c_test = sv.generate_spline_images(2000, seed=1, stream=1)
    assert not np.isin(c_test, c_train).any()                       # no shared draws
    # independent uniform streams: the correlation of matched draws is ~ N(0, 1/sqrt(n))
    r = np.corrcoef(c_train.ravel(), c_test.ravel())[0, 1]
    assert abs(r) < 4 / np.sqrt(c_train.size)


def test_render_matches_a_direct_per_point_sum():
    """The separable matrix-product rendering equals summing every bump pixel by pixel."""
    from scipy.interpolate import CubicSpline
    ctrl = np.array([[1.0, 5.0, 2.0, 6.0, 3.5]])
    xs = np.linspace(0, 11, 200)
    ys = CubicSpline(np.linspace(0, 11, 5), ctrl[0], bc_type="natural")(xs)
    rows, cols = np.mgrid[0:8, 0:12]
    img = sum(np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * 0.6**2)) for x, y in zip(xs, ys))
    np.testing.assert_allclose(sv.render_splines(ctrl)[0], (img / img.max()).ravel(), rtol=1e-12)


def test_bad_n_is_refused():
    with pytest.raises(ValueError):
        sv.generate_spline_images(0)


def test_column_bands_partition_the_columns():
    bands = sv.column_bands(4)
    assert bands.shape == (4, 96)
    np.testing.assert_array_equal(bands.sum(axis=0), 1.0)
    assert bands[0].reshape(8, 12)[:, :3].all() and not bands[0].reshape(8, 12)[:, 3:].any()


def test_rendering_in_chunks_is_rendering_at_once(monkeypatch):
    """To the last bits of float64 (BLAS's kernels differ with the batch size)."""
    controls = np.random.default_rng(3).uniform(0.5, 6.5, (50, 5))
    whole = sv.render_splines(controls)
    monkeypatch.setattr(sv, "RENDER_CHUNK", 7)
    np.testing.assert_allclose(sv.render_splines(controls), whole, rtol=0, atol=1e-14)
