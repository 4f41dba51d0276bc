"""The cifar suite end to end on the CPU: a CIFAR-10 folder in the real pickle format (photo crops), tiny DDPM++
networks saved as official rectified-flow / score-SDE checkpoints, the real FID Inception network (skipped when its
weights are not installed), through the CLI; batched sampling; the one-line errors for missing inputs."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from baselines.cifar import published_models
from rfbench.cli import main
from rfbench.metrics.features import InceptionWeightsError, find_inception_weights
from rfbench.models.ncsnpp import NCSNpp, NCSNppConfig
from rfbench.samplers import sample
from rfbench.suites import SUITES
from rfbench.suites.base import Cell
from rfbench.suites.execute import sample_batched as _sample_batched
from tests.image_files import write_cifar10
from tests.standins import registered

TINY = NCSNppConfig(image_size=32, nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,))


def _official_checkpoint(path, seed: int) -> None:
    torch.manual_seed(seed)
    net = NCSNpp(TINY)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)     # tame random dynamics (the init zeroes the output layers)
    params = [p.detach().clone() for p in net.parameters()]
    torch.save({"model": torch.nn.DataParallel(net).state_dict(), "step": 1,
                "ema": {"decay": 0.999999, "num_updates": 1, "shadow_params": params}, "optimizer": {}}, path)


def test_cifar_suite_runs_from_published_format_checkpoints(tmp_path):
    try:
        find_inception_weights()
    except InceptionWeightsError as exc:
        pytest.skip(f"needs the FID Inception weights: {exc}")
    write_cifar10(tmp_path / "data", per_batch=4, n_test=6)
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    for seed, name in enumerate(("2-rf-distill", "vp-ode")):     # the rectified-flow and the VP-ODE adapters
        _official_checkpoint(ckpts / f"{name}.pth", seed)
    tiny = dataclasses.replace(SUITES["cifar"], name="cifar-tiny", models=published_models(TINY),   # the files' path
                               metrics=tuple(m for m in SUITES["cifar"].metrics if m != "solver_error"))
    with registered(tiny):
        code = main(["--suite", "cifar-tiny", "--data-dir", str(tmp_path / "data"), "--checkpoint-dir", str(ckpts),
                     "--models", "2-rf-distill", "vp-ode", "--solvers", "euler", "rk45", "--num-samples", "4",
                     "--batch-size", "2",
                     "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--quiet", "--no-plots"])
    assert code == 0
    frame = pd.read_csv(tmp_path / "out" / "results.csv")
    assert (frame["status"] == "ok").all(), frame.loc[frame["status"] != "ok", ["model", "solver", "error"]]
    assert list(frame["model"]) == ["independent", "2-rf-distill", "vp-ode"]
    assert list(frame["solver"]) == ["none", "euler", "rk45"] and frame["nfe"].iloc[1] == 1
    sampled = frame.iloc[1:]
    assert sampled["fid"].notna().all() and sampled["precision"].notna().all() and (frame["n_samples"] == 4).all()
    assert frame["extractor"].str.startswith("inception (").all()
    assert sampled["model_checkpoint"].str.fullmatch(r"(2-rf-distill|vp-ode)\.pth \(sha1 [0-9a-f]{12}\)").all()
    assert sampled["solver_stats"].str.contains("batch_size=2,batches=2").all()
    assert pd.notna(frame["straightness"].iloc[2]) and pd.isna(frame["straightness"].iloc[1])
    assert frame["reference"].str.contains(r"\(20 images\)").all()     # five train batches of 4


def test_fixed_grid_samples_do_not_depend_on_the_batch_size():
    torch.manual_seed(0)
    net = NCSNpp(NCSNppConfig(image_size=8, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=())).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x0 = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        whole, nfe, stats = _sample_batched(net, x0, Cell("m", "heun", 3), None, None)
        parts, nfe_b, stats_b = _sample_batched(net, x0, Cell("m", "heun", 3), None, 2)
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)   # per-sample computations, batched BLAS
    assert nfe == nfe_b == sample(net, x0[:1], "heun", 3).nfe and stats_b == {"batch_size": 2, "batches": 3}


def test_missing_inputs_are_one_line_each_naming_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--suite", "cifar", "--models", "1-rf", "vp-ode", "--checkpoint", f"vp-ode={tmp_path / 'no.pth'}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert err[0].startswith("benchmark.py: error: cifar10 needs --data-dir DIR")
    assert "no checkpoint for 1-rf: pass --checkpoint 1-rf=PATH or put 1-rf.pth in --checkpoint-dir" in err[1]
    assert f"checkpoint for vp-ode not found: {tmp_path / 'no.pth'} (--checkpoint or --model vp-ode=PATH)" in err[2]
    with pytest.raises(SystemExit):
        main(["--suite", "cifar", "--checkpoint", "1-rf"])
    assert "--checkpoint takes MODEL=PATH, got '1-rf'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--suite", "cifar", "--checkpoint", "4-rf=x.pth"])
    assert "suite cifar has no model '4-rf' to load a checkpoint into" in capsys.readouterr().err
    assert SUITES["cifar"].num_samples == 50_000 and SUITES["cifar"].batch_size == 1000


def test_adaptive_nfe_is_the_batch_size_weighted_mean():
    """rk45 needs more steps for a batch with fast dynamics: the row's NFE weights each batch by its samples."""
    def flow(x, t):
        return torch.cos(6 * x)
    x0 = torch.cat([torch.zeros(4, 3), torch.randn(2, 3, generator=torch.Generator().manual_seed(0)) * 3])
    per_batch = [sample(flow, x0[:4], "rk45").nfe, sample(flow, x0[4:], "rk45").nfe]
    assert per_batch[0] != per_batch[1]
    x, nfe, stats = _sample_batched(flow, x0, Cell("m", "rk45"), None, 4)
    assert nfe == pytest.approx((4 * per_batch[0] + 2 * per_batch[1]) / 6, abs=0.01)
    assert stats["batches"] == 2 and stats["nfe_min"] == min(per_batch) and stats["nfe_max"] == max(per_batch)
    torch.testing.assert_close(x[:4], sample(flow, x0[:4], "rk45").x)


def test_missing_inputs_ignore_models_without_cells_and_check_the_test_split(tmp_path, capsys):
    write_cifar10(tmp_path / "data")
    (tmp_path / "data" / "cifar-10-batches-py" / "test_batch").unlink()
    (tmp_path / "ckpts").mkdir()
    (tmp_path / "ckpts" / "2-rf-distill.pth").write_bytes(b"")
    with pytest.raises(SystemExit):   # --solvers euler: vp-ode and subvp-ode (rk45 only) need no checkpoint
        main(["--suite", "cifar", "--data-dir", str(tmp_path / "data"), "--checkpoint-dir", str(tmp_path / "ckpts"),
              "--models", "2-rf-distill", "vp-ode", "subvp-ode", "--solvers", "euler"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "lacks test_batch (CIFAR-10 test split)" in err[0]
    assert err[1].endswith("2-rf-distill.pth is empty; expected an rfbench checkpoint, an official rectified-flow / "
                           "score-SDE checkpoint (.pth), a diffusers UNet2DModel folder, a TorchScript file "
                           "(torch.jit.save) of a flow model(x, t) or an EDM network pickle")


def test_auto_batch_size_needs_cuda():
    from rfbench.suites.batching import auto_batch_size
    with pytest.raises(ValueError, match="auto batch size probes CUDA memory; device cpu is not a CUDA device"):
        auto_batch_size(lambda x, t: x, torch.zeros(1, 3), torch.device("cpu"))
