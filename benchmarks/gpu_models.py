"""Accelerator checks of the deep models: the deep HVAE's and the VDM's training speed
and model-FLOPs utilisation on 32x32x3 images, and their 8-bit Fashion-MNIST bits/dim after
a fixed short budget. ``benchmarks/accelerator.sh`` runs both (``PARTS=models``).

``--part=speed``: the networks of ``fashion_mnist_deep_hvae.py:cifar10`` and
``fashion_mnist_vdm.py:cifar10`` at ``--batch_size`` on random uint8 32x32x3 images (no data
set needed), each through the library's ``Trainer`` (``--steps`` steps per ``lax.scan``
call, the configs' EMA and metrics included), in each of ``--dtypes``:

  float32   float32 compute, every product at "highest" (config.train.matmul_precision)
  tf32      float32 compute at JAX's default precision (the library's training default;
            NVIDIA GPUs run the float32 products in TF32)
  bfloat16  config.train.compute_dtype="bfloat16" (the deep HVAE computes in its model
            dtype, the VDM's linear layers are cast), products at the default precision

It prints steps/s and images/s (medians of ``--repeats`` calls), the model FLOPs per step,
the achieved TFLOP/s, and the model-FLOPs utilisation against (i) a ``--matmul_size``³
matrix product in the same dtype and precision measured in the same run, and (ii) the
device's datasheet peak (``PEAK_TFLOPS``; n/a for a device not in the table). The FLOPs are
XLA's cost analysis of a one-step call (of a longer one XLA counts the loop body once),
once per model: by default of its HLO before XLA's optimisations (``--flops=lowered``, one
compilation fewer; the deep HVAE's count is 10 % below the compiled program's on the CPU,
where fusion repeats element-wise work), ``--flops=compiled`` as ``deep_hvae_step.py``.

``--part=budget``: ``fashion_mnist_deep_hvae.py:8bit`` and ``fashion_mnist_vdm.py:8bit``
trained through the launcher (``python -m experiments.main``) for ``--budget_steps`` steps
each from the four IDX files in ``$FMNIST_DIR`` (default /usr/share/datasets/fashion-mnist),
the launcher's own wall clock capped at ``--budget_seconds`` (then SIGTERM: it saves a
checkpoint). The test ELBO on the full test set, in bits/dim, is the training's last
evaluation (the same key and parameters as ``--mode=eval``'s ELBO), or, for a run stopped
at the cap, ``--mode=eval`` of its checkpoint; printed with the steps, the seconds and the
device, as a figure after a fixed short budget, not a converged one.

  python -m benchmarks.gpu_models --part=speed --models=deep_hvae --dtypes=float32,bfloat16
  FMNIST_DIR=/path/to/idx python -m benchmarks.gpu_models --part=budget --models=vdm
  # on a CPU, code paths only: --batch_size=4 --steps=2 --repeats=1 --matmul_size=256
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import fashion_mnist_deep_hvae, fashion_mnist_vdm
from vae_jax import config as config_lib, distributions
from vae_jax.data.idx import FASHION_MNIST_DIR
from vae_jax.run import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# NVIDIA's datasheet figures, dense (no sparsity), TFLOP/s, by jax.devices()[0].device_kind.
_HOPPER = {"float32": 67.0, "tf32": 494.5, "bfloat16": 989.0}
PEAK_TFLOPS = {"NVIDIA H100 80GB HBM3": _HOPPER, "NVIDIA H200": _HOPPER}

# dtype -> (config.train.compute_dtype, config.train.matmul_precision, matmul operands)
MODES = {"float32": ("float32", "highest", jnp.float32),
         "tf32": ("float32", "default", jnp.float32),
         "bfloat16": ("bfloat16", "default", jnp.bfloat16)}
SPEED_CONFIGS = {"deep_hvae": lambda: fashion_mnist_deep_hvae.get_config("cifar10"),
                 "vdm": lambda: fashion_mnist_vdm.get_config("cifar10")}
BUDGET_CONFIGS = {"deep_hvae": "experiments/configs/fashion_mnist_deep_hvae.py:8bit",
                  "vdm": "experiments/configs/fashion_mnist_vdm.py:8bit"}


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("speed", "budget"), required=True)
    p.add_argument("--models", default="deep_hvae,vdm", help="comma list of: deep_hvae, vdm")
    p.add_argument("--dtypes", default="float32,bfloat16", help=f"comma list of: {list(MODES)}")
    p.add_argument("--batch_size", type=int, default=128, help="speed: images per step")
    p.add_argument("--steps", type=int, default=20, help="speed: steps per timed call")
    p.add_argument("--repeats", type=int, default=5, help="speed: timed calls (median)")
    p.add_argument("--matmul_size", type=int, default=8192, help="speed: the reference "
                   "product's side (large enough to fill the device)")
    p.add_argument("--flops", choices=("compiled", "lowered"), default="lowered",
                   help="speed: count the one-step call's FLOPs in its HLO before XLA's "
                   "optimisations (no compilation) or in the compiled program")
    p.add_argument("--budget_steps", type=int, default=1000, help="budget: training steps")
    p.add_argument("--budget_seconds", type=float, default=200, help="budget: cap on each "
                   "launcher's wall clock (compilation and final evaluation included)")
    p.add_argument("--budget_batch_size", type=int, default=0,
                   help="budget: 0 = the config's; smaller only for a code-path check")
    p.add_argument("--workdir", default="", help="budget: parent of the runs' workdirs "
                   "(default: a new temporary folder)")
    return p.parse_args()


def device_line() -> str:
    d = jax.devices()[0]
    return (f"{d.device_kind} ({jax.default_backend()}, {jax.device_count()} device(s)), "
            f"jax {jax.__version__}")


def device_line_elsewhere() -> str:
    """``device_line`` from a child process: this one leaves the accelerator alone (a JAX
    process takes most of a GPU's memory for itself), to the launchers it starts."""
    code = "from benchmarks import gpu_models; print(gpu_models.device_line())"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


# ------------------------------------------------------------------------------- speed

def speed(args) -> None:
    from benchmarks import deep_hvae_step   # the Trainer-driven timed call, shared
    from benchmarks import train_throughput   # the matmul rate, measured as elsewhere

    kind = jax.devices()[0].device_kind
    print(f"speed on {device_line()}: batch {args.batch_size}, {args.steps} steps per call, "
          f"median of {args.repeats} calls; random uint8 32x32x3 images", flush=True)
    dtypes = [d for d in args.dtypes.split(",") if d]
    n = args.matmul_size
    matmul = {}
    for dtype in dtypes:
        _, precision, operands = MODES[dtype]
        matmul[dtype] = train_throughput.matmul_gflops(
            n, n, n, dtype=operands, precision=None if precision == "default" else precision)
        print(f"  matmul {n}^3 {dtype}: {matmul[dtype] / 1e3:.1f} TFLOP/s (same run)",
              flush=True)
    images = np.random.default_rng(0).integers(
        0, 256, (args.batch_size * args.steps, 32, 32, 3), np.uint8)
    print(f"  {'model':10s} {'dtype':9s} {'steps/s':>8s} {'images/s':>9s} {'GFLOP/step':>10s} "
          f"{'TFLOP/s':>8s} {'MFU:matmul':>10s} {'MFU:peak':>9s}", flush=True)
    for name in [m for m in args.models.split(",") if m]:
        flops = None
        for dtype in dtypes:
            compute, precision, _ = MODES[dtype]
            config = SPEED_CONFIGS[name]()
            config.train.batch_size = args.batch_size
            config.train.compute_dtype = compute
            config.train.matmul_precision = precision
            config = config_lib.resolve(config)
            # The model's FLOPs, counted once (the first dtype's program): the dtype changes
            # what they run in, not how many (bf16's casts add ~0.1 %).
            run = deep_hvae_step.vae_jax_runner(config, images, args.steps,
                                                flops=None if flops else args.flops,
                                                ema=config_lib.keeps_ema(config))
            flops = flops or run.flops_per_step
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            rate = args.steps / statistics.median(times)
            tflops = rate * flops / 1e12
            peak = PEAK_TFLOPS.get(kind, {}).get(dtype)
            print(f"  {name:10s} {dtype:9s} {rate:8.2f} {rate * args.batch_size:9.0f} "
                  f"{flops / 1e9:10.1f} {tflops:8.3f} "
                  f"{tflops * 1e3 / matmul[dtype]:10.1%} "
                  f"{f'{tflops / peak:.1%}' if peak else 'n/a':>9s}"
                  f"   (set-up, compilation and a first call: {run.setup_s:.0f} s)", flush=True)
    print(f"  FLOPs: XLA cost analysis of a one-step call ({args.flops}); MFU:matmul against "
          f"the {n}^3 product above, MFU:peak against NVIDIA's datasheet figure for "
          f"{kind!r} ({'in the table' if kind in PEAK_TFLOPS else 'not in the table: n/a'})")


# ------------------------------------------------------------------------------ budget

def _launch(argv: list[str], cap: float, stop: dict) -> tuple[int, float]:
    """Run the launcher with ``argv``; SIGTERM at ``cap`` seconds (it saves a checkpoint
    and exits), or when this script gets one. Returns (exit code, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "experiments.main", *argv], cwd=ROOT)
    stop["proc"] = proc
    try:
        proc.wait(timeout=cap)
    except subprocess.TimeoutExpired:
        print(f"  (the {cap:.0f} s cap: SIGTERM, the launcher saves a checkpoint)", flush=True)
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    stop["proc"] = None
    return proc.returncode, time.perf_counter() - t0


def budget(args) -> None:
    fmnist = os.environ.get("FMNIST_DIR", FASHION_MNIST_DIR)
    parent = args.workdir or tempfile.mkdtemp(prefix="gpu_models_")
    stop: dict = {"proc": None, "signum": None}

    def forward(signum, frame):   # an outer `timeout`: stop the launcher too, then exit
        del frame
        stop["signum"] = signum
        if stop["proc"] is not None:
            stop["proc"].send_signal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, forward)
    device = device_line_elsewhere()
    print(f"budget on {device}: {args.budget_steps} steps each (cap "
          f"{args.budget_seconds:.0f} s), Fashion-MNIST from {fmnist}, workdirs in {parent}",
          flush=True)
    for name in [m for m in args.models.split(",") if m]:
        if stop["signum"]:
            break
        workdir = os.path.join(parent, name)
        if os.path.exists(workdir):   # a run there would resume, not start from step 0
            print(f"  {name}: {workdir} exists; give a new --workdir", flush=True)
            continue
        common = [f"--config={BUDGET_CONFIGS[name]}", f"--workdir={workdir}",
                  f"--config.data.dir={fmnist}", "--noprogress"]
        if args.budget_batch_size:
            common.append(f"--config.train.batch_size={args.budget_batch_size}")
        n = args.budget_steps
        code, secs = _launch(common + [f"--config.train.num_steps={n}",
                                       f"--config.train.eval_every_steps={n}",
                                       f"--config.train.checkpoint_every_steps={n}"],
                             args.budget_seconds, stop)
        evals = [r for r in runtime.MetricsLog.read(os.path.join(workdir, "metrics.jsonl"))
                 if r["kind"] == "eval"]
        if evals and evals[-1]["step"] == n:
            step, elbo = n, evals[-1]["test_elbo"]
            how = (f"the training's last evaluation), after {n} steps ({secs:.0f} s of the "
                   "launcher, compilation and evaluation included")
        elif not stop["signum"] and os.path.isdir(os.path.join(workdir, "checkpoints")):
            # stopped at the cap: the ELBO alone (no importance sampling) of its checkpoint
            _launch(common + ["--mode=eval", "--config.eval.num_importance_samples=0",
                              "--config.eval.iwae_k=0"], args.budget_seconds, stop)
            if not os.path.isfile(os.path.join(workdir, "eval.json")):
                print(f"  {name}: no figure (--mode=eval wrote none)", flush=True)
                continue
            with open(os.path.join(workdir, "eval.json")) as f:
                result = json.load(f)
            step, elbo = result["step"], result["test_elbo"]
            how = (f"--mode=eval), after {step} steps (stopped at the cap: {secs:.0f} s of "
                   "the launcher, compilation included")
        else:
            print(f"  {name}: no figure (launcher exit {code} after {secs:.0f} s)", flush=True)
            continue
        bpd = distributions.bits_per_dim(elbo, math.prod((28, 28, 1)))
        print(f"  {name} ({BUDGET_CONFIGS[name].split('/')[-1]}): test ELBO {bpd:.4f} "
              f"bits/dim ({elbo:.2f} nats), full test set ({how}) on "
              f"{device.split(' (')[0]}: not a converged figure", flush=True)


def main() -> None:
    args = _parse()
    if args.part == "speed":
        speed(args)
    else:
        budget(args)


if __name__ == "__main__":
    main()
