"""The two input pipelines side by side: steps/s of the on-device path (training set split
over the devices, batches gathered there) and of the stream (batches read on a host thread
and placed ahead of each call), timed round-robin in one run, for the default MLP and the
conv model; and the memory each holds: training-set bytes per device, the stream's
in-flight batches, resident host memory, device memory where the backend reports it.

  python benchmarks/pipelines.py                        # mlp + conv, 1 device
  python benchmarks/pipelines.py --devices=8 --models=mlp --steps=200
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _args():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="mlp,conv", help="comma list of: mlp, conv")
    p.add_argument("--devices", type=int, default=0, help="force N host devices (CPU)")
    p.add_argument("--steps", type=int, default=500, help="steps per timed round")
    p.add_argument("--steps_per_call", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    return p.parse_args()


ARGS = _args()
if ARGS.devices:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={ARGS.devices}")

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from experiments.configs import default as default_config  # noqa: E402
from vae_jax import config as config_lib  # noqa: E402
from vae_jax.run import build
from vae_jax import data, parallel, train  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _device_mb() -> str:
    stats = [d.memory_stats() for d in jax.local_devices()]
    if not all(stats):
        return "not reported by this backend"
    return ", ".join(f"{s.get('bytes_in_use', 0) / 2**20:.1f}" for s in stats) + " MB in use"


def bench(name: str) -> None:
    config = config_lib.resolve(default_config.get_config())
    if name == "conv":  # the registry's conv VAE, as in train_throughput.py
        config.model = ml_collections.ConfigDict(dict(
            name="conv", latent_dim=20, channels=(32, 64), hidden=256, activation="relu",
            likelihood="bernoulli"))
    ds = data.load(config.data.name)
    mesh = parallel.data_mesh()
    model = build.build_model(config, ds.image_shape)
    b, spc, n = config.train.batch_size, ARGS.steps_per_call, len(ds.train_images)
    spe = n // b
    trainer = build.build_trainer(config, model, mesh, spe)
    keys = build.root_keys(config.seed)
    key = jax.jit(lambda k: k, out_shardings=trainer.replicated)(keys["train"])
    images = trainer.put_train_images(ds.train_images)
    shard_mb = max(s.data.nbytes for s in images.addressable_shards) / 2**20
    perm = trainer.permutation(keys["order"], jax.device_put(np.int32(0)), n)
    steps = ARGS.steps - ARGS.steps % spc
    stream = data.Stream(ds.train_images, mesh, batch_size=b, steps_per_epoch=spe,
                         total_steps=10**9, prefetch=config.data.prefetch,
                         order=lambda e: jax.device_get(trainer.permutation(
                             keys["order"], jax.device_put(np.int32(e)), n)),
                         schedule=lambda s: train.next_stop(s, 10**9, spe, spc, 10**9, 10**9))

    def fresh():
        return jax.device_put(train.create_train_state(
            keys["init"], model, trainer.optimizer, ds.image_shape), trainer.replicated)

    def run_device(state, start):
        for s in range(start, start + steps, spc):
            state, m = trainer.call(spc)(state, images, perm, key)
        jax.block_until_ready(m)
        return state

    pos = [0]

    def run_stream(state, start):
        step = pos[0]
        while step < pos[0] + steps:
            step, batches = stream.batches(step)
            state, m = trainer.call_streamed()(state, batches, key)
        jax.block_until_ready(m)
        pos[0] = step
        return state

    rates = {"device": [], "stream": []}
    states = {"device": run_device(fresh(), 0), "stream": run_stream(fresh(), 0)}  # compile
    for _ in range(ARGS.rounds):
        for path, fn in (("device", run_device), ("stream", run_stream)):
            t0 = time.perf_counter()
            states[path] = fn(states[path], 0)
            rates[path].append(steps / (time.perf_counter() - t0))
    stream.close()
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"{name}: {jax.device_count()} device(s), batch {b}, {steps} steps x "
          f"{ARGS.rounds} rounds, {spc} steps per call (round-robin)")
    for path in ("device", "stream"):
        print(f"  {path:6s} steps/s median {med[path]:8.1f}  "
              f"(rounds: {', '.join(f'{r:.1f}' for r in rates[path])})")
    print(f"  stream / device = {med['stream'] / med['device']:.3f}")
    print(f"  training set on the device path: {shard_mb:.1f} MB per device "
          f"({images.nbytes / 2**20:.1f} MB in all, {len(images.addressable_shards)} "
          "shards)")
    in_flight = (1 + config.data.prefetch) * spc * b * int(np.prod(ds.image_shape))
    print(f"  stream's in-flight batches: up to {in_flight / 2**20:.1f} MB over all devices "
          f"({in_flight / 2**20 / jax.device_count():.2f} MB per device)")
    print(f"  resident host memory now: {_rss_mb():.0f} MB; device memory: {_device_mb()}")


if __name__ == "__main__":
    for model_name in ARGS.models.split(","):
        bench(model_name)
