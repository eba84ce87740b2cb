"""Training throughput against the machine's own matrix-multiply limit.

Prints, for the default MLP (and the conv model): compile time, steps/s, images/s,
seconds per epoch, peak host memory, device memory where reported, the model's FLOPs per
step, the float32 matmul throughput measured in this same run (at the model's layer shapes
and at a large square), and the achieved fraction of the step rate that throughput allows.

  python -m benchmarks.train_throughput                    # default MLP + conv, 1 device
  python -m benchmarks.train_throughput --models=mlp --steps_per_call=10,100,1000
  python -m benchmarks.train_throughput --devices=8        # data parallel, forced host devices

Figures are medians over repeats; compare ratios measured in one run (the machine is noisy).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="mlp,conv", help="comma list of: mlp, conv")
    p.add_argument("--devices", type=int, default=0,
                   help="force N host devices on CPU (0: whatever JAX finds)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--steps", type=int, default=1000, help="timed steps per repeat")
    p.add_argument("--steps_per_call", default="100", help="comma list; steps fused per dispatch")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs_memory", default="", help="e.g. 5: run whole epochs of the real "
                   "loop and print host memory after each (growth check); 1,5: two processes")
    p.add_argument("--compare_devices", type=int, default=0,
                   help="N: also time the MLP on N forced host devices vs 1 (overhead)")
    p.add_argument("--memory_child", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None and ARGS.devices:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={ARGS.devices}")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import ml_collections  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from vae_jax import config as config_lib, data, parallel, train  # noqa: E402
from vae_jax.run import build, experiment  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# this benchmark in a fresh process, from the repository root (this checkout's vae_jax)
SELF = [sys.executable, "-m", "benchmarks.train_throughput"]


def peak_host_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_memory_mb() -> str:
    stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
    if not stats:
        return "n/a (backend does not report)"
    return f"{stats.get('peak_bytes_in_use', 0) / 2**20:.1f} MB peak"


def matmul_gflops(m: int, k: int, n: int, repeats: int = 5, min_time: float = 0.2, *,
                  dtype=jnp.float32, precision=None) -> float:
    """Median GFLOP/s of jnp.dot [m,k]x[k,n] (2mkn FLOPs), many per dispatch; operands of
    ``dtype`` (float32 by default) at ``precision`` (None: JAX's default; "highest": no
    TF32 on GPUs)."""
    a = jax.random.normal(jax.random.key(0), (m, k), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (k, n), jnp.float32).astype(dtype)
    inner = max(1, int(2e9 / (2 * m * k * n)))  # ~2 GFLOP per dispatch

    @jax.jit
    def many(a, b):
        def body(c, _):
            a_c = a + (c[0, 0] * 0.0).astype(a.dtype)  # a loop-carried operand: no hoisting
            return c + jnp.dot(a_c, b, precision=precision)[0, 0], None
        return jax.lax.scan(body, jnp.zeros((1, 1)), None, length=inner)[0]

    many(a, b).block_until_ready()
    rates = []
    for _ in range(repeats):
        t0, calls = time.perf_counter(), 0
        while time.perf_counter() - t0 < min_time:
            many(a, b).block_until_ready()
            calls += 1
        rates.append(2 * m * k * n * inner * calls / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


def dense_shapes(params, batch: int, image_shape) -> list[tuple[int, int, int]]:
    """(m, k, n) of every Dense layer's forward matmul for a batch."""
    shapes = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = [getattr(p, "key", "") for p in path]
        if names[-1] == "kernel" and leaf.ndim == 2:
            shapes.append((batch, leaf.shape[0], leaf.shape[1]))
    return shapes


def step_flops(step_fn, state, batch, key) -> float:
    """FLOPs of one compiled train step, from XLA's cost analysis."""
    compiled = jax.jit(step_fn).lower(state, batch, key).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def bench_model(name: str, args) -> None:
    config = config_lib.defaults()
    config.train.batch_size = args.batch_size
    if name == "conv":  # the registry's conv VAE: two stride-2 convs, a 256-unit layer
        config.model = ml_collections.ConfigDict(dict(
            name="conv", latent_dim=20, channels=(32, 64), hidden=256, activation="relu",
            likelihood="bernoulli"))
    ds = data.load(config.data.name)
    mesh = parallel.data_mesh()
    parallel.check_batch_size(config.train.batch_size, mesh)
    model = build.build_model(config, ds.image_shape)
    spe = len(ds.train_images) // config.train.batch_size
    trainer = build.build_trainer(config, model, mesh, spe)
    keys = build.root_keys(config.seed)
    state = train.create_train_state(keys["init"], model, trainer.optimizer, ds.image_shape)
    state = jax.device_put(state, trainer.replicated)
    images = parallel.put_global(ds.train_images, mesh, trainer.replicated)
    perm = trainer.permutation(keys["order"], 0, len(ds.train_images))

    batch = jnp.asarray(ds.train_images[: config.train.batch_size])
    flops = step_flops(trainer.step_fn, state, batch, keys["train"])
    shapes = dense_shapes(state.params, config.train.batch_size, ds.image_shape)
    mm_layers = [(s, matmul_gflops(*s)) for s in shapes]
    # Time-weighted limit at the model's own shapes: fwd + 2 backward matmuls per layer.
    layer_time = sum(3 * 2 * m * k * n / (g * 1e9) for (m, k, n), g in mm_layers)
    layer_flops = sum(3 * 2 * m * k * n for (m, k, n), _ in mm_layers)
    mm_model = layer_flops / layer_time / 1e9
    mm_square = matmul_gflops(2048, 2048, 2048)
    bound = mm_model * 1e9 / flops if name == "mlp" else mm_square * 1e9 / flops

    print(f"\n== {name}: batch {config.train.batch_size}, {jax.device_count()} device(s) "
          f"({jax.devices()[0].platform}), {len(jax.tree.leaves(state.params))} param arrays, "
          f"{sum(x.size for x in jax.tree.leaves(state.params)) / 1e6:.2f} M params")
    print(f"  FLOPs per train step (XLA cost analysis): {flops / 1e6:.1f} MFLOP")
    for (m, k, n), g in mm_layers:
        print(f"  matmul [{m}x{k}]x[{k}x{n}]: {g:.1f} GFLOP/s")
    print(f"  matmul at the model's shapes (time-weighted): {mm_model:.1f} GFLOP/s; "
          f"2048^3 square: {mm_square:.1f} GFLOP/s")
    print(f"  step-rate bound from that throughput: {bound:.1f} steps/s")

    sizes = [int(v) for v in args.steps_per_call.split(",")]
    compile_s, rates = {}, {k: [] for k in sizes}
    for k in sizes:
        t0 = time.perf_counter()
        state, m = trainer.call(k)(state, images, perm, keys["train"])
        jax.block_until_ready(m)
        compile_s[k] = time.perf_counter() - t0
    # Round-robin: each repeat times every size once, so load on a shared machine hits
    # all sizes alike (timing one size's repeats after another's biased the comparison).
    for _ in range(args.repeats):
        for k in sizes:
            fn, calls = trainer.call(k), max(1, args.steps // k)
            state = state.replace(step=jnp.zeros((), jnp.int32))  # stay inside epoch 0
            state = jax.device_put(state, trainer.replicated)
            t0 = time.perf_counter()
            for _ in range(calls):
                state, m = fn(state, images, perm, keys["train"])
            jax.block_until_ready(m)
            rates[k].append(calls * k / (time.perf_counter() - t0))
    for k in sizes:
        rate = statistics.median(rates[k])
        print(f"  steps_per_call={k:5d}: compile+first call {compile_s[k]:.2f} s | "
              f"{rate:.1f} steps/s (median of {args.repeats}; min {min(rates[k]):.1f}, "
              f"max {max(rates[k]):.1f}) | {rate * config.train.batch_size:.0f} images/s | "
              f"{spe / rate:.2f} s/epoch | {rate / bound:.0%} of the bound | "
              f"{rate * flops / 1e9:.1f} GFLOP/s")
    print(f"  peak host memory: {peak_host_mb():.0f} MB (data set "
          f"{ds.train_images.nbytes / 2**20:.0f} MB); device memory: {device_memory_mb()}")


def _rss_mb() -> tuple[float, float]:
    """(current resident set, its peak since the last reset) of this process, in MB."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def memory_child(epochs: int) -> None:
    """In a fresh process: host memory of ``epochs`` of the real loop, epoch by epoch.

    Resident memory after the imports (JAX, TensorFlow for clu's writers), then after each
    epoch (sampled at its checkpoint save, after the evaluation): the first epoch adds the
    one-time costs (data on host and device, compiled programs, XLA's runtime); growth
    after it is the loop's own. Linux only (/proc/self/status).
    """
    import tempfile

    import tensorboardX  # noqa: F401  (import the event writer before the baseline)
    from vae_jax.run import checkpoint

    base, _ = _rss_mb()
    config = config_lib.defaults()
    config.train.num_epochs = epochs
    ds = data.load(config.data.name)
    data_mb = (ds.train_images.nbytes + ds.test_images.nbytes) / 2**20
    del ds
    after_epoch = []
    save = checkpoint.save

    def save_and_measure(mngr, step, state):
        out = save(mngr, step, state)
        after_epoch.append(_rss_mb())
        return out

    checkpoint.save = save_and_measure
    with tempfile.TemporaryDirectory() as wd:
        t0 = time.perf_counter()
        state = experiment.train_and_evaluate(config, wd)
        secs = time.perf_counter() - t0
    checkpoint.save = save
    state_mb = sum(x.nbytes for x in jax.tree.leaves(state)) / 2**20
    print(f"  after imports: {base:.0f} MB resident; data {data_mb:.0f} MB + train state "
          f"{state_mb:.0f} MB (2x = {2 * (data_mb + state_mb):.0f} MB); {epochs} epochs in "
          f"{secs:.0f} s")
    for e, (rss, peak) in enumerate(after_epoch, 1):
        print(f"  after epoch {e}: {rss:.0f} MB resident (+{rss - base:.0f} MB over the "
              f"imports), peak so far {peak:.0f} MB")
    first = after_epoch[0][0]
    last, peak = after_epoch[-1]
    print(f"  growth from epoch 1 to epoch {epochs}: {last - first:+.0f} MB "
          f"({(last - first) / max(1, epochs - 1):+.1f} MB per epoch); peak over the imports "
          f"{peak - base:.0f} MB, of which the first epoch's one-time costs "
          f"{first - base:.0f} MB", flush=True)


def memory_growth(args) -> None:
    """Host memory epoch by epoch, in a fresh process per count."""
    import subprocess

    print("\n== host memory of train_and_evaluate (default config)")
    for epochs in [int(e) for e in args.epochs_memory.split(",")]:
        subprocess.run(SELF + ["--memory_child", str(epochs), "--models="], cwd=ROOT,
                       check=True)


def compare_devices(args) -> None:
    """The data-parallel path on N forced host devices vs 1, in two fresh processes."""
    import re
    import subprocess

    rates = {}
    for n in (1, args.compare_devices):
        out = subprocess.run(SELF + ["--models=mlp", f"--devices={n}", f"--steps={args.steps}",
                                     f"--repeats={args.repeats}", "--steps_per_call=100"],
                             cwd=ROOT, check=True, capture_output=True, text=True).stdout
        rates[n] = float(re.search(r"\| ([0-9.]+) steps/s", out).group(1))
        print(f"  {n} device(s): {rates[n]:.1f} steps/s")
    n = args.compare_devices
    print(f"  data-parallel overhead on {n} forced host devices (same 2 cores, same global "
          f"batch): {rates[1] / rates[n]:.2f}x the 1-device step time")


def main() -> None:
    args = ARGS
    if args.memory_child:
        return memory_child(args.memory_child)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.device_count()}, "
          f"host cores {os.cpu_count()}")
    for name in filter(None, args.models.split(",")):
        bench_model(name.strip(), args)
    if args.compare_devices:
        print(f"\n== data parallel: 1 vs {args.compare_devices} devices")
        compare_devices(args)
    if args.epochs_memory:
        memory_growth(args)


if __name__ == "__main__":
    main()
