"""``jit_eval``: evaluation programs compiled with XLA:CPU options that suit them; and
``announced``: a jitted function whose compilations say so while they run.

XLA:CPU hands reductions with elementwise producers (the likelihood's Σ over pixels of
x·l − softplus(l)) to YNNPACK fusions, which run the test ELBO several times slower than
XLA's own loops (benchmarks/README.md); the train step is faster with them. Evaluation
functions therefore keep YNNPACK for matrix products only. Where the fast paths are not
active (another backend, or the ``vae_jax.ops`` switch off), or this XLA refuses the
option, ``jit_eval`` is a plain ``jax.jit``.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import threading
from typing import Callable

import jax
import numpy as np

from vae_jax import ops, parallel
from vae_jax.progress import Waiting

CPU_EVAL_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


@functools.lru_cache(maxsize=None)
def _accepted_options(active: bool) -> tuple:
    if not active:
        return ()
    try:  # an experimental XLA option: a version without it must not break evaluation
        jax.jit(lambda x: x + 1, compiler_options=CPU_EVAL_OPTIONS)(np.float32(0))
    except Exception:  # noqa: BLE001  (XLA reports an unknown option as a runtime error)
        return ()
    return tuple(CPU_EVAL_OPTIONS.items())


def eval_compiler_options() -> dict:
    """The options ``jit_eval`` compiles with here and now ({} where none apply)."""
    return dict(_accepted_options(ops.active()))


def jit_eval(fn: Callable, what: str = "the evaluation") -> Callable:
    """``jax.jit(fn)`` for evaluation functions, compiled with ``eval_compiler_options()``
    when called from Python (``announced`` as compiling ``what``); traced inside another
    ``jit`` (where XLA takes no per-function options) it is a plain nested ``jax.jit``.
    ``.lower`` lowers the top-level version."""
    options = eval_compiler_options()
    plain = jax.jit(fn)
    if not options:
        return announced(plain, what)
    top = jax.jit(fn, compiler_options=options)
    outer = announced(top, what)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        traced = any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves((args, kwargs)))
        return (plain if traced else outer)(*args, **kwargs)

    call.lower = top.lower
    return call


def announced(jitted: Callable, what: str) -> Callable:
    """``jitted`` (a ``jax.jit`` function) whose calls with operands of types not seen
    before compile it ahead of the call (``.lower(...).compile()``, which the call then
    reuses) inside ``progress.Waiting(f"compiling {what}")``: a compilation longer than
    half a second says so, with the time it has taken, instead of sitting silent. While it
    traces and compiles, ``compiling()`` is true: a stop asked for then (SIGINT / SIGTERM,
    ``run.runtime.StopSignal``) need not wait for the compilation, nothing having run."""
    seen: set = set()

    @functools.wraps(jitted)
    def call(*args, **kwargs):
        leaves = jax.tree.leaves((args, kwargs))
        if not any(isinstance(a, jax.core.Tracer) for a in leaves):
            signature = (jax.tree.structure((args, kwargs)),   # keywords: static arguments
                         tuple(_operand_type(a) for a in jax.tree.leaves(args)),
                         tuple(_operand_type(a, static=True) for a in jax.tree.leaves(kwargs)))
            if signature not in seen:
                with Waiting(f"compiling {what}"):
                    _compile(jitted, args, kwargs)
                seen.add(signature)
        return jitted(*args, **kwargs)

    call.lower = jitted.lower   # (and call.__wrapped__ is jitted)
    return call


# The main thread is tracing or compiling (``announced``); the code the process ends with,
# without being finalised, when the interpreter shuts down (None: an ordinary shutdown).
_state = {"compiling": False, "exit_code": None}


def compiling() -> bool:
    """Whether the main thread of this (single) process is waiting for ``announced`` to
    trace and compile a program: a stop raised then loses no work."""
    return _state["compiling"]


def exit_at_shutdown(code: int) -> None:
    """End this process with ``code`` when the interpreter shuts down, after the other exit
    handlers, without finalising it: for a command that a signal stopped once its work was
    kept. A thread of XLA's or of the checkpoint library's that calls into a finalised
    interpreter aborts the process instead ("FATAL: exception not rethrown", exit -6)."""
    _state["exit_code"] = code


def _leave_the_compiler_behind(stop: BaseException) -> None:
    """A stop (``stop``) ended the wait for a compilation, which XLA cannot cut short: the
    process ends at shutdown with the stop's exit code (128 + signal), a compilation
    returning into a finalised interpreter aborting it otherwise."""
    code = getattr(stop, "code", None)
    exit_at_shutdown(code if isinstance(code, int) else
                     130 if isinstance(stop, KeyboardInterrupt) else 1)


def _exit_beside_the_compiler() -> None:
    """At exit (registered on import, so after the exit handlers of what imports this
    module): ``os._exit`` once ``exit_at_shutdown`` asked, for instance after a compilation
    was left running, even one that has since ended (its thread's C++ side may still be
    unwinding)."""
    if _state["exit_code"] is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_state["exit_code"])


atexit.register(_exit_beside_the_compiler)


def _compile(jitted: Callable, args, kwargs) -> None:
    """Trace and compile ``jitted`` for these operands. In the main thread of a single
    process, the compilation runs in a second thread while this one waits in 0.1 s slices,
    so that a signal handler that raises, or a check (``parallel.between_calls``) that
    does, acts at once; elsewhere (several processes stop together, at a collective check)
    it runs here."""
    if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
        jitted.lower(*args, **kwargs).compile()
        return
    failed: list[BaseException] = []
    _state["compiling"] = True
    try:
        lowered = jitted.lower(*args, **kwargs)

        def run() -> None:
            try:
                lowered.compile()
            except BaseException as e:  # noqa: BLE001  (raised again in the main thread)
                failed.append(e)

        worker = threading.Thread(target=run, name="vae_jax-compile", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.1)
                # (a handler's exception can be lost: Python drops one raised inside a
                # garbage-collection callback; the stop flag it set is checked here)
                parallel.between_calls()
        except BaseException as stop:
            _leave_the_compiler_behind(stop)
            raise
    finally:
        _state["compiling"] = False
    if failed:
        raise failed[0]


def _operand_type(x, static: bool = False):
    """What decides whether a call compiles again: an array's type and placement, a
    Python number's type (traced), a static argument's value."""
    if isinstance(x, jax.Array):
        return x.shape, x.dtype, getattr(x, "sharding", None)
    if isinstance(x, np.ndarray):
        return x.shape, x.dtype
    if not static and isinstance(x, (bool, int, float, complex, np.number)):
        return type(x)
    try:
        hash(x)
        return x
    except TypeError:
        return type(x)
