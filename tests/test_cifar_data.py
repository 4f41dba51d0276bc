"""CIFAR-10's python-version files (cifar-10-batches-py) written by the test in the real pickle format from real
photographs (crops of sklearn's bundled sample images), read by rfbench and, as the reference, by torchvision."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from rfbench.data.cifar import load_cifar10, load_cifar10_uint8
from rfbench.data.images import DatasetNotFoundError, ImageProblem, quantize
from tests.image_files import write_cifar10


def torchvision_cifar10_of(folder):
    """torchvision's CIFAR10 with the MD5s of the files in ``folder`` instead of the real files' (its public
    class attributes), so that its integrity check passes on them, and fails should a file change."""
    import hashlib

    from torchvision.datasets import CIFAR10

    def md5(name):
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    class Written(CIFAR10):
        train_list = [[name, md5(name)] for name, _ in CIFAR10.train_list]
        test_list = [[name, md5(name)] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": md5(CIFAR10.meta["filename"])}

    return Written


@pytest.mark.parametrize("bytes_keys", [True, False])
def test_cifar10_reads_like_torchvision(tmp_path, bytes_keys):
    written = write_cifar10(tmp_path, bytes_keys=bytes_keys)
    CIFAR10 = torchvision_cifar10_of(tmp_path / "cifar-10-batches-py")
    for split in ("train", "test"):
        images, labels = load_cifar10_uint8(split, tmp_path)
        np.testing.assert_array_equal(images, written[split][0])
        np.testing.assert_array_equal(labels, written[split][1])
        if not bytes_keys:  # the real files' Python 2 str keys load as str with latin1, as torchvision reads them
            tv = CIFAR10(str(tmp_path), train=split == "train", download=False)
            np.testing.assert_array_equal(images.transpose(0, 2, 3, 1), tv.data)     # torchvision keeps HWC
            np.testing.assert_array_equal(labels, tv.targets)
    # the folder itself works as --data-dir too; [-1, 1] and back gives the stored bytes
    x = load_cifar10("test", tmp_path / "cifar-10-batches-py")
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    np.testing.assert_array_equal(quantize(x).numpy(), written["test"][0])
    problem = ImageProblem("cifar10", (3, 32, 32), data_dir=str(tmp_path))
    assert problem.train_target().shape == (20, 3, 32, 32)


def test_cifar10_errors_name_the_path_and_what_is_expected(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"cifar10 needs --data-dir DIR: CIFAR-10's python version"):
        load_cifar10_uint8("train", None)
    with pytest.raises(DatasetNotFoundError, match=r"nowhere does not exist"):
        load_cifar10_uint8("train", tmp_path / "nowhere")
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"lacks data_batch_3 \(CIFAR-10 train split\)"):
        load_cifar10_uint8("train", tmp_path)
    blob = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(blob[:len(blob) // 2])
    with pytest.raises(DatasetNotFoundError, match=r"test_batch is not a CIFAR-10 batch file \(UnpicklingError"):
        load_cifar10_uint8("test", tmp_path)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(DatasetNotFoundError, match=r"'data' is uint8 \(2, 1024\), expected uint8 \(N, 3072\)"):
        load_cifar10_uint8("test", tmp_path)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, f)
    with pytest.raises(DatasetNotFoundError, match=r"1 labels for 2 images"):
        load_cifar10_uint8("test", tmp_path)


def test_a_cifar10_batch_that_would_run_code_is_refused_without_running_it(tmp_path):
    """A batch in the real layout whose filenames list holds an object that writes a file when unpickled."""
    write_cifar10(tmp_path)
    marker = tmp_path / "ran"
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "testing batch 1 of 1", "labels": [0, 1], "data": np.zeros((2, 3072), np.uint8),
                     "filenames": ["a.png", LeavesMarker(marker)]}, f, protocol=2)
    with pytest.raises(DatasetNotFoundError, match=r"test_batch: refused: the pickle calls "
                                                   r"tests\.test_cifar_data\.leave_marker while loading \(code, not "
                                                   r"data\); a CIFAR-10 batch file may hold only dicts, lists"):
        load_cifar10_uint8("test", tmp_path)
    assert not marker.exists()
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"labels": [0, 1], "data": np.zeros((2, 3072), object)}, f)
    with pytest.raises(DatasetNotFoundError, match=r"test_batch: refused: it holds a numpy array of dtype object"):
        load_cifar10_uint8("test", tmp_path)


def leave_marker(path):
    Path(path).write_text("code from a data file ran")


class LeavesMarker:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return leave_marker, (str(self.marker),)
