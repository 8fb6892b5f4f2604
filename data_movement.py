"""Data movement of a numpy computation: a tracer and exact LRU stack distances.

A leaf module: it knows no model.  `trace(fn)` runs fn with every Traced array's numpy
operations recorded as element reads and writes; `movement(ids, is_read)` turns such a trace
into the reads, the data-movement cost DMC (sum of sqrt stack distance over reads) and the
average reuse distance ARD.  The conventions:
- an element is one array entry, named by its memory address, so views share their
  base's elements; the tracer holds on to every array it sees, so no address is freed and
  reused within a trace: each array made is new memory, as if nothing were ever freed (the
  numbers then follow the program alone, not the allocator's state, and repeat exactly);
- each numpy operation reads every element of each array operand once, in row-major
  order, then writes every element of its result (a matrix product reads each operand
  once, in bulk, not once per multiply); creating a view moves nothing;
- reads and writes both move an element to the top of an LRU stack (the ByteDMD rule);
- the distance of a read is the number of distinct elements touched since that element
  was last touched; an input starts on the stack below everything touched so far, in the
  order of first use; DMC = sum of sqrt(distance) over reads, ARD = mean distance.
"""

import numpy as np

# ----------------------------------------------------------------------------- the tracer

IN_PLACE = frozenset((np.put_along_axis, np.copyto))      # write into their first argument


def element_addresses(a):
    """Memory address of every element of a, in row-major order: (a.size,) int64."""
    out = np.array(a.__array_interface__["data"][0], dtype=np.int64)
    for n, step in zip(a.shape, a.strides):
        out = out[..., None] + np.arange(n, dtype=np.int64) * step
    return out.ravel()


class _Recorder:
    """The addresses touched, in order, and whether each was a read (nothing while off).
    It keeps every array it has seen alive, so that no address is reused."""

    def __init__(self, on=True):
        self.on, self.parts, self.kinds, self.alive = on, [], [], []

    def add(self, addresses, read, owner):
        if self.on and addresses.size:
            self.parts.append(addresses)
            self.kinds.append(read)
            self.alive.append(owner)

    def touch(self, array, read):
        if self.on and isinstance(array, np.ndarray):
            self.add(element_addresses(np.asarray(array).view(np.ndarray)), read, array)


_OFF = _Recorder(on=False)
_RECORDER = _OFF                 # Traced arrays outside trace() record nothing


def _plain(x):
    """x with every Traced array viewed as a plain ndarray (lists and tuples too)."""
    if isinstance(x, Traced):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    return x


def _arrays(x):
    if isinstance(x, np.ndarray):
        yield x
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _arrays(v)


def _traced(x):
    if isinstance(x, np.ndarray) and not isinstance(x, Traced):
        return x.view(Traced)
    if isinstance(x, list):
        return [_traced(v) for v in x]
    if isinstance(x, tuple):                     # named tuples (svd's result) keep their type
        items = [_traced(v) for v in x]
        return type(x)(*items) if hasattr(x, "_fields") else tuple(items)
    return x


class Traced(np.ndarray):
    """An ndarray whose every numpy operation is recorded as element reads and writes
    (see the conventions above).  Results of operations are Traced again, so the same
    model code runs unchanged on Traced inputs."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kw):
        for a in inputs:
            _RECORDER.touch(a, True)
        if out is not None:
            kw["out"] = _plain(out)
        result = getattr(ufunc, method)(*_plain(inputs), **kw)
        for r in _arrays(result if out is None else kw["out"]):
            _RECORDER.touch(r, False)
        if out is None:
            return _traced(result)
        return out[0] if len(out) == 1 else out

    def __array_function__(self, func, types, args, kwargs):
        inputs = list(_arrays(_plain(list(args) + list(kwargs.values()))))
        result = func(*_plain(args), **{k: _plain(v) for k, v in kwargs.items()})
        outputs = list(_arrays(result))
        if any(np.may_share_memory(r, a) for r in outputs for a in inputs):
            return _traced(result)                                  # a view: nothing moves
        for a in inputs:
            _RECORDER.touch(a, True)
        for r in outputs + ([args[0]] if func in IN_PLACE else []):
            _RECORDER.touch(r, False)
        return _traced(result)

    def __getitem__(self, key):
        result = super().__getitem__(_plain(key))
        if not _RECORDER.on or (isinstance(result, np.ndarray) and np.may_share_memory(
                result.view(np.ndarray), self.view(np.ndarray))):
            return result
        plain = self.view(np.ndarray)
        _RECORDER.add(np.ravel(element_addresses(plain).reshape(self.shape)[_plain(key)]), True,
                      self)
        _RECORDER.touch(result, False)
        return result

    def __setitem__(self, key, value):
        if _RECORDER.on:
            _RECORDER.touch(value, True)
            plain = self.view(np.ndarray)
            _RECORDER.add(np.ravel(element_addresses(plain).reshape(self.shape)[_plain(key)]),
                          False, self)
        super().__setitem__(_plain(key), _plain(value))

    def copy(self, order="C"):
        result = super().copy(order)
        _RECORDER.touch(self, True)
        _RECORDER.touch(result, False)
        return result


def trace(fn):
    """Run fn() recording its data movement; returns (addresses (n,), is_read (n,))."""
    global _RECORDER
    _RECORDER = rec = _Recorder()
    try:
        fn()
    finally:
        _RECORDER = _OFF
    if not rec.parts:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    return (np.concatenate(rec.parts),
            np.repeat(np.array(rec.kinds), [len(p) for p in rec.parts]))


# ----------------------------------------------------------------------------- stack distances


def previous_access(ids):
    """For each access, the index of the previous access to the same element (-1: none)."""
    order = np.lexsort((np.arange(len(ids)), ids))          # by element, then by time
    prev = np.full(len(ids), -1, dtype=np.int64)
    same = ids[order[1:]] == ids[order[:-1]]
    prev[order[1:][same]] = order[:-1][same]
    return prev


def earlier_leq(values):
    """#{j < i : values[j] <= values[i]} for every i: values (n,) ints -> (n,) int64.

    Bottom-up merge sort with whole-array operations, O(n log n): at the level of width w
    the aligned blocks of w elements, each already in value order, merge in pairs by one
    stable sort on (pair, value), left before right on ties.  An element of a right block
    landing at position s of the merged pair, coming from position s' of its own sorted
    block, has s - s' elements of the left block at or below its value before it.
    """
    v = np.asarray(values, np.int64)
    n = len(v)
    count, order, here = np.zeros(n, np.int64), np.arange(n), np.arange(n)
    span, w = int(v.max(initial=0)) + 1, 1
    while w < n:
        perm = np.argsort((order // (2 * w)) * span + v[order], kind="stable")
        order = order[perm]
        right = (order & w) != 0                   # from the block of higher indices
        count[order[right]] += (here - perm)[right] + w
        w *= 2
    return count


def stack_distances(ids):
    """LRU stack distance of every access in ids (n,): the number of distinct elements
    touched since the element was last touched, or before its first touch.

    With p the previous access to the same element, the elements touched in (p, t) are
    those whose access there is their first after p: the first touches in (p, t), and the
    repeat touches j in (p, t) whose own previous access is at or before p.  Every repeat
    touch j <= p qualifies, so the second count is earlier_leq over the repeat touches
    alone less those up to p.
    """
    prev = previous_access(np.asarray(ids))
    first = prev < 0
    n_first = np.concatenate([[0], np.cumsum(first)])          # first touches before index x
    n_again = np.concatenate([[0], np.cumsum(~first)])
    out = n_first[:-1].copy()                                   # a first touch: all so far
    again = np.flatnonzero(~first)
    p = prev[again]
    out[again] = (n_first[again] - n_first[p + 1]) + earlier_leq(p) - n_again[p + 1]
    return out


def movement(ids, is_read):
    """{"reads", "dmc", "ard"} of a trace: reads counted, sqrt distances summed."""
    d = stack_distances(ids)[is_read]
    return {"reads": int(d.size), "dmc": float(np.sqrt(d).sum()),
            "ard": float(d.mean()) if d.size else 0.0}
