"""Data: toy distributions (``rfbench.data.toy``) and image datasets, registered by name (``DATASETS``); local
files only, never a download. Importing the package registers rfbench's datasets: digits (bundled with
sklearn), mnist, fashion-mnist, cifar10 and folder (PNG/JPEG files)."""

from rfbench.data import cifar, digits, images, mnist  # noqa: F401  (register the datasets)
from rfbench.data.base import DatasetNotFoundError, dequantize, image_fingerprint, quantize
from rfbench.data.registry import DATASETS, Dataset, check_dataset, load_images, register_dataset

__all__ = ["DATASETS", "Dataset", "register_dataset", "load_images", "check_dataset", "DatasetNotFoundError",
           "quantize", "dequantize", "image_fingerprint"]
