"""The training set split over the data axis (vae_jax.data.sharded): placement, the
gathered batches equal the replicated gather bit for bit, each of 8 devices holds 1/8 of
the rows in the real loop, and the default config trains to the same parameters."""

import types

import numpy as np
import pytest

from conftest import requires_fashion_mnist, run_python
from vae_jax import data, errors, parallel


def test_padded_rows_and_placement_from_a_slice():
    assert [data.padded_rows(n, 8) for n in (8, 9, 1003, 60000)] == [8, 16, 1008, 60000]
    mesh = parallel.data_mesh()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (37, 4, 3, 1), np.uint8)
    whole = data.put_sharded(x, mesh)
    assert whole.sharding.spec == data.row_sharding(mesh).spec and whole.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(whole), x)
    # a process that holds rows [0, 37) of the set (its own part) places the same array
    part = data.put_sharded(x[0:37], mesh, num_rows=37, row_offset=0)
    np.testing.assert_array_equal(np.asarray(part), x)
    with pytest.raises(errors.DataError, match=r"rows \[0, 37\).*holds only \[5, 37\)"):
        data.put_sharded(x[5:], mesh, num_rows=37, row_offset=5)


def _fake_mesh(owners):
    """A stand-in for a mesh whose devices belong to the processes ``owners``."""
    devices = np.array([types.SimpleNamespace(process_index=p) for p in owners])
    return types.SimpleNamespace(size=len(owners), devices=devices)


def test_each_process_gets_its_devices_rows_and_an_empty_share_is_an_error():
    mesh = _fake_mesh([0, 0, 0, 0, 1, 1, 1, 1])
    # 1003 rows over 8 devices: 126 each (the last 879..1007 padded with 5 zero rows)
    assert data.process_rows(1003, mesh, 0) == (0, 504)
    assert data.process_rows(1003, mesh, 1) == (504, 1003)
    # 9 rows over 8 devices: 2 per device, so process 1's devices (rows 8..15) get one row;
    # with 7 rows it would get none
    assert data.process_rows(9, mesh, 1) == (8, 9)
    with pytest.raises(errors.DataError, match=r"7 rows split over 8 devices as 1 per "
                       r"device leave process 1 \(devices 7..7\) no rows"):
        data.process_rows(7, _fake_mesh([0] * 7 + [1]), 1)


CODE = """
import jax, jax.numpy as jnp, numpy as np
from experiments.configs import default, smoke
from vae_jax import data, parallel, train
from vae_jax.run import experiment
from vae_jax import config as config_lib
from vae_jax.run import build
assert jax.device_count() == 8
mesh = parallel.data_mesh()

# 1. the gathered batches equal the replicated gather, for a set that needs padding
x = np.random.default_rng(0).integers(0, 256, (1003, 5, 4, 1), np.uint8)
sharded = data.put_sharded(x, mesh)
assert sharded.shape == (1008, 5, 4, 1)
assert sorted(s.data.shape[0] for s in sharded.addressable_shards) == [126] * 8
perm = jax.random.permutation(jax.random.key(1), 1003)
gather = jax.jit(lambda im, p, i: data.gather_sharded(im, p, i, 64, mesh))
for i in range(1003 // 64):
    got = gather(sharded, perm, i)
    assert got.sharding.spec == parallel.batch_sharded(mesh).spec
    want = data.gather_batch(jnp.asarray(x), perm, i, 64)
    assert got.dtype == np.uint8 and np.array_equal(np.asarray(got), np.asarray(want)), i
hlo = gather.lower(sharded, perm, 0).compile().as_text()
assert "reduce-scatter" in hlo and "all-gather" not in hlo
print("gather ok")

# 2. the real loop places 1/8 of the training set on each device
placed = []
put = train.Trainer.put_train_images
def spy(self, *a, **k):
    out = put(self, *a, **k)
    placed.append((out.shape, str(out.sharding.spec),
                   sorted({{s.data.shape[0] for s in out.addressable_shards}}),
                   len(out.addressable_shards)))
    return out
train.Trainer.put_train_images = spy
c = smoke.get_config(); c.train.num_steps = 5; c.train.eval_every_steps = 5
experiment.train_and_evaluate(c, {workdir!r})
print("placed", placed)
assert placed == [((60000, 28, 28, 1), "P('data',)", [7500], 8)], placed

# 3. the default config: sharded and replicated placements give the same parameters
config = config_lib.resolve(default.get_config())
ds = data.load(config.data.name)
model = build.build_model(config, ds.image_shape)
keys = build.root_keys(config.seed)
spe = len(ds.train_images) // config.train.batch_size
out = []
for shard in (True, False):
    trainer = build.build_trainer(config, model, mesh, spe)
    trainer.shard_data = shard
    state = jax.device_put(train.create_train_state(keys["init"], model, trainer.optimizer,
                                                    ds.image_shape), trainer.replicated)
    images = trainer.put_train_images(ds.train_images)
    assert len({{s.data.shape[0] for s in images.addressable_shards}}) == 1
    perm = trainer.permutation(keys["order"], jax.device_put(np.int32(0)), 60000)
    tk = jax.jit(lambda k: k, out_shardings=trainer.replicated)(keys["train"])
    state, _ = trainer.call(4)(state, images, perm, tk)
    out.append(np.concatenate([np.ravel(v) for v in jax.tree.leaves(jax.device_get(state))]))
assert np.array_equal(out[0], out[1])
print("default ok", out[0].size)
"""


@requires_fashion_mnist
@pytest.mark.slow
def test_eight_devices_hold_an_eighth_each_and_train_the_same(tmp_path):
    out = run_python(CODE.format(workdir=str(tmp_path / "w8")), devices=8)
    assert "gather ok" in out and "default ok" in out
    assert "[7500], 8)" in out
