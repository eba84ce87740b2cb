"""Bad input, tried for real through the entry points: each row of TABLE is a config,
workdir or data folder that cannot work, the error it must raise, and fragments of its
one-paragraph message (the field and the fix). After every failure the workdir is exactly
as before: nothing is created, written or removed by a run that failed validation.

Data files here are synthetic on purpose (named ``synthetic_*``): malformed IDX files and
.npz archives made in a temporary folder, never presented as a real data set.
"""

from __future__ import annotations

import gzip
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _runs  # noqa: E402
from experiments.configs import smoke  # noqa: E402
from vae_jax import data, errors, parallel  # noqa: E402
from vae_jax.run import experiment
from vae_jax.errors import CheckpointMismatchError  # noqa: E402,F401


def _idx_header(magic_type: int, shape) -> bytes:
    return bytes([0, 0, magic_type, len(shape)]) + b"".join(
        int(n).to_bytes(4, "big") for n in shape)


def synthetic_idx_folder(tmp, *, bad: str) -> str:
    """Four IDX files for 12 train / 4 test 28x28 images, one of them broken as ``bad``."""
    folder = os.path.join(tmp, f"synthetic_idx_{bad}")
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    n_test = 0 if bad == "empty_test" else 4
    arrays = {"train_images": rng.integers(0, 256, (12, 28, 28), np.uint8),
              "train_labels": rng.integers(0, 10, (12,), np.uint8),
              "test_images": rng.integers(0, 256, (n_test, 28, 28), np.uint8),
              "test_labels": rng.integers(0, 10, (n_test,), np.uint8)}
    for key, stem in data.IDX_FILES.items():
        raw = _idx_header(0x08, arrays[key].shape) + arrays[key].tobytes()
        if key == "train_images" and bad == "magic":
            raw = b"\x1f\x8bXX" + raw[4:]
        if key == "train_images" and bad == "truncated":
            raw = raw[: len(raw) - 1000]
        if key == "test_labels" and bad == "gzip":
            with open(os.path.join(folder, stem + ".gz"), "wb") as f:
                f.write(gzip.compress(raw)[:-20])  # a cut-off download
            continue
        with open(os.path.join(folder, stem), "wb") as f:
            f.write(raw)
    return folder


def synthetic_npz(tmp, name, **arrays) -> str:
    path = os.path.join(tmp, f"synthetic_{name}.npz")
    np.savez(path, **arrays)
    return path


def _u8(*shape):
    return np.random.default_rng(0).integers(0, 256, shape, np.uint8)


def _set(**kw):
    """A table row's config change: section__field=value."""
    def apply(config, tmp):
        for path, value in kw.items():
            section, name = path.split("__")
            config[section][name] = value(tmp) if callable(value) else value
    return apply


def _npz(name, **arrays):
    return _set(data__name="npz", data__dir=lambda tmp: synthetic_npz(tmp, name, **arrays))


def synthetic_shards(tmp, name, shards, links=()) -> str:
    """A folder of np.savez shards (one dict of arrays each) and symbolic links
    (name, target) beside them."""
    folder = os.path.join(tmp, f"synthetic_shards_{name}")
    os.makedirs(folder)
    for i, arrays in enumerate(shards):
        np.savez(os.path.join(folder, f"shard-{i:05d}.npz"), **arrays)
    for link, target in links:
        os.symlink(target, os.path.join(folder, link))
    return folder


def _shards(name, shards, links=()):
    return _set(data__name="npz",
                data__dir=lambda tmp: synthetic_shards(tmp, name, shards, links))


def synthetic_image_folder(tmp, name, links=()) -> str:
    """train/ and test/ of 4 and 2 grey 8x8 PNGs, and symbolic links (path, target)."""
    from PIL import Image

    root = os.path.join(tmp, f"synthetic_images_{name}")
    for split, n in (("train", 4), ("test", 2)):
        os.makedirs(os.path.join(root, split))
        for i in range(n):
            Image.fromarray(_u8(8, 8)).save(os.path.join(root, split, f"{i}.png"))
    for link, target in links:
        os.symlink(target, os.path.join(root, link))
    return root


def _image_folder(name, links):
    return _set(data__name="image_folder",
                data__dir=lambda tmp: synthetic_image_folder(tmp, name, links))


def _idx(bad):
    return _set(data__name="mnist", data__dir=lambda tmp: synthetic_idx_folder(tmp, bad=bad))


VE, CE, DE = ValueError, errors.ConfigError, errors.DataError

# (case, config change, workdir kind, error, message fragments)
TABLE = [
    ("unknown model", _set(model__name="resnet9000"), "dir", VE,
     ["Unknown model 'resnet9000'", "config.model.name", "valid: ['conv', 'deep_hvae', 'hvae', 'latent_vdm', 'mlp'"]),
    ("unknown loss", _set(loss__name="elbo2"), "dir", VE,
     ["Unknown loss 'elbo2'", "config.loss.name", "valid:"]),
    ("unknown binarization", _set(data__binarization="otsu"), "dir", VE,
     ["config.data.binarization", "'dynamic'"]),
    ("unknown optimizer", _set(optim__name="sgd"), "dir", CE,
     ["Unknown optimizer 'sgd'", "config.optim.name", "['adam', 'adamw']"]),
    ("unknown likelihood", _set(model__likelihood="poisson"), "dir", CE,
     ["config.model.likelihood", "'bernoulli'"]),
    ("empty data set name", _set(data__name=""), "dir", CE, ["config.data.name", "'mnist'"]),
    ("zero latent size", _set(model__latent_dim=0), "dir", VE,
     ["config.model.latent_dim=0", "positive"]),
    ("negative hidden size", _set(model__hidden=(32, -4)), "dir", CE,
     ["config.model.hidden=(32, -4)", "positive integers"]),
    ("unknown latent VDM backbone", _set(model__name="latent_vdm", model__backbone="vgg"),
     "dir", CE, ["config.model.backbone='vgg'", "valid: ['mlp', 'resnet']"]),
    ("MLP field on the resnet backbone", _set(model__name="latent_vdm",
                                              model__backbone="resnet"), "dir", CE,
     ["config.model.hidden=(32,) is not read by config.model.backbone='resnet'",
      "remove it"]),
    ("negative batch", _set(train__batch_size=-32), "dir", VE, ["config.train.batch_size=-32"]),
    ("zero steps per call", _set(train__steps_per_call=0), "dir", VE,
     ["config.train.steps_per_call=0"]),
    ("zero checkpoints kept", _set(train__checkpoints_to_keep=0), "dir", CE,
     ["config.train.checkpoints_to_keep=0", "positive integer"]),
    ("zero eval batch", _set(eval__batch_size=0), "dir", VE, ["config.eval.batch_size=0"]),
    ("zero active-unit draws", _set(eval__au_samples=0), "dir", VE,
     ["config.eval.au_samples=0", "positive integer"]),
    ("zero learning rate", _set(optim__learning_rate=0.0), "dir", VE,
     ["config.optim.learning_rate=0.0"]),
    ("no steps, no epochs", _set(train__num_steps=0, train__num_epochs=0), "dir", VE,
     ["config.train.num_epochs or config.train.num_steps"]),
    ("negative clip norm", _set(optim__grad_clip_norm=-1.0), "dir", CE,
     ["config.optim.grad_clip_norm=-1.0", ">= 0"]),
    ("negative skip threshold", _set(optim__skip_grad_norm=-5.0), "dir", CE,
     ["config.optim.skip_grad_norm=-5.0", ">= 0"]),
    ("unknown non-finite policy", _set(train__on_nonfinite="ignore"), "dir", CE,
     ["config.train.on_nonfinite='ignore'", "['raise', 'skip']"]),
    ("EMA decay of 1", _set(train__ema_decay=1.0), "dir", VE, ["config.train.ema_decay=1.0"]),
    ("EMA evaluated, none kept", _set(train__ema_decay=0.0, eval__use_ema=True), "dir", VE,
     ["config.eval.use_ema=True", "config.train.ema_decay=0", "config.train.ema_decay"]),
    ("unknown eval precision", _set(eval__matmul_precision="fp64"), "dir", CE,
     ["config.eval.matmul_precision='fp64'", "'highest'"]),
    ("unknown train precision", _set(train__matmul_precision="tf16"), "dir", CE,
     ["config.train.matmul_precision='tf16'", "'default'"]),
    ("IWAE with beta", _set(loss__name="iwae", loss__beta=0.5), "dir", VE,
     ["IWAE bound takes no beta", "config.loss.beta=1"]),
    ("workdir is a file", None, "file", CE, ["is a file, not a folder"]),
    ("workdir under a file", None, "under_file", CE, ["cannot be created", "is a file"]),
    ("workdir not writable", None, "readonly", CE, ["is not writable", "permissions"]),
    ("IDX wrong magic number", _idx("magic"), "dir", DE,
     ["synthetic_idx_magic", "train-images-idx3-ubyte", "wrong magic number"]),
    ("IDX truncated", _idx("truncated"), "dir", DE,
     ["train-images-idx3-ubyte", "truncated or corrupt", "Re-download"]),
    ("IDX gzip cut off", _idx("gzip"), "dir", DE,
     ["t10k-labels-idx1-ubyte.gz", "corrupt or truncated"]),
    ("IDX folder missing files", _set(data__name="mnist", data__dir=lambda tmp: os.path.join(
        synthetic_idx_folder(tmp, bad="none"), "")), "dir_rm_labels", DE,
     ["holds only some of the mnist IDX files", "t10k-labels-idx1-ubyte"]),
    ("npz missing", _set(data__name="npz", data__dir="/nonexistent/synthetic.npz"), "dir", DE,
     ["config.data.dir", "not a file", "uint8 arrays 'train' and 'test'"]),
    ("npz wrong keys", _npz("keys", x=_u8(8, 28, 28), y=_u8(4, 28, 28)), "dir", DE,
     ["lacks ['train', 'test']", "found ['x', 'y']"]),
    ("npz float pixels", _npz("float", train=np.zeros((8, 28, 28), np.float32),
                              test=np.zeros((4, 28, 28), np.float32)), "dir", DE,
     ["'train' has dtype float32", "astype(np.uint8)"]),
    ("npz wrong rank", _npz("rank", train=_u8(8, 784), test=_u8(4, 784)), "dir", DE,
     ["'train' has shape (8, 784)", "[N, H, W]"]),
    ("npz train/test shapes differ", _npz("mixed", train=_u8(8, 28, 28), test=_u8(4, 32, 32)),
     "dir", DE, ["differ in shape"]),
    ("npz empty train split", _npz("empty_train", train=_u8(0, 28, 28), test=_u8(4, 28, 28)),
     "dir", DE, ["synthetic_empty_train.npz", "the 'train' split is empty", "at least one"]),
    ("npz empty test split", _npz("empty_test", train=_u8(8, 28, 28), test=_u8(0, 28, 28)),
     "dir", DE, ["synthetic_empty_test.npz", "the 'test' split is empty", "at least one"]),
    ("IDX empty test split", _idx("empty_test"), "dir", DE,
     ["synthetic_idx_empty_test", "the 'test' split is empty"]),
    ("npz labels do not match", _npz("labels", train=_u8(8, 28, 28), test=_u8(4, 28, 28),
                                     train_labels=np.arange(5), test_labels=np.arange(4)),
     "dir", DE, ["'train_labels' has shape (5,), expected (8,)", "one label per 'train' image"]),
    ("npz one-pixel images", _npz("1x1", train=_u8(8, 1, 1), test=_u8(4, 1, 1)), "dir", DE,
     ["synthetic_1x1.npz", "images of 1x1 pixels", "at least 2x2"]),
    ("npz two-channel images", _npz("2ch", train=_u8(8, 28, 28, 2), test=_u8(4, 28, 28, 2)),
     "dir", DE, ["images with 2 channels", "1 (grey), 3 (RGB) or 4 (RGBA)"]),
    ("npz test split of another shape", _npz("channels", train=_u8(8, 28, 28),
                                             test=_u8(4, 28, 28, 3)), "dir", DE,
     ["train images (28, 28, 1) and test images (28, 28, 3) differ in shape", "one shape"]),
    ("conv model on 30x30 images", lambda c, tmp: (_npz(
        "30x30", train=_u8(64, 30, 30), test=_u8(16, 30, 30))(c, tmp),
        _set(model__name="conv")(c, tmp)), "dir", CE,
     ["config.model.name='conv'", "(30, 30, 1)", "divisible by 4", "'mlp'"]),
    ("batch larger than the data", _npz("tiny", train=_u8(8, 28, 28), test=_u8(4, 28, 28)),
     "dir", VE, ["config.train.batch_size=32 exceeds the 8 training images"]),
    ("unknown tfds data set", _set(data__name="synthetic_no_such_dataset"), "dir", DE,
     ["'synthetic_no_such_dataset' was not found", "tfds build"]),
    # shard folders: test arrays checked as the single file's, no file skipped silently
    ("shards' test arrays differ in shape", _shards("test_shapes", [
        {"train": _u8(8, 28, 28), "test": _u8(4, 28, 28)},
        {"train": _u8(8, 28, 28), "test": _u8(4, 32, 32)}]), "dir", DE,
     ["shard-00001.npz", "'test' holds images of shape (32, 32, 1)", "(28, 28, 1)",
      "Re-write that shard's 'test'"]),
    ("shard with float test pixels", _shards("float_test", [
        {"train": _u8(8, 28, 28), "test": np.zeros((4, 28, 28), np.float32)}]), "dir", DE,
     ["shard-00000.npz", "'test' has dtype float32", "astype(np.uint8)"]),
    ("shard folder with a dangling link", _shards("dangling", [
        {"train": _u8(8, 28, 28), "test": _u8(4, 28, 28)}],
        links=[("shard-00001.npz", "/nonexistent/synthetic-00001.npz")]), "dir", DE,
     ["shard-00001.npz (a symbolic link to '/nonexistent/synthetic-00001.npz', which does "
      "not exist)", "Restore the file", "remove the link"]),
    ("shard folder with a link loop", _shards("loop", [
        {"train": _u8(8, 28, 28), "test": _u8(4, 28, 28)}],
        links=[("shard-00001.npz", "shard-00002.npz"), ("shard-00002.npz", "shard-00001.npz")]),
     "dir", DE, ["2 broken symbolic links", "shard-00001.npz (a loop of symbolic links)"]),
    ("image folder with a dangling link", _image_folder("dangling", [
        ("train/9.png", "/nonexistent/synthetic.png")]), "dir", DE,
     ["train/9.png (a symbolic link to '/nonexistent/synthetic.png'", "remove the link"]),
    ("image folder with a link loop", _image_folder("loop", [
        ("test/5.png", "5.png")]), "dir", DE,
     ["test/5.png (a loop of symbolic links)"]),
    # seeds past 32 bits train the same run as another seed
    ("seed of 2**40", lambda c, tmp: setattr(c, "seed", 2 ** 40), "dir", CE,
     ["config.seed=1099511627776", "[0, 2**32)", "[0, 4294967295]", "--config.seed="]),
    ("negative seed", lambda c, tmp: setattr(c, "seed", -1), "dir", CE,
     ["config.seed=-1", "[0, 2**32)", "-1 as 4294967295"]),
    # every size and count of config.eval and config.sample, before anything runs
    ("zero importance chunk", _set(eval__chunk=0), "dir", CE,
     ["config.eval.chunk=0", "positive integer", "per device call"]),
    ("zero ELBO draws", _set(eval__num_samples=0), "dir", CE,
     ["config.eval.num_samples=0", "positive integer"]),
    ("negative log p(x) batch", _set(eval__ll_batch_size=-5), "dir", CE,
     ["config.eval.ll_batch_size=-5", "integer >= 0"]),
    ("negative test images", _set(eval__num_test_images=-1), "dir", CE,
     ["config.eval.num_test_images=-1"]),
    ("zero prior samples", _set(sample__num=0), "dir", CE,
     ["config.sample.num=0", "positive integer"]),
    ("one-image interpolation", _set(sample__num_interpolation=1), "dir", CE,
     ["config.sample.num_interpolation=1", "integer >= 2", "both ends"]),
    ("zero traversal rows", _set(sample__traversal_dims=0), "dir", CE,
     ["config.sample.traversal_dims=0"]),
    ("one-step traversal", _set(sample__traversal_steps=1), "dir", CE,
     ["config.sample.traversal_steps=1", "integer >= 2"]),
    ("zero traversal extent", _set(sample__traversal_extent=0.0), "dir", CE,
     ["config.sample.traversal_extent=0.0", "> 0"]),
    ("zero manifold", _set(sample__manifold_size=0), "dir", CE,
     ["config.sample.manifold_size=0"]),
    ("zero scatter points", _set(sample__scatter_points=0), "dir", CE,
     ["config.sample.scatter_points=0"]),
    ("pair of three", _set(sample__pair=(0, 1, 2)), "dir", CE,
     ["config.sample.pair=(0, 1, 2)", "two test image indices"]),
]


def _workdir(tmp, kind) -> str:
    if kind in ("dir", "dir_rm_labels"):
        path = os.path.join(tmp, "workdir")
        os.makedirs(path)
        with open(os.path.join(path, "notes.txt"), "w") as f:
            f.write("a user's file that a failed run must leave alone\n")
        return path
    if kind in ("file", "under_file"):
        path = os.path.join(tmp, "workdir_file")
        with open(path, "w") as f:
            f.write("not a folder\n")
        return path if kind == "file" else os.path.join(path, "run")
    if kind == "readonly":
        if os.geteuid() == 0:
            # chmod does not stop root, but the kernel refuses root new entries in /proc/1.
            return "/proc/1/vae_jax_readonly/run"
        path = os.path.join(tmp, "readonly")
        os.makedirs(path)
        os.chmod(path, 0o500)
        return os.path.join(path, "run")
    raise ValueError(kind)


def _tree(folder) -> dict:
    if os.path.isfile(folder):
        return {"": open(folder, "rb").read()}
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.stat(p)
            out[os.path.relpath(p, folder)] = (os.path.isdir(p), st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("case, change, kind, error, fragments", TABLE,
                         ids=[row[0] for row in TABLE])
def test_bad_input_table(tmp_path, case, change, kind, error, fragments):
    config = smoke.get_config()
    tmp = str(tmp_path)
    workdir = _workdir(tmp, kind)
    if change is not None:
        change(config, tmp)
    if kind == "dir_rm_labels":
        os.remove(os.path.join(config.data.dir, data.IDX_FILES["test_labels"]))
    watched = workdir if os.path.exists(workdir) else os.path.dirname(workdir)
    before = _tree(watched)
    with pytest.raises(error) as e:
        experiment.train_and_evaluate(config, workdir)
    message = str(e.value)
    for fragment in fragments:
        assert fragment in message, f"{case}: {fragment!r} not in {message!r}"
    assert "\n" not in message.strip(), "one paragraph"
    assert _tree(watched) == before, "a run that failed validation altered the workdir"
    assert not os.path.exists(os.path.join(tmp, "workdir", "checkpoints"))


def test_typo_in_a_config_override_is_refused():
    """``--config.train.num_stepz=5`` (the launcher's flag parsing, in process)."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
    with pytest.raises(flags.Error, match="config.train.num_stepz"):
        fv(["main", f"--config={_runs.SMOKE}", "--config.train.num_stepz=5"])


@pytest.mark.parametrize("args, fragment", [
    (("127.0.0.1:1234", None, None), "need all of --coordinator_address"),
    ((None, 2, None), "need all of --coordinator_address"),
    (("127.0.0.1:1234", 2, 2), "--process_id=2 must be in [0, --num_processes=2)"),
])
def test_incomplete_multiprocess_flags(args, fragment):
    with pytest.raises(ValueError) as e:
        parallel.initialize_distributed(*args)
    assert fragment in str(e.value)


def test_batch_not_divisible_by_devices_on_the_command_line(tmp_path):
    """Through the real launcher on 2 CPU devices: batch 33 is refused before compiling,
    naming the field and the multiples that work; the workdir is never created."""
    workdir = str(tmp_path / "never_created")
    r = _runs.run(_runs.command(workdir, "--config.train.batch_size=33"),
                  _runs.env(_runs.shared_cache(), devices=2), timeout=180)
    assert r.returncode != 0
    assert "config.train.batch_size=33 does not divide evenly over the 2 devices" in r.stderr
    assert "Use a multiple of 2 (e.g. 32 or 34)" in r.stderr
    assert not os.path.exists(workdir)
