"""The deep top-down HVAE's training step: vae_jax against the same network in PyTorch, and
its fraction of the machine's matmul bound.

Both train the network of ``experiments/configs/fashion_mnist_deep_hvae.py`` (``:binary``:
resolutions 28 → 14 → 7 → 1, 2 bottom-up blocks per resolution, top-down blocks (2, 6, 6, 2)
each with a stochastic layer of 8 channels, width 64, bottleneck 0.25, GELU (tanh form),
soft-clamped log-stds, Bernoulli likelihood, dynamic binarization, one-sample ELBO with the
closed-form KL per layer, Adam 2e-4 with global-norm clipping at 200, batch 32) on
Fashion-MNIST held in memory.

* ``vae_jax``: the library's ``Trainer`` (``lax.scan`` over ``--steps`` steps per dispatch;
  its EMA of the parameters and its metrics included).
* ``vae_jax, xla_cpu off`` (``--switch_off``): the same with the ``vae_jax.ops`` fast
  paths off, i.e. XLA's own convolutions, whose gradients XLA:CPU runs through its generic
  loop inside the ``lax.scan`` (the library's figure before its stride-1 path).
* ``pytorch``: the same layers in ``torch.nn`` (``Conv2d``, ``F.gelu(approximate="tanh")``,
  ``torch.optim.Adam``, ``clip_grad_norm_``), no EMA; skipped when torch is not installed
  (it is not a dependency: ``pip install torch``).

Timed round-robin (one block of steps of each per round), so a shared machine's load hits
both alike; prints medians and the ratio. The bound: the step's floating-point operations
(XLA's cost analysis of a compiled one-step call) at the float32 matmul rate measured in
the same run; "of bound" is the achieved fraction.

  python -m benchmarks.deep_hvae_step --rounds=5 --steps=5 [--switch_off]

``--variants=cpu,cpu_patch`` times those variants of the config instead (vae_jax only, the
Trainer's calls of ``--steps`` steps round-robin, each on Fashion-MNIST): ms a step, images
a second, XLA's FLOPs a step and the achieved GFLOP/s, each against the first variant; pin
it to one core (``taskset -c 0``) for a one-core figure.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import jax
import jax.numpy as jnp

from experiments.configs import fashion_mnist_deep_hvae
from vae_jax import config as config_lib, data, ops as xla_cpu, parallel, train
from vae_jax.run import build


def vae_jax_runner(config, images_np, steps, *, ema=True, flops="compiled"):
    """A timed call of ``steps`` train steps through the library's ``Trainer`` on
    ``images_np`` [N, H, W, C] uint8 (a model of ``config`` for [H, W, C] images), state
    reset to step 0 each call. ``run.setup_s``: init, compilation and a first call;
    ``run.flops_per_step``: XLA's cost analysis of a one-step call, ``"compiled"`` or, one
    compilation fewer, ``"lowered"`` (its HLO before XLA's optimisations); None: not
    counted (nan)."""
    t0 = time.perf_counter()
    image_shape = tuple(images_np.shape[1:])
    mesh = parallel.data_mesh()
    model = build.build_model(config, image_shape)
    spe = len(images_np) // config.train.batch_size
    trainer = build.build_trainer(config, model, mesh, spe)
    keys = build.root_keys(config.seed)
    state = jax.device_put(train.create_train_state(keys["init"], model, trainer.optimizer,
                                                    image_shape, ema=ema), trainer.replicated)
    images = trainer.put_train_images(images_np)
    perm = trainer.permutation(keys["order"], 0, len(images_np))
    fn = trainer.call(steps)
    box = {"state": state}

    def run():
        box["state"] = box["state"].replace(step=jnp.zeros((), jnp.int32))
        box["state"], m = fn(box["state"], images, perm, keys["train"])
        jax.block_until_ready(m)
    run()   # traced and compiled now, under the xla_cpu switch of now
    run.setup_s = time.perf_counter() - t0   # init, compilation and one call of ``steps``
    # XLA's cost analysis counts a while loop's body once, whatever its trip count: the
    # FLOPs of ``trainer.call(steps)`` are one step's, not ``steps`` steps'. A one-step call
    # counts one step either way.
    run.flops_per_step = float("nan")
    if flops:
        lowered = trainer.call(1).lower(box["state"], images, perm, keys["train"])
        cost = lowered.compile().cost_analysis() if flops == "compiled" else \
            lowered.cost_analysis()
        run.flops_per_step = (cost[0] if isinstance(cost, list) else cost).get("flops",
                                                                               float("nan"))
    return run


def _torch_model(torch, m):
    """The DeepHVAE of ``config.model`` ``m`` in torch.nn (same layers, widths, inits'
    structure; PyTorch's own initialisers with the same zero / 1/√N residual scaling)."""
    nn, F = torch.nn, torch.nn.functional
    gelu = lambda x: F.gelu(x, approximate="tanh")  # noqa: E731  (flax.linen.gelu's form)
    res, widths, cz = list(m.resolutions), m.widths, m.latent_channels
    dec_blocks, bound = list(m.decoder_blocks), m.log_std_bound
    n_dec = sum(dec_blocks)
    mid = max(1, round(widths * 0.25))

    def k_of(r):
        return 3 if r > 2 else 1

    class Bottleneck(nn.Module):
        def __init__(self, cin, out, k, residual, last_scale):
            super().__init__()
            p = k // 2
            self.c1, self.c2 = nn.Conv2d(cin, mid, 1), nn.Conv2d(mid, mid, k, padding=p)
            self.c3, self.c4 = nn.Conv2d(mid, mid, k, padding=p), nn.Conv2d(mid, out, 1)
            with torch.no_grad():
                self.c4.weight.mul_(last_scale)
            self.residual = residual

        def forward(self, x):
            h = self.c4(gelu(self.c3(gelu(self.c2(gelu(self.c1(gelu(x))))))))
            return x + h if self.residual else h

    def clamp(s):
        return bound * torch.tanh(s / bound) if bound else s

    class TopDown(nn.Module):
        def __init__(self, k, scale):
            super().__init__()
            self.q = Bottleneck(2 * widths, 2 * cz, k, False, 1.0)
            self.p = Bottleneck(widths, 2 * cz + widths, k, False, 0.0)
            self.proj = nn.Conv2d(cz, widths, 1)
            self.res = Bottleneck(widths, widths, k, True, scale)
            with torch.no_grad():
                self.proj.weight.mul_(scale)

        def forward(self, h, a):
            feats = self.p(h)
            pm, ps = feats[:, :cz], clamp(feats[:, cz:2 * cz])
            qm, qs = self.q(torch.cat([h, a], 1)).chunk(2, 1)
            qs = clamp(qs)
            z = qm + qs.exp() * torch.randn_like(qm)
            kl = (ps - qs + 0.5 * ((2 * qs).exp() + (qm - pm) ** 2) / (2 * ps).exp() - 0.5)
            h = h + feats[:, 2 * cz:] + self.proj(z)
            return self.res(h), kl.flatten(1).sum(1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            enc_scale = 1 / math.sqrt(m.encoder_blocks * len(res))
            self.stem = nn.Conv2d(1, widths, 3, padding=1)
            self.enc = nn.ModuleList(nn.ModuleList(
                Bottleneck(widths, widths, k_of(r), True, enc_scale)
                for _ in range(m.encoder_blocks)) for r in res)
            self.bias = nn.ParameterList(nn.Parameter(torch.zeros(1, widths, r, r))
                                         for r in reversed(res))
            self.dec = nn.ModuleList(nn.ModuleList(
                TopDown(k_of(r), 1 / math.sqrt(n_dec)) for _ in range(dec_blocks[i]))
                for i, r in reversed(list(enumerate(res))))
            self.out = nn.Conv2d(widths, 1, 1)

        def forward(self, x):
            h, acts = self.stem(2 * x - 1), []
            for i, blocks in enumerate(self.enc):
                if i:
                    h = F.avg_pool2d(h, res[i - 1] // res[i])
                for b in blocks:
                    h = b(h)
                acts.append(h)
            kl, h = 0.0, None
            for k, i in enumerate(reversed(range(len(res)))):
                base = self.bias[k].expand(x.shape[0], -1, -1, -1)
                h = base if h is None else base + F.interpolate(h, scale_factor=res[i] // res[i + 1])
                for b in self.dec[k]:
                    h, kl_i = b(h, acts[i])
                    kl = kl + kl_i
            return self.out(h), kl

    return Net()


def torch_runner(config, images_np, steps):
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    net = _torch_model(torch, config.model)
    opt = torch.optim.Adam(net.parameters(), lr=config.optim.learning_rate)
    x_all = torch.from_numpy(images_np.reshape(-1, 1, 28, 28))
    batch, F = config.train.batch_size, torch.nn.functional

    def run():
        order = torch.randperm(len(x_all))
        for j in range(steps):
            x = torch.bernoulli(x_all[order[j * batch:(j + 1) * batch]].float() / 255.0)
            logits, kl = net(x)
            rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1)
            loss = (rec.sum(1) + kl).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.optim.grad_clip_norm)
            opt.step()
    run.version = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    return run


def compare_variants(names: list[str], rounds: int, steps: int) -> None:
    """The library's training step of config variants ``names``, timed round-robin."""
    ds = data.load("fashion_mnist")
    configs = {n: config_lib.resolve(fashion_mnist_deep_hvae.get_config(n)) for n in names}
    runners = {}
    for name, config in configs.items():
        runners[name] = vae_jax_runner(config, ds.train_images, steps)
        print(f":{name}: set-up, compilation and a first call of {steps} steps: "
              f"{runners[name].setup_s:.1f} s", flush=True)
    times = {k: [] for k in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            t = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t) / steps)
    print(f"jax {jax.__version__} ({jax.default_backend()}), {len(os.sched_getaffinity(0))} "
          f"CPU(s) usable; medians of {rounds} calls of {steps} steps")
    print(f"{'variant':12s} {'ms/step':>8s} {'images/s':>9s} {'GFLOP/step':>11s} "
          f"{'GFLOP/s':>8s} {'time vs first':>14s} {'FLOPs vs first':>15s}")
    first = names[0]
    for name, ts in times.items():
        med, flops = statistics.median(ts), runners[name].flops_per_step
        batch = configs[name].train.batch_size
        print(f"{name:12s} {med * 1e3:8.1f} {batch / med:9.1f} {flops / 1e9:11.2f} "
              f"{flops / 1e9 / med:8.1f} {med / statistics.median(times[first]):13.2f}x "
              f"{flops / runners[first].flops_per_step:14.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="steps per timed block")
    ap.add_argument("--switch_off", action="store_true",
                    help="also time vae_jax with the xla_cpu fast paths off")
    ap.add_argument("--variants", default="",
                    help="comma-separated variants of fashion_mnist_deep_hvae.py to time "
                         "against each other instead, e.g. cpu,cpu_patch")
    args = ap.parse_args()
    if args.variants:
        return compare_variants(args.variants.split(","), args.rounds, args.steps)
    from benchmarks import train_throughput as tt  # the matmul rate, measured as elsewhere

    config = config_lib.resolve(fashion_mnist_deep_hvae.get_config("binary"))
    ds = data.load("fashion_mnist")
    runners = {"vae_jax": vae_jax_runner(config, ds.train_images, args.steps)}
    print(f"vae_jax set-up, compilation and a first call of {args.steps} steps: "
          f"{runners['vae_jax'].setup_s:.1f} s")
    if args.switch_off:   # traced now, with the switch off; every later trace has it on
        xla_cpu.set_enabled(False)
        try:
            runners["vae_jax, xla_cpu off"] = vae_jax_runner(config, ds.train_images,
                                                             args.steps)
        finally:
            xla_cpu.set_enabled(True)
    runners["pytorch"] = torch_runner(config, ds.train_images, args.steps)
    runners = {k: v for k, v in runners.items() if v is not None}
    print(f"deep_hvae ({len(config.model.decoder_blocks)} resolutions, "
          f"{sum(config.model.decoder_blocks)} stochastic layers), batch "
          f"{config.train.batch_size}: jax {jax.__version__} ({jax.default_backend()}), "
          f"{os.cpu_count()} CPUs" + "".join(f"; {getattr(r, 'version', '')}"
                                             for r in runners.values() if hasattr(r, 'version')))
    for run in runners.values():
        run()  # warm-up (PyTorch's first steps allocate)
    times = {k: [] for k in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            t = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t) / args.steps)
    gflops = tt.matmul_gflops(1024, 1024, 1024)
    flops = runners["vae_jax"].flops_per_step
    bound = gflops * 1e9 / flops
    base = statistics.median(times["vae_jax"])
    print(f"{'':21s} {'steps/s':>8s} {'vs vae_jax':>11s} {'of bound':>9s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:21s} {1 / med:8.2f} {base / med:10.2f}x {1 / med / bound:9.1%}")
    print(f"bound: {bound:.1f} steps/s = {flops / 1e9:.2f} GFLOP per step (XLA cost analysis) "
          f"at {gflops:.1f} GFLOP/s (float32 1024^3 matmul, same run)")


if __name__ == "__main__":
    main()
