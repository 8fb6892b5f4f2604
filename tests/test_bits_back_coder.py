"""The bits-back coder on its own (bits_back_coder.py): integer tables, constriction, the
chain on a toy coding model, the sampled bound, the file container; and the compressors."""

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import norm

import bits_back_coder as bbc
import file_container as fc
import compressors


def random_tables(rng, n, S, precision=bbc.PRECISION, alpha=0.3):
    return bbc.softmax_table(np.log(rng.dirichlet(np.full(S, alpha), size=n)), precision)


@pytest.mark.parametrize("precision", [8, 15, 24])
def test_softmax_tables_sum_to_2_to_the_precision_with_no_zero(precision):
    rng = np.random.default_rng(0)
    logits = np.concatenate([rng.normal(0, 20, (200, 12)),                  # spiky
                             np.where(np.eye(12)[:5] > 0, 0.0, -1e6),       # one-hot
                             np.zeros((1, 12))])                             # flat
    f = bbc.softmax_table(logits, precision)
    assert np.all(f >= 1) and np.all(f.sum(axis=1) == 1 << precision)
    assert np.all(np.argmax(f, axis=1) == np.argmax(logits, axis=1))
    # close to the exact softmax where the table has room
    p = softmax(logits[:200], axis=-1)
    assert np.abs(f[:200] / 2.0**precision - p).max() < 0.01 + 2.0 ** (6 - precision)


def test_exp_and_phi_tables_match_the_functions():
    e = bbc.exp_table()
    i = np.arange(0, len(e) - 1, 97)
    assert np.abs(e[i] / 2.0**30 - np.exp(-i / 256)).max() < 1e-9 and e[-1] == 0
    for sigma in (0.01, 0.15, 3.0):
        T = bbc.phi_table(sigma)
        j = np.arange(0, len(T), 101)
        z = (j - bbc.PHI_HALF) / (bbc.PHI_STEPS * 255 * sigma)
        assert np.all(np.diff(T) >= 0)
        h = 1 / (bbc.PHI_STEPS * 255 * sigma)             # the trapezoid rule's step in z
        assert np.abs(T[j] / (2.0**24 - 256) - norm.cdf(z)).max() < h**2 / 24 + 1e-6


def test_constriction_codes_the_integer_tables_exactly():
    """Weights f - 1 make constriction's categorical model the table f itself: the message
    grows by the information content under f, to within the words the states hold."""
    import constriction
    rng = np.random.default_rng(3)
    for S in (2, 6, 256):
        f = random_tables(rng, 4000, S, alpha=0.2)
        s = np.array([rng.choice(S, p=row / row.sum()) for row in f])
        s[::50] = np.argmin(f[::50], axis=1)             # include the rarest symbols
        info = np.sum(24 - np.log2(f[np.arange(len(f)), s]))
        coder = constriction.stream.stack.AnsCoder(bbc.initial_words(1, 1, 0)[0])
        start = coder.num_bits()
        bbc._push(coder, s, bbc.weights(f))
        assert abs(coder.num_bits() - start - info) < 64
        np.testing.assert_array_equal(bbc._pop(coder, bbc.weights(f)), s)


def test_pop_then_push_returns_the_initial_words():
    import constriction
    rng = np.random.default_rng(4)
    initial = bbc.initial_words(3, 4, seed=5)
    coders = [constriction.stream.stack.AnsCoder(w) for w in initial]
    f = random_tables(rng, 4, 6)
    for c in coders:
        bbc._push(c, bbc._pop(c, bbc.weights(f)), bbc.weights(f))
    assert all(np.array_equal(c.get_compressed(), w) for c, w in zip(coders, initial))


def test_int_table_is_proportional_and_complete():
    rng = np.random.default_rng(6)
    masses = rng.integers(0, 10**6, size=(50, 7))
    masses[::5] = 0                                      # all-zero rows: uniform
    f = bbc.int_table(masses, 16)
    assert np.all(f >= 1) and np.all(f.sum(axis=1) == 1 << 16)
    busy = masses.sum(axis=1) > 0
    p = masses[busy] / masses[busy].sum(axis=1, keepdims=True)
    assert np.abs(f[busy] / 2.0**16 - p).max() < 8 / 2.0**16


def test_sample_table_draws_each_symbol_with_its_frequency():
    f = np.array([[1, (1 << 24) - 3, 2]])
    u = np.arange(0, 1 << 24, 997)
    got = bbc.sample_table(np.repeat(f, len(u), axis=0), u)
    counts = np.bincount(got, minlength=3) / len(u)
    assert np.allclose(counts, f[0] / 2.0**24, atol=1e-3)


class ToyCode:
    """A coding model of 4-pixel images with M = 2 parts of K = 3 codes (the protocol of
    bits_back_coder): pixel means from two small codebooks, posteriors from a fixed table
    per image; sequential, its part 2 given part 1."""

    n_dims, n_pixels, sigma = 2, 4, 0.05

    def __init__(self, sequential, rng):
        self.sequential = sequential
        self.C = rng.integers(0, 1 << bbc.PARAM_BITS, size=(2, 3, 4)) // 2

    def prior_table(self):
        return bbc.int_table(np.array([[3, 2, 1], [1, 1, 4]]))

    def reconstruct(self, codes):
        return self.C[0, codes[:, 0]] + self.C[1, codes[:, 1]]

    def posterior_table(self, V):
        return bbc.int_table(1 + (V[:, None, :3].astype(np.int64) * [[1], [2]]) % 7)

    def stage_table(self, V, codes, d):
        return bbc.int_table(1 + (V[:, :3].astype(np.int64) + d * codes[:, :1]) % 5)

    def pixel_weights(self, codes):
        rows = bbc.pixel_rows(self.sigma)
        return rows[bbc.edge_shift(self.reconstruct(codes)) - bbc.SHIFT_LOW]

    def pixel_bits(self, V, codes):
        return bbc.pixel_table_bits(self.reconstruct(codes), self.sigma, V)


@pytest.mark.parametrize("sequential", [False, True])
def test_the_chain_round_trips_a_toy_model_and_pays_its_bound(sequential):
    rng = np.random.default_rng(7)
    cm = ToyCode(sequential, rng)
    V = rng.integers(0, 256, size=(300, 4)).astype(np.uint8)
    row, words = bbc.round_trip(cm, V, lambda: bbc.sampled_bound(cm, V, n_draws=256), seed=2,
                                lanes=7, draws=3)
    assert row["roundtrip"] and len(words) == 7 and len(row["actual_bits_draws"]) == 3
    assert abs(row["actual_bits"] - row["bound_t"]) < 4 * row["bound_t_err"] + 0.5


def test_the_container_round_trips_and_names_what_is_wrong():
    fields = {"model": lambda v: v == "toy", "n": fc.whole(1, 10), "h": fc.is_sha256}
    header = {"model": "toy", "n": 3, "h": "0" * 64}
    words = [np.array([1, 2, 3], np.uint32), np.array([4], np.uint32)]
    blob = fc.pack_stream(header, np.array([-5, 7, 2**31 - 1]), words)
    got, rest = fc.unpack_stream("f", blob, fields)
    params, lanes = fc.split_payload("f", rest, 3, 2)
    assert got == header and params.tolist() == [-5, 7, 2**31 - 1]
    assert all(np.array_equal(a, b) for a, b in zip(lanes, words))
    for bad, reason in ((blob[:3] + b"X" + blob[4:], "bad magic"), (blob[:-4], "checksum"),
                        (blob[:20], "truncated")):
        with pytest.raises(ValueError, match=reason):
            fc.unpack_stream("f", bad, fields)
    with pytest.raises(ValueError, match="decode it with other"):
        fc.unpack_stream("f", blob, fields, elsewhere={"toy": "other"})
    with pytest.raises(ValueError, match="32-bit"):
        fc.pack_stream(header, np.array([2**31]), words)


def test_each_compressor_keeps_its_best_layout():
    rng = np.random.default_rng(8)
    V = np.repeat(rng.integers(0, 256, size=(1, 6), dtype=np.uint8), 40, axis=0)
    layouts = compressors.image_layouts(V, 2, 3)
    assert layouts["rows"].shape == (80, 3) and layouts["columns"].shape == (120, 2)
    assert np.array_equal(layouts["pixels"], V.T)
    bits = compressors.baseline_bits(V, 2, 3)
    assert set(bits["layout"]) == set(compressors.COMPRESSORS)
    assert all(bits["layout"][n] in layouts for n in compressors.COMPRESSORS)
