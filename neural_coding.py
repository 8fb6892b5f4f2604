"""The modern codes' coding models, their files and the model counted.

The bits-back coder (bits_back_coder.py) sees a model only through its coding-model
protocol; here are the protocol's implementations for the networks of neural_models.py: the
Gaussian VAE, the 8-bit VAE (plain and with its autoregressive decoder) and the ACN, every
table computed in fixed point so that any CPU rebuilds it bit for bit.  Then the files that
carry a coded set with its networks, and the model counted: the networks rounded, coded by
the coder's parameter code and sent ahead of the images, with the receiver's side.
neural_codes.py runs them; neural_models.py never imports this module.
"""

import functools
import math

import spline_images_factorial_vq as sv  # first: it sets the BLAS thread count

import bits_back_coder as bbc  # noqa: E402
import cli_kit as kit  # noqa: E402
import file_container as fc  # noqa: E402
import neural_models as nm  # noqa: E402

np = sv.np
D = sv.D


# ----------------------------------------------------------------------------- the VAE's code
#
# Bits-back coding with a continuous latent, BB-ANS style: each latent is cut into
# LATENT_BINS bins of equal prior mass; the sender pops bin k_l ~ Q(k_l | v) (the posterior's
# mass in each bin), pushes the pixels under the decoder's mean at the bins' centres, pushes
# k under the prior.  The core's coder runs the chain; the class below gives it the tables.
#
# Every table is computed in integers, so that the receiver, running the networks on other
# batches than the sender did, gets the very same tables: weights and activations are fixed
# point, and every matrix product is a float64 BLAS product of integer-valued arrays whose
# partial sums stay below 2^53, which makes it exact in any order of summation.  The normal
# CDF is the core's integer table, the exponential the core's exp table.

LATENT_BITS = 10
LATENT_BINS = 1 << LATENT_BITS
FIX = 12                          # activations and weights in units of 2^-12
Z_UNIT = 8192                     # latent values on the grid 1/8192, over +-4 ...
Z_SIGMA = Z_UNIT / (bbc.PHI_STEPS * (bbc.PIXEL_LEVELS - 1))  # ... which phi_table(Z_SIGMA) steps
EXACT = 2.0**52                   # partial sums of an exact float64 product stay below this
# the value of one input step of each network's first layer: 8-bit pixels, latent grid, FIX
INPUT_UNITS = {"enc": 1.0 / (bbc.PIXEL_LEVELS - 1), "dec": 1.0 / Z_UNIT, "prior": 2.0**-FIX}


def _fixed_layers(mlp, in_unit):
    """An MLP's weights in fixed point: per layer (W, b) integer-valued float64 with the
    products in units 2^-2*FIX; in_unit is the value of one input step (1/255 for 8-bit
    pixels, 2^-FIX for activations), a number or one per input (n_in, 1)."""
    layers = []
    for i in range(len(mlp.sizes) - 1):
        unit = in_unit if i == 0 else 2.0**-FIX
        W = np.rint(mlp.p[f"W{i}"] * unit * 2.0**(2 * FIX))
        b = np.rint(mlp.p[f"b{i}"] * 2.0**(2 * FIX))
        layers.append((W, b))
    return layers


def _fixed_forward(layers, act, H):
    """The fixed-point MLP on integer inputs H (N, n_in): integer outputs in units 2^-FIX.
    Raises if a product could leave the exact range."""
    for i, (W, b) in enumerate(layers):
        if float(np.abs(H).max(initial=0)) * float(np.abs(W).sum(axis=0).max()) >= EXACT:
            raise ValueError("activations too large for the exact fixed-point network")
        A = np.floor((H @ W + b) / 2.0**FIX)                  # exact: integers, power-of-2 step
        H = A if i == len(layers) - 1 else (np.maximum(A, 0.0) if act == "relu" else None)
        if H is None:
            raise ValueError("the fixed-point network takes ReLU networks")
    return H.astype(np.int64)


@functools.lru_cache(maxsize=1)
def latent_grid():
    """(phi, edges, centres): the integer normal CDF on the grid z = j / Z_UNIT (index
    j + PHI_HALF; values up to 2^24 - 256), the LATENT_BINS + 1 bin edges and the bin
    centres as grid integers: edge i is where the CDF first reaches i / LATENT_BINS of its
    range (the ends are the ends of the grid), the centre of a bin the median of its mass."""
    phi = bbc.phi_table(Z_SIGMA)
    top = (1 << bbc.PRECISION) - bbc.PIXEL_LEVELS
    j = np.searchsorted(phi, (np.arange(2 * LATENT_BINS + 1) * top) // (2 * LATENT_BINS))
    j = np.clip(j, 0, len(phi) - 1) - bbc.PHI_HALF
    edges, centres = j[0::2].copy(), j[1::2]
    edges[0], edges[-1] = -bbc.PHI_HALF, bbc.PHI_HALF
    return phi, edges, centres


class VAECodingModel:
    """A GaussianVAE as the bits-back coder sees it (bits_back_coder's coding-model
    protocol): n_dims latents of n_codes = LATENT_BINS bins each, every part's posterior
    table at once; prior_table, posterior_table, reconstruct and pixel_weights, all in
    integers (see above)."""

    sequential, n_pixels = False, D
    kind = "vae"

    def __init__(self, n_latent, sigma_x, nets):
        """nets: {"enc", "dec"}: the fixed-point layers (_fixed_layers) of each network,
        which is all the coder needs; a file holds exactly these (write_vae_bitstream)."""
        self.n_dims, self.n_codes, self.sigma_x = int(n_latent), LATENT_BINS, sigma_x
        self.nets = nets
        self.enc, self.dec = nets["enc"], nets["dec"]

    @classmethod
    def fixed_nets(cls, vae):
        """The fixed-point layers of a trained model's networks."""
        if any(net.act != "relu" for net in vae.nets.values()):
            raise ValueError("the VAE coder takes ReLU networks")
        return {name: _fixed_layers(net, cls.input_unit(name, vae.n_latent))
                for name, net in vae.nets.items()}

    @classmethod
    def input_unit(cls, name, n_latent):
        """The value of one input step of a network's first layer (_fixed_layers)."""
        return INPUT_UNITS[name]

    @classmethod
    def of(cls, vae):
        """The coder's view of a trained GaussianVAE."""
        return cls(vae.n_latent, vae.sigma_x, cls.fixed_nets(vae))

    def prior_table(self):
        """Frequencies (L, B): the grid's mass in each bin (equal to within rounding)."""
        phi, edges, _ = latent_grid()
        masses = np.diff(phi[edges + bbc.PHI_HALF])
        return np.tile(bbc.int_table(masses), (self.n_dims, 1))

    def gaussian_table(self, out):
        """Frequencies (N, L, B) of each bin's mass under N(mu, s^2) from a network's integer
        outputs out (N, 2L) = (mu, log s) in units 2^-FIX."""
        phi, edges, _ = latent_grid()
        L = self.n_dims
        mu = out[:, :L] * Z_UNIT >> FIX                                  # grid units
        # s = exp(log s) from the exp table, log s clipped to [-EXP_RANGE, 0] nats
        e = bbc.exp_table()
        i = np.clip((-out[:, L:] * bbc.EXP_STEPS) >> FIX, 0, len(e) - 2)
        s = e[i]                                                         # units 2^-30
        z = ((edges[None, None, :] - mu[..., None]) << 30) // s[..., None]
        cdf = phi[np.clip(z, -bbc.PHI_HALF, bbc.PHI_HALF) + bbc.PHI_HALF]
        return bbc.int_table(np.diff(cdf, axis=-1))

    def encoder_out(self, V):
        """The fixed-point encoder's outputs (N, 2L), units 2^-FIX, for 8-bit images V (N, 96)."""
        return _fixed_forward(self.enc, "relu", V.astype(np.float64))

    def posterior_table(self, V):
        """Frequencies (N, L, B) of q's mass in each bin for 8-bit images V (N, 96)."""
        return self.gaussian_table(self.encoder_out(V))

    def reconstruct(self, codes):
        """Decoder means (N, 96) in units 2^-12 at the bin centres of codes (N, L)."""
        _, _, centres = latent_grid()
        return _fixed_forward(self.dec, "relu", centres[codes].astype(np.float64))

    def pixel_weights(self, codes):
        rows = bbc.pixel_rows(self.sigma_x)
        return rows[bbc.edge_shift(self.reconstruct(codes)) - bbc.SHIFT_LOW]

    def pixel_bits(self, V, codes):
        """-log2 of the coder's table probability of every pixel of V (N, 96) given codes."""
        return bbc.pixel_table_bits(self.reconstruct(codes), self.sigma_x, V)

    def bound(self, V, n_draws=64, rng=None, chunk=250, priors=None):
        """The coder's own bound of V (N, 96) under its integer tables, by Monte Carlo
        (bits_back_coder.sampled_bound): (F_t (N,), its standard error (N,))."""
        return bbc.sampled_bound(self, V, n_draws, rng, chunk, priors)


@functools.lru_cache(maxsize=1)
def scale_tables():
    """The normal CDF tables (N_SCALES, 2 J + 1) of the core's pixel grid, one per scale
    exp((SCALE_LOW + i SCALE_STEP) / 4096) of SCALE_GRID; the scales are computed in decimal,
    so that every machine builds the same tables."""
    from decimal import Decimal
    scales = [float((Decimal(nm.SCALE_LOW + i * nm.SCALE_STEP) / 4096).exp())
              for i in range(nm.N_SCALES)]
    return np.stack([bbc.phi_table(s) for s in scales])


class PixelVAECodingModel(VAECodingModel):
    """A PixelVAE as the coder sees it: the VAE's tables, with each pixel's table taken from
    the scale grid at its decoded log-scale (rounded to the nearest grid step)."""

    kind, model = "pixel_vae", nm.PixelVAE

    @classmethod
    def of(cls, vae):
        if not isinstance(vae, cls.model):
            raise ValueError(f"{cls.__name__} takes a {cls.model.__name__}")
        return cls(vae.n_latent, None, cls.fixed_nets(vae))

    autoregressive = False       # the pixel tables need no pixels: decoded all at once

    def decoder_out(self, codes, V):
        """The decoder's integer outputs (N, 192), units 2^-12, for codes (N, L) (V unused)."""
        return self.reconstruct(codes)

    @staticmethod
    def pixel_cdf(out, levels):
        """The pixel tables' CDF at each of `levels` (tuple of integer arrays broadcast with
        (N, P, ...)) given decoder outputs out (N, 2P), the P means then the P log-scales."""
        means, raw = np.split(out, 2, axis=1)
        row = np.clip((raw - nm.SCALE_LOW + nm.SCALE_STEP // 2) // nm.SCALE_STEP, 0,
                      nm.N_SCALES - 1)
        extra = (1,) * (np.ndim(levels[0]) - 2)
        row, means = row.reshape(row.shape + extra), means.reshape(means.shape + extra)
        return [bbc.table_cdf(lambda idx: scale_tables()[row, idx], means, v) for v in levels]

    @classmethod
    def table_weights(cls, out):
        """constriction's weights (N, P, 256) of the pixel tables of decoder outputs (N, 2P)."""
        cdf, = cls.pixel_cdf(out, (np.arange(bbc.PIXEL_LEVELS + 1)[None, None],))  # (N, P, 257)
        return (np.diff(cdf, axis=-1) - 1).astype(np.float32)

    def pixel_weights(self, codes, V=None):
        """The pixel tables (N, 96, 256) as weights given codes (N, L) (and the images V,
        which an autoregressive decoder reads)."""
        return self.table_weights(self.decoder_out(codes, V))

    def pixel_bits(self, V, codes):
        v = V.astype(np.int64)
        upper, lower = self.pixel_cdf(self.decoder_out(codes, V), (v + 1, v))
        return bbc.PRECISION - np.log2(upper - lower)


class ARPixelVAECodingModel(PixelVAECodingModel):
    """An ARPixelVAE as the coder sees it: pixel k's table (in PIXEL_ORDER) from the decoder
    run on the codes and the pixels before it.  The sender has the image and gets every
    table in one run; the receiver decodes pixel by pixel (pixel_weights_at), the pixels not
    yet decoded at 0, which the masks make irrelevant."""

    kind, model = "pixel_ar", nm.ARPixelVAE
    autoregressive, pixel_order = True, nm.PIXEL_ORDER

    @classmethod
    def input_unit(cls, name, n_latent):
        if name != "dec":
            return INPUT_UNITS[name]
        return np.concatenate([np.full(n_latent, INPUT_UNITS["dec"]),
                               np.full(D, INPUT_UNITS["enc"])])[:, None]

    def decoder_out(self, codes, V):
        """Decoder outputs (N, 192), units 2^-12, at the bin centres of codes (N, L) and
        the 8-bit images V (N, 96)."""
        _, _, centres = latent_grid()
        H = np.concatenate([centres[codes], V.astype(np.int64)], axis=1).astype(np.float64)
        return _fixed_forward(self.dec, "relu", H)

    def pixel_weights_at(self, codes, V, j):
        """The table (N, 256) of pixel j as weights, given codes (N, L) and V (N, 96) whose
        pixels before j in PIXEL_ORDER are decoded."""
        out = self.decoder_out(codes, V)
        return self.table_weights(out[:, [j, D + j]])[:, 0]


class ACNCodingModel(VAECodingModel):
    """An ACN as the coder sees it: the VAE's tables, and the prior of an image's code given
    the image sent before it (context_prior_table: the fixed-point prior network fed the
    fixed-point encoder's mean of that image, which the receiver has decoded).

    Each latent's table is the mixture (1 - 1/ACN_CODER_MIX) p(z | mu(v_ctx)) + 1/ACN_CODER_MIX
    N(0, 1), and the bound prices codes under the same tables.  The mixture is there for the
    actual bits more than for the bound: the next image's posterior pop reads the low bits
    that pushing this code k left, which lie at the prior CDF's value of k.  A greedy tour
    now and then jumps far (when an image's neighbours have all been sent), its code lands
    in the far tail of the conditional prior, the bits it leaves sit near 0 or 1, and the
    next image's code is popped from the far tail of its posterior, at a cost well above
    the bound's average.  With 1/16 of the mass on N(0, 1) such a code costs at most 4 bits
    more than under N(0, 1) and leaves bits no nearer the ends than the posterior's outer
    sixteenth; codes that fit the conditional prior pay log2(16/15) = 0.09 bits a latent.
    ACN_CODER_MIX is the mixture --choose picks on seed 0's validation tour (run_choices)."""

    kind = "acn"

    def __init__(self, n_latent, sigma_x, nets, mix=nm.ACN_CODER_MIX):
        super().__init__(n_latent, sigma_x, nets)
        self.prior_net = nets["prior"]
        self.mix = mix                  # 1/mix of each latent's mass on N(0, 1); None: none

    @classmethod
    def of(cls, acn, mix=nm.ACN_CODER_MIX):
        if not isinstance(acn, nm.ACN):
            raise ValueError("ACNCodingModel takes an ACN")
        return cls(acn.n_latent, acn.sigma_x, cls.fixed_nets(acn), mix)

    def context_prior_table(self, V_ctx):
        """Frequencies (N, L, B) of each bin's mass under the coder's prior given the 8-bit
        images V_ctx (N, 96) sent before: p(z | mu(v_ctx)) mixed with N(0, 1) (see above)."""
        mu = self.encoder_out(V_ctx)[:, :self.n_dims].astype(np.float64)
        table = self.gaussian_table(_fixed_forward(self.prior_net, "relu", mu))
        if self.mix is None:
            return table
        return bbc.int_table(table * (self.mix - 1) + self.prior_table()[None])

    def bound(self, V, n_draws=64, rng=None, chunk=250, priors=None):
        """The coder's bound (VAECodingModel.bound) of V (N, 96) sent as one sequence in this
        order: every image's code priced given the image before it, the first's under N(0, I)."""
        if priors is None:
            priors = np.concatenate([self.prior_table()[None], self.context_prior_table(V[:-1])])
        return super().bound(V, n_draws, rng, chunk, priors)


def coding_model(vae, mix=nm.ACN_CODER_MIX):
    """The coder's view of a trained VAE, 8-bit VAE or ACN (its prior mixed as `mix` says)."""
    if isinstance(vae, nm.ACN):
        return ACNCodingModel.of(vae, mix)
    if isinstance(vae, nm.ARPixelVAE):
        return ARPixelVAECodingModel.of(vae)
    return PixelVAECodingModel.of(vae) if isinstance(vae, nm.PixelVAE) else VAECodingModel.of(vae)


def as_sent(cm, V, lanes=bbc.CODER_LANES):
    """(images, lanes) as the coder is handed them: an ACN's set is one sequence on one
    lane, reversed, since a stack's receiver decodes the last image pushed first (so that
    it decodes V[0] first, then V[1] given V[0], and so on)."""
    return (V[::-1], 1) if cm.kind == "acn" else (V, lanes)


def code_vae(vae, V, seed=0, lanes=bbc.CODER_LANES, dl=None, draws=1, mix=nm.ACN_CODER_MIX):
    """Bits-back code the 8-bit images V (N, 96) with the VAE, decode, check: one row of
    the coder table (actual bits, the coder's bound, overhead, round trip), as the core's
    code_and_check gives for a discrete model.  An ACN sends V as one sequence in the order
    given (as_sent), each code priced given the image before it, the first under N(0, I).
    dl: the VAE's description_length of V / 255, if the caller has it;
    draws: sets of initial bits the actual bits are averaged over (bits_back_coder.round_trip);
    mix: an ACN coder's prior mixture (ACNCodingModel)."""
    cm = coding_model(vae, mix)
    W, lanes = as_sent(cm, V, lanes)
    row, _ = bbc.round_trip(cm, W, lambda: cm.bound(V), seed, lanes, draws)
    dl = vae.description_length(V / (bbc.PIXEL_LEVELS - 1)) if dl is None else dl
    density = float(dl["total"].mean())
    if not isinstance(vae, nm.PixelVAE):         # from the t-convention to 8-bit levels
        density += sv.t_to_8bit(vae.sigma_x)
    return {**row, "density_bound": density, "latent_bins": LATENT_BINS, "lanes": lanes}


# --- the VAE's file ---------------------------------------------------------------------------
#
# A coded set of images with the fixed-point networks that code it, in the coder's container
# (bits_back_coder.pack_stream): the receiver needs nothing but the file.  An ACN's set is
# sent as one sequence on one lane, in the order given (its tour).

VAE_CODERS = {"vae": VAECodingModel, "pixel_vae": PixelVAECodingModel,
              "pixel_ar": ARPixelVAECodingModel, "acn": ACNCodingModel}
VAE_NETS = {"vae": ("enc", "dec"), "pixel_vae": ("enc", "dec"), "pixel_ar": ("enc", "dec"),
            "acn": ("enc", "dec", "prior")}
PIXEL_KINDS = ("pixel_vae", "pixel_ar")              # the 8-bit VAEs: no sigma_x


def _sizes(v):
    return (isinstance(v, list) and 2 <= len(v) <= 2 + 4
            and all(fc.whole(1, nm.MAX_HIDDEN)(s) for s in v))


VAE_HEADER = {
    "model": lambda v: v in VAE_CODERS,
    "seed": fc.whole(0, sv.MAX_SEED),
    "n_test": fc.whole(1, sv.MAX_IMAGES),
    "n_images": fc.whole(1, sv.MAX_IMAGES),
    "lanes": fc.whole(1, 10_000),
    "n_latent": fc.whole(1, nm.MAX_LATENTS),
    "sigma_x": lambda v: v is None or (isinstance(v, float)
                                       and sv.SIGMA_RANGE[0] <= v <= sv.SIGMA_RANGE[1]),
    "mix": lambda v: v is None or fc.whole(2, 1 << 16)(v),
    "nets": lambda v: isinstance(v, dict) and all(_sizes(s) for s in v.values()),
    "order": lambda v: v in ("held-out", "tour"),
    "n_params": fc.whole(1, 2**31),
    "images_sha256": fc.is_sha256,
}


def _layer_shapes(kind, nets):
    """[(net, W shape)] in the order a file stores the layers (each W, then its bias):
    the networks in VAE_NETS order (a header's JSON keeps no order)."""
    return [(name, (a, b)) for name in VAE_NETS[kind]
            for a, b in zip(nets[name][:-1], nets[name][1:])]


def layer_sizes(kind, nets):
    """{net: [n_in, widths..., n_out]} of fixed-point networks, as a file's header holds."""
    return {name: [nets[name][0][0].shape[0]] + [W.shape[1] for W, _ in nets[name]]
            for name in VAE_NETS[kind]}


def net_sizes(cm):
    """layer_sizes of a coding model's networks."""
    return layer_sizes(cm.kind, cm.nets)


def tensor_masks(kind, sizes):
    """Per tensor (each layer's W, then its b, the networks in VAE_NETS order), the boolean
    mask of the weights that exist (the autoregressive decoder's: made_masks, which the
    sizes fix), or None where all do."""
    masks = [None] * sum(2 * (len(s) - 1) for s in sizes.values())
    if kind == "pixel_ar":
        at = 2 * (len(sizes["enc"]) - 1)                    # the decoder's tensors follow
        dec = sizes["dec"]
        for i, m in enumerate(nm.made_masks(dec[0] - D, dec[1:-1])):
            masks[at + 2 * i] = m > 0
    return masks


def write_vae_bitstream(path, cm, words, V, seed, n_test, order="held-out"):
    """Write the message words of the 8-bit images V (N, 96) as coded by cm (a
    VAECodingModel and kin; for an ACN, one lane with V sent in its order) with cm's
    fixed-point networks.  Returns the file's size in bytes."""
    import hashlib
    nets = net_sizes(cm)
    params = np.concatenate([np.concatenate([W.ravel(), b.ravel()])
                             for name in VAE_NETS[cm.kind] for W, b in cm.nets[name]])
    params = params.astype(np.int64)
    header = {"model": cm.kind, "seed": int(seed), "n_test": int(n_test), "n_images": len(V),
              "lanes": len(words), "n_latent": cm.n_dims, "sigma_x": cm.sigma_x,
              "mix": getattr(cm, "mix", None), "nets": nets, "order": order,
              "n_params": int(params.size),
              "images_sha256": hashlib.sha256(V.tobytes()).hexdigest()}
    blob = fc.pack_stream(header, params, words)
    kit.write_bytes(path, blob)
    return len(blob)


def _check_vae_header(path, header):
    """ValueError unless a file's networks and fields fit its model and latents."""
    kind, L, nets = header["model"], header["n_latent"], header["nets"]
    out = 2 * D if kind in PIXEL_KINDS else D
    want = {"enc": (D, 2 * L), "dec": (L + D * (kind == "pixel_ar"), out), "prior": (L, 2 * L)}
    if set(nets) != set(VAE_NETS[kind]) or any((s[0], s[-1]) != want[n] for n, s in nets.items()):
        raise ValueError(f"{path}: header field 'nets' does not fit model {kind} with "
                         f"{L} latents")
    if (header["sigma_x"] is None) != (kind in PIXEL_KINDS) or (
            header["mix"] is not None and kind != "acn"):
        raise ValueError(f"{path}: header fields 'sigma_x' and 'mix' do not fit model {kind}")


def _vae_coding_model(path, header, flat):
    """The coding model a checked file's header and parameters describe."""
    kind, L, nets = header["model"], header["n_latent"], header["nets"]
    layers, at = {n: [] for n in nets}, 0
    for name, (a, b) in _layer_shapes(kind, nets):
        W = flat[at:at + a * b].reshape(a, b).astype(np.float64)
        layers[name].append((W, flat[at + a * b:at + a * b + b].astype(np.float64)))
        at += a * b + b
    weights = [W for name in VAE_NETS[kind] for W, _ in layers[name]]      # in file order
    if any(m is not None and np.any(W[~m]) for m, W in zip(tensor_masks(kind, nets)[0::2],
                                                          weights)):
        raise ValueError(f"{path}: weights where the autoregressive decoder has none")
    extra = (header["mix"],) if kind == "acn" else ()
    return VAE_CODERS[kind](L, header["sigma_x"], layers, *extra)


def read_vae_bitstream(path):
    """Decode a file of write_vae_bitstream: (header, images (N, 96) uint8 in the order
    sent).  ValueError with a plain message on any damage; images are only returned when
    the checksum, the decoded images' hash and the recovered initial bits all agree."""
    with open(path, "rb") as f:
        blob = f.read()
    header, rest = fc.unpack_stream(path, blob, VAE_HEADER, elsewhere={
        m: "spline_images_factorial_vq.py --decode" for m in sv.CODER_MODELS})
    _check_vae_header(path, header)
    n_params = sum(a * b + b for _, (a, b) in _layer_shapes(header["model"], header["nets"]))
    if header["n_params"] != n_params or header["n_images"] > header["n_test"]:
        raise ValueError(f"{path}: header fields 'n_params' or 'n_images' do not fit the "
                         f"networks and the held-out set")
    flat, words = fc.split_payload(path, rest, n_params, header["lanes"])
    cm = _vae_coding_model(path, header, flat)
    V = bbc.decode_checked(path, cm, words, header["n_images"], header["seed"],
                           header["images_sha256"], reverse=cm.kind == "acn")
    return header, V


def write_vae_code(path, vae, V, seed, n_test, order="held-out"):
    """Code the 8-bit images V (N, 96) with a trained VAE, 8-bit VAE or ACN (an ACN's set
    as one sequence in the order given) and write the file; returns its size in bytes."""
    cm = coding_model(vae)
    words, _ = bbc.bits_back_encode(cm, *as_sent(cm, V), seed)
    return write_vae_bitstream(path, cm, words, V, seed, n_test, order)


# --- the model counted: its networks coded ahead of its images --------------------------------
#
# Minimum description length counts the model: a receiver that holds nothing decodes the
# networks first, then the images.  Every tensor of the fixed-point networks (each layer's W
# and b, in the file's order) is rounded to a step of 2^shift of its fixed-point unit and
# sent by bits_back_coder's parameter code.  The shifts are chosen per tensor for the
# smallest total, model bits plus the images' bits, by coordinate descent on validation
# images, the images' bits measured by the float model with the rounded weights standing in
# for the coder's (which computes the same networks in fixed point).  A Gaussian VAE or an
# 8-bit VAE; an ACN's prior network would need its context in the search.

MAX_SHIFT = 30                   # a step of 2^30 fixed-point units is coarser than any weight
HEADER_NUMBER_BITS = 32          # each number of a file's header the receiver needs


def net_tensors(kind, nets):
    """[(net, layer, "W" or "b")] of a coding model's fixed-point networks, in file order."""
    return [(name, i, part) for name in VAE_NETS[kind] for i in range(len(nets[name]))
            for part in ("W", "b")]


def rounded_nets(kind, nets, shifts):
    """The fixed-point networks with tensor j rounded to a multiple of 2^shifts[j], and the
    integers sent, tensor j divided by its step (its existing weights only, in order):
    (nets, [int64 arrays])."""
    out = {name: [list(layer) for layer in nets[name]] for name in VAE_NETS[kind]}
    sent = []
    masks = tensor_masks(kind, layer_sizes(kind, nets))
    for (name, i, part), shift, mask in zip(net_tensors(kind, nets), shifts, masks):
        j = 0 if part == "W" else 1
        q = np.rint(nets[name][i][j] / 2.0**shift)
        sent.append((q if mask is None else q[mask]).astype(np.int64))
        out[name][i][j] = q * 2.0**shift
    return {name: [tuple(layer) for layer in layers] for name, layers in out.items()}, sent


def send_params(sent):
    """The integer tensors sent by the parameter code, each under its shortest table:
    (specs, words)."""
    specs = [bbc.param_spec(t)[0] for t in sent]
    return specs, bbc.encode_params(sent, specs)


def model_code_row(sent, other_numbers=0):
    """The parameter code of a model's integer tensors, decoded and checked: {"model_bits",
    "model_roundtrip", "header_numbers"}; the model's bits count its message and, at
    HEADER_NUMBER_BITS each, the numbers of every tensor's table and other_numbers more."""
    specs, words = send_params(sent)
    back = bbc.decode_params(words, specs, [np.size(t) for t in sent])
    numbers = sum(len(spec) for spec in specs) + other_numbers
    return {"model_bits": bbc.message_bits([words]) + HEADER_NUMBER_BITS * numbers,
            "model_roundtrip": all(np.array_equal(a, b.reshape(np.shape(a)))
                                   for a, b in zip(sent, back)),
            "header_numbers": numbers}


def as_float(vae, nets):
    """A copy of the float VAE whose networks are the fixed-point ones given (the inverse
    of _fixed_layers, exact up to the rounding)."""
    out = vae.astype(np.float64)
    for name, layers in nets.items():
        for i, (W, b) in enumerate(layers):
            unit = type(coding_model(vae)).input_unit(name, vae.n_latent) if i == 0 else \
                2.0**-FIX
            out.nets[name].p[f"W{i}"][...] = W / (unit * 2.0**(2 * FIX))
            out.nets[name].p[f"b{i}"][...] = b / 2.0**(2 * FIX)
    return out


def choose_shifts(vae, V_val, n_images, fine=6, passes=2, n_samples=4):
    """Per-tensor shifts for the smallest total over n_images images: model bits plus
    n_images times the mean bits of the validation images V_val (N, 96) uint8.  Each tensor
    starts at a step of 2^-fine of its spread (sd), then every shift in turn moves coarser
    while the total falls, then finer.  Returns (shifts, {"model_bits", "data_bits",
    "total"}) at the choice."""
    cm = coding_model(vae)
    X = V_val / (bbc.PIXEL_LEVELS - 1)
    tensors = net_tensors(cm.kind, cm.nets)
    masks = tensor_masks(cm.kind, net_sizes(cm))

    @functools.lru_cache(maxsize=None)
    def tensor_bits(j, shift):                      # tensor j's code at a shift
        name, i, part = tensors[j]
        q = np.rint(cm.nets[name][i][part == "b"] / 2.0**shift)
        return bbc.param_spec(q if masks[j] is None else q[masks[j]])[1]

    def total(shifts):
        nets, _ = rounded_nets(cm.kind, cm.nets, shifts)
        data = float(as_float(vae, nets).description_length(
            X, n_samples=n_samples, rng=np.random.default_rng(7))["total"].mean())
        model = sum(tensor_bits(j, s) for j, s in enumerate(shifts))
        return model + n_images * data, model, data

    spread = [float(np.std(cm.nets[name][i][part == "b"][() if m is None else m]))
              for (name, i, part), m in zip(tensors, masks)]
    shifts = [int(np.clip(math.floor(math.log2(max(sd, 1.0))) - fine, 0, MAX_SHIFT))
              for sd in spread]
    best = total(shifts)
    for _ in range(passes):
        moved = False
        for j in range(len(tensors)):
            for step in (1, -1):                   # coarser while it pays, then finer
                while 0 <= shifts[j] + step <= MAX_SHIFT:
                    trial = shifts[:j] + [shifts[j] + step] + shifts[j + 1:]
                    got = total(trial)
                    if got[0] >= best[0]:
                        break
                    shifts, best, moved = trial, got, True
        if not moved:
            break
    return shifts, {"model_bits": best[1], "data_bits": best[2], "total": best[0]}


def receiver_model(kind, n_latent, sigma_x, nets, shifts, specs, param_words):
    """The coding model a receiver builds from the parameters' message and the header's
    numbers alone (nets as net_sizes gives them; shifts and specs per tensor)."""
    shapes = [shape for _, (a, b) in _layer_shapes(kind, nets) for shape in ((a, b), (b,))]
    masks = [np.ones(shape, dtype=bool) if m is None else m
             for m, shape in zip(tensor_masks(kind, nets), shapes)]
    ints = bbc.decode_params(param_words, specs, [int(m.sum()) for m in masks])

    def tensor(t, mask, shift):                     # the sent integers in their places
        out = np.zeros(mask.shape)
        out[mask] = t * 2.0**shift
        return out
    flat = iter(tensor(t, m, shift) for t, m, shift in zip(ints, masks, shifts))
    layers = {name: [(next(flat), next(flat)) for _ in range(len(nets[name]) - 1)]
              for name in VAE_NETS[kind]}
    return VAE_CODERS[kind](n_latent, sigma_x, layers)


def code_with_model(vae, V_val, V, seed=0, lanes=bbc.CODER_LANES):
    """The 8-bit images V (N, 96) sent with their model: the networks rounded at the shifts
    chosen on V_val (choose_shifts, for len(V) images), sent by the parameter code, then V
    by bits-back under the rounded networks.  The receiver's side is run too: it decodes the
    parameters, builds its coding model from them alone (receiver_model), and decodes the
    images with it.  The model's bits count its message and the header's numbers (at
    HEADER_NUMBER_BITS).  Returns (row, what is sent: {"kind", "n_latent", "sigma_x",
    "nets", "shifts", "specs", "param_words", "words", "n_images"})."""
    shifts, chosen = choose_shifts(vae, V_val, len(V))
    cm = coding_model(vae)
    nets, sent = rounded_nets(cm.kind, cm.nets, shifts)
    sender = type(cm)(cm.n_dims, cm.sigma_x, nets)
    specs, param_words = send_params(sent)
    words, initial = bbc.bits_back_encode(sender, V, lanes, seed)
    message = {"kind": cm.kind, "n_latent": cm.n_dims, "sigma_x": cm.sigma_x,
               "nets": net_sizes(cm), "shifts": shifts, "specs": specs,
               "param_words": param_words, "words": words, "n_images": len(V)}
    decoded, left = receive(message)
    ok = (np.array_equal(decoded, V) and len(left) == len(initial)
          and all(np.array_equal(a, b) for a, b in zip(left, initial)))
    # the header: each tensor's table and step, the networks' sizes, the latents and the
    # decoder's kind (plain or autoregressive)
    numbers = (sum(len(spec) + 1 for spec in specs) + sum(map(len, message["nets"].values()))
               + 2)
    model_bits = bbc.message_bits([param_words]) + HEADER_NUMBER_BITS * numbers
    data_bits = (bbc.message_bits(words) - bbc.message_bits(initial)) / len(V)
    row = {"model_bits": model_bits, "model_roundtrip": bool(ok), "header_numbers": numbers,
           "shifts": shifts, "model_actual_bits": data_bits,
           "with_model": data_bits + model_bits / len(V), "model_validation": chosen}
    return row, message


def receive(message):
    """The receiver of code_with_model: the model from its message, then the images under
    it: (images (N, 96) uint8, the words left per lane: the initial bits)."""
    m = message
    cm = receiver_model(m["kind"], m["n_latent"], m["sigma_x"], m["nets"], m["shifts"],
                        m["specs"], m["param_words"])
    return bbc.bits_back_decode(cm, m["words"], m["n_images"])



# --- the model counted: its file -------------------------------------------------------------
#
# The images of code_with_model with the code of their model, in the coder's container: the
# header holds each tensor's table and step besides the networks' sizes; the message's first
# stack is the parameters', the rest the images' lanes.  The receiver needs nothing else.

COUNTED = "pixel_vae_counted"


def _spec_valid(v):
    return (isinstance(v, list) and len(v) == 4 and fc.whole(0, bbc.PARAM_RADIUS)(v[0])
            and v[1] in (1, 2) and fc.whole(1, max(bbc.PARAM_DECAYS))(v[2])
            and fc.whole(0, 64)(v[3]))


COUNTED_HEADER = {
    **{k: VAE_HEADER[k] for k in ("seed", "n_test", "n_images", "lanes", "n_latent", "nets",
                                  "images_sha256")},
    "model": lambda v: v == COUNTED,
    "coder": lambda v: v in PIXEL_KINDS,
    "order": lambda v: v == "held-out",
    "shifts": lambda v: isinstance(v, list) and all(fc.whole(0, MAX_SHIFT)(s) for s in v),
    "specs": lambda v: isinstance(v, list) and all(_spec_valid(s) for s in v),
}


def write_counted_bitstream(path, message, V, seed, n_test):
    """Write code_with_model's message for the 8-bit images V (N, 96): returns the file's
    size in bytes."""
    import hashlib
    header = {"model": COUNTED, "coder": message["kind"], "seed": int(seed),
              "n_test": int(n_test), "n_images": len(V),
              "lanes": len(message["words"]), "n_latent": message["n_latent"],
              "nets": message["nets"], "order": "held-out",
              "shifts": [int(s) for s in message["shifts"]],
              "specs": [[int(x) for x in spec] for spec in message["specs"]],
              "images_sha256": hashlib.sha256(V.tobytes()).hexdigest()}
    blob = fc.pack_stream(header, np.zeros(0, dtype=np.int64),
                          [message["param_words"], *message["words"]])
    kit.write_bytes(path, blob)
    return len(blob)


def read_bitstream(path):
    """Decode any file of this module: a counted file here, the others by
    read_vae_bitstream; (header, images (N, 96) uint8 in the order sent), ValueError with a
    plain message on any damage."""
    with open(path, "rb") as f:
        blob = f.read()
    header = fc.unpack(path, blob, fc.STREAM_MAGIC, fc.STREAM_VERSION, "a bitstream")[0]
    if header.get("model") != COUNTED:
        return read_vae_bitstream(path)
    header, rest = fc.unpack_stream(path, blob, COUNTED_HEADER)
    return header, _read_counted(path, header, rest)


def _read_counted(path, header, rest):
    """The images of a checked counted file's body: its model first, then its images."""
    _check_vae_header(path, {**header, "model": header["coder"], "sigma_x": None, "mix": None})
    tensors = 2 * sum(len(sizes) - 1 for sizes in header["nets"].values())
    if len(header["shifts"]) != tensors or len(header["specs"]) != tensors or \
            header["n_images"] > header["n_test"]:
        raise ValueError(f"{path}: header fields 'shifts', 'specs' or 'n_images' do not fit "
                         f"the networks and the held-out set")
    _, words = fc.split_payload(path, rest, 0, header["lanes"] + 1)
    try:
        cm = receiver_model(header["coder"], header["n_latent"], None, header["nets"],
                            header["shifts"], [tuple(s) for s in header["specs"]], words[0])
    except Exception as err:            # whatever the coder raises on a message it cannot read
        raise ValueError(f"{path}: the model's message does not decode ({err})") from None
    return bbc.decode_checked(path, cm, words[1:], header["n_images"], header["seed"],
                              header["images_sha256"])
