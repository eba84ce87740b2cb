"""File-backed training sets (vae_jax.data.npz_shards, image_folder, tfds.TfdsRows) read on
demand, streamed through grain (vae_jax.data.grain_pipeline): the rows they were written
from, the same parameters as the on-device path, a bit-identical resume after a SIGKILL
mid-epoch from the checkpointed iterator state, flat host memory, and one-paragraph errors.
Every data set here is written for real in tmp_path (np.savez shards, PNG files)."""

import json
import os
import signal
import sys
import threading

import jax
import numpy as np
import pytest
from PIL import Image

import _runs
from conftest import requires_fashion_mnist
from experiments.configs import smoke
from vae_jax import data, errors, parallel
from vae_jax.run import checkpoint, experiment
from vae_jax import config as config_lib


def _shards(folder, x, y=None, xt=None, yt=None, cuts=(0, 7, 20), savez=np.savez):
    """``x`` [N, ...] written as shards cut at ``cuts``; the test split in the second."""
    os.makedirs(folder, exist_ok=True)
    bounds = list(cuts) + [len(x)]
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        arrays = {"train": x[a:b]} | ({} if y is None else {"train_labels": y[a:b]})
        if i == 1 and xt is not None:
            arrays |= {"test": xt} | ({} if yt is None else {"test_labels": yt})
        savez(os.path.join(folder, f"shard-{i:05d}.npz"), **arrays)
    return str(folder)


def _png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)


def _image_folder(root, x, xt, y=None, yt=None):
    """PNG files: train/00000.png ... (or train/class_k/00000.png with labels)."""
    for split, images, labels in (("train", x, y), ("test", xt, yt)):
        for i, image in enumerate(images):
            sub = "" if labels is None else f"class_{labels[i]}"
            _png(os.path.join(root, split, sub, f"{i:05d}.png"), image)
    return str(root)


def _rng_images(n, shape=(6, 5, 1), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), np.uint8)


# ------------------------------------------------------------------------- the sources

def test_npz_shards_give_back_the_rows_they_were_written_from(tmp_path):
    x, xt = _rng_images(31), _rng_images(5, seed=1)
    y, yt = np.arange(31) % 4, np.arange(5) % 4
    folder = _shards(tmp_path / "shards", x[..., 0], y, xt[..., 0], yt)  # [N, H, W] on disk
    for where in (folder, os.path.join(folder, "shard-*.npz")):
        ds = data.load("npz", data_dir=where)
        rows = ds.train_images
        assert isinstance(rows, data.Rows) and not isinstance(rows, np.ndarray)
        assert all(isinstance(m, np.memmap) for m in rows.maps())  # mapped, not loaded
        assert rows.shape == (31, 6, 5, 1) and rows.dtype == np.uint8 and len(rows) == 31
        idx = np.array([30, 0, 8, 7, 6, 19, 20, 6])  # across shards, unsorted, repeated
        np.testing.assert_array_equal(rows[idx], x[idx])
        np.testing.assert_array_equal(rows[idx.reshape(2, 4)], x[idx.reshape(2, 4)])
        np.testing.assert_array_equal(rows[3:25], x[3:25])
        np.testing.assert_array_equal(rows[-1], x[-1])
        np.testing.assert_array_equal(rows[..., 0], x[..., 0])
        np.testing.assert_array_equal(ds.test_images, xt)
        np.testing.assert_array_equal(ds.train_labels, y)
        np.testing.assert_array_equal(ds.test_labels, yt)
        assert ds.train_labels.dtype == np.int32 and ds.num_classes == 4
    single = str(tmp_path / "one.npz")  # one file: read whole, as before
    np.savez(single, train=x, test=xt)
    assert isinstance(data.load("npz", data_dir=single).train_images, np.ndarray)


def test_image_folder_gives_back_the_pixels_it_was_written_from(tmp_path):
    grey, grey_test = _rng_images(9, (5, 7, 1)), _rng_images(3, (5, 7, 1), seed=1)
    ds = data.load("image_folder", data_dir=_image_folder(tmp_path / "g", grey, grey_test))
    assert isinstance(ds.train_images, data.Rows) and ds.train_images.shape == (9, 5, 7, 1)
    np.testing.assert_array_equal(ds.train_images[np.arange(9)[::-1]], grey[::-1])
    np.testing.assert_array_equal(ds.test_images, grey_test)
    assert ds.train_labels is None and ds.test_labels is None
    rgb, rgb_test = _rng_images(8, (4, 3, 3)), _rng_images(4, (4, 3, 3), seed=1)
    y, yt = np.array([2, 0, 1, 0, 2, 2, 1, 0]), np.array([1, 0, 2, 1])
    ds = data.load("image_folder", data_dir=_image_folder(tmp_path / "c", rgb, rgb_test, y, yt))
    order = np.argsort(y, kind="stable")  # class folders in name order, files sorted inside
    np.testing.assert_array_equal(ds.train_images[:], rgb[order])
    np.testing.assert_array_equal(ds.train_labels, y[order])
    np.testing.assert_array_equal(ds.test_images, rgb_test[np.argsort(yt, kind="stable")])
    assert ds.train_labels.dtype == np.int32 and ds.num_classes == 3


def test_tfds_rows_read_only_the_records_asked_for():
    x = _rng_images(6, (4, 4, 1))

    class Records(list):  # a data_source's interface: len, [i], __getitems__
        asked = []

        def __getitems__(self, keys):
            self.asked.append(list(keys))
            return [self[k] for k in keys]

    source = Records({"image": im[..., 0], "label": i} for i, im in enumerate(x))
    rows = data.tfds.TfdsRows(source, "toy", "train")
    assert rows.shape == (6, 4, 4, 1) and Records.asked == [[0]]
    np.testing.assert_array_equal(rows[np.array([5, 1])], x[[5, 1]])
    assert Records.asked[-1] == [5, 1]


# ------------------------------------------------------------- grain reader and state

def _stream(source, num_workers, total=30, spe=12, batch_size=4):
    return data.Stream(source, parallel.data_mesh(), batch_size=batch_size, steps_per_epoch=spe,
                       total_steps=total, prefetch=2, num_workers=num_workers,
                       order=lambda e: np.random.default_rng(e).permutation(len(source)),
                       schedule=lambda s: min(total, s - s % spe + spe, (s // 5 + 1) * 5))


def _read_all(stream, start, stop):
    out = []
    while start < stop:
        start, batches = stream.batches(start)
        out.append(np.asarray(batches))
    return np.concatenate(out)


def test_grain_reads_the_stream_order_and_resumes_from_its_saved_state(tmp_path):
    x = _rng_images(50, (3, 2, 1))
    rows = data.load("npz", data_dir=_shards(tmp_path / "s", x, xt=x[:2])).train_images
    want = np.stack([x[np.random.default_rng(s // 12).permutation(50)[(s % 12) * 4:][:4]]
                     for s in range(30)])
    for workers in (0, 3):
        stream = _stream(rows, workers)
        np.testing.assert_array_equal(_read_all(stream, 0, 30), want)
        state = stream.state(15)  # mid-epoch 1: grain's own state after 15 batches
        assert {k: v for k, v in state.items() if k != "grain"} == {
            "step": 15, "epoch": 1, "position": 3, "batch_size": 4,
            "source": rows.fingerprint, "base": 0}
        assert isinstance(state["grain"], dict)  # grain's format, not read by vae_jax
        assert json.loads(json.dumps(state)) == state
        stream.close()
        for saved in (state, None):  # None: a checkpoint without the item (from the step)
            resumed = _stream(rows, workers)
            resumed.resume(saved, 15)
            np.testing.assert_array_equal(_read_all(resumed, 15, 30), want[15:])
            resumed.close()
    stream = _stream(rows, 0)
    with pytest.raises(errors.CheckpointError, match="state is for step 15 but the train "
                       "state for step 20"):
        stream.resume(state, 20)
    other = data.load("npz", data_dir=_shards(tmp_path / "o", x[:49], xt=x[:2])).train_images
    with pytest.raises(errors.DataError, match=f"with source='{rows.fingerprint}', but this "
                       f"run has source='{other.fingerprint}'.*a new --workdir"):
        _stream(other, 0).resume(state, 15)


def _want(x, steps=30, spe=12, batch_size=4):
    """uint8 [steps, B, ...]: the batches ``_stream`` reads from ``x``, step by step."""
    return np.stack([x[np.random.default_rng(s // spe).permutation(len(x))[
        (s % spe) * batch_size:][:batch_size]] for s in range(steps)])


def test_a_read_that_does_not_continue_the_last_starts_grain_at_its_step():
    """A seek is a fresh grain iterator over the data set sliced at the step (grain's public
    ``ds[start:]``), not a hand-made grain state: calls out of order read their own batches,
    and the state saved after a seek (its ``base``, grain's state from there) resumes too,
    as does a state written before ``base`` existed (its iterator began at step 0)."""
    x = _rng_images(50, (3, 2, 1))
    want = _want(x)
    for workers in (0, 2):
        stream = _stream(x, workers)
        stop, batches = stream.batches(17)  # mid-epoch 1 first
        assert stop == 20
        np.testing.assert_array_equal(np.asarray(batches), want[17:20])
        stop, batches = stream.batches(3)  # back into epoch 0
        assert stop == 5
        np.testing.assert_array_equal(np.asarray(batches), want[3:5])
        state = stream.state(5)
        assert state["base"] == 3 and state["step"] == 5
        stream.close()
        resumed = _stream(x, workers)
        resumed.resume(state, 5)
        np.testing.assert_array_equal(_read_all(resumed, 5, 30), want[5:])
        resumed.close()
    stream = _stream(x, 0)
    _read_all(stream, 0, 15)
    legacy = {k: v for k, v in stream.state(15).items() if k != "base"}
    stream.close()
    resumed = _stream(x, 0)
    resumed.resume(legacy, 15)
    np.testing.assert_array_equal(_read_all(resumed, 15, 30), want[15:])
    resumed.close()


def test_a_grain_state_that_resumes_elsewhere_fails_loudly():
    """Every element carries its step: a restored grain state that lands on another batch
    (here grain's own state of step 10 saved as step 15's, as a changed state format
    could) is a CheckpointError at the first read, and one grain refuses is one at resume;
    never other batches fed silently."""
    x = _rng_images(50, (3, 2, 1))
    stream = _stream(x, 0)
    _read_all(stream, 0, 20)
    state, wrong = stream.state(15), stream.state(10)["grain"]
    stream.close()
    resumed = _stream(x, 0)
    resumed.resume(dict(state, grain=wrong), 15)
    with pytest.raises(errors.CheckpointError, match="gave the batch of step 10 where step "
                       "15 was asked for.*another grain version.*move the checkpoint's "
                       "data/ folder aside"):
        resumed.batches(15)
    resumed.close()
    broken = _stream(x, 0)
    with pytest.raises(errors.CheckpointError, match=r"grain cannot restore the data "
                       r"iterator's saved state \{'bogus': 1\}"):
        broken.resume(dict(state, grain={"bogus": 1}), 15)
    broken.close()


def test_the_fingerprint_sees_the_pixels_of_a_sample_of_rows_only():
    x = _rng_images(1000, (4, 4, 1))
    assert data.fingerprint(x) == data.fingerprint(x.copy())
    sample = data.rows.sample_rows(1000)
    assert len(sample) == data.rows.SAMPLE_ROWS and sample[0] == 0 and sample[-1] == 999
    for i in sample[[0, 30, -1]]:  # one pixel of a sampled row, first, middle, last
        y = x.copy()
        y[i, 1, 2, 0] ^= 1
        assert data.fingerprint(y) != data.fingerprint(x)
    assert data.fingerprint(x[:999]) != data.fingerprint(x)
    np.testing.assert_array_equal(data.rows.sample_rows(5), np.arange(5))
    assert data.rows.sample_rows(0).size == 0

    class Counted(data.Rows):  # a million rows on demand: the fingerprint reads 64
        shape, taken = (10**6, 4, 4, 1), []

        def take(self, idx):
            self.taken.append(len(idx))
            return np.zeros((len(idx), *self.shape[1:]), np.uint8)

        def describe(self):
            return "counted"

    rows = Counted()
    assert rows.fingerprint == rows.fingerprint and Counted.taken == [data.rows.SAMPLE_ROWS]


def test_a_resume_over_the_same_shapes_with_other_pixels_is_refused(tmp_path):
    """The same file names and shapes (npz shards) or the same shape in memory, other
    pixels: the resume is refused with one paragraph naming the field, both values and the
    fix, by the reader and by the check the experiment runs before it writes."""
    x = _rng_images(50, (3, 2, 1))
    for kind in ("array", "npz"):
        sets = [x, 255 - x]
        if kind == "npz":
            sets = [data.load("npz", data_dir=_shards(tmp_path / name, images, xt=x[:2])
                              ).train_images for name, images in (("a", x), ("b", 255 - x))]
        first, changed = sets
        assert np.shape(first) == np.shape(changed)
        stream = _stream(first, 0)
        _read_all(stream, 0, 15)
        state = stream.state(15)
        stream.close()
        mine = data.fingerprint(changed)
        message = (f"with source='{state['source']}', but this run has source='{mine}': the "
                   r"training set changed \(config.data.name or config.data.dir, or the "
                   r"contents of its files.*Use the data and config the run was started "
                   r"with.*or a new --workdir")
        resumed = _stream(changed, 0)
        with pytest.raises(errors.DataError, match=message) as e:
            resumed.resume(state, 15)
        assert "\n" not in str(e.value)
        resumed.close()
        with pytest.raises(errors.DataError, match=message):
            data.resume_check(changed, 4, 12)(state, 15, "checkpoints/15")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_file_backed_stream_memory_stays_flat_over_epochs(tmp_path):
    """30 epochs of 10 steps of 40 × 12 KB images from memory-mapped npz shards through
    grain (2 read threads): a stream that kept what it read would grow by 4.9 MB an epoch
    (98 MB over the last 20); one that started grain's read threads afresh each epoch grew
    by a malloc arena now and then (~15 MB over 20 epochs, more on a loaded machine), one
    that left them running by 2 threads an epoch. Resident memory grows by less than 30 MB
    over those 20 epochs (the mapped file itself, 4.9 MB, is resident once read) and the
    thread count stays put."""
    x = _rng_images(400, (64, 64, 3))
    rows = data.load("npz", data_dir=_shards(tmp_path / "big", x, xt=x[:2],
                                             cuts=(0, 150, 300))).train_images
    del x
    stream = _stream(rows, 2, total=300, spe=10, batch_size=40)
    total, rss, threads, step = 0, [], [], 0
    checksum = jax.jit(lambda b: b.astype(np.int32).sum())
    while step < 300:
        step, batches = stream.batches(step)
        total += int(checksum(batches))
        if step % 10 == 0:
            rss.append(_rss_mb())
            threads.append(threading.active_count())
    stream.close()
    assert total == 30 * int(rows[:].astype(np.int64).sum())  # every row once an epoch
    assert len(rss) == 30 and rss[-1] - rss[9] < 30, rss
    assert max(threads[9:]) - max(threads[:10]) < 10, threads  # a leak: 40 more


# ------------------------------------------------------------------- whole training loop

def _fashion(n_train=320, n_test=1000):  # 1000 test images: the smoke runs' eval program
    ds = data.load("fashion_mnist")
    return ds.train_images[:n_train], ds.test_images[:n_test]


def _config(num_steps, pipeline, name, folder):
    config = smoke.get_config()
    config.train.num_steps, config.data.pipeline = num_steps, pipeline
    config.data.name, config.data.dir, config.data.num_workers = name, folder, 2
    config.train.eval_every_steps = num_steps  # one evaluation, at the end: seconds saved
    return config


@requires_fashion_mnist
@pytest.mark.slow
def test_file_backed_streams_train_like_on_device_and_resume_a_sigkill_bit_identically(
        tmp_path, capsys):
    """320 real Fashion-MNIST images (10 steps an epoch), 25 steps. In process: the
    on-device path on the single .npz and on npz shards (it reads only its rows), and grain
    streaming a folder of the same images as PNG files. In subprocesses: grain streaming the
    shards, checkpoints every 5 steps, SIGKILLed inside the write of checkpoint 20, then
    rerun: it resumes from checkpoint 15 (mid-epoch), whose ``data`` item holds grain's
    state. All four end with the same parameters, bit for bit: every path feeds the same
    uint8 batches to the same compiled step, and how calls are cut does not change a step.
    Then a rerun streaming another training set (or data set) into a workdir is refused
    before it writes."""
    x, xt = _fashion()
    single = str(tmp_path / "all.npz")
    np.savez(single, train=x, test=xt)
    shards = _shards(tmp_path / "shards", x[..., 0], xt=xt, cuts=(0, 100, 250))
    folder = _image_folder(tmp_path / "png", x, xt)
    runs = {}
    for key, pipeline, name, where in (("device", "device", "npz", single),
                                       ("device_shards", "device", "npz", shards),
                                       ("png", "stream", "image_folder", folder)):
        runs[key] = experiment.train_and_evaluate(_config(25, pipeline, name, where),
                                                  str(tmp_path / key))
    assert capsys.readouterr().out.count("Input pipeline 'stream'") == 1
    # the session's compilation cache (conftest): the subprocesses compile nothing new
    workdir, cache = str(tmp_path / "killed"), os.environ["JAX_COMPILATION_CACHE_DIR"]
    overrides = ("--config.train.num_steps=25", "--config.data.pipeline=stream",
                 "--config.data.name=npz", f"--config.data.dir={shards}",
                 "--config.train.checkpoint_every_steps=5", "--config.data.num_workers=2",
                 "--config.train.eval_every_steps=25")
    r = _runs.run(_runs.command(workdir, *overrides, driver=True),
                  _runs.env(cache, VAE_JAX_FAULT="sigkill_in_checkpoint:20"))
    assert r.returncode == -signal.SIGKILL, r.stdout[-2000:] + r.stderr[-3000:]
    mngr = checkpoint.manager(os.path.join(workdir, "checkpoints"), read_only=True)
    assert mngr.all_steps()[-1] == 15
    saved = checkpoint.read_data_state(mngr, 15)
    assert {k: v for k, v in saved.items() if k != "grain"} == {
        "step": 15, "epoch": 1, "position": 5, "batch_size": 32, "base": 0,
        "source": data.load("npz", data_dir=shards).train_images.fingerprint}
    assert isinstance(saved["grain"], dict)
    r = _runs.run(_runs.command(workdir, *overrides), _runs.env(cache))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "Input pipeline 'stream'" in r.stdout
    runs["shards"] = _runs.final_state(workdir, smoke.get_config())
    for key in ("device_shards", "png", "shards"):
        _runs.assert_same_state(runs["device"], runs[key])
    png = checkpoint.manager(str(tmp_path / "png" / "checkpoints"), read_only=True)
    assert checkpoint.read_data_state(png, 25)["base"] == 0
    device = checkpoint.manager(str(tmp_path / "device" / "checkpoints"), read_only=True)
    saved = checkpoint.read_data_state(device, 25)  # the on-device path: no reader to resume
    assert "grain" not in saved and saved["step"] == 25 and saved["source"]
    # streaming the single .npz into the workdir trained on device from the shards: the
    # same name ("npz"), another training set (its fingerprint), refused before any write
    target = tmp_path / "device_shards"
    before = os.listdir(target), os.path.getmtime(target / "config.json")
    with pytest.raises(errors.DataError, match="checkpoints/25 was written training with "
                       "source='.*', but this run has source="):
        experiment.train_and_evaluate(_config(30, "stream", "npz", single), str(target))
    assert before == (os.listdir(target), os.path.getmtime(target / "config.json"))
    # another data set by name (config.json's config.data.name): refused before any write
    with pytest.raises(errors.ConfigError, match="config.data.name='image_folder' there"):
        experiment.train_and_evaluate(_config(30, "stream", "npz", shards), str(tmp_path / "png"))


# -------------------------------------------------------------------------- bad input

def _empty_shard(tmp_path):
    _shards(tmp_path, _rng_images(9), xt=_rng_images(2), cuts=(0, 4))
    np.savez(os.path.join(tmp_path, "shard-00009.npz"), train=np.zeros((0, 6, 5, 1), np.uint8))
    return "npz", str(tmp_path)


def _mixed_shapes(tmp_path):
    _shards(tmp_path, _rng_images(9), xt=_rng_images(2), cuts=(0, 4))
    np.savez(os.path.join(tmp_path, "shard-00009.npz"), train=_rng_images(3, (6, 6, 1)))
    return "npz", str(tmp_path)


def _compressed(tmp_path):
    return "npz", _shards(tmp_path, _rng_images(9), xt=_rng_images(2), cuts=(0, 4),
                          savez=np.savez_compressed)


def _odd_test_image(tmp_path):
    _image_folder(tmp_path, _rng_images(3, (5, 7, 1)), _rng_images(2, (5, 7, 1)))
    _png(os.path.join(tmp_path, "test", "00001.png"), _rng_images(1, (5, 8, 3))[0])
    return "image_folder", str(tmp_path)


def _no_test_folder(tmp_path):
    _png(os.path.join(tmp_path, "train", "a.png"), _rng_images(1, (5, 7, 1))[0])
    return "image_folder", str(tmp_path)


@pytest.mark.parametrize("make,message", [
    (_empty_shard, r"shard-00009.npz: 'train' is empty \(shape \(0, 6, 5, 1\)\); every shard "
                   r"needs at least one training image. Remove the empty shard"),
    (_mixed_shapes, r"shard-00009.npz: 'train' holds images of shape \(6, 6, 1\), the shards "
                    r"before it \(6, 5, 1\); every shard must hold images of one shape"),
    (_compressed, r"shard-00000.npz: member 'train' is compressed.*Write the shards with "
                  r"np.savez, not np.savez_compressed"),
    (_odd_test_image, r"test/00001.png is an image of shape \(5, 8, 3\) \[H, W, C\]; every "
                      r"image of the folder must have the first training image's shape "
                      r"\(5, 7, 1\). Resize or convert it"),
    (_no_test_folder, r"data set 'image_folder' needs config.data.dir to be a folder with "
                      r"'train/' and 'test/' subfolders.*lacks a 'train' or 'test' subfolder"),
])
def test_bad_files_are_one_paragraph_naming_the_file_and_the_fix(tmp_path, make, message):
    name, where = make(tmp_path)
    with pytest.raises(errors.DataError, match=message) as e:
        data.load(name, data_dir=where)
    assert "\n" not in str(e.value)


def test_an_odd_training_image_is_named_when_a_batch_reads_it(tmp_path):
    root = _image_folder(tmp_path, _rng_images(3, (5, 7, 1)), _rng_images(2, (5, 7, 1)))
    _png(os.path.join(root, "train", "00002.png"), _rng_images(1, (7, 5, 1))[0])
    rows = data.load("image_folder", data_dir=root).train_images  # headers: the first only
    rows[np.array([0, 1])]
    with pytest.raises(errors.DataError, match=r"train/00002.png is an image of shape "
                       r"\(7, 5, 1\) \[H, W, C\].*\(5, 7, 1\)"):
        rows[np.array([1, 2])]


def test_streaming_without_grain_says_how_to_install_it(tmp_path, monkeypatch):
    folder = _shards(tmp_path / "s", _rng_images(64, (8, 8, 1)), xt=_rng_images(8, (8, 8, 1)))
    monkeypatch.setitem(sys.modules, "grain", None)  # import grain -> ImportError
    config = _config(5, "stream", "npz", folder)
    with pytest.raises(errors.DataError, match=r"reads through grain, which is not installed. "
                       r"Install it with pip install -e '.\[stream\]'"):
        experiment.setup(config, str(tmp_path / "w"))
    config.data.pipeline = "device"  # the on-device path needs no grain
    assert experiment.setup(config, str(tmp_path / "w")).pipeline == "device"
    assert not os.path.exists(tmp_path / "w")


@pytest.mark.parametrize("value", [-2, True])
def test_num_workers_is_validated(value):
    config = smoke.get_config()
    config.data.num_workers = value
    with pytest.raises(errors.ConfigError, match=rf"config.data.num_workers={value!r} must "
                       r"be an integer >= 0 \(grain's threads.*\) or -1 for the backend's "
                       "default"):
        config_lib.resolve(config)


def test_read_threads_default_by_backend():
    """-1 (the default): none on the CPU, where XLA's step keeps every core busy and read
    threads only add their hand-offs (benchmarks/README.md); 4 on an accelerator."""
    threads = data.grain_pipeline.read_threads
    assert config_lib.resolve(smoke.get_config()).data.num_workers == -1
    assert threads(-1, "cpu") == 0 and threads(-1, "gpu") == threads(-1, "tpu") == 4
    assert threads(0, "gpu") == 0 and threads(3, "cpu") == 3
    stream = _stream(_rng_images(50, (3, 2, 1)), -1)
    assert stream.reader.num_threads == threads(-1, jax.default_backend())
    stream.close()
