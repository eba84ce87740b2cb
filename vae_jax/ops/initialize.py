"""``initialize``: a model's initial parameters, the same values, from one small program.

``jax.jit(model.init)`` draws every parameter with its own key: a fold-in of the init key
and one Threefry draw per parameter, each a loop of its own in the compiled program. XLA
compiles each of them separately (XLA:CPU a few hundred per second at best), so a network of
hundreds of convolutions spends tens of seconds compiling its initialisation, longer than
its train step.

``initialize(fn, *args)`` traces ``fn`` once, keeps only what its outputs depend on (for
``model.init``: the keys and the draws, not the forward pass), and evaluates that with
every set of independent operations that differ only in their operands batched into one:
the keys of all parameters in one vectorised fold-in, the draws of all parameters of one
shape in one vectorised draw. Threefry's fold-in, split and bits are computed by the
unrolled hash of ``vae_jax.ops.random`` (jax.random's own values) instead of the loop.
Batching changes no value: the operations batched are elementwise (or draws, which are
elementwise in their key), and a vectorised elementwise operation computes each element as
the unbatched one does. The program has a handful of fusions per parameter shape instead of
a handful per parameter. ``tests/test_initialize.py`` checks the values against
``jax.jit(fn)`` bit for bit.

Operations that are not elementwise (matrix products, convolutions, reductions; a
data-dependent initialisation's forward pass) are evaluated one by one as traced. Where the
``vae_jax.ops`` fast paths are not active (another backend, or the switch off),
``initialize`` is ``jax.jit(fn)`` itself.
"""

from __future__ import annotations

import collections
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core

from vae_jax import ops
from vae_jax.ops import random
from vae_jax.progress import Waiting

# Primitives that compute each output element from the same element of their inputs (or
# move data without arithmetic): batching them with vmap changes no value.
_BATCHABLE = frozenset("""
    abs acos acosh add and asin asinh atan atan2 atanh bitcast_convert_type
    broadcast_in_dim cbrt ceil clamp concatenate convert_element_type copy copy_p cos cosh
    div eq erf erf_inv erfc exp exp2 expm1 floor ge gt imag integer_pow is_finite le lgamma
    digamma log log1p logistic lt max min mul ne neg nextafter not or pow real reduce_precision
    rem reshape round rsqrt select_n shift_left shift_right_arithmetic shift_right_logical
    sign sin sinh slice sqrt square squeeze stop_gradient sub tan tanh xor expand_dims iota
    random_bits random_fold_in random_split random_wrap random_unwrap random_seed
""".split())
_CALLS = ("jit", "pjit", "closed_call", "core_call")


# ------------------------------------------------------------ Threefry without the loop

def _threefry_key(key) -> bool:
    return (jax.config.jax_threefry_partitionable
            and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
            and "threefry" in str(jax.random.key_impl(key)))


def _counts(shape: tuple[int, ...]):
    """(high, low) words of the flat index of every element of ``shape`` (row major)."""
    n = math.prod(shape)
    if n >= 2 ** 32:
        raise ValueError("draws of 2**32 elements or more take jax.random's own path")
    low = jax.lax.iota(jnp.uint32, n).reshape(shape)
    return jnp.zeros_like(low), low


def threefry_bits(key, *, bit_width: int = 32, shape: tuple[int, ...]):
    """``jax.random.bits(key, shape)`` (uint32) of a Threefry key, unrolled."""
    data = jax.random.key_data(key)
    b1, b2 = random.threefry2x32(data[0], data[1], *_counts(tuple(shape)))
    return b1 ^ b2


def threefry_fold_in(key, data):
    """``jax.random.fold_in(key, data)`` of a Threefry key, unrolled."""
    words = jax.random.key_data(key)
    o1, o2 = random.threefry2x32(words[0], words[1], jnp.zeros((), jnp.uint32),
                                 jnp.asarray(data, jnp.uint32))
    return jax.random.wrap_key_data(jnp.stack([o1, o2]), impl=jax.random.key_impl(key))


def threefry_split(key, *, shape: tuple[int, ...]):
    """``jax.random.split(key, shape)`` of a Threefry key, unrolled."""
    words = jax.random.key_data(key)
    b1, b2 = random.threefry2x32(words[0], words[1], *_counts(tuple(shape)))
    return jax.random.wrap_key_data(jnp.stack([b1, b2], axis=-1),
                                    impl=jax.random.key_impl(key))


def _override(eqn, vals):
    """An unrolled equivalent of a Threefry key operation, or None for jax's own."""
    name = eqn.primitive.name
    if name not in ("random_bits", "random_fold_in", "random_split") \
            or not _threefry_key(vals[0]):
        return None
    shape = tuple(eqn.params.get("shape", ()))
    if math.prod(shape) >= 2 ** 32:
        return None
    if name == "random_bits":
        return [threefry_bits(vals[0], **eqn.params)] if eqn.params["bit_width"] == 32 else None
    if name == "random_fold_in":
        return [threefry_fold_in(*vals)]
    return [threefry_split(vals[0], shape=shape)]


# --------------------------------------------------------------------- the interpreter

def _evaluate(jaxpr, consts, args) -> list:
    """Evaluate a jaxpr as traced, calls inlined and Threefry unrolled."""
    env = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        outs = _apply(eqn, [_read(env, v) for v in eqn.invars])
        env.update(zip(eqn.outvars, outs))
    return [_read(env, v) for v in jaxpr.outvars]


def _apply(eqn, vals) -> list:
    if eqn.primitive.name in _CALLS and "jaxpr" in eqn.params:
        closed = eqn.params["jaxpr"]
        return _evaluate(closed.jaxpr, closed.consts, vals)
    out = _override(eqn, vals)
    if out is not None:
        return out
    out = eqn.primitive.bind(*vals, **eqn.params)
    return out if eqn.primitive.multiple_results else [out]


def _read(env, v):
    return v.val if isinstance(v, core.Literal) else env[v]


def _batchable(eqn, seen=None) -> bool:
    """Whether ``eqn`` (and every equation of a call it makes) is in ``_BATCHABLE``; key
    operations only for Threefry keys (whose vectorised draws are elementwise in the key;
    other generators' need not equal their draws one by one)."""
    if eqn.primitive.name in _CALLS and "jaxpr" in eqn.params:
        jaxpr = eqn.params["jaxpr"].jaxpr
        seen = {} if seen is None else seen
        if id(jaxpr) not in seen:
            seen[id(jaxpr)] = all(_batchable(e, seen) for e in jaxpr.eqns)
        return seen[id(jaxpr)]
    if eqn.primitive.name.startswith("random_"):
        impl = eqn.params.get("impl")
        keys = [str(v.aval.dtype) for v in (*eqn.invars, *eqn.outvars)
                if jnp.issubdtype(v.aval.dtype, jax.dtypes.prng_key)]
        if (impl is not None and "threefry" not in str(impl)) or any(
                k != "key<fry>" for k in keys):
            return False
    return eqn.primitive.name in _BATCHABLE


class _Row:
    """Row ``index`` of a batched result ``batch`` (kept batched until something needs it
    alone)."""

    __slots__ = ("batch", "index")

    def __init__(self, batch, index: int):
        self.batch, self.index = batch, index


def _signature(eqn) -> tuple:
    """Equations with equal signatures compute the same function of operands of the same
    types: one vectorised call computes them all."""
    params = []
    for k, v in sorted(eqn.params.items()):
        try:
            hash(v)
            params.append((k, v))
        except TypeError:
            params.append((k, id(v)))
    operands = tuple((isinstance(v, core.Literal), str(v.aval)) for v in eqn.invars)
    return eqn.primitive.name, tuple(params), operands


def _evaluate_batched(jaxpr, consts, args) -> list:
    """Evaluate ``jaxpr`` in waves: each wave takes every equation whose operands are
    ready, and computes each group of batchable equations with one signature as one
    vectorised call. Results stay batched (``_Row``) while their consumers are batched
    alike; the outputs may be ``_Row``s."""
    env = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))
    memo: dict = {}

    def alone(v):
        x = _read(env, v)
        if isinstance(x, _Row):
            x = env[v] = x.batch[x.index]
        return x

    pending = list(jaxpr.eqns)
    while pending:
        ready = [e for e in pending
                 if all(isinstance(v, core.Literal) or v in env for v in e.invars)]
        pending = [e for e in pending
                   if not all(isinstance(v, core.Literal) or v in env for v in e.invars)]
        groups: dict = collections.defaultdict(list)
        for eqn in ready:
            key = _signature(eqn) if _batchable(eqn, memo) else ("alone", id(eqn))
            groups[key].append(eqn)
        for group in groups.values():
            if len(group) == 1:
                eqn = group[0]
                env.update(zip(eqn.outvars, _apply(eqn, [alone(v) for v in eqn.invars])))
                continue
            _apply_group(group, env, alone)
    return [_read(env, v) for v in jaxpr.outvars]


def _apply_group(group, env, alone) -> None:
    first = group[0]
    operands, axes = [], []
    for i, v in enumerate(first.invars):
        column = [e.invars[i] for e in group]
        if isinstance(v, core.Literal):
            values = [np.asarray(c.val) for c in column]
            same = all(np.array_equal(x, values[0]) for x in values)
            operands.append(v.val if same else np.stack(values))
            axes.append(None if same else 0)
            continue
        if all(c is v for c in column):
            operands.append(alone(v))
            axes.append(None)
            continue
        rows = [env[c] for c in column]
        if (all(isinstance(r, _Row) and r.batch is rows[0].batch for r in rows)
                and [r.index for r in rows] == list(range(len(rows)))
                and rows[0].batch.shape[0] == len(rows)):
            operands.append(rows[0].batch)   # already batched in this order
        else:
            operands.append(jnp.stack([alone(c) for c in column]))
        axes.append(0)
    if all(a is None for a in axes):   # the same computation: do it once
        outs = _apply(first, operands)
        for eqn in group:
            env.update(zip(eqn.outvars, outs))
        return
    outs = jax.vmap(lambda *xs: _apply(first, list(xs)), in_axes=axes)(*operands)
    for j, eqn in enumerate(group):
        env.update(zip(eqn.outvars, (_Row(o, j) for o in outs)))


# ---------------------------------------------------------------------------- the API

def initialize(fn: Callable, *args) -> Any:
    """``fn(*args)`` (e.g. ``model.init(key, x)``) with its independent elementwise
    operations and random draws batched: the same values as ``jax.jit(fn)(*args)``, bit for
    bit, from a program that compiles in a fraction of the time.

    Returns numpy arrays in ``fn``'s output structure where the fast paths are active,
    else ``jax.jit(fn)(*args)``. Traced (inside ``jax.eval_shape`` or ``jax.jit``) it is
    ``fn`` itself. ``fn``'s trace is kept for its next call with operands of the same
    types when ``fn`` is hashable (a bound method of a Flax module is), so checks that
    trace the initialisation (``jax.eval_shape``) and the initialisation share it.
    """
    flat = jax.tree.leaves(args)
    closed, shapes = traced(fn, *args)
    if any(isinstance(a, jax.core.Tracer) for a in flat):
        return jax.tree.unflatten(jax.tree.structure(shapes),
                                  core.jaxpr_as_fun(closed)(*flat))
    if not ops.active():
        return jax.jit(fn)(*args)
    program, layout = _program(closed)
    with Waiting("compiling the initialisation"):
        arrays = [np.asarray(a) for a in program(*flat)]
    # a copy each: outputs computed once for several leaves (equal zeros) stay apart
    leaves = [np.array(arrays[i] if row is None else arrays[i][row], dtype=s.dtype)
              for (i, row), s in zip(layout, jax.tree.leaves(shapes))]
    return jax.tree.unflatten(jax.tree.structure(shapes), leaves)


@functools.lru_cache(maxsize=8)
def _program(closed) -> tuple[Callable, list]:
    """(the jitted batched evaluation of ``closed``, where each output lies in its result:
    (array index, row or None), filled when it is traced); kept with the trace."""
    jaxpr, _ = _dce(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
    layout: list = []

    def program(*flat_args):
        layout.clear()
        arrays, index = [], {}
        for out in _evaluate_batched(jaxpr, closed.consts, flat_args):
            batch, row = (out.batch, out.index) if isinstance(out, _Row) else (out, None)
            if id(batch) not in index:
                index[id(batch)] = len(arrays)
                arrays.append(batch)
            layout.append((index[id(batch)], row))
        return arrays

    return jax.jit(program), layout


def _abstract(x) -> jax.ShapeDtypeStruct:
    aval = jax.typeof(x if isinstance(x, (jax.Array, jax.core.Tracer)) else np.asarray(x))
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)


def traced(fn: Callable, *args):
    """(closed jaxpr, output shapes) of ``fn(*args)``, traced on the operands' types; kept
    per (fn, operand types) for a hashable ``fn``, so the next call returns the same."""
    flat, tree = jax.tree.flatten(args)
    avals = tuple(_abstract(a) for a in flat)
    try:
        return _trace_cached(fn, tree, avals)
    except TypeError as e:  # an unhashable fn (or operand structure): trace every time
        if "unhashable" not in str(e):
            raise
    return _trace_uncached(fn, tree, avals)


def _trace_uncached(fn: Callable, tree, avals: tuple):
    return jax.make_jaxpr(lambda *flat: fn(*jax.tree.unflatten(tree, flat)),
                          return_shape=True)(*avals)


_trace_cached = functools.lru_cache(maxsize=8)(_trace_uncached)


def _dce(jaxpr, used):
    from jax._src.interpreters import partial_eval as pe   # no public dead-code pass

    return pe.dce_jaxpr(jaxpr, used)
