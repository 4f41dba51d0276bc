"""The digits suite end to end on a reduced budget (every column, every file), the image pipeline, and, with
RFBENCH_FULL_SUITES=1, the full suite from a cold cache with the rectified-flow paper's claims.

Thresholds of the claims test are the claims themselves: "far below" (less than half), "no worse", "falls".
"""

from __future__ import annotations

import dataclasses
import os

import pandas as pd
import pytest
import torch

from baselines import ddpm as ddpm_baseline
from baselines import images as image_suites
from baselines import rectified_flow
from rfbench.metrics.features import EXTRACTORS, quantize
from rfbench.models import UNetConfig
from rfbench.suites import SUITES
from rfbench.suites.evaluate import image_eval
from rfbench.suites.plan import make_plan
from rfbench.suites.runner import run_suite
from rfbench.training import TrainConfig

TINY_NET = dict(image_size=8, in_channels=1, channels=8, channel_mult=(1, 2), num_res_blocks=1,
                attn_resolutions=(4,), groups=4)
SMOKE_FLOW = rectified_flow.FlowRecipe(
    net=UNetConfig(**TINY_NET),
    train=TrainConfig(steps=40, batch_size=32, lr=3e-3, ema_decay=0.9, seed=0),
    reflow=TrainConfig(steps=20, batch_size=32, lr=1e-3, ema_decay=0.9, seed=1),
    distill=TrainConfig(steps=20, batch_size=32, lr=1e-3, ema_decay=0.9, seed=2),
    num_pairs=64, pair_rtol=1e-2, pair_atol=1e-2)
SMOKE_DDPM = ddpm_baseline.DDPMRecipe(net=UNetConfig(**TINY_NET, time_scale=1.0),
                                      train=TrainConfig(steps=40, batch_size=32, lr=3e-3, ema_decay=0.9, seed=3))

COLUMNS = ("suite", "model", "solver", "steps", "nfe", "n_samples", "wall_clock_s", "samples_per_s", "fid", "is",
           "is_10", "is_10_std", "precision", "recall", "kid", "crossing_prob", "transport_cost", "straightness",
           "model_metrics_solver", "extractor", "reference", "device", "git_commit")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The digits suite with tiny recipes for its models (a suite is its recipes too: another suite name), its cells
    but for the fast solvers, of which one cell each per model (every fast solver and grid still runs)."""
    keep = {("dpm++2m", 4, "logsnr"), ("dpm++3m", 4, "logsnr"), ("unipc", 4, "uniform"), ("edm-heun", 2, None)}
    cells = tuple(c for c in SUITES["digits"].cells if c.solver in ("euler", "heun", "rk45", "ddim", "ddpm")
                  or (c.solver, c.steps, c.grid) in keep)
    suite = dataclasses.replace(SUITES["digits"], name="digits-smoke", num_samples=48, straightness_samples=12,
                                straightness_steps=10, solver_error_samples=12, solver_error_tolerance=1e-4,
                                cells=cells,
                                models=image_suites.image_models(SMOKE_FLOW, SMOKE_DDPM))
    root = tmp_path_factory.mktemp("digits")
    out = run_suite(suite, root / "out", device="cpu", cache_dir=root / "cache", progress=False, log=lambda msg: None)
    return suite, out, root


def test_digits_suite_runs_end_to_end_and_writes_every_column(smoke):
    suite, out, root = smoke
    frame = out.frame
    assert len(frame) == len(suite.cells) + 1
    assert (frame["status"] == "ok").all(), frame.loc[frame["status"] != "ok", ["model", "solver", "error"]]
    for col in COLUMNS:
        assert col in frame.columns, col
    sampled = frame[frame["model"] != "independent"]
    for col in ("fid", "is", "is_10", "precision", "recall", "kid", "transport_cost", "nfe", "wall_clock_s",
                "fid_se", "is_se", "precision_se", "kid_se", "transport_cost_se", "ms_per_nfe"):
        assert sampled[col].notna().all(), col
    assert (sampled["fid_se"] > 0).all() and (sampled["fid_se"] < sampled["fid"]).all()   # bootstrap, 100 replicates
    assert (sampled["kid_se"] > 0).all()
    inside = sampled[(sampled["recall"] > 0) & (sampled["recall"] < 1)]
    assert len(inside) and (inside["recall_se"] > 0).all() and inside["recall_se"].lt(0.5).all()
    assert (frame["bootstrap"] == 100).all()                           # how the errors were computed
    assert frame["crossing_prob"].isna().all()                         # only defined in 2D: empty, not made up
    flows = sampled[sampled["model"].isin(["1-rf", "2-rf", "3-rf"])]
    assert flows["straightness"].notna().all() and (flows["model_metrics_solver"] == "rk4/10, first 12 seeds").all()
    assert (flows["straightness_se"] > 0).all()
    # solver_error: every ODE row of a flow or of the DDPM's probability-flow ODE, none for ddpm (stochastic), ddim
    # (its own schedule's endpoint) and the one-step model
    ode = sampled[~sampled["solver"].isin(["ddim", "ddpm"]) & (sampled["model"] != "2-rf-distill")]
    assert ode["solver_error"].notna().all() and (ode["solver_error_se"] > 0).all()
    assert sampled.loc[~sampled.index.isin(ode.index), "solver_error"].isna().all()
    assert {"dpm++2m", "dpm++3m", "unipc", "edm-heun"} <= set(sampled["solver"]) and set(sampled["grid"].dropna()) == {
        "uniform", "logsnr", "karras"}
    assert sampled.loc[sampled["model"] == "2-rf-distill", "straightness"].isna().all()   # not a flow
    assert sampled.loc[sampled["model"] == "ddpm", "straightness"].notna().all()         # its PF-ODE is one
    assert frame["extractor"].str.startswith("digits (digits-cnn-").all()
    assert frame["reference"].str.fullmatch(
        r"digits_train_digits-cnn-\w+_none_8_[0-9a-f]{12}\.npz \(1437 images\)").all()
    assert (frame["is"] >= 1).all() and frame["is"].max() <= 10 + 1e-9     # 10 classes
    independent = frame[frame["model"] == "independent"].iloc[0]
    assert independent["fid"] < sampled["fid"].min()                   # held-out real images beat tiny models
    assert independent["precision"] < 1                                # held out: not points of the reference
    for name in ("results.csv", "results.md", "fid_vs_nfe.png", *(f"samples_{m}.png" for m in suite.model_names)):
        assert (root / "out" / name).stat().st_size > 0, name
    assert not (root / "out" / "samples.png").exists()                # one grid per model, at a few NFEs
    assert not (root / "out" / "trajectories.png").exists()           # trajectories are drawn in 2D only
    assert sorted(out.trained) == sorted(suite.model_names)
    assert frame.loc[frame["model"] != "independent", "model_id"].str.fullmatch(r"recipe:[0-9a-f]{12}").all()
    assert (sampled["model_source"] == "recipe").all() and set(sampled["model_kind"]) == {"flow", "one-step",
                                                                                        "diffusion"}


def test_image_pipeline_is_the_same_for_real_and_generated_images(smoke):
    suite, _, root = smoke
    images = image_eval(make_plan(suite), root / "cache", torch.device("cpu"), None, lambda msg: None)
    real = suite.problem.reference()
    extractor = EXTRACTORS["digits"](root / "cache", "cpu", log=lambda msg: None)
    # reference features are the extractor's features of the quantised real images ...
    torch.testing.assert_close(images.reference_features, extractor.features(quantize(real)), rtol=0, atol=0)
    # ... and a batch of real images passed as if they were samples gets exactly the same features
    inputs = images.inputs(torch.zeros_like(real[:100]), real[:100])
    torch.testing.assert_close(inputs.features, images.reference_features[:100], rtol=0, atol=0)
    assert inputs.logits.shape == (100, 10)
    # images saved as PNG round-trip: quantising twice changes nothing
    torch.testing.assert_close(quantize(quantize(real).float() / 127.5 - 1), quantize(real), rtol=0, atol=0)


def test_reference_statistics_are_keyed_by_content_and_reused(smoke, monkeypatch):
    from rfbench.metrics import GaussianStats
    from rfbench.metrics.features import DigitsExtractor
    from rfbench.metrics.reference import ReferenceKey, reference_stats
    suite, _, root = smoke
    files = list((root / "cache" / "reference").glob("digits_train_*.npz"))
    assert len(files) == 1
    fingerprint = suite.problem.fingerprint("train")
    assert files[0].stem.endswith(fingerprint[:12])
    assert files[0].with_name(files[0].stem + ".features.npy").exists()
    expected = EXTRACTORS["digits"](root / "cache", "cpu", log=lambda msg: None).features(
        quantize(suite.problem.reference()))

    def not_again(self, images):
        raise AssertionError("reference features were computed again instead of read from the cache")
    monkeypatch.setattr(DigitsExtractor, "extract", not_again)
    again = image_eval(make_plan(suite), root / "cache", torch.device("cpu"), None, lambda msg: None)
    torch.testing.assert_close(again.reference_features, expected, rtol=0, atol=0)
    fresh = GaussianStats.from_features(again.reference_features)
    np_close = dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.from_numpy(again.reference_stats.sigma), torch.from_numpy(fresh.sigma), **np_close)
    # other images under the same dataset name get another file, never the cached statistics
    key = ReferenceKey("digits", "train", again.extractor.identity, "none", 8, fingerprint="0" * 12)
    calls = []
    reference_stats(key, root / "cache", lambda: calls.append(1) or [again.reference_features[:500].numpy()])
    assert calls == [1]
    assert len(list((root / "cache" / "reference").glob("digits_train_*.npz"))) == 2


@pytest.mark.skipif(os.environ.get("RFBENCH_FULL_SUITES") != "1",
                    reason="the full digits suite trains five U-Nets (about 15 minutes on 2 CPU cores); "
                           "set RFBENCH_FULL_SUITES=1 to run it")
def test_full_digits_suite_shows_the_papers_claims(tmp_path):
    out = run_suite(SUITES["digits"], tmp_path / "out", device="cpu", cache_dir=tmp_path / "cache", progress=False,
                    log=lambda msg: None)
    frame = out.frame
    assert (frame["status"] == "ok").all()

    def cell(model, solver, steps):
        rows = frame[(frame["model"] == model) & (frame["solver"] == solver) & (frame["steps"] == steps)]
        assert len(rows) == 1
        return rows.iloc[0]

    one_step = {m: cell(m, "euler", 1) for m in ("1-rf", "2-rf", "2-rf-distill")}
    assert one_step["2-rf"]["fid"] < 0.5 * one_step["1-rf"]["fid"]
    assert one_step["2-rf-distill"]["fid"] <= one_step["2-rf"]["fid"]
    rk45 = frame[frame["solver"] == "rk45"].set_index("model")
    assert rk45.loc["2-rf", "transport_cost"] < rk45.loc["1-rf", "transport_cost"]
    pd.testing.assert_series_equal(frame["n_samples"], pd.Series([1000] * len(frame), name="n_samples"),
                                   check_dtype=False)
