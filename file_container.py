"""The project's binary files: one container, and the two kinds of body it carries.

A leaf module: it knows no model.  Every file is

    magic (4 bytes) | format version (1) | SHA-256 of the rest (32) | the rest
    the rest = header length (uint32, little-endian) | JSON header | body

so that a reader refuses a file of another kind or version, or one damaged or cut anywhere,
with one line naming the file, before it trusts any byte of it.

- A bitstream (SVQB, version 2): a header whose every field the caller validates, then a
  coding model's parameters as int32 and the message: each lane's word count, then all
  lanes' 32-bit words.
- A saved model (SVQM, version 1): the header holds the model's state as a JSON tree whose
  arrays follow it as little-endian bytes, in order; the objects in the state are rebuilt
  only from classes the caller names, so loading runs no code from the file (a pickle
  would), and every float comes back to the bit.  A folder of them (ModelFolder) keeps a
  run's trained models, and fit_or_load trains a model or loads it instead.

Besides the numeric libraries it uses the CLI kit alone (atomic writes, versions).
"""

import hashlib
import json
import os
import time
from typing import NamedTuple

import numpy as np

import cli_kit as kit

STREAM_MAGIC, STREAM_VERSION = b"SVQB", 2
MODEL_MAGIC, MODEL_VERSION = b"SVQM", 1


# ----------------------------------------------------------------------------- the container


class FileError(kit.InputError):
    """A file refused: the message is one line that names it and says what is wrong."""


def pack(magic, version, header, body):
    """The bytes of a file: magic, version, SHA-256 of the rest, the JSON header, body."""
    head = json.dumps(header, sort_keys=True).encode()
    rest = len(head).to_bytes(4, "little") + head + body
    return magic + bytes([version]) + hashlib.sha256(rest).digest() + rest


def unpack(where, blob, magic, version, what):
    """(header dict, body bytes) of a file's bytes blob; ValueError naming `where` and
    what is wrong: another magic (not `what`, e.g. "a bitstream"), another version,
    truncation, a checksum mismatch, a header that is not a JSON object."""
    if blob[:4] != magic:
        raise FileError(f"{where} is not {what} of this program (bad magic)")
    if len(blob) > 4 and blob[4] != version:
        raise FileError(f"{where}: unsupported format version {blob[4]} (this program reads "
                         f"version {version})")
    if len(blob) < 41:
        raise FileError(f"{where} is truncated ({len(blob)} bytes, shorter than the fixed "
                         f"header)")
    rest = blob[37:]
    if hashlib.sha256(rest).digest() != blob[5:37]:
        raise FileError(f"{where} is damaged or truncated (checksum mismatch)")
    n = int.from_bytes(rest[:4], "little")
    try:
        header = json.loads(rest[4:4 + n])
    except ValueError:
        raise FileError(f"{where}: the header is not valid JSON") from None
    if not isinstance(header, dict):
        raise FileError(f"{where}: the header is not a JSON object")
    return header, rest[4 + n:]


def whole(lo, hi):
    """A header-field validator: a whole number (not a bool) in [lo, hi]."""
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def is_sha256(v):
    """A header-field validator: a SHA-256 in lower-case hex."""
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


# ----------------------------------------------------------------------------- bitstreams


def pack_stream(header, params, words):
    """A bitstream's bytes: the header, the parameters (int32; ValueError for one outside
    that range) and the message (per lane: its word count, then all lanes' 32-bit words)."""
    params = np.asarray(params, dtype=np.int64)
    if params.size and np.abs(params).max() >= 2**31:
        raise ValueError("model parameters too large for the file's 32-bit integers")
    counts = np.array([len(w) for w in words], dtype="<u4")
    body = (params.astype("<i4").tobytes() + counts.tobytes()
            + np.concatenate(words).astype("<u4").tobytes())
    return pack(STREAM_MAGIC, STREAM_VERSION, header, body)


def unpack_stream(where, blob, fields, elsewhere=None):
    """Header and body of a bitstream's bytes.  fields: {name: validator}, every field the
    header must hold and nothing else; elsewhere: {model: the program that reads files of
    that "model"}.  ValueError naming `where` and what is wrong (see unpack), or a model
    another program reads, an unknown, missing or invalid field."""
    header, body = unpack(where, blob, STREAM_MAGIC, STREAM_VERSION, "a bitstream")
    model = header.get("model")
    if isinstance(model, str) and model in (elsewhere or {}):
        raise FileError(f"{where} holds a {model} code: decode it with {elsewhere[model]}")
    unknown = sorted(set(header) - set(fields))
    if unknown:                        # an edit there would change nothing: say so
        raise FileError(f"{where}: header field {unknown[0]!r} is not one of this format's")
    for field, valid in fields.items():
        if field not in header:
            raise FileError(f"{where}: header field {field!r} is missing")
        if not valid(header[field]):
            raise FileError(f"{where}: header field {field!r} has an invalid value "
                             f"{header[field]!r}")
    return header, body


def split_payload(where, rest, n_params, lanes):
    """The parameters (n_params,) int64 and the message (one uint32 array per lane) of a
    bitstream's body; ValueError naming `where` if they do not fit."""
    if len(rest) < 4 * (n_params + lanes):
        raise FileError(f"{where}: header field 'n_params' does not fit the model, or the "
                         f"file is truncated")
    params = np.frombuffer(rest[:4 * n_params], dtype="<i4").astype(np.int64)
    rest = rest[4 * n_params:]
    if len(rest) % 4:
        raise FileError(f"{where}: the message is not a whole number of 32-bit words")
    counts = np.frombuffer(rest[:4 * lanes], dtype="<u4").astype(np.int64)
    words = np.frombuffer(rest[4 * lanes:], dtype="<u4")
    if counts.sum() != len(words) or np.any(counts == 0):
        raise FileError(f"{where}: header field 'lanes' does not fit the message's lane "
                         f"lengths, or the file is truncated")
    return params, np.split(words, np.cumsum(counts)[:-1])


# ----------------------------------------------------------------------------- saved models
#
# A model's state is what its __getstate__ returns (or its __dict__): arrays, random
# generators, numbers, strings, slices, tuples, lists, dicts and objects of the named
# classes, to any depth.  In the JSON tree a dict whose keys are strings none of which starts
# with "__" stands for itself; every other value that JSON cannot hold is a one-key marker
# {"__array__": i}, {"__rng__": state}, {"__tuple__": [...]}, {"__slice__": [a, b, c]},
# {"__items__": [[key, value], ...]} or {"__object__": class name, "state": tree}.

ARRAY_KINDS = "biuf"           # bool, int, unsigned, float: what a model's arrays hold


def _own(cls, method):
    return any(method in vars(c) for c in cls.__mro__[:-1])


def encode_state(value, arrays, classes, at="model"):
    """The JSON tree of a value, its arrays appended to `arrays`; TypeError naming where
    in the state a value this format cannot hold sits (or an array that shares memory with
    another: its owner must rebuild such views on loading, as __setstate__ does)."""
    enc = lambda v, key: encode_state(v, arrays, classes, f"{at}.{key}")
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in ARRAY_KINDS:
            raise TypeError(f"{at}: an array of dtype {value.dtype} cannot be saved")
        if any(np.may_share_memory(value, a) for a in arrays):
            raise TypeError(f"{at}: an array that shares memory with another one of the state")
        arrays.append(value)
        return {"__array__": len(arrays) - 1}
    if isinstance(value, np.random.Generator):
        return {"__rng__": value.bit_generator.state}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [enc(v, i) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [enc(v, i) for i, v in enumerate(value)]
    if isinstance(value, slice):
        return {"__slice__": [value.start, value.stop, value.step]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: enc(v, k) for k, v in value.items()}
        return {"__items__": [[enc(k, "key"), enc(v, k)] for k, v in value.items()]}
    name = type(value).__name__
    if classes.get(name) is type(value):
        state = value.__getstate__() if _own(type(value), "__getstate__") else vars(value)
        return {"__object__": name, "state": enc(dict(state), name)}
    raise TypeError(f"{at}: a {name} cannot be saved")


def decode_state(tree, arrays, classes, where):
    """The value of a JSON tree of encode_state, arrays taken from `arrays`; ValueError
    naming `where` for a class not among `classes` or a broken marker."""
    dec = lambda t: decode_state(t, arrays, classes, where)
    if isinstance(tree, list):
        return [dec(t) for t in tree]
    if not isinstance(tree, dict):
        return tree
    if not any(k.startswith("__") for k in tree):
        return {k: dec(v) for k, v in tree.items()}
    (key, arg), *more = tree.items()
    try:
        if key == "__array__" and not more:
            return arrays[arg]
        if key == "__rng__" and not more:
            bits = getattr(np.random, arg["bit_generator"])()
            bits.state = arg
            return np.random.Generator(bits)
        if key == "__tuple__" and not more:
            return tuple(dec(t) for t in arg)
        if key == "__slice__" and not more:
            return slice(*arg)
        if key == "__items__" and not more:
            return {dec(k): dec(v) for k, v in arg}
        if key == "__object__" and [k for k, _ in more] == ["state"]:
            if arg not in classes:
                raise FileError(f"{where} holds a {arg}, which this program does not load")
            cls, state = classes[arg], dec(more[0][1])
            obj = cls.__new__(cls)
            if _own(cls, "__setstate__"):
                obj.__setstate__(state)
            else:
                obj.__dict__.update(state)
            return obj
    except (TypeError, IndexError, KeyError, AttributeError) as err:
        raise FileError(f"{where}: the state is damaged ({key}: {err})") from None
    raise FileError(f"{where}: the state holds an unknown entry {key!r}")


def pack_model(header, model, classes):
    """A saved model's bytes: `header` (JSON: what the model is and how it was trained)
    with the model's state tree and its arrays' (dtype, shape) under "state" and "arrays",
    then the arrays' bytes."""
    arrays = []
    state = encode_state(model, arrays, classes)
    # the memory order too: BLAS rounds a product of a transposed array differently
    order = ["F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C" for a in arrays]
    arrays = [a.astype(a.dtype.newbyteorder("<"), copy=False) for a in arrays]
    head = {**header, "state": state,
            "arrays": [[a.dtype.str, list(a.shape), o] for a, o in zip(arrays, order)]}
    return pack(MODEL_MAGIC, MODEL_VERSION, head,
                b"".join(a.tobytes(order=o) for a, o in zip(arrays, order)))


def unpack_model(where, blob, classes, expect):
    """(header, model) of a saved model's bytes, once the header holds every (key, value)
    of `expect` (what the run would train: the model's name, its configuration); ValueError
    naming `where` and the first difference, or what else is wrong."""
    header, body = unpack(where, blob, MODEL_MAGIC, MODEL_VERSION, "a saved model")
    for key, want in json.loads(json.dumps(expect)).items():     # tuples read as lists
        have = header.get(key, "nothing")
        if isinstance(want, dict) and isinstance(have, dict):
            diff = [k for k in want if k not in have or have[k] != want[k]]
            if diff:
                k = diff[0]
                raise FileError(f"{where} holds a model trained with {k} = "
                                 f"{have.get(k, 'unset')}; this run asks for {want[k]}")
        elif have != want:
            raise FileError(f"{where} holds {key} {have}; this run asks for {want}")
    try:
        specs = [(np.dtype(d), tuple(s), o) for d, s, o in header["arrays"]]
        if any(d.kind not in ARRAY_KINDS or o not in ("C", "F") for d, _, o in specs):
            raise ValueError
        sizes = [d.itemsize * int(np.prod(s)) for d, s, _ in specs]
    except (KeyError, TypeError, ValueError):
        raise FileError(f"{where}: the header's list of arrays is damaged") from None
    if sum(sizes) != len(body):
        raise FileError(f"{where}: the arrays do not fit the file's body")
    arrays, offset = [], 0
    for (dtype, shape, order), size in zip(specs, sizes):
        a = np.frombuffer(body, dtype=dtype, count=size // dtype.itemsize, offset=offset)
        arrays.append(a.reshape(shape, order=order).astype(dtype.newbyteorder("="),
                                                           order=order, copy=True))
        offset += size
    return header, decode_state(header.get("state"), arrays, classes, where)


# --- a folder of saved models -------------------------------------------------------------------
#
# A trained model and its history can be kept in a file and loaded instead of trained.  The
# file's header holds the settings that trained it; a run that loads it names the settings it
# would train with, and the file is refused unless they are the same, so that a loaded model
# is the very model the run would have trained and every number it gives is the same.


def model_key(name, seed, n_samples):
    """The name a model trained on n_samples images of a seed is saved under (+ .svqm)."""
    return f"{name}_N{n_samples}_seed{seed}"


class ModelFolder(NamedTuple):
    """A folder of saved models, one file a model: mode "save" writes each model a run
    trains, "load" reads each instead of training it; classes: {name: class} of what a
    file may hold."""
    path: str
    mode: str
    classes: dict

    def file(self, key):
        return os.path.join(self.path, f"{key}.svqm")

    def save(self, key, config, model, history, seconds):
        header = {"model": key, "config": config, "seconds": seconds, "versions": kit.versions()}
        kit.write_bytes(self.file(key), pack_model(header, {"model": model, "history": history},
                                                   self.classes))

    def load(self, key, config):
        """(model, history, training seconds) of the file saved under key; FileError unless
        it is there, whole, and trained with exactly `config`."""
        path = self.file(key)
        try:
            with open(path, "rb") as f:
                blob = f.read()
        except OSError as err:
            raise FileError(f"{path}: cannot be read ({err.strerror}): a run with "
                            f"--save-models {self.path} writes it") from None
        header, state = unpack_model(path, blob, self.classes, {"model": key, "config": config})
        if not isinstance(state, dict) or set(state) != {"model", "history"}:
            raise FileError(f"{path}: the state is not a model and its history")
        return state["model"], state["history"], float(header.get("seconds", 0.0))


def fit_or_load(folder, key, config, fit):
    """(model, history, training seconds): fit() -> (model, history), timed and saved under
    key if the ModelFolder `folder` saves; or, if it loads, the model saved under key."""
    if folder and folder.mode == "load":
        return folder.load(key, config)
    t0 = time.perf_counter()
    model, history = fit()
    seconds = time.perf_counter() - t0
    if folder:
        folder.save(key, config, model, history, seconds)
    return model, history, seconds
