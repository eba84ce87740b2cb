"""The whole default command's process wall time against a minimal jitted script, one run.

    python -m benchmarks.whole_command --rounds=3 --epochs=10

Each round runs these fresh subprocesses in turn, so the two programs alternate and a slow
spell of a shared machine hits both:

* ``vae_jax, cold cache``: ``python -m experiments.main --config=experiments/configs/default.py
  --workdir=<fresh> --config.train.num_epochs=10 --config.data.binarization=static
  --compilation_cache=<empty folder>``: a first run, compiling everything;
* ``minimal script``: the MINIMAL source below: the same MLP VAE (784-500-20, ReLU, Bernoulli
  pixels, static binarization, Adam 1e-3, batch 128, 468 steps per epoch), one jitted
  ``lax.scan`` per epoch and a jitted test ELBO of the 10,000 test images after each; no
  persistent cache, as such a script is usually run;
* ``vae_jax, warm cache``: the same command on another fresh workdir with the folder the
  cold run filled, the way a user's rerun (or the next experiment of the same shape) finds
  the launcher's default cache;
* ``script, warm cache``: the script with JAX's persistent cache on (every program cached,
  ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0``), filled by one untimed run first;
* with ``--compare_sync``, ``vae_jax, warm, sync``: the warm command with
  ``--config.train.async_checkpoint=False`` (what the background checkpoint writes buy).

It prints each process's wall time (start to exit, imports and data loading included), the
medians and the ratios; then the import time of ``experiments.main`` in a fresh process.
With ``--train_calls=R`` it first times the training alone, in this process: one epoch as
the library's ``Trainer`` call (468 steps, the default config, static binarization, no EMA
kept) against the script's jitted epoch, R rounds round-robin (``--rounds=0`` for only that).
No test runs it; the figures depend on the machine (quote one run's ratios).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MINIMAL = r'''
import gzip, sys, time
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

EPOCHS, BATCH = int(sys.argv[1]), 128
FOLDER = "/usr/share/datasets/fashion-mnist/"


def idx(name):
    with gzip.open(FOLDER + name) as f:
        return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)


train = jnp.asarray(idx("train-images-idx3-ubyte.gz") > 127, jnp.float32)
test = jnp.asarray(idx("t10k-images-idx3-ubyte.gz") > 127, jnp.float32)


class VAE(nn.Module):
    @nn.compact
    def __call__(self, x, key):
        h = nn.relu(nn.Dense(500)(x))
        mean, log_std = nn.Dense(20)(h), nn.Dense(20)(h)
        z = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        logits = nn.Dense(784)(nn.relu(nn.Dense(500)(z)))
        log_px = -jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x), -1)
        kl = 0.5 * jnp.sum(mean ** 2 + jnp.exp(2 * log_std) - 1 - 2 * log_std, -1)
        return log_px - kl   # ELBO per image


model, opt = VAE(), optax.adam(1e-3)
params = model.init(jax.random.key(0), train[:1], jax.random.key(1))
opt_state = opt.init(params)
steps = train.shape[0] // BATCH


@jax.jit
def epoch(params, opt_state, key, data):
    perm = jax.random.permutation(key, data.shape[0])[:steps * BATCH].reshape(steps, BATCH)

    def step(carry, inp):
        params, opt_state = carry
        idx, k = inp
        loss, g = jax.value_and_grad(lambda p: -model.apply(p, data[idx], k).mean())(params)
        updates, opt_state = opt.update(g, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(
        step, (params, opt_state), (perm, jax.random.split(key, steps)))
    return params, opt_state, losses.mean()


@jax.jit
def test_elbo(params, key, data):
    return model.apply(params, data, key).mean()


key = jax.random.key(42)
for e in range(EPOCHS):
    key, k1, k2 = jax.random.split(key, 3)
    params, opt_state, loss = epoch(params, opt_state, k1, train)
    print(f"epoch {e + 1} train loss {float(loss):.2f} test ELBO {float(test_elbo(params, k2, test)):.2f}",
          flush=True)
'''


def _timed(cmd, env) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"{cmd} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    last = [line for line in (out.stdout + out.stderr).splitlines() if "elbo" in line.lower()]
    print(f"    {wall:6.1f} s   {last[-1][-90:] if last else ''}", flush=True)
    return wall


def train_calls(rounds: int) -> None:
    """One epoch of training: the library's compiled call against MINIMAL's, round-robin."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vae_jax import config as config_lib, parallel, train
    from vae_jax.run import build

    ns: dict = {}
    exec(MINIMAL.split("key = jax.random.key(42)")[0].replace("int(sys.argv[1])", "1"), ns)
    config = config_lib.defaults()
    config.data.binarization = "static"
    images = (ns["idx"]("train-images-idx3-ubyte.gz").reshape(-1, 28, 28, 1) > 127)
    images = images.astype(np.uint8) * 255
    model = build.build_model(config, (28, 28, 1))
    steps = len(images) // config.train.batch_size
    trainer = build.build_trainer(config, model, parallel.data_mesh(), steps)
    keys = build.root_keys(config.seed)
    box = {"state": train.create_train_state(keys["init"], model, trainer.optimizer,
                                             (28, 28, 1), ema=config_lib.keeps_ema(config)),
           "params": ns["params"], "opt": ns["opt_state"]}
    on_device = trainer.put_train_images(images)
    perm = trainer.permutation(keys["order"], 0, len(images))
    call = trainer.call(steps)

    def library():
        box["state"] = box["state"].replace(step=jnp.zeros((), jnp.int32))
        box["state"], m = call(box["state"], on_device, perm, keys["train"])
        jax.block_until_ready(m)

    def script():
        box["params"], box["opt"], loss = ns["epoch"](box["params"], box["opt"],
                                                      jax.random.key(1), ns["train"])
        jax.block_until_ready(loss)

    runs = {"vae_jax Trainer call": library, "script's epoch": script}
    for fn in runs.values():
        fn()  # compile
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    print(f"one epoch of training ({steps} steps), medians of {rounds} rounds:")
    for name, ts in times.items():
        print(f"  {name:<22} {statistics.median(ts):.3f} s  "
              f"({', '.join(f'{t:.2f}' for t in ts)})")
    ratio = statistics.median(times["vae_jax Trainer call"]) / statistics.median(
        times["script's epoch"])
    print(f"  ratio vae_jax / script: {ratio:.3f}\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--compare_sync", action="store_true",
                        help="also time the warm command with config.train.async_checkpoint="
                             "False (each checkpoint written before training goes on)")
    parser.add_argument("--train_calls", type=int, default=0,
                        help="R > 0: first time one epoch of training alone, R rounds")
    args = parser.parse_args()
    if args.train_calls:
        train_calls(args.train_calls)
    if args.rounds <= 0:
        return
    tmp = tempfile.mkdtemp(prefix="whole_command_")
    script = os.path.join(tmp, "minimal.py")
    with open(script, "w") as f:
        f.write(MINIMAL)
    env = dict(os.environ, VAE_JAX_PROGRESS="0", PYTHONPATH=ROOT)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # it would win over --compilation_cache
    script_cache = dict(env, JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, "script_cache"),
                        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    vae = [sys.executable, "-m", "experiments.main", "--config=experiments/configs/default.py",
           f"--config.train.num_epochs={args.epochs}", "--config.data.binarization=static"]
    print("untimed: the script once, filling its persistent cache", flush=True)
    _timed([sys.executable, script, str(args.epochs)], script_cache)
    names = ("vae_jax, cold cache", "minimal script", "vae_jax, warm cache",
             "script, warm cache") + (("vae_jax, warm, sync",) if args.compare_sync else ())
    times = {name: [] for name in names}
    for r in range(args.rounds):
        cache = os.path.join(tmp, f"cache{r}")  # empty: the cold run fills it
        for name in names:
            print(f"round {r + 1}: {name}", flush=True)
            if name.startswith("vae_jax"):
                workdir = os.path.join(tmp, f"run{r}_{len(times[name])}_{names.index(name)}")
                cmd = vae + [f"--workdir={workdir}", f"--compilation_cache={cache}"]
                if name.endswith("sync"):
                    cmd.append("--config.train.async_checkpoint=False")
                times[name].append(_timed(cmd, env))
            else:
                times[name].append(_timed([sys.executable, script, str(args.epochs)],
                                          script_cache if "warm" in name else env))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"\n{args.epochs} epochs, static binarization, batch 128, test ELBO each epoch; "
          f"process wall, medians of {args.rounds}:")
    for name, ts in times.items():
        print(f"  {name:<20} {medians[name]:6.1f} s  ({', '.join(f'{t:.1f}' for t in ts)})")
    for a, b in (("vae_jax, cold cache", "minimal script"),
                 ("vae_jax, warm cache", "minimal script"),
                 ("vae_jax, warm cache", "script, warm cache"),
                 ("vae_jax, warm cache", "vae_jax, warm, sync")):
        if b not in medians:
            continue
        print(f"  ratio {a} / {b}: {medians[a] / medians[b]:.3f}")
    imports = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); "
                              "import experiments.main; print(time.perf_counter() - t)"],
                             cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        imports.append(float(out.stdout.split()[-1]))
    print(f"  import experiments.main: {statistics.median(imports):.2f} s (median of 3; "
          f"`python -X importtime -c 'import experiments.main'` breaks it down)")


if __name__ == "__main__":
    main()
