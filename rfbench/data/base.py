"""What every dataset shares: images as saved (uint8) and as models see them (float in [-1, 1]), their content
hash, the error for data that is not where it should be, and reading data files as data only: pickles through an
unpickler that builds nothing but containers and plain arrays, numpy files without unpickling."""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from typing import BinaryIO

import numpy as np
import torch


class DatasetNotFoundError(FileNotFoundError):
    """A data folder is missing or does not hold the expected files."""


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Samples in [-1, 1] -> uint8 in [0, 255], rounding as a saved PNG would (values outside are clipped)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def dequantize(images: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float32 in [-1, 1] (v / 127.5 - 1); ``quantize`` gives the bytes back exactly."""
    return images.float() / 127.5 - 1


def image_fingerprint(images: torch.Tensor) -> str:
    """SHA-1 of images as saved (quantised bytes): identifies a data set wherever it was read from."""
    return hashlib.sha1(quantize(images).numpy().tobytes()).hexdigest()


# What the pickled data formats hold (mnist.pkl.gz, CIFAR-10's python batches; Python 2 or 3, any protocol) besides
# the containers, strings and numbers that pickle builds without naming a global: numpy arrays, which numpy pickles
# as _reconstruct(ndarray, ...) with a dtype (protocols 2-4) or _frombuffer(buffer, dtype, ...) (protocol 5), under
# numpy.core (numpy 1, and every file written by it) or numpy._core (numpy 2); and bytes pickled by Python 3 at
# protocol 2, which are _codecs.encode(text, "latin1"). The functions are taken from this numpy's own pickles of an
# array, not imported by the names a file gives.
_RECONSTRUCT, _FROMBUFFER = np.empty(0).__reduce__()[0], np.empty(0).__reduce_ex__(5)[0]


def _latin1_bytes(text: str, encoding: str) -> bytes:
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"bytes encoded as {encoding!r}; Python pickles bytes as latin1")
    return text.encode("latin1")


PICKLE_GLOBALS = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_bytes,
                  **{(f"numpy.{core}.multiarray", "_reconstruct"): _RECONSTRUCT for core in ("core", "_core")},
                  **{(f"numpy.{core}.numeric", "_frombuffer"): _FROMBUFFER for core in ("core", "_core")}}


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _DataUnpickler(pickle.Unpickler):
    """An unpickler that builds containers, strings, numbers and numpy arrays, and refuses every other global (the
    functions and classes a pickle calls while loading: the way a crafted file runs code) before it is looked up."""

    def find_class(self, module: str, name: str):
        try:
            found = PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None
        if found is _latin1_bytes:
            # a fresh function for each global a file names: a pickle can set attributes on what it names (BUILD),
            # which would otherwise outlive this load (numpy's types and builtins refuse them)
            return lambda text, encoding: _latin1_bytes(text, encoding)
        return found


def load_data_pickle(fh: BinaryIO, path: str | os.PathLike, what: str) -> object:
    """Unpickle ``fh`` (the data file ``path``, a ``what``; Python 2 pickles read with encoding latin1) as data only:
    dicts, lists, tuples, strings, bytes, numbers and numpy arrays of plain dtypes. A pickle that names any other
    global, or that holds an array of Python objects (dtype object), is refused with a :class:`DatasetNotFoundError`
    naming the file and what it found; nothing in the file is called. Other failures (a truncated file, not a pickle)
    raise as ``pickle.load`` raises them."""
    allowed = f"a {what} may hold only dicts, lists, strings, bytes, numbers and numpy arrays of plain dtypes"
    try:
        data = _DataUnpickler(fh, encoding="latin1").load()
    except _RefusedGlobal as exc:
        raise DatasetNotFoundError(f"{path}: refused: the pickle calls {exc} while loading (code, not data); "
                                   f"{allowed}") from None
    seen, stack = set(), [data]       # every container, once (a pickle can make cycles and deep nesting)
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, np.ndarray) and item.dtype.hasobject:
            raise DatasetNotFoundError(f"{path}: refused: it holds a numpy array of dtype {item.dtype} (Python "
                                       f"objects, not data); {allowed}")
    return data


def object_arrays_problem(path: str | os.PathLike) -> str | None:
    """Why the ``.npy`` or ``.npz`` file ``path`` cannot be read as plain arrays, or None. An array of Python objects
    (dtype object, or a structured dtype with an object field) could only be read by unpickling, which runs the code a
    file names, so rfbench loads numpy files with ``allow_pickle=False``; numpy then refuses such an array without
    naming the file or the array, which this says. Only the arrays' headers are read; a file that is not a numpy file
    at all gives None, for ``np.load`` to report."""
    def header_dtype(fh) -> np.dtype | None:
        try:
            version = np.lib.format.read_magic(fh)
        except ValueError:      # not an array (an .npz may hold other members, which np.load returns as bytes)
            return None
        # versions 2.0 and 3.0 share the header's layout; 3.0's utf-8 field names, read as latin1, come out garbled
        # but in the same fields, holding the same types
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return read(fh)[2]

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                found = []
                for member in archive.namelist():
                    with archive.open(member) as fh:
                        found.append((f"array {member.removesuffix('.npy')!r}", header_dtype(fh)))
        else:
            with open(path, "rb") as fh:
                found = [("the array", header_dtype(fh))]
    except Exception:   # noqa: BLE001  (unreadable or not a numpy file: np.load's error says what it is)
        return None
    name, objects = next(((n, d) for n, d in found if d is not None and d.hasobject), (None, None))
    if name is None:
        return None
    kind = "dtype object" if objects == np.dtype(object) else "a structured dtype with an object field"
    return (f"{path}: {name} holds Python objects ({kind}), which only unpickling reads (running code the file "
            f"names); rfbench reads numpy files of plain arrays only (numbers, bool, strings)")
