"""The mnist / fashion-mnist suites on a reduced budget through the CLI, from data files the tests write in the real
formats (IDX images and labels: real handwritten digits upscaled to 28x28), and the classifier extractor that
scores them when no Inception weights are installed."""

from __future__ import annotations

import dataclasses
import re

import pandas as pd
import pytest
import torch

from baselines import ddpm as ddpm_baseline
from baselines import images as image_suites
from baselines import rectified_flow
from rfbench.cli import main
from rfbench.data.images import ImageProblem
from rfbench.metrics import inception as inception_mod   # where the weights are looked up
from rfbench.metrics.features import EXTRACTORS, ClassifierConfig, quantize
from rfbench.models import UNetConfig
from rfbench.suites import SUITES, RunConfig, make_plan
from rfbench.training import TrainConfig
from tests.image_files import write_idx, write_mnist_folder
from tests.standins import registered

TINY_NET = dict(image_size=28, in_channels=1, channels=8, channel_mult=(1, 2), num_res_blocks=1,
                attn_resolutions=(), groups=4)
SMOKE_FLOW = rectified_flow.FlowRecipe(
    net=UNetConfig(**TINY_NET),
    train=TrainConfig(steps=30, batch_size=16, lr=3e-3, ema_decay=0.9, seed=0),
    reflow=TrainConfig(steps=10, batch_size=16, lr=1e-3, ema_decay=0.9, seed=1),
    distill=TrainConfig(steps=10, batch_size=16, lr=1e-3, ema_decay=0.9, seed=2),
    num_pairs=32, pair_rtol=1e-2, pair_atol=1e-2, pair_batch=16)
SMOKE_DDPM = ddpm_baseline.DDPMRecipe(net=UNetConfig(**TINY_NET, time_scale=1.0),
                                      train=TrainConfig(steps=30, batch_size=16, lr=3e-3, ema_decay=0.9, seed=3))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    write_mnist_folder(root, n_train=400, n_test=100)
    return root


def _no_inception_weights(mp):
    mp.setattr(inception_mod, "clean_fid_weights_path", lambda: inception_mod.Path("/nonexistent/inception.pt"))
    mp.setattr(inception_mod, "fid_helper_weights_path", lambda: None)


# fashion-mnist with tiny recipes for its models (a suite is its recipes too: another suite name)
SMOKE_SUITE = dataclasses.replace(SUITES["fashion-mnist"], name="fashion-mnist-smoke", solver_error_tolerance=1e-4,
                                  models=image_suites.image_models(SMOKE_FLOW, SMOKE_DDPM))


@pytest.fixture(scope="module")
def smoke(data_dir, tmp_path_factory):
    """`benchmark.py --suite fashion-mnist --data-dir ...` with no Inception weights installed: the classifier."""
    out = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as mp, registered(SMOKE_SUITE):
        _no_inception_weights(mp)
        code = main(["--suite", "fashion-mnist-smoke", "--data-dir", str(data_dir), "--num-samples", "12",
                     "--models", "1-rf", "2-rf-distill", "ddpm", "--solvers", "euler", "ddim",
                     "--out", str(out / "run"), "--cache", str(out / "cache"), "--quiet"])
    return code, out


def test_fashion_mnist_suite_runs_from_the_cli_and_falls_back_to_the_classifier(smoke):
    code, out = smoke
    assert code == 0
    frame = pd.read_csv(out / "run" / "results.csv")
    assert (frame["status"] == "ok").all(), frame.loc[frame["status"] != "ok", ["model", "solver", "error"]]
    assert set(frame["model"]) == {"independent", "1-rf", "2-rf-distill", "ddpm"}   # 2-rf: trained, not swept
    assert (frame["n_samples"] == 12).all()
    sampled = frame[frame["model"] != "independent"]
    for col in ("fid", "is", "precision", "recall", "kid", "transport_cost", "nfe", "wall_clock_s"):
        assert sampled[col].notna().all(), col
    assert frame["extractor"].str.fullmatch(r"classifier \(fashion-mnist-cnn-[0-9a-f]+, none\)").all()
    assert frame["reference"].str.fullmatch(
        r"fashion-mnist_train_fashion-mnist-cnn-[0-9a-f]+_none_28_[0-9a-f]{12}\.npz \(400 images\)").all()
    assert frame["crossing_prob"].isna().all()
    assert ((frame["is"] >= 1) & (frame["is"] <= 10 + 1e-9)).all()
    for name in ("results.csv", "results.md", "fid_vs_nfe.png", "samples_1-rf.png", "samples_2-rf-distill.png",
                 "samples_ddpm.png"):
        assert (out / "run" / name).stat().st_size > 0, name


def test_classifier_extractor_learns_the_labels_and_is_cached_by_data(data_dir, smoke, tmp_path):
    _, out = smoke
    problem = ImageProblem("fashion-mnist", (1, 28, 28), data_dir=str(data_dir))
    logs = []
    ext = EXTRACTORS["classifier"](out / "cache", "cpu", problem=problem, log=logs.append)
    assert logs == []                                   # trained by the suite run, loaded here
    assert ext.accuracy > 0.5                           # 10 classes; 400 training images, 3 epochs
    real = quantize(problem.reference())
    feats, logits = ext.extract(real)
    assert feats.shape == (400, 128) and logits.shape == (400, 10) and feats.dtype == torch.float64
    torch.testing.assert_close(ext.extract(real[:37])[0], feats[:37], rtol=0, atol=0)  # batch-independent
    with pytest.raises(ValueError, match=r"classifier extractor takes uint8 images of shape \(N, 1, 28, 28\)"):
        ext.extract(real[:, :, :8, :8])
    # the same images with other labels under the same name: another checkpoint, never the cached one
    other = tmp_path / "other"
    parts = write_mnist_folder(other, n_train=400, n_test=100)
    write_idx(other / "train-labels-idx1-ubyte", (parts["train"][1] + 1) % 10, compress=True)
    ext2 = EXTRACTORS["classifier"](out / "cache", "cpu", problem=ImageProblem("fashion-mnist", (1, 28, 28),
                                                                               data_dir=str(other)),
                                    config=ClassifierConfig(), log=logs.append)
    assert ext2.identity != ext.identity and len(logs) == 1 and "trained the fashion-mnist classifier" in logs[0]
    with pytest.raises(ValueError, match=r"classifier extractor trains on labelled data \(mnist, fashion-mnist\); "
                                         r"suite data is 'digits'"):
        EXTRACTORS["classifier"](tmp_path, "cpu", problem=ImageProblem("digits", (1, 8, 8)))


def test_cli_errors_for_data_dir_extractor_and_weights(data_dir, tmp_path, capsys):
    for argv, message in (
            (["--suite", "digits", "--data-dir", str(tmp_path)], "uses digits, which is bundled with its package; "
                                                                 "--data-dir does not apply"),
            (["--suite", "toy2d", "--data-dir", str(tmp_path)], "does not read data from disk"),
            (["--suite", "mnist", "--extractor", "digits"], "is scored with inception or classifier, not 'digits'"),
            (["--suite", "mnist", "--inception-weights", str(tmp_path / "none.pt")], "none.pt: no such file"),
            (["--suite", "mnist", "--extractor", "classifier", "--inception-weights", str(tmp_path)],
             "apply to suites scored with the inception extractor")):
        with pytest.raises(SystemExit) as exc:
            main(argv + ["--dry-run"])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err, argv
    # missing data: one line naming the folder and the files expected, before any training
    with pytest.raises(SystemExit) as exc:
        main(["--suite", "mnist", "--data-dir", str(tmp_path / "nowhere"), "--extractor", "classifier",
              "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "nowhere does not exist; expected a folder holding train-images-idx3-ubyte[.gz]" in err
    assert not (tmp_path / "cache" / "models").exists()


def test_a_run_plan_replaces_data_dir_and_extractor(data_dir):
    plan = make_plan(SUITES["mnist"], RunConfig(data_dir=str(data_dir), extractor="classifier"))
    assert plan.problem.data_dir == str(data_dir) and plan.problem.dataset == "mnist"
    assert plan.extractor == "classifier" and plan.fallback_extractor is None
    assert SUITES["mnist"].problem.data_dir is None and SUITES["mnist"].extractors == ("inception", "classifier")
    assert SUITES["mnist"].num_samples == 10_000 and SUITES["fashion-mnist"].cells == SUITES["digits"].cells


def test_inception_options_never_fall_back(data_dir, tmp_path, monkeypatch, capsys):
    """--inception-mode (or --inception-weights) asks for Inception: without weights that is an error, not the
    classifier."""
    _no_inception_weights(monkeypatch)
    with pytest.raises(SystemExit) as exc:
        main(["--suite", "fashion-mnist", "--data-dir", str(data_dir), "--inception-mode", "clean",
              "--num-samples", "4", "--models", "1-rf", "--out", str(tmp_path / "out"), "--cache",
              str(tmp_path / "cache"), "--quiet"])
    assert exc.value.code == 2
    assert "no Inception weights found" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "models").exists()


def test_reference_given_as_a_file(smoke, data_dir, tmp_path):
    """--ref-stats: mu/sigma gives the same FID as the computed reference (FID only, with a note); pool_3
    features give every metric, equal to the computed ones."""
    import numpy as np
    _, out = smoke
    features = np.load(next((out / "cache" / "reference").glob("fashion-mnist_train_*.features.npy")))
    np.savez(tmp_path / "stats.npz", mu=features.astype(np.float64).mean(0),
             sigma=np.cov(features.astype(np.float64), rowvar=False), n=np.int64(len(features)))
    np.savez(tmp_path / "pool.npz", pool_3=features)
    before = pd.read_csv(out / "run" / "results.csv").set_index(["model", "solver", "steps"])
    for name in ("stats.npz", "pool.npz"):
        with pytest.MonkeyPatch.context() as mp, registered(SMOKE_SUITE):
            _no_inception_weights(mp)
            assert main(["--suite", "fashion-mnist-smoke", "--data-dir", str(data_dir), "--num-samples", "12",
                         "--models", "2-rf-distill", "--solvers", "euler", "--ref-stats", str(tmp_path / name),
                         "--out", str(tmp_path / f"out-{name}"), "--cache", str(out / "cache"), "--quiet",
                         "--no-plots"]) == 0
        row = pd.read_csv(tmp_path / f"out-{name}" / "results.csv").set_index(["model", "solver", "steps"]).loc[
            ("2-rf-distill", "euler", 1)]
        # the same FID up to np.cov's round-off
        assert row["fid"] == pytest.approx(before.loc[("2-rf-distill", "euler", 1), "fid"], rel=1e-7)
        if name == "stats.npz":
            assert re.fullmatch(r"stats\.npz \(sha1 [0-9a-f]{12}, given: mu/sigma of 400 images\)", row["reference"])
            assert pd.isna(row["precision"]) and pd.isna(row["kid"])
            assert "precision_recall, kid empty: the reference file holds statistics only" in row["notes"]
        else:
            assert re.fullmatch(r"pool\.npz \(sha1 [0-9a-f]{12}, given: 400 pool_3 features\)", row["reference"])
            assert row["precision"] == before.loc[("2-rf-distill", "euler", 1), "precision"]


def test_reference_file_errors(tmp_path):
    import numpy as np

    from rfbench.metrics.reference import ReferenceFileError, load_reference_file
    np.savez(tmp_path / "odd.npz", something=np.zeros(3))
    with pytest.raises(ValueError, match=r"odd\.npz holds something; expected 'mu' and 'sigma' \(clean-fid\) or "
                                         r"'pool_3' features"):
        load_reference_file(tmp_path / "odd.npz", 2048)
    np.savez(tmp_path / "small.npz", mu=np.zeros(64), sigma=np.eye(64))
    with pytest.raises(ValueError, match=r"mu is 64-d; the extractor's features are 2048-d"):
        load_reference_file(tmp_path / "small.npz", 2048)
    with pytest.raises(ReferenceFileError, match=r"--ref-stats .*none\.npz: no such file"):
        load_reference_file(tmp_path / "none.npz", 2048)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"bad\.npz is not a readable \.npz"):
        load_reference_file(tmp_path / "bad.npz", 2048)
