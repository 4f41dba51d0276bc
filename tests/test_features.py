"""Feature extractors: the digits CNN trained by rfbench on sklearn's bundled digits (real images, offline)."""

from __future__ import annotations

import pytest
import torch

from rfbench.data.digits import load_digits
from rfbench.metrics import fid, inception_score, precision_recall
from rfbench.metrics.features import EXTRACTORS, quantize


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    messages = []
    ext = EXTRACTORS["digits"](cache, "cpu", log=messages.append)
    return ext, cache, messages


def test_digits_split_is_fixed_and_disjoint():
    x_train, y_train = load_digits("train")
    x_test, y_test = load_digits("test")
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.min() == -1 and x_train.max() == 1
    all_images = load_digits("all")[0].reshape(1797, -1)
    train_rows = {tuple(r.tolist()) for r in x_train.reshape(1437, -1)}
    # every test image is an image of the data set; the split itself is a permutation of indices
    assert set(map(tuple, all_images.tolist())) >= {tuple(r.tolist()) for r in x_test.reshape(360, -1)}
    assert len(train_rows) > 1300
    torch.testing.assert_close(load_digits("test")[1], y_test)
    with pytest.raises(ValueError, match="split must be"):
        load_digits("val")


def test_digits_extractor_is_accurate_cached_and_deterministic(extractor):
    ext, cache, messages = extractor
    assert ext.accuracy >= 0.95, ext.accuracy
    assert ext.dim == 128 and ext.num_classes == 10 and ext.resolution == 8
    assert any("held-out accuracy" in m for m in messages)
    again_messages = []
    again = EXTRACTORS["digits"](cache, "cpu", log=again_messages.append)
    assert again_messages == [] and again.accuracy == ext.accuracy          # loaded, not retrained
    images = quantize(load_digits("test")[0][:50])
    torch.testing.assert_close(again.features(images), ext.features(images), rtol=0, atol=0)


def test_digits_metrics_separate_real_from_noise(extractor):
    ext = extractor[0]
    train = ext.features(quantize(load_digits("train")[0]))
    test_images = quantize(load_digits("test")[0])
    test = ext.features(test_images)
    noise = ext.features(quantize(torch.rand(360, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1))
    assert train.shape == (1437, 128) and train.dtype == torch.float64
    real_fid, noise_fid = fid(test, train), fid(noise, train)
    assert noise_fid > 20 * real_fid, (real_fid, noise_fid)
    is_real = inception_score(ext.logits(test_images), splits=1)[0]
    assert is_real > 8.5                     # confident and spread over the 10 classes
    precision, recall = precision_recall(train, test, device="cpu")
    assert precision > 0.8 and recall > 0.8
    assert precision_recall(train, noise, device="cpu")[0] < 0.2


def test_digits_extractor_input_checks(extractor):
    with pytest.raises(ValueError, match="uint8 images of shape \\(N, 1, 8, 8\\); got torch.float32"):
        extractor[0].features(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="got torch.uint8 \\(2, 3, 8, 8\\)"):
        extractor[0].features(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


def test_quantize_rounds_like_a_saved_image():
    x = torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0])
    assert quantize(x).tolist() == [0, 0, 128, 255, 255, 255]


def test_digits_training_is_deterministic():
    from rfbench.metrics.features import DigitsCNNConfig, train_digits_cnn

    config = DigitsCNNConfig(epochs=1)
    (a, acc_a), (b, acc_b) = train_digits_cnn(config), train_digits_cnn(config)
    assert acc_a == acc_b
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
