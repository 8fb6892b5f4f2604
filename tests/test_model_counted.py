"""The model counted: the parameter code (bits_back_coder), the 8-bit VAE's networks rounded
to steps chosen for the smallest total and sent ahead of its images (neural_models)."""
import pickle

import numpy as np
import pytest

import bits_back_coder as bbc
import neural_coding as coding
import neural_models as nm
import spline_images_factorial_vq as sv
from tests.helpers import NO_AVX512, rewrite, run_python

RNG = np.random.default_rng(0)
TENSORS = {"gaussian": np.rint(RNG.normal(0, 30, 4000)).astype(np.int64),
           "laplace": np.rint(RNG.laplace(3, 5, 300)).astype(np.int64),
           "zeros": np.zeros(7, dtype=np.int64),
           "one value": np.full(5, -9, dtype=np.int64),
           "wide": np.rint(RNG.normal(0, 3e8, 500)).astype(np.int64),
           "beyond 32 bits": np.array([-(2**40), 5, 2**40 - 1])}


@pytest.mark.parametrize("spec", [(0, 1, 1, 0), (5, 1, 300, 0), (40, 2, 7, 0), (4096, 2, 1, 0)])
def test_param_tables_are_complete_and_symmetric(spec):
    f = bbc.param_table(*spec[:3])
    assert f.sum() == 1 << bbc.PRECISION and f.min() >= 1
    # symmetric but for the rounding deficit, which goes to the first largest mass
    assert len(np.flatnonzero(f != f[::-1])) <= 2


def test_every_tensor_round_trips_and_costs_what_its_spec_says():
    specs = [bbc.param_spec(t) for t in TENSORS.values()]
    words = bbc.encode_params(list(TENSORS.values()), [s for s, _ in specs])
    back = bbc.decode_params(words, [s for s, _ in specs], [t.size for t in TENSORS.values()])
    assert all(np.array_equal(a, b) for a, b in zip(TENSORS.values(), back))
    ideal = sum(bits for _, bits in specs)
    assert ideal <= bbc.message_bits([words]) <= ideal + 64       # the stack's last words
    assert bbc.param_spec(TENSORS["zeros"])[1] == 0.0
    # a discretised Gaussian costs its entropy: 1/2 log2(2 pi e sigma^2) per value
    g = TENSORS["gaussian"]
    assert bbc.param_spec(g)[1] / g.size == pytest.approx(0.5 * np.log2(2 * np.pi * np.e * 900),
                                                          abs=0.02)


def test_a_message_with_more_than_its_tensors_is_refused():
    t = TENSORS["laplace"]
    spec, _ = bbc.param_spec(t)
    words = bbc.encode_params([t, t], [spec, spec])
    with pytest.raises(ValueError, match="more than its tensors"):
        bbc.decode_params(words, [spec], [t.size])


@pytest.fixture(scope="module")
def tiny():
    """A small 8-bit VAE, its validation and held-out images, and its code with its model."""
    X, Xv, T, _ = nm.load_split(0, 200, n_val=40, n_test=40)
    V, Vv, Vt = (sv.quantise_images(A) for A in (X, Xv, T))
    vae, _ = nm.fit_pixel_vae(V, Vv, 0, hidden=(8, 8), steps=150)
    return vae, Vv, Vt, coding.code_with_model(vae, Vv, Vt)


def test_the_steps_chosen_never_cost_more_than_where_the_search_starts(tiny):
    vae, Vv, Vt, (row, _) = tiny
    shifts, got = row["shifts"], row["model_validation"]
    cm = coding.coding_model(vae)
    nets, sent = coding.rounded_nets(cm.kind, cm.nets, shifts)
    data = coding.as_float(vae, nets).description_length(
        Vv / 255, n_samples=4, rng=np.random.default_rng(7))["total"].mean()
    params_bits = lambda tensors: sum(bbc.param_spec(t)[1] for t in tensors)
    assert got["model_bits"] == pytest.approx(params_bits(sent))
    assert got["total"] == pytest.approx(got["model_bits"] + len(Vt) * data)
    start, _ = coding.choose_shifts(vae, Vv, len(Vt), passes=0)
    _, sent0 = coding.rounded_nets(cm.kind, cm.nets, start)
    data0 = coding.as_float(vae, coding.rounded_nets(cm.kind, cm.nets, start)[0]).description_length(
        Vv / 255, n_samples=4, rng=np.random.default_rng(7))["total"].mean()
    assert got["total"] <= params_bits(sent0) + len(Vt) * data0 + 1e-6
    # rounding to a multiple of 2^shift: the rounded networks are what the integers say
    for (name, i, part), shift, t in zip(coding.net_tensors(cm.kind, cm.nets), shifts, sent):
        assert np.array_equal(nets[name][i][part == "b"], t * 2.0**shift)


def test_the_model_and_its_images_round_trip_and_add_up(tiny):
    vae, Vv, Vt, (row, message) = tiny
    assert row["model_roundtrip"]
    numbers = (sum(len(spec) + 1 for spec in message["specs"])     # each table and step,
               + sum(map(len, message["nets"].values())) + 2)       # the sizes, the latents,
                                                                    # the decoder's kind
    assert row["header_numbers"] == numbers
    assert row["model_bits"] == (bbc.message_bits([message["param_words"]])
                                 + coding.HEADER_NUMBER_BITS * numbers)
    assert row["with_model"] == pytest.approx(row["model_actual_bits"]
                                              + row["model_bits"] / len(Vt))
    images, _ = coding.receive(message)
    assert np.array_equal(images, Vt)
    damaged = {**message, "param_words": message["param_words"].copy()}
    damaged["param_words"][0] ^= 1 << 7
    try:                                       # a damaged model decodes other images, if any
        assert not np.array_equal(coding.receive(damaged)[0], Vt)
    except ValueError:
        pass


RECEIVE = """
import pickle, sys, numpy as np, neural_coding as coding
message, V = pickle.load(open(sys.argv[1], "rb"))
print("same" if np.array_equal(coding.receive(message)[0], V) else "different")
"""


def test_the_receiver_decodes_under_other_floating_point_kernels(tiny, tmp_path):
    if run_python("import numpy", env=NO_AVX512).returncode:
        pytest.skip("this numpy cannot switch its AVX-512 kernels off")
    vae, Vv, Vt, (_, message) = tiny
    path = tmp_path / "message.pkl"
    path.write_bytes(pickle.dumps((message, Vt)))
    res = run_python(RECEIVE, str(path), env=NO_AVX512)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "same"


def test_the_coding_page_quotes_the_committed_scoreboard():
    """The numbers of docs/coding.md's "The model counted" come from viz/scoreboard.json."""
    import json
    from tests.helpers import ROOT
    page = (ROOT / "docs" / "coding.md").read_text()
    prose = page[page.index("## The model counted"):page.index("## How three settings")]
    board = json.loads((ROOT / "viz" / "scoreboard.json").read_text())["scoreboard"]
    rows, lzma, bz2 = board["rows"], board["baselines"]["lzma"], board["baselines"]["bz2"]
    chosen = rows[board["mdl_choice"]]
    assert board["mdl_choice"] == "pixel_vae_ar_20000_32x32"
    assert "32-32 units with the autoregressive decoder, chosen" in " ".join(prose.split())
    old = [r for k, r in rows.items() if not k.startswith("pixel")]
    total = lambda key: f"{rows[key]['with_model']:.2f}"
    plain = min((k for k in rows if k.startswith("pixel_vae_20000_")),
                key=lambda k: rows[k]["with_model"])
    quoted = [f"{chosen['params']:,} parameters", f"in {chosen['model_bits']:,} bits",
              f"{chosen['model_bits'] / chosen['params']:.1f} bits each",
              f"{chosen['params_bits_per_image']:.1f} bits per image",
              f"{chosen['model_actual_bits']:.2f}", f"{chosen['actual_bits']:.2f} unrounded",
              f"{chosen['with_model']:.2f} bits per image in all",
              f"{lzma - chosen['with_model']:.2f} below lzma ({lzma:.2f})",
              f"{bz2 - chosen['with_model']:.2f} below bz2 ({bz2:.2f})",
              f"the {plain.split('_')[-1].replace('x', '-')} VAE's {total(plain)}",
              *(f"{w}-{w}: {total(f'pixel_vae_ar_20000_{w}x{w}')} against "
                f"{total(f'pixel_vae_20000_{w}x{w}')}" for w in (32, 64, 128)),
              f"({rows['pixel_vae_20000']['actual_bits']:.2f} bits per",
              f"{rows['pixel_vae_20000']['model_bits']:,} bits",
              f"{rows['pixel_vae_20000']['with_model']:.2f} per",
              f"{min(r['model_bits'] for r in old):,} to {max(r['model_bits'] for r in old):,}",
              f"{rows['separate_slices']['with_model']:.2f} (the slices)",
              f"{rows['residual_vq']['with_model']:.2f} (the residual chain)",
              f"{chosen['model_actual_bits'] - chosen['actual_bits']:.2f} bits per image"]
    prose = " ".join(prose.split())
    assert [q for q in quoted if q not in prose] == []
    assert all(r["model_roundtrip"] for r in rows.values())
    assert chosen["with_model"] < min(lzma, bz2)              # the first aim, and more
    assert all(rows[f"pixel_vae_ar_20000_{w}x{w}"]["with_model"]
               < rows[f"pixel_vae_20000_{w}x{w}"]["with_model"] for w in (32, 64, 128))
    assert min(r["with_model"] for k, r in rows.items() if not k.startswith("pixel")) == \
        rows["separate_slices"]["with_model"]


def test_a_counted_file_decodes_and_a_damaged_one_is_refused_in_one_line(tiny, tmp_path, cli):
    import neural_codes as nc
    vae, Vv, Vt, (row, message) = tiny
    path = tmp_path / "counted.svqb"
    size = coding.write_counted_bitstream(path, message, Vt, 0, len(Vt))
    header, V = coding.read_bitstream(path)
    assert np.array_equal(V, Vt) and header["model"] == coding.COUNTED
    # the file holds the model's message and the images' beside its header and lane counts
    words = len(message["param_words"]) + sum(map(len, message["words"]))
    assert 4 * words < size < 4 * words + 4096
    status, out, err = cli(nc.main, "--decode", str(path))
    assert status == 0 and "the held-out set" in out, err
    for edit in (lambda h: h["shifts"].__setitem__(0, h["shifts"][0] + 1),
                 lambda h: h["specs"][0].__setitem__(2, h["specs"][0][2] + 1),
                 lambda h: h["shifts"].pop()):
        bad = tmp_path / "bad.svqb"
        bad.write_bytes(path.read_bytes())
        rewrite(bad, edit)
        status, _, err = cli(nc.main, "--decode", str(bad))
        assert status == 2 and err.count("\n") == 1, err


def test_the_counted_file_is_asked_of_the_scoreboard_only(cli):
    import neural_codes as nc
    status, _, err = cli(nc.main, "--bitstream-counted", "x.svqb")
    assert status == 2 and "--scoreboard" in err and err.count("\n") == 1
