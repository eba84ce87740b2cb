"""Data loading on the real Fashion-MNIST files, tfds mock data, errors and batching."""

import gzip

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vae_jax import data, errors
from conftest import requires_fashion_mnist


@requires_fashion_mnist
def test_real_fashion_mnist_from_debian_package():
    ds = data.load("fashion_mnist")
    assert ds.train_images.shape == (60000, 28, 28, 1)
    assert ds.test_images.shape == (10000, 28, 28, 1)
    assert ds.train_images.dtype == np.uint8 and ds.test_images.dtype == np.uint8
    assert ds.train_images.min() == 0 and ds.train_images.max() == 255
    assert ds.num_classes == 10
    np.testing.assert_array_equal(np.bincount(ds.train_labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.test_labels), [1000] * 10)
    # Fashion-MNIST's first training image is an ankle boot (class 9).
    assert ds.train_labels[0] == 9


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_from_any_idx_folder(tmp_path):
    # Synthetic IDX files in the MNIST layout (not MNIST itself): the reader's round trip.
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 256, (5, 28, 28))
    for stem, arr in [("train-images-idx3-ubyte", train), ("t10k-images-idx3-ubyte", test),
                      ("train-labels-idx1-ubyte", np.arange(12) % 10),
                      ("t10k-labels-idx1-ubyte", np.arange(5))]:
        _write_idx(str(tmp_path / (stem + ".gz")), arr)
    ds = data.load("mnist", data_dir=str(tmp_path))
    np.testing.assert_array_equal(ds.train_images[..., 0], train)
    np.testing.assert_array_equal(ds.test_labels, np.arange(5))


def test_tfds_mock_data_source():
    with tfds.testing.mock_data(num_examples=9):
        ds = data.load("kmnist")
    assert ds.train_images.shape == (9, 28, 28, 1) and ds.train_images.dtype == np.uint8
    assert ds.test_images.shape == (9, 28, 28, 1)
    assert ds.train_labels.shape == (9,)


def test_npz_layout(tmp_path):
    rng = np.random.default_rng(1)
    path = str(tmp_path / "mine.npz")
    np.savez(path, train=rng.integers(0, 256, (6, 8, 8), dtype=np.uint8),
             test=rng.integers(0, 256, (3, 8, 8), dtype=np.uint8))
    ds = data.load("npz", data_dir=path)
    assert ds.image_shape == (8, 8, 1) and ds.train_labels is None
    np.savez(path, train=np.zeros((2, 8, 8), np.float32), test=np.zeros((2, 8, 8), np.float32))
    with pytest.raises(errors.DataError, match="dtype float32; expected uint8"):
        data.load("npz", data_dir=path)


def test_missing_data_set_error_names_the_fix(tmp_path):
    with pytest.raises(errors.DataError) as err:
        data.load("fashion_mnist", data_dir=str(tmp_path / "nowhere"))
    msg = str(err.value)
    assert "apt-get install -y dataset-fashion-mnist" in msg
    assert "train-images-idx3-ubyte" in msg and "tfds build fashion_mnist" in msg
    assert "npz" in msg


def test_unknown_tfds_name_does_not_download(tmp_path):
    with pytest.raises(errors.DataError, match="not found.*tfds build no_such_dataset_xyz"):
        data.load("no_such_dataset_xyz", data_dir=str(tmp_path))


def test_truncated_idx_is_named(tmp_path):
    _write_idx(str(tmp_path / "x.gz"), np.zeros((4, 28, 28)))
    raw = gzip.open(str(tmp_path / "x.gz")).read()
    with gzip.open(str(tmp_path / "y.gz"), "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(errors.DataError, match="y.gz.*truncated"):
        data.read_idx(str(tmp_path / "y.gz"))
    with gzip.open(str(tmp_path / "z.gz"), "wb") as f:
        f.write(b"\x12\x34" + raw[2:])
    with pytest.raises(errors.DataError, match="wrong magic number"):
        data.read_idx(str(tmp_path / "z.gz"))


def test_binarization_modes():
    images = jnp.array([[[[0], [127], [128], [255]]]], jnp.uint8)
    np.testing.assert_array_equal(
        data.preprocess(images, None, binarization="static")[0, 0, :, 0], [0, 0, 1, 1])
    np.testing.assert_allclose(
        data.preprocess(images, None, binarization="none")[0, 0, :, 0],
        [0, 127 / 255, 128 / 255, 1.0])
    # Dynamic: fresh Bernoulli(p) draws per key with mean p.
    many = jnp.full((20000, 1, 1, 1), 64, jnp.uint8)
    draws = data.preprocess(many, jax.random.key(0), binarization="dynamic")
    assert set(np.unique(draws)) == {0.0, 1.0}
    np.testing.assert_allclose(jnp.mean(draws), 64 / 255, atol=0.01)
    other = data.preprocess(many, jax.random.key(1), binarization="dynamic")
    assert not np.array_equal(draws, other)
    with pytest.raises(ValueError, match="Unknown binarization"):
        data.preprocess(images, None, binarization="otsu")


def test_epoch_permutation_and_on_device_batches():
    images = jnp.arange(10, dtype=jnp.uint8).reshape(10, 1, 1, 1)
    perm = data.epoch_permutation(jax.random.key(0), 3, 10)
    np.testing.assert_array_equal(np.sort(perm), np.arange(10))
    assert not np.array_equal(perm, data.epoch_permutation(jax.random.key(0), 4, 10))
    batches = [data.gather_batch(images, perm, i, 5)[:, 0, 0, 0] for i in range(2)]
    np.testing.assert_array_equal(np.concatenate(batches), perm)
