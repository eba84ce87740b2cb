"""File-backed training sets streamed through grain: steps/s of the on-device path against
grain streaming memory-mapped npz shards and a folder of PNG files, for the default MLP and
the conv VAE, with each count of read threads asked for (timed round-robin in one process,
with the process's CPU time per step); the host CPU time grain takes to read one batch
(``--parts=reads``); then the whole training loop on the shards with a device budget
smaller than the set (``config.data.device_budget_mb``, so ``auto`` picks the stream) and
the resident host memory at the end of each epoch.

Writes real Fashion-MNIST (Debian's dataset-fashion-mnist) as np.savez shards and as PNG
files into a temporary folder first.

  python -m benchmarks.stream_files                      # mlp, read threads -1 (default), 4
  python -m benchmarks.stream_files --models=mlp,conv --num_workers=-1,4 --parts=throughput
  python -m benchmarks.stream_files --parts=reads        # CPU ms per batch read
  python -m benchmarks.stream_files --parts=memory       # the whole loop only
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time


def _args():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shards", type=int, default=6)
    p.add_argument("--png_rows", type=int, default=6000, help="rows of the PNG folder")
    p.add_argument("--models", default="mlp", help="comma list of: mlp, conv")
    p.add_argument("--num_workers", default="-1,4",
                   help="comma list of grain read-thread counts (-1: the backend's default)")
    p.add_argument("--steps", type=int, default=300, help="MLP steps per timed round")
    p.add_argument("--conv_steps", type=int, default=50, help="conv steps per timed round")
    p.add_argument("--steps_per_call", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4, help="epochs of the whole loop")
    p.add_argument("--budget_mb", type=int, default=10)
    p.add_argument("--parts", default="throughput,memory",
                   help="comma list of: throughput, reads, memory")
    return p.parse_args()


ARGS = _args()

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from vae_jax import config as config_lib, data, parallel, progress, train  # noqa: E402
from vae_jax.run import build, experiment, runtime  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def write_sets(root: str, ds) -> tuple[str, str]:
    shards = os.path.join(root, "shards")
    os.makedirs(shards)
    for i, rows in enumerate(np.array_split(np.arange(len(ds.train_images)), ARGS.shards)):
        extra = {"test": ds.test_images} if i == 0 else {}
        np.savez(os.path.join(shards, f"shard-{i:05d}.npz"),
                 train=ds.train_images[rows], **extra)
    folder = os.path.join(root, "png")
    for split, images in (("train", ds.train_images[:ARGS.png_rows]),
                          ("test", ds.test_images[:1000])):
        os.makedirs(os.path.join(folder, split))
        for i, image in enumerate(images):
            Image.fromarray(image[..., 0]).save(os.path.join(folder, split, f"{i:05d}.png"))
    return shards, folder


def _model_config(name: str):
    config = config_lib.resolve(config_lib.defaults())
    if name == "conv":  # the registry's conv VAE, as in train_throughput.py
        config.model = ml_collections.ConfigDict(dict(
            name="conv", latent_dim=20, channels=(32, 64), hidden=256, activation="relu",
            likelihood="bernoulli"))
    return config


def _workers() -> list[int]:
    return [int(w) for w in ARGS.num_workers.split(",")]


def throughput(model_name: str, shards: str, folder: str) -> None:
    config = _model_config(model_name)
    ds = data.load(config.data.name)
    mesh = parallel.data_mesh()
    model = build.build_model(config, ds.image_shape)
    b = config.train.batch_size
    steps = ARGS.conv_steps if model_name == "conv" else ARGS.steps
    spc = min(ARGS.steps_per_call, steps)
    steps -= steps % spc
    keys = build.root_keys(config.seed)
    files = {"npz shards": data.load("npz", data_dir=shards).train_images,
             "png folder": data.load("image_folder", data_dir=folder).train_images}
    variants = {("device", None): ds.train_images}
    variants |= {(name, w): rows for name, rows in files.items() for w in _workers()}
    runners, states, streams = {}, {}, []
    rates, cpu = {v: [] for v in variants}, {v: [] for v in variants}
    for (name, workers), source in variants.items():
        n = len(source)
        spe = n // b
        trainer = build.build_trainer(config, model, mesh, spe)
        key = jax.jit(lambda k: k, out_shardings=trainer.replicated)(keys["train"])
        state = jax.device_put(train.create_train_state(
            keys["init"], model, trainer.optimizer, ds.image_shape), trainer.replicated)
        if name == "device":
            images = trainer.put_train_images(source)
            perm = trainer.permutation(keys["order"], jax.device_put(np.int32(0)), n)

            def run(state, trainer=trainer, images=images, perm=perm, key=key):
                for _ in range(0, steps, spc):
                    state, m = trainer.call(spc)(state, images, perm, key)
                jax.block_until_ready(m)
                return state, steps
        else:
            stream = data.Stream(
                source, mesh, batch_size=b, steps_per_epoch=spe, total_steps=10**9,
                prefetch=config.data.prefetch, num_workers=workers,
                order=lambda e, t=trainer, n=n: jax.device_get(t.permutation(
                    keys["order"], jax.device_put(np.int32(e)), n)),
                schedule=lambda s, spe=spe: train.next_stop(s, 10**9, spe, spc, 10**9, 10**9))
            streams.append(stream)
            pos = [0]

            def run(state, trainer=trainer, stream=stream, pos=pos, key=key):
                step = pos[0]
                while step < pos[0] + steps:
                    step, batches = stream.batches(step)
                    state, m = trainer.call_streamed()(state, batches, key)
                jax.block_until_ready(m)
                stream.wait()  # its reads ahead: in its own time, not the next variant's
                done, pos[0] = step - pos[0], step  # calls end at epoch ends: may pass steps
                return state, done
        runners[name, workers] = run
        states[name, workers] = run(state)[0]  # compile, warm the page cache
    for _ in range(ARGS.rounds):
        for v, run in runners.items():
            t0, c0 = time.perf_counter(), time.process_time()
            states[v], done = run(states[v])
            rates[v].append(done / (time.perf_counter() - t0))
            cpu[v].append((time.process_time() - c0) / done * 1e3)
    for stream in streams:
        stream.close()
    med = {v: statistics.median(r) for v, r in rates.items()}
    device = med["device", None]
    print(f"{model_name}, {jax.device_count()} device(s), batch {b}, {steps} steps x "
          f"{ARGS.rounds} rounds, {spc} steps per call, load average "
          f"{os.getloadavg()[0]:.2f} at the end")
    for (name, workers), r in rates.items():
        label = name if workers is None else (
            f"{name}, {data.grain_pipeline.read_threads(workers)} read threads"
            + (" (default)" if workers == -1 else ""))
        print(f"  {label:36s} steps/s median {med[name, workers]:8.1f}  (rounds: "
              f"{', '.join(f'{x:.1f}' for x in r)}; {med[name, workers] / device:.3f} of "
              f"device; CPU {statistics.median(cpu[name, workers]):.2f} ms/step)")


def reads(shards: str, folder: str, k: int = 50, repeats: int = 4) -> None:
    """Host CPU ms to read one batch of 128 rows: indexing the source directly, and
    through grain with each read-thread count (k batches a call, as the stream reads)."""
    ds = data.load("fashion_mnist")
    sources = {"array in memory": ds.train_images,
               "npz shards": data.load("npz", data_dir=shards).train_images,
               "png folder": data.load("image_folder", data_dir=folder).train_images}
    b = 128
    print(f"CPU ms per batch of {b} read (process time, {k} batches a call; load average "
          f"{os.getloadavg()[0]:.2f})")
    for name, source in sources.items():
        n = len(source)
        spe = n // b
        k_call = min(k, spe)
        perm = np.random.default_rng(0).permutation(n)
        c0 = time.process_time()
        for i in range(repeats):
            source[perm[:k_call * b]]
        line = [f"direct {(time.process_time() - c0) / repeats / k_call * 1e3:.3f}"]
        for workers in sorted({0, *[data.grain_pipeline.read_threads(w) for w in _workers()]}):
            reader = data.GrainReader(source, batch_size=b, lo=0, hi=b, steps_per_epoch=spe,
                                      total_steps=10**6, num_workers=workers)
            reader.provide(0, perm)
            reader.read(0, 0, k_call)  # threads started, pages read
            c0 = time.process_time()
            for epoch in range(1, repeats + 1):
                reader.provide(epoch, perm)
                reader.read(epoch, 0, k_call)
            line.append(f"grain {workers} threads "
                        f"{(time.process_time() - c0) / repeats / k_call * 1e3:.3f}")
            reader.close()
        print(f"  {name:16s} " + ", ".join(line))


def memory_over_epochs(shards: str, root: str) -> None:
    config = config_lib.defaults()
    config.data.name, config.data.dir = "npz", shards
    config.data.device_budget_mb, config.data.num_workers = ARGS.budget_mb, _workers()[0]
    config.train.num_epochs = ARGS.epochs
    workdir = os.path.join(root, "workdir")
    samples, done = [], threading.Event()

    def sample():  # (steps logged so far, RSS) every half second
        path = os.path.join(workdir, "metrics.jsonl")
        while not done.wait(0.5):
            records = runtime.MetricsLog.read(path) if os.path.exists(path) else []
            steps = max([r["step"] for r in records if r["kind"] == "train"], default=0)
            samples.append((steps, _rss_mb()))

    progress.set_enabled(False)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    experiment.train_and_evaluate(config, workdir)
    done.set()
    thread.join()
    spe = 60000 // config.train.batch_size
    per_epoch = [max((m for s, m in samples if s <= (e + 1) * spe), default=float("nan"))
                 for e in range(ARGS.epochs)]
    print(f"whole loop, npz shards (44.9 MB) over a {ARGS.budget_mb:.0f} MB device budget, "
          f"{ARGS.epochs} epochs in {time.perf_counter() - t0:.0f} s: peak RSS by epoch "
          + ", ".join(f"{m:.0f}" for m in per_epoch) + " MB")


def main() -> None:
    with tempfile.TemporaryDirectory() as root:
        ds = data.load("fashion_mnist")
        shards, folder = write_sets(root, ds)
        del ds
        if "throughput" in ARGS.parts:
            for model_name in ARGS.models.split(","):
                throughput(model_name, shards, folder)
        if "reads" in ARGS.parts:
            reads(shards, folder)
        if "memory" in ARGS.parts:
            memory_over_epochs(shards, root)


if __name__ == "__main__":
    main()
