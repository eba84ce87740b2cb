"""Trained models side by side on the same test images: the full test set's ELBO (per-layer
KL, active units), importance-sampled log p(x) on the first ``--num_test`` images, and each
model's difference from the first run (or --base), paired image by image. Prints one JSON
object. Used for the budget-matched comparisons in docs/results_budget.md.

    python -m scripts.budget_compare \
        --run=mlp=experiments/configs/default.py@runs/mlp \
        --run=deep=experiments/configs/fashion_mnist_deep_hvae.py:binary@runs/deep \
        --num_samples=1000 --num_test=1000

Every model sees the same binarization of the test set and the same keys: the evaluation
key of seed ``--seed``, batch i folded in, batches of ``--batch_size`` images for the ELBO and
``--ll_batch_size`` for log p(x) (so dynamic binarization draws the same pixels for every
model). A paired difference's standard error
is that of the per-image differences, far smaller than either model's own when the models
rank the images alike. log p(x) is skipped (and said so) for a model without exact
per-sample importance weights, e.g. a continuous-time VDM: its ELBO is the figure there.
Each run's ``step`` is its latest checkpoint's. A run given as ``name=config.py@file.npz``
is evaluated from the parameter file ``--mode=export`` wrote (``vae_jax.run.params_file``),
with the same figures as from its workdir: how a long evaluation goes on in a later process
without the workdir (the files kept under ``pretrained/``).

The full test set's log p(x) of a deep model takes hours of one core; split it into ranges
run as separate processes (over the cores, or one after another) and join them; the ELBO, KL
and active units are computed once, with one range (``PHASES=eval bash
scripts/deep_hvae_cpu_2h.sh`` does this in chunks of 500):

    python -m scripts.budget_compare --run=... --num_test=5000 --save=a.npz &
    python -m scripts.budget_compare --run=... --test_start=5000 --num_test=0 \
        --noelbo --save=b.npz &
    wait; python -m scripts.budget_compare --merge=a.npz,b.npz

``--by_class=fashion_mnist`` adds each paired difference per class of the test labels
(where one model gains over another), e.g. on the saved chunks of a split evaluation.
"""

import ast
import importlib
import json
import math
import os
import time

import jax
import numpy as np
from absl import app, flags

from vae_jax import config as config_lib, data, evaluate
from vae_jax.evaluate import active_units
from vae_jax.run import build, experiment

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("run", [], "name=config.py[:variant]@workdir; the first is the "
                          "baseline of the paired differences. In place of the workdir, a "
                          "parameter file (.npz) that --mode=export wrote from it.")
flags.DEFINE_multi_string("set", [], "name:section.field=value: a config override for the "
                          "run called name, as the launcher's --config.section.field=value "
                          "(e.g. the optimizer schedule a run was trained with, which its "
                          "checkpoint's structure follows).")
flags.DEFINE_integer("num_samples", 1000, "k for the importance-sampled log p(x); 0 = skip.")
flags.DEFINE_integer("num_test", 1000, "log p(x) on N test images from --test_start (0 = "
                     "all the rest).")
flags.DEFINE_integer("test_start", 0, "The first test image of the log p(x) range; > 0 folds "
                     "it into the key, so two ranges run as two processes draw independent "
                     "samples (--save / --merge put them together).")
flags.DEFINE_string("save", "", "Also save every run's per-image figures (npz, "
                    "'<run>/<figure>' arrays) for --merge.")
flags.DEFINE_list("merge", [], "Instead of evaluating: join the per-image figures of these "
                  "--save files, run by run (log p(x) ranges by their start; the ELBO from the "
                  "first) and print the means and the paired differences of the whole.")
flags.DEFINE_string("base", "", "The run whose figures the paired differences subtract "
                    "(default: the first).")
flags.DEFINE_bool("elbo", True, "The ELBO over the whole test set, its terms and the active "
                  "units; --noelbo: log p(x) only (every range but one of a split evaluation: "
                  "--merge takes the ELBO from the file that has it).")
flags.DEFINE_integer("chunk", 10, "Importance samples per chunk (chunk x ll_batch_size images "
                     "go through the model at once).")
flags.DEFINE_integer("batch_size", 100, "Test images per jitted ELBO call (the same for all).")
flags.DEFINE_integer("ll_batch_size", 10, "Test images per log p(x) call: chunk x this many "
                     "images go through the model at once.")
flags.DEFINE_integer("au_images", 1000, "Active units over the first N test images (0 = all).")
flags.DEFINE_integer("au_samples", 10, "Draws of E_q[z_l | x] for the active units of a layer "
                     "that depends on sampled layers (streamed --chunk at a time).")
flags.DEFINE_integer("seed", 0, "Seed of the evaluation key shared by every model.")
flags.DEFINE_string("by_class", "", "Also the paired differences per class of the test "
                    "labels of this data set (fashion_mnist, mnist; with --data_dir for a "
                    "folder of IDX files), as 'minus_<base>_by_class'.")
flags.DEFINE_string("data_dir", "", "The folder of --by_class's data set (default: its own).")
flags.DEFINE_string("out", "", "Also write the JSON here.")


def parse_run(spec: str) -> tuple[str, str, str, str]:
    """'name=path/to/config.py[:variant]@workdir' -> (name, module, variant, workdir)."""
    try:
        name, rest = spec.split("=", 1)
        cfg, workdir = rest.rsplit("@", 1)
    except ValueError:
        raise app.UsageError(f"--run={spec!r}: write name=config.py[:variant]@workdir, "
                             "e.g. --run=mlp=experiments/configs/default.py@runs/mlp.")
    path, _, variant = cfg.partition(":")
    module = os.path.splitext(os.path.normpath(path))[0].replace(os.sep, ".")
    return name, module, variant, workdir


def load_config(module: str, variant: str, name: str = ""):
    get_config = importlib.import_module(module).get_config
    config = get_config(variant) if variant else get_config()
    overrides = {}
    for spec in FLAGS.set:
        run, sep, assignment = spec.partition(":")
        path, eq, value = assignment.partition("=")
        if not (sep and eq and "." in path):
            raise app.UsageError(f"--set={spec!r}: write name:section.field=value, e.g. "
                                 "--set=deep:optim.schedule=constant.")
        if run == name:
            try:
                overrides[path] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                overrides[path] = value  # a string, e.g. constant
    config.update_from_flattened_dict(overrides)  # as the sweeps apply theirs
    return config


def mean_se(values: np.ndarray) -> dict[str, float]:
    mean, stderr = evaluate.mean_and_stderr(values)
    return {"mean": round(mean, 3), "stderr": round(stderr, 3)}


def evaluate_run(name: str, module: str, variant: str, workdir: str, key: jax.Array) -> dict:
    config = load_config(module, variant, name)
    s = experiment.setup(config, workdir, check_workdir=not experiment.is_params_file(workdir))
    config, ds, model = s.config, s.ds, s.model
    params, step = experiment.restore_params(config, workdir, model, ds.image_shape)
    binarization = config.data.binarization
    num_dims = math.prod(ds.image_shape)
    out = {"config": f"{module}:{variant}" if variant else module, "workdir": workdir,
           "step": step, "likelihood": config_lib.likelihood(config),
           "num_params": int(sum(np.size(a) for a in jax.tree.leaves(params))),
           "num_dims": num_dims}
    per_image = {}
    if FLAGS.elbo:
        t0 = time.perf_counter()
        elbo_fn = evaluate.make_elbo_fn(model, binarization=binarization, num_samples=1)
        terms = evaluate.per_example(elbo_fn, params, ds.test_images, key,
                                     batch_size=FLAGS.batch_size)
        au_images = ds.test_images[:FLAGS.au_images] if FLAGS.au_images else ds.test_images
        units = active_units.active_units(params, au_images, model=model, key=key,
                                          binarization=binarization,
                                          batch_size=FLAGS.batch_size,
                                          num_samples=FLAGS.au_samples, chunk=FLAGS.chunk)
        out |= {"test_elbo_all": mean_se(terms["elbo"]),
                "terms_all": {k: round(float(np.mean(v)), 3) for k, v in terms.items()},
                "active_units": units, "au_images": len(au_images),
                "elbo_seconds": round(time.perf_counter() - t0, 1)}
        per_image["elbo"] = terms["elbo"]
    if FLAGS.num_samples and getattr(model, "exact_log_weights", True):
        start = FLAGS.test_start
        images = ds.test_images[start:start + FLAGS.num_test if FLAGS.num_test else None]
        ll_key = jax.random.fold_in(key, start) if start else key
        t0 = time.perf_counter()
        ll = evaluate.log_likelihood(params, images, ll_key, model=model,
                                     num_samples=FLAGS.num_samples, chunk=FLAGS.chunk,
                                     batch_size=FLAGS.ll_batch_size,
                                     binarization=binarization)
        out |= {"log_px_subset": mean_se(ll["log_px"]), "num_test": len(images),
                "test_start": start,
                "k": FLAGS.num_samples, "log_px_seconds": round(time.perf_counter() - t0, 1)}
        per_image["log_px"] = ll["log_px"]
        per_image["log_px_start"] = np.int64(start)  # where the range sits, for --merge
    elif FLAGS.num_samples:
        out["log_px_note"] = "no exact per-sample importance weights: ELBO only"
    if config_lib.is_8bit(config):
        to_bpd = lambda nats: -nats / (num_dims * math.log(2.0))  # noqa: E731
        for figure in ("test_elbo_all", "log_px_subset"):
            if figure in out:
                out[figure + "_bpd"] = round(to_bpd(out[figure]["mean"]), 4)
    return out, per_image


def merged(paths: list[str]) -> tuple[dict, dict]:
    """The per-image figures of --save files joined, run by run over every file that has
    the run: log p(x) ranges concatenated in the order of their starts (no gap, no overlap;
    a range saved twice, or inside a longer one, with equal figures is kept once: e.g. a
    baseline evaluated beside two models, or over a shorter range from the same start, which
    draws the same keys; a range from another start draws other keys and binarizations, so
    its figures differ and it is refused), the ELBO from the first file that has it."""
    files = [np.load(p) for p in paths]
    names = list(dict.fromkeys(k.split("/")[0] for f in files for k in f.files))
    per_image = {n: {} for n in names}
    for n in names:
        with_elbo = [f for f in files if f"{n}/elbo" in f.files]
        if with_elbo:
            per_image[n]["elbo"] = with_elbo[0][f"{n}/elbo"]
        held = sorted(((int(f[f"{n}/log_px_start"]), f[f"{n}/log_px"], p)
                       for p, f in zip(paths, files) if f"{n}/log_px" in f.files),
                      key=lambda r: (r[0], -len(r[1])))
        ranges = {}  # start: (path, log p(x)); a range inside a longer one is checked, kept once
        for start, values, p in held:
            outer = next(((a, pa, la) for a, (pa, la) in ranges.items()
                          if a <= start and start + len(values) <= a + len(la)), None)
            if outer is None:
                ranges[start] = (p, values)
                continue
            a, pa, la = outer
            if not np.array_equal(la[start - a:start - a + len(values)], values):
                raise app.UsageError(
                    f"--merge: {pa} and {p} both hold {n}'s log p(x) from test image {start}, "
                    "with different figures: leave one of them out.")
        if not ranges:
            continue
        ordered = sorted(ranges.items())
        for (a, (pa, la)), (b, (pb, _)) in zip(ordered, ordered[1:]):
            if a + len(la) != b:
                raise app.UsageError(
                    f"--merge: {pa} holds log p(x) of test images {a}..{a + len(la) - 1} "
                    f"and {pb} starts at {b}: the ranges must meet with no gap or "
                    "overlap. Evaluate the missing range (--test_start, --num_test) or "
                    "leave out the overlapping file.")
        per_image[n]["log_px"] = np.concatenate([v for _, (_, v) in ordered])
        per_image[n]["log_px_start"] = np.int64(ordered[0][0])
    results = {n: {**({"test_elbo_all": mean_se(v["elbo"])} if "elbo" in v else {}),
                   **({"log_px_subset": mean_se(v["log_px"]), "num_test": len(v["log_px"]),
                       "test_start": int(v["log_px_start"])} if "log_px" in v else {})}
               for n, v in per_image.items()}
    return results, per_image


def differences(figures: dict, base: dict) -> dict:
    """{figure: (test-image indices [n], figures − base [n])} image by image, for every
    per-image figure both have; log p(x) over the test images both ranges cover (they may
    start apart)."""
    out = {}
    for figure, v in figures.items():
        if figure not in base or not np.ndim(v):
            continue
        w, lo, start = base[figure], 0, 0
        if figure == "log_px":
            start = int(base["log_px_start"])
            lo = int(figures["log_px_start"]) - start
        a, b = max(lo, 0), min(lo + len(v), len(w))  # the common range, in w's positions
        if b > a:
            out[figure] = (np.arange(start + a, start + b), v[a - lo:b - lo] - w[a:b])
    return out


def paired(figures: dict, base: dict) -> dict:
    """mean_se of figures − base, image by image (``differences``)."""
    return {f: mean_se(d) for f, (_, d) in differences(figures, base).items()}


def paired_by_class(figures: dict, base: dict, labels: np.ndarray,
                    class_names: tuple[str, ...]) -> dict:
    """paired per class: {class name: {figure: mean_se}}, each figure over the images of
    that class it covers; labels int [N test images]."""
    out = {}
    for figure, (index, d) in differences(figures, base).items():
        if index[-1] >= len(labels):
            raise app.UsageError(f"--by_class: {figure} covers test image {index[-1]}, but "
                                 f"the labels stop at {len(labels) - 1}: give the data set "
                                 "the runs were evaluated on.")
        for c, name in enumerate(class_names):
            mask = labels[index] == c
            if mask.any():
                out.setdefault(name, {})[figure] = mean_se(d[mask])
    return out


def test_labels(name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """The test labels [N] and class names of data set ``name`` (--by_class)."""
    ds = data.load(name, data_dir=FLAGS.data_dir or None)
    if ds.test_labels is None:
        raise app.UsageError(f"--by_class={name}: this data set has no test labels; give "
                             "one that has (fashion_mnist, mnist).")
    names = data.CLASS_NAMES.get(name) or tuple(str(c) for c in range(ds.num_classes))
    return ds.test_labels, names


def main(argv):
    del argv
    if FLAGS.merge:
        results, per_image = merged(FLAGS.merge)
    elif not FLAGS.run:
        raise app.UsageError("Give at least one --run=name=config.py[:variant]@workdir.")
    else:
        key = build.root_keys(FLAGS.seed)["eval"]
        results, per_image = {}, {}
        for spec in FLAGS.run:
            name, module, variant, workdir = parse_run(spec)
            results[name], per_image[name] = evaluate_run(name, module, variant, workdir, key)
            print(json.dumps({name: results[name]}), flush=True)
    if FLAGS.save:  # (after --merge: the joined figures, one file)
        np.savez(FLAGS.save, **{f"{n}/{f}": v for n, figs in per_image.items()
                                for f, v in figs.items()})
    base = FLAGS.base or next(iter(per_image))
    if base not in per_image:
        raise app.UsageError(f"--base={base!r}: not one of the runs {list(per_image)}.")
    labels = test_labels(FLAGS.by_class) if FLAGS.by_class else None
    for name, values in per_image.items():
        if name != base:
            results[name]["minus_" + base] = paired(values, per_image[base])
            if labels is not None:
                results[name][f"minus_{base}_by_class"] = paired_by_class(
                    values, per_image[base], *labels)
    print(json.dumps(results, indent=2))
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)
