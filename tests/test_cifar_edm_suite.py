"""The cifar-edm suite end to end on the CPU: a CIFAR-10 folder in the real pickle format (photo crops) and a tiny
random-weights EDM network pickled by NVlabs/edm's own code in the published file's configuration
(tests/data/edm-cifar/BUILD.md), found in --checkpoint-dir under the published file's name, through the CLI; each
cell against zju-pi/diff-sampler's own sampler for its row (pinned), its schedule and NFE against diff-sampler's
table; --dry-run; the one-line error for the missing checkpoint."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from baselines.edm import EDM_FILE, PUBLISHED
from rfbench import load_model
from rfbench.cli import main
from rfbench.metrics.features import InceptionWeightsError, find_inception_weights
from rfbench.models.edm import load_edm_pickle
from rfbench.models.sources import CheckpointSlot
from rfbench.samplers import sample
from rfbench.samplers.grids import time_grid
from rfbench.suites import SUITES
from tests.image_files import write_cifar10
from tests.standins import registered

DATA = Path(__file__).parent / "data" / "edm-cifar"
# diff-sampler's get_schedule(6, 0.002, 80., schedule_type) in float64 (pinned in tests/test_grids.py): NFE 5
SIGMAS_5 = {
    "polynomial": [80.0, 24.408341786580095, 5.838947631011886, 0.9654169263318955, 0.08508720268939021, 0.002],
    "time_uniform": [80.0, 6.292339565936032, 1.5599652447262673, 0.5560024185093034, 0.15034264359470215, 0.002],
    "logsnr": [80.0, 9.608995471851447, 1.1541599247257706, 0.1386289686310293, 0.01665106414803746, 0.002],
}


def _checkpoints(folder: Path) -> Path:
    folder.mkdir()
    (folder / EDM_FILE).write_bytes(gzip.decompress((DATA / "edm-ddpmpp-32.pkl.gz").read_bytes()))
    return folder


def test_the_published_configuration_loads_as_edm_computes_it(tmp_path):
    """The fixture has the published file's configuration (DDPM++ SongUNet in EDMPrecond, augment_dim 9, an
    AugmentPipe beside the network): rfbench's network equals EDM's own output on it."""
    path = _checkpoints(tmp_path / "ckpts") / EDM_FILE
    pinned = torch.load(DATA / "outputs.pt", weights_only=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    with torch.no_grad():
        out = load_edm_pickle(path).to(torch.float64)(x, pinned["sigma"])
    torch.testing.assert_close(out, pinned["out"], rtol=0, atol=1e-12)
    assert load_model(path, "cpu").input_shape == (3, 32, 32)


def test_cells_are_the_tables_columns_on_diff_samplers_schedules(tmp_path):
    """Every solver of the table at NFE 5, 6, 8, 10 on its schedule (N + 1 sigmas from 80 to 0.002), edm-heun at EDM's
    own 2N - 1 (5, 7, 9, 11), gits for euler and ipndm."""
    suite = SUITES["cifar-edm"]
    model = load_model(_checkpoints(tmp_path / "ckpts") / EDM_FILE, "cpu")
    by_solver: dict[tuple[str, str], list[int]] = {}
    for cell in suite.cells:
        by_solver.setdefault((cell.solver, cell.grid or "karras"), []).append(cell.steps)
    assert set(by_solver) == {("euler", "polynomial:to_data=0"), ("ipndm", "polynomial:to_data=0"),
                              ("dpm++3m", "logsnr:to_data=0"), ("unipc", "logsnr:to_data=0"),
                              ("deis", "time_uniform:rho=2,to_data=0"), ("edm-heun", "karras"), ("euler", "gits"),
                              ("ipndm", "gits")}
    assert all(steps == [5, 6, 8, 10] for key, steps in by_solver.items() if key[0] != "edm-heun")
    assert by_solver[("edm-heun", "karras")] == [3, 4, 5, 6] and set(PUBLISHED) == {c.solver for c in suite.cells}
    options = {c.solver: dict(c.options) for c in suite.cells}
    assert options["unipc"] == {"order": 3, "thresholding": 0.995}
    assert options["dpm++3m"] == {"lower_order_final": 11, "thresholding": 0.995}
    for grid, sigmas in SIGMAS_5.items():
        name = next(g for (_, g) in by_solver if g.startswith(grid))
        times = np.array(time_grid(name, 5, model))
        np.testing.assert_allclose((1 - times) / times, sigmas, rtol=1e-12, atol=0)


# zju-pi/diff-sampler (68d5ce4), diff-solvers-main/solvers.py, run outside this repository in float64 on the fixture's
# network loaded by EDM's own pickle.load, latents x0 below, num_steps = NFE + 1, sigma 80 to 0.002, afs=False,
# denoise_to_zero=False, each with its row's settings (README "General Settings", launch.sh): euler_sampler and
# ipndm_sampler (max_order 4) on polynomial rho 7; dpm_pp_sampler (max_order 3) and unipc_sampler (max_order 3,
# bh2) on logsnr, predict_x0, lower_order_final; deis_sampler (max_order 4, tab, get_deis_coeff_list N = 10^6) on
# time_uniform rho 2. Their x at sigma 0.002, every 4th pixel (x[..., ::4, ::4]). diff-sampler's DPM-Solver++ and
# UniPC clip each data prediction (dynamic_thresholding_fn: clamp to [-s, s] and divide by s, s = max(1, the 0.995
# quantile of |x0|)), as the suite's cells do (option thresholding=0.995): pinned with it ("thresholded/...") and with
# it made the identity (the others: rfbench's without the option).
# Measured differences: euler 2e-16, ipndm 5e-14; dpm++3m 2.3e-7 and unipc 2.4e-7 (the network's float32 arithmetic
# on inputs that differ in the last bit: rfbench steps in flow variables); deis 1.7e-6 (the official weights' Riemann
# sum, C / N).
OFFICIAL = torch.load(DATA / "diff-sampler.pt", weights_only=True)


@pytest.mark.parametrize("solver,nfe", [("euler", 5), ("ipndm", 5), ("deis", 5), ("dpm++3m", 5), ("unipc", 5),
                                        ("dpm++3m", 10)])
def test_cells_equal_diff_samplers_own_samplers(tmp_path, solver, nfe):
    """Each cell of the suite equals diff-sampler's sampler for its row on the same network and latents, as x at
    sigma 0.002 (rfbench's x_t / t). Every solver starts from the state (1 - t0) x0 at sigma 80 (t0 = 1/81), which
    is diff-sampler's 80 x0 in EDM's variables (the starting rule)."""
    model = load_model(_checkpoints(tmp_path / "ckpts") / EDM_FILE, "cpu")
    cell = next(c for c in SUITES["cifar-edm"].cells if (c.solver, c.steps) == (solver, nfe) and c.grid != "gits")
    x0 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    options = dict(cell.options)
    result = sample(model, x0, solver, nfe, grid=cell.grid, **options)
    assert result.nfe == nfe
    got = (result.x * 1.002)[..., ::4, ::4]
    tolerance = 1e-5 if solver == "deis" else 1e-6
    if "thresholding" in options:
        if nfe == 5:                                      # the suite's cell: with diff-sampler's thresholding
            torch.testing.assert_close(got, OFFICIAL[f"thresholded/{solver}"], rtol=0, atol=tolerance)
        options["thresholding"] = 0                       # ... and without, against diff-sampler's made the identity
        unclipped = (sample(model, x0, solver, nfe, grid=cell.grid, **options).x * 1.002)[..., ::4, ::4]
        assert (got - unclipped).abs().max() > 0.1        # the clipping changes this network's samples
        got = unclipped
    official = OFFICIAL[solver if nfe == 5 else f"{solver}/{nfe}"]
    torch.testing.assert_close(got, official, rtol=0, atol=tolerance)
    if nfe == 10:                                         # rfbench's default lowers the final order below 10 steps
        default = sample(model, x0, solver, nfe, grid=cell.grid, thresholding=0).x * 1.002
        assert (default[..., ::4, ::4] - official).abs().max() > 1e-3


def test_cifar_edm_runs_from_the_published_file_name(tmp_path):
    try:
        find_inception_weights()
    except InceptionWeightsError as exc:
        pytest.skip(f"needs the FID Inception weights: {exc}")
    write_cifar10(tmp_path / "data", per_batch=4, n_test=6)
    ckpts = _checkpoints(tmp_path / "ckpts")
    suite = SUITES["cifar-edm"]
    picked = tuple(c for c in suite.cells if c.solver in ("ipndm", "unipc", "edm-heun")
                   and c.steps == (3 if c.solver == "edm-heun" else 5))     # polynomial, logsnr, karras and gits
    tiny = dataclasses.replace(suite, name="cifar-edm-tiny", cells=picked)
    with registered(tiny):
        code = main(["--suite", "cifar-edm-tiny", "--data-dir", str(tmp_path / "data"), "--checkpoint-dir",
                     str(ckpts), "--num-samples", "4", "--batch-size", "2", "--out", str(tmp_path / "out"),
                     "--cache", str(tmp_path / "cache"), "--quiet", "--no-plots"])
    assert code == 0
    frame = pd.read_csv(tmp_path / "out" / "results.csv")
    assert (frame["status"] == "ok").all(), frame.loc[frame["status"] != "ok", ["model", "solver", "error"]]
    assert list(frame["solver"]) == ["none", "ipndm", "unipc", "edm-heun", "ipndm"]
    sampled = frame.iloc[1:]
    assert list(sampled["nfe"]) == [5] * 4 and (sampled["model"] == "edm-vp").all()
    assert list(sampled["grid"]) == ["polynomial:to_data=0", "logsnr:to_data=0", "karras", "gits"]
    assert list(sampled["options"].fillna("")) == ["", "order=3,thresholding=0.995", "", ""]
    # the gits cell's searched times: from sigma 80 (t = 1/81) to the data, 5 steps, searched on the 4 rows
    times = [float(t) for t in sampled["grid_times"].iloc[-1].split(",")]
    assert len(times) == 6 and times[0] == pytest.approx(1 / 81) and times[-1] == 1.0
    assert sampled["grid_search_rows"].iloc[-1] == 4 and sampled["grid_search_nfe"].iloc[-1] > 0
    assert sampled["fid"].notna().all() and sampled["kid"].notna().all() and (frame["n_samples"] == 4).all()
    assert sampled["model_checkpoint"].str.fullmatch(rf"{EDM_FILE} \(sha1 [0-9a-f]{{12}}\)").all()
    assert sampled["model_source"].eq("EDM network pickle").all()
    table = (tmp_path / "out" / "results.md").read_text()
    assert "cifar-edm-tiny" in table and "logsnr:to_data=0" in table


def test_the_readme_table_is_the_published_one():
    """The README's table beside the rows: diff-sampler's numbers as baselines/edm.py records them."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = {"Euler": "euler", "EDM Heun": "edm-heun", "DPM-Solver++(3M)": "dpm++3m", "UniPC-3": "unipc",
            "DEIS-tAB3": "deis", "iPNDM-4": "ipndm"}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in rows and len(cells) == 6:
            numbers = tuple(None if c == "-" else float(c) for c in cells[2:])
            assert numbers == PUBLISHED[rows.pop(cells[0])], line
    assert not rows, f"rows missing from the README's table: {', '.join(rows)}"


def test_dry_run_lists_every_cell_with_its_nfe(tmp_path, capsys):
    write_cifar10(tmp_path / "data", per_batch=4, n_test=6)
    code = main(["--suite", "cifar-edm", "--data-dir", str(tmp_path / "data"), "--checkpoint-dir",
                 str(_checkpoints(tmp_path / "ckpts")), "--out", str(tmp_path / "out"), "--batch-size", "4",
                 "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "cifar-edm v1: 32 cells + the independent row, 50000 samples (seeds 0-49999), batch 4" in out
    assert f"edm-vp: flow, from {tmp_path / 'ckpts' / EDM_FILE}" in out
    for label, nfe in (("edm-vp/ipndm/5@polynomial:to_data=0", 5), ("edm-vp/deis/10@time_uniform:rho=2,to_data=0", 10),
                       ("edm-vp/edm-heun/6", 11), ("edm-vp/euler/8@gits", 8)):
        assert any(line.split()[0] == label and f"NFE {nfe} " in line + " " for line in out.splitlines()
                   if line.strip()), label
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_names_the_published_file(tmp_path, capsys):
    write_cifar10(tmp_path / "data", per_batch=4, n_test=6)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["--suite", "cifar-edm", "--data-dir", str(tmp_path / "data"), "--checkpoint-dir",
              str(tmp_path / "empty")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"benchmark.py: error: no checkpoint for edm-vp: pass --checkpoint edm-vp=PATH or put edm-vp.pth or "
                   f"{EDM_FILE} in --checkpoint-dir (or leave it out with --models)"]
    with pytest.raises(ValueError, match=r"file_names must be a tuple of file names \(no folders\), got 'a.pkl'"):
        CheckpointSlot(file_names="a.pkl")
