"""The whole loop: smoke run, resume = uninterrupted, 8 devices = 1 device, clear errors."""

import itertools
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from conftest import requires_fashion_mnist, run_python
from experiments.configs import smoke
from vae_jax import train
from vae_jax.run import checkpoint, experiment
from vae_jax import config as config_lib
from vae_jax.run import build

pytestmark = requires_fashion_mnist


def _flat(params) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(params))])


def _config(num_steps=20):
    config = smoke.get_config()
    config.train.num_steps = num_steps
    return config


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    state = experiment.train_and_evaluate(_config(20), workdir)
    return workdir, state


def test_smoke_run_writes_checkpoints_events_and_images(uninterrupted):
    workdir, state = uninterrupted
    assert int(state.step) == 20
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10", "20"]
    assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
    for kind in ("samples", "reconstructions"):
        for step in (10, 20):
            path = os.path.join(workdir, "images", f"{kind}_{step:08d}.png")
            img = np.asarray(Image.open(path))
            assert img.ndim == 2 and img.shape[0] > 28 and img.std() > 0
    assert os.path.isfile(os.path.join(workdir, "config.json"))
    # Training moved the parameters and the EMA lags behind them.
    assert not np.allclose(_flat(state.params), _flat(state.ema_params))


def test_event_file_holds_train_and_test_metrics(uninterrupted):
    """TensorBoard (its own reader, no TensorFlow) sees the train and test scalars, and
    they are the numbers of metrics.jsonl (``logs.read_scalars``)."""
    from tensorboard.backend.event_processing import event_accumulator

    from vae_jax.run import logs

    workdir, _ = uninterrupted
    acc = event_accumulator.EventAccumulator(workdir)
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train_loss", "test_elbo", "test_kl", "test_log_px_z", "steps_per_s"} <= tags
    elbo = [(e.step, e.value) for e in acc.Scalars("test_elbo")]
    assert [s for s, _ in elbo] == [10, 20] and all(-800 < v < 0 for _, v in elbo)
    steps, values = logs.read_scalars(workdir)["test_elbo"]
    np.testing.assert_allclose([v for _, v in elbo], values, rtol=1e-6)
    assert steps.tolist() == [10, 20]
    assert logs.read_scalars(workdir)["train_loss"][0].tolist() == [5, 10, 15, 20]


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted(uninterrupted, tmp_path):
    _, full = uninterrupted
    workdir = str(tmp_path / "resumed")
    first = experiment.train_and_evaluate(_config(10), workdir)
    assert int(first.step) == 10
    resumed = experiment.train_and_evaluate(_config(20), workdir)
    assert int(resumed.step) == 20
    np.testing.assert_array_equal(_flat(resumed.params), _flat(full.params))
    np.testing.assert_array_equal(_flat(resumed.opt_state), _flat(full.opt_state))


CODE_8_DEVICES = """
import jax, numpy as np
from experiments.configs import smoke
from vae_jax.run import experiment
assert jax.device_count() == {devices}, jax.devices()
c = smoke.get_config(); c.train.num_steps = 20
s = experiment.train_and_evaluate(c, {workdir!r})
np.save({out!r}, np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(s.params))]))
"""


@pytest.mark.slow
def test_eight_devices_equal_one_device(uninterrupted, tmp_path):
    _, one = uninterrupted
    out = str(tmp_path / "params8.npy")
    run_python(CODE_8_DEVICES.format(devices=8, workdir=str(tmp_path / "w8"), out=out), devices=8)
    eight = np.load(out)
    # Same global batch, same keys: only the order of floating-point sums differs.
    np.testing.assert_allclose(eight, _flat(one.params), rtol=1e-4, atol=1e-5)


def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path):
    code = """
from experiments.configs import smoke
from vae_jax.run import experiment
c = smoke.get_config(); c.train.batch_size = 30
try:
    experiment.train_and_evaluate(c, {workdir!r})
except ValueError as e:
    print(e)
""".format(workdir=str(tmp_path / "w"))
    out = run_python(code, devices=8)
    assert "config.train.batch_size=30 does not divide evenly over the 8 devices" in out
    assert "multiple of 8" in out


@pytest.mark.parametrize("field,value,message", [
    ("model.name", "resnet9000", "Unknown model 'resnet9000'"),
    ("loss.name", "elbow", "Unknown loss 'elbow'"),
    ("data.binarization", "otsu", "Unknown binarization 'otsu'"),
    ("train.batch_size", 0, "config.train.batch_size=0 must be a positive number"),
    ("model.latent_dim", -3, "config.model.latent_dim=-3 must be a positive number"),
])
def test_config_validation(field, value, message):
    config = smoke.get_config()
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=message):
        config_lib.resolve(config)


@pytest.mark.slow
def test_steady_state_loop_makes_no_host_transfers():
    from vae_jax import data, parallel

    config = _config()
    ds = data.load(config.data.name)
    mesh = parallel.data_mesh()
    model = build.build_model(config, ds.image_shape)
    trainer = build.build_trainer(config, model, mesh, len(ds.train_images) // config.train.batch_size)
    keys = build.root_keys(config.seed)
    state = jax.device_put(train.create_train_state(keys["init"], model, trainer.optimizer,
                                                    ds.image_shape), trainer.replicated)
    images = trainer.put_train_images(ds.train_images)  # split over the data axis
    assert images.sharding.spec == data.row_sharding(mesh).spec
    perm = trainer.permutation(keys["order"], jax.device_put(np.int32(0)), len(ds.train_images))
    fn = trainer.call(5)
    state, metrics = fn(state, images, perm, keys["train"])  # compile outside the guard
    with jax.transfer_guard("disallow"):
        for _ in range(3):
            state, metrics = fn(state, images, perm, keys["train"])
        jax.block_until_ready(metrics)
    assert int(state.step) == 20
    # The guard is live: a host batch would have been refused.
    with pytest.raises(Exception, match="[Dd]isallowed"):
        with jax.transfer_guard("disallow"):
            fn(state, ds.train_images, perm, keys["train"])


@pytest.mark.slow
def test_a_run_without_an_ema_keeps_none_and_trains_the_same_parameters():
    """ema_decay=0 (the default): the state holds no EMA and the compiled call has no
    output for one (no pass over the parameters spent on it), and the parameters and
    optimizer state are bitwise those of a run keeping an EMA, which never feeds back."""
    from vae_jax import data, parallel

    ds = data.load("fashion_mnist")
    mesh = parallel.data_mesh()
    out = {}
    for decay in (0.999, 0.0):
        config = _config()
        config.train.ema_decay = decay
        model = build.build_model(config, ds.image_shape)
        trainer = build.build_trainer(config, model, mesh, 100)
        keys = build.root_keys(config.seed)
        state = train.create_train_state(keys["init"], model, trainer.optimizer,
                                         ds.image_shape, ema=config_lib.keeps_ema(config))
        images = trainer.put_train_images(ds.train_images[:3200])
        perm = trainer.permutation(keys["order"], jax.device_put(np.int32(0)), 3200)
        fn = trainer.call(5)
        outputs = jax.eval_shape(fn, state, images, perm, keys["train"])[0]
        for _ in range(2):
            state, _ = fn(state, images, perm, keys["train"])
        out[decay] = state, len(jax.tree.leaves(outputs))
    (kept, n_kept), (none, n_none) = out[0.999], out[0.0]
    assert none.ema_params is None and kept.ema_params is not None
    assert n_kept - n_none == len(jax.tree.leaves(kept.params))
    assert int(none.step) == int(kept.step) == 10
    np.testing.assert_array_equal(_flat(none.params), _flat(kept.params))
    np.testing.assert_array_equal(_flat(none.opt_state), _flat(kept.opt_state))
    assert not np.array_equal(_flat(kept.ema_params), _flat(kept.params))


def test_calls_cut_every_epoch_into_the_same_lengths():
    """Every distinct call length compiles (and keeps) one more program: over many epochs
    the default cut must use one length, or a full call and the epoch's remainder."""
    def lengths(total, spe, spc, ckpt, ev):
        step, out = 0, []
        while step < total:
            stop = train.next_stop(step, total, spe, spc, ckpt, ev)
            assert step < stop <= total
            out.append(stop - step)
            step = stop
        return out

    cut = lengths(20 * 468, 468, 100, 468, 468)   # 468 = 4 × 117: one program
    assert set(cut) == {117} and sum(cut) == 20 * 468
    cut = lengths(20 * 467, 467, 100, 467, 467)   # prime: a full call and the remainder
    assert set(cut) == {100, 67} and cut[:5] == [100, 100, 100, 100, 67]
    assert train.call_length(1875, 5) == 5 and train.call_length(468, 50) == 52
    assert train.call_length(10, 1000) == 1000 and train.call_length(7, 3) == 3
    # checkpoints and evaluations inside an epoch still end a call exactly there
    cut = lengths(2 * 468, 468, 100, 250, 468)
    assert sum(cut) == 936 and 250 in itertools.accumulate(cut)
    assert set(lengths(3 * 50, 50, 1000, 50, 50)) == {50}


def test_global_norm_is_optax_global_norm():
    tree = {"a": jax.random.normal(jax.random.key(0), (784, 500)),
            "b": {"c": -jax.random.uniform(jax.random.key(1), (500,)), "d": jnp.zeros((3, 2))}}
    np.testing.assert_allclose(train.global_norm(tree), optax.global_norm(tree), rtol=1e-6)
    assert float(train.global_norm({"x": jnp.array([3.0, -4.0])})) == 5.0
    assert np.isnan(train.global_norm({"x": jnp.array([1.0, jnp.nan])}))
    assert np.isinf(train.global_norm({"x": jnp.array([1.0, -jnp.inf])}))


@pytest.mark.slow
def test_no_compilation_after_the_first_epoch(tmp_path):
    """Every program the loop needs (train calls, evaluation, images, checkpoints) compiles
    in the first epoch, a handful in all; later epochs compile nothing (each compile costs
    seconds and keeps its code in memory: a per-epoch recompile is a leak). Synthetic .npz
    images."""
    rng = np.random.default_rng(0)
    path = tmp_path / "synthetic_small.npz"
    np.savez(path, train=rng.integers(0, 256, (130, 28, 28), np.uint8),
             test=rng.integers(0, 256, (40, 28, 28), np.uint8))
    config = smoke.get_config()
    config.data.name, config.data.dir = "npz", str(path)
    # 13 steps per epoch (prime: no call length near 5 divides it), 5 per call: cut from
    # each epoch's start, every epoch is 5, 5, 3; cut at global multiples of 5 epochs 2 and
    # 3 would need calls of 2, 1 and 4 steps, new lengths (new programs).
    config.train.batch_size, config.train.steps_per_call = 10, 5
    config.train.num_steps, config.train.num_epochs = 0, 6
    config.train.checkpoint_every_steps = config.train.eval_every_steps = 0  # every epoch
    config.eval.batch_size = 20
    compiles, per_epoch = [0], []

    def on_event(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles[0] += 1

    jax.monitoring.register_event_duration_secs_listener(on_event)
    save = checkpoint.save

    def counting_save(mngr, step, state, **kwargs):
        per_epoch.append(compiles[0])
        return save(mngr, step, state, **kwargs)

    checkpoint.save = counting_save
    try:
        experiment.train_and_evaluate(config, str(tmp_path / "wd"))
    finally:
        checkpoint.save = save
        jax.monitoring.unregister_event_duration_listener(on_event)
    assert len(per_epoch) == 6 and per_epoch[0] > 0
    # epoch 1's checkpoint save compiles its checksums; from then on nothing compiles
    assert per_epoch[1:] == [per_epoch[1]] * 5, per_epoch
    # whole functions compile as one program each (init, train calls, evaluation, images,
    # checksums: 15); op by op, the initialisation and the PNG grids compiled 104, each
    # kept resident (benchmarks/README.md, host memory)
    assert per_epoch[0] <= 20, per_epoch
