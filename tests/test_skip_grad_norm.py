"""Gradient-norm skipping (``config.optim.skip_grad_norm``, VDVAE's skip threshold) and its
accounting next to the NaN policy's skips: one mechanism, a count per reason."""

from __future__ import annotations

import logging as std_logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import _runs
from vae_jax import config as config_lib, losses, train
from vae_jax.run import build

SHAPE = (8, 8, 1)


def _setup():
    config = config_lib.defaults()
    config.model.hidden, config.model.latent_dim = (16,), 3
    model = build.build_model(config, SHAPE)
    tx = optax.adam(1e-2)
    loss_fn = lambda p, x, k, beta: losses.get("elbo")(p, x, k, model=model, beta=beta)
    batch = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, *SHAPE)), jnp.uint8)
    return model, tx, loss_fn, batch


def _run(steps, beta_fn=lambda s: 1.0, **options):
    """``steps`` train steps from one initial state: [(state, metrics)] after each."""
    model, tx, loss_fn, batch = _setup()
    step = jax.jit(lambda s, b, k: train.train_step(
        s, b, k, loss_fn=loss_fn, optimizer=tx, binarization="dynamic", beta_fn=beta_fn,
        ema_decay=0.9, **options))
    s = train.create_train_state(jax.random.key(1), model, tx, SHAPE)
    out = [(s, {})]
    for _ in range(steps):
        s, m = step(s, batch, jax.random.key(0))
        out.append((s, jax.device_get(m)))
    return out




@pytest.mark.slow  # compiles a few small steps: ~20 s on shared cores
@pytest.mark.xla_defaults  # two programs' updates agree bit for bit
def test_an_update_above_the_threshold_is_dropped_and_counted():
    beta_fn = lambda s: jnp.where(s == 1, 1e4, 1.0)
    plain = _run(3, beta_fn)
    norms = [float(m["grad_norm"]) for _, m in plain[1:]]
    threshold = 10 * norms[0]
    assert norms[1] > threshold > max(norms[0], norms[2]), norms  # β = 1e4 at step 1 only
    skipped = _run(3, beta_fn, skip_grad_norm=threshold)
    assert [m["skipped_grad_norm"] for _, m in skipped[1:]] == [0.0, 1.0, 0.0]
    assert [m["skipped"] for _, m in skipped[1:]] == [0.0, 1.0, 0.0]
    assert "skipped_nonfinite" not in skipped[1][1]  # that reason is off
    _runs.assert_same_state(skipped[1][0], plain[1][0])  # a kept step is the plain update
    assert int(skipped[2][0].step) == 2                    # the counter advances ...
    # ... and nothing else moves: params, Adam's moments and count, EMA bit-identical
    _runs.assert_same_state(skipped[2][0].replace(step=skipped[1][0].step), skipped[1][0])
    # the skipped step's norm is the one measured without skipping (same state, key, batch)
    assert skipped[2][1]["grad_norm"] == norms[1]
    assert not np.array_equal(np.asarray(jax.tree.leaves(skipped[3][0].params)[0]),
                              np.asarray(jax.tree.leaves(skipped[2][0].params)[0]))


@pytest.mark.slow  # compiles a few small steps: ~20 s on shared cores
@pytest.mark.xla_defaults  # two programs' updates agree bit for bit
def test_a_threshold_of_zero_is_off_and_one_never_reached_changes_nothing():
    """0 traces today's step (no skip metrics); an active threshold that no update reaches
    selects the plain update bit for bit."""
    plain = _run(3)
    for options in ({"skip_grad_norm": 0.0}, {"skip_grad_norm": 1e30}):
        other = _run(3, **options)
        for (a, ma), (b, mb) in zip(plain[1:], other[1:]):
            _runs.assert_same_state(a, b)
            assert all(ma[k] == mb[k] for k in ma)
        assert ("skipped" in other[1][1]) == (options["skip_grad_norm"] > 0)
    # the threshold is on the norm before any clipping: with clipping at a tenth of it the
    # step still counts as above the threshold
    clipped_tx = optax.chain(optax.clip_by_global_norm(1e-3), optax.adam(1e-2))
    model, _, loss_fn, batch = _setup()
    s = train.create_train_state(jax.random.key(1), model, clipped_tx, SHAPE)
    _, m = jax.jit(lambda s: train.train_step(   # one program (op by op: one per op)
        s, batch, jax.random.key(0), loss_fn=loss_fn, optimizer=clipped_tx,
        binarization="dynamic", beta_fn=lambda s: 1.0, ema_decay=0.9, skip_grad_norm=1e-2))(s)
    assert float(m["grad_norm"]) > 1e-2 and float(m["skipped_grad_norm"]) == 1.0


@pytest.mark.slow  # compiles a few small steps: ~20 s on shared cores
def test_both_reasons_count_separately():
    nan_at_0_big_at_1 = lambda s: jnp.where(s == 0, jnp.nan, jnp.where(s == 1, 1e4, 1.0))
    norm_1 = float(_run(2, lambda s: jnp.where(s == 1, 1e4, 1.0))[2][1]["grad_norm"])
    out = _run(3, nan_at_0_big_at_1, skip_nonfinite=True, skip_grad_norm=norm_1 / 10)
    assert [m["skipped_nonfinite"] for _, m in out[1:]] == [1.0, 0.0, 0.0]
    assert [m["skipped_grad_norm"] for _, m in out[1:]] == [0.0, 1.0, 0.0]
    assert [m["skipped"] for _, m in out[1:]] == [1.0, 1.0, 0.0]
    _runs.assert_same_state(out[2][0].replace(step=out[0][0].step), out[0][0])


def _call_metrics(skipped_norm, skipped_nan=None):
    n = len(skipped_norm)
    m = {"loss": np.arange(1.0, n + 1), "grad_norm": np.full(n, 2.0),
         "skipped_grad_norm": np.asarray(skipped_norm, float)}
    if skipped_nan is not None:
        m["skipped_nonfinite"] = np.asarray(skipped_nan, float)
        m["loss"] = np.where(m["skipped_nonfinite"] > 0, np.nan, m["loss"])
    m["skipped"] = np.maximum(m["skipped_grad_norm"], m.get("skipped_nonfinite", 0.0))
    return m


def test_summary_leaves_skipped_steps_out_and_warns_when_most_are(capsys, caplog):
    last = lambda: "none"
    out = train.summarize_call(_call_metrics([0, 1, 0, 0]), 10, skip_nonfinite=False,
                               last_checkpoint=last, skip_grad_norm=7.0)
    assert out == {"loss": pytest.approx((1 + 3 + 4) / 3), "grad_norm": 2.0,
                   "skipped_grad_norm": 1.0, "skipped": 1.0}
    assert "Most updates" not in capsys.readouterr().out
    with caplog.at_level(std_logging.WARNING):
        out = train.summarize_call(_call_metrics([1, 1, 0, 0], [0, 0, 1, 0]), 10,
                                   skip_nonfinite=True, last_checkpoint=last,
                                   skip_grad_norm=7.0)
    assert out["loss"] == 4.0 and out["skipped"] == 3.0
    assert out["skipped_grad_norm"] == 2.0 and out["skipped_nonfinite"] == 1.0
    printed = capsys.readouterr().out
    assert "Most updates were skipped: 3 of 4 in steps 11-14" in printed
    assert "config.optim.skip_grad_norm=7" in printed and "raise it" in printed
    assert "Most updates were skipped" in caplog.text
    assert "at steps [11, 12]" in caplog.text and "at steps [13]" in caplog.text


def test_summary_under_raise_still_raises_on_nan_with_skipping_on():
    m = _call_metrics([0, 0])
    m["loss"][1] = np.nan
    with pytest.raises(Exception, match="at step 2"):
        train.summarize_call(m, 0, skip_nonfinite=False, last_checkpoint=lambda: "none",
                             skip_grad_norm=7.0)


def test_config_field_reaches_the_trainer():
    config = config_lib.resolve(config_lib.defaults())
    assert config.optim.skip_grad_norm == 0.0
    config.optim.skip_grad_norm = 3.5
    trainer = build.build_trainer(config, build.build_model(config, SHAPE),
                                       jax.sharding.Mesh(np.array(jax.devices()), ("data",)), 10)
    step_fn = getattr(trainer.step_fn, "__wrapped__", trainer.step_fn)
    assert step_fn.keywords["skip_grad_norm"] == 3.5
