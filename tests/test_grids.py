"""Time grids: the named grids on each model family's Gaussian path (DPM-Solver's official grids on score-SDE's VP
model, pinned from its own code), explicit sequences, the discrete spacings against diffusers' schedulers, DDIM
step for step with diffusers on the same timesteps, and the grid as a sweep axis."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import rfbench
from rfbench.cli import build_parser, main
from rfbench.models import linear_betas
from rfbench.models.paths import RectifiedPath, VPPath, path_of
from rfbench.models.score_sde import TimeWindowFlow, VPSDEFlow
from rfbench.samplers import GRIDS, sample
from rfbench.samplers.grids import discrete_timesteps, time_grid
from rfbench.suites import SUITES, Cell, RunConfig, make_plan
from tests.problems import GaussianEpsNet, GaussianFlow, TangentODE
from tests.standins import registered, standin

# LuChengTHU/dpm-solver (52bc3fb), dpm_solver_pytorch.py, run outside this repository in float64:
# NoiseScheduleVP('linear', continuous_beta_0=0.1, continuous_beta_1=20.), DPM_Solver(...).get_time_steps(skip_type,
# t_T=1.0, t_0=1e-3, N, "cpu"): SDE times from 1 to eps
DPM_SOLVER = {
    ("time_uniform", 5): [1.0, 0.8002, 0.6004, 0.4006, 0.2008, 0.001],
    ("time_quadratic", 5): [1.0, 0.6501592885125388, 0.3753389327688082, 0.17553893276880822, 0.05075928851253881,
                            0.0009999999999999998],
    ("logSNR", 5): [0.9999999999999998, 0.7855680749745865, 0.49343953403327606, 0.14063641351890566,
                    0.018095399839036762, 0.0010000000000000588],
    ("logSNR", 10): [0.9999999999999998, 0.8991229323369041, 0.7855680749745865, 0.6534385068164096,
                     0.49343953403327606, 0.30463140976877817, 0.14063641351890566, 0.053604314809305297,
                     0.018095399839036762, 0.004991901033466597, 0.0010000000000000588],
}
NAMES = {"time_uniform": "uniform", "time_quadratic": "quadratic", "logSNR": "logsnr"}


@pytest.mark.parametrize("skip,steps", list(DPM_SOLVER))
def test_vp_grids_are_dpm_solvers_own(skip, steps):
    vp = VPSDEFlow(lambda x, t: x)
    times = np.array(time_grid(NAMES[skip], steps, vp))
    np.testing.assert_allclose(1 - times * (1 - vp.eps), DPM_SOLVER[(skip, steps)], rtol=0, atol=1e-12)


# zju-pi/diff-sampler (68d5ce4), diff-solvers-main/solver_utils.py get_schedule(num_steps, sigma_min, sigma_max,
# schedule_type, schedule_rho), run outside this repository with torch's default dtype float64: the sigmas from
# sigma_max down to sigma_min. (0.002, 80): EDM's range, a rectified flow's default; 0.0104859...: the smallest sigma of
# score-SDE's VP model (SDE time 1e-3), its default sigma_min.
VP_SIGMA_MIN = 0.010485992786702997
DIFF_SAMPLER = {
    ("polynomial", 7, 6, 0.002): [80.0, 24.408341786580095, 5.838947631011886, 0.9654169263318955,
                                  0.08508720268939021, 0.002000000000000003],
    ("time_uniform", 2, 6, 0.002): [80.00000000000001, 6.292339565936032, 1.5599652447262673, 0.5560024185093034,
                                    0.15034264359470215, 0.0019999999999732445],
    ("time_uniform", 1, 6, 0.002): [80.00000000000001, 16.50620633265823, 4.7463379579046014, 1.7541111733745074,
                                    0.6502159050842388, 0.0019999999999732445],
    ("polynomial", 7, 7, VP_SIGMA_MIN): [80.0, 32.64393654323119, 11.674605329438542, 3.4962374808511654,
                                         0.8139563219333968, 0.12887659323205244, 0.010485992786702987],
    ("time_uniform", 2, 7, VP_SIGMA_MIN): [80.00000000000001, 8.770249292427945, 2.340586683523713,
                                           0.9470122888626347, 0.4014270275964431, 0.12618820367825537,
                                           0.010485992786706403],
}


@pytest.mark.parametrize("kind,rho,points,sigma_min", list(DIFF_SAMPLER))
def test_time_uniform_and_polynomial_are_diff_samplers_own(kind, rho, points, sigma_min):
    """On a rectified flow (sigma = (1 - t) / t, range clipped to EDM's [0.002, 80]) the N sigmas of diff-sampler's
    schedule, then the data (t=1); on score-SDE's VP model (range [0.0105, 80]) its N + 1 sigmas. Compared in flow
    time; karras is polynomial."""
    official = np.array(DIFF_SAMPLER[(kind, rho, points, sigma_min)])
    if sigma_min == VP_SIGMA_MIN:
        model, steps = VPSDEFlow(lambda x, t: x), points - 1
        expected = path_of(model).t_of_log_snr(-np.log(official))
    else:
        model, steps = GaussianFlow(torch.zeros(2), 0.5), points
        expected = np.append(1 / (1 + official), 1.0)
    for name in ((f"time_uniform:rho={rho}",) if kind == "time_uniform" else ("polynomial", "karras")):
        np.testing.assert_allclose(time_grid(name, steps, model), expected, rtol=0, atol=1e-12)
    if kind == "time_uniform" and rho == 1:
        assert time_grid("time_uniform", steps, model) == time_grid("time_uniform:rho=1", steps, model)


# diff-sampler's get_schedule(num_steps, 0.002, 80., schedule_type="logsnr") in float64, as DIFF_SAMPLER above
DIFF_SAMPLER_LOGSNR = {
    6: [79.99999999999997, 9.608995471851447, 1.1541599247257706, 0.1386289686310293, 0.01665106414803746,
        0.0020000000000000005],
    11: [79.99999999999997, 27.72579372620585, 9.608995471851447, 3.3302128296074915, 1.1541599247257706,
         0.4000000000000001, 0.1386289686310293, 0.04804497735925727, 0.01665106414803746, 0.005770799623628854,
         0.0020000000000000005],
}


@pytest.mark.parametrize("name,official", [("polynomial", DIFF_SAMPLER[("polynomial", 7, 6, 0.002)]),
                                           ("time_uniform:rho=2", DIFF_SAMPLER[("time_uniform", 2, 6, 0.002)]),
                                           ("logsnr", DIFF_SAMPLER_LOGSNR[6]), ("logsnr", DIFF_SAMPLER_LOGSNR[11])])
def test_to_data_0_ends_a_flows_grid_at_sigma_min_as_diff_sampler(name, official):
    """With to_data=0 a flow's grid is diff-sampler's own: its N + 1 sigmas from 80 to 0.002 and no step to the data;
    on a VP model (whose path ends at a sigma > 0) the option changes nothing."""
    flow, steps = GaussianFlow(torch.zeros(2), 0.5), len(official) - 1
    option = ",to_data=0" if ":" in name else ":to_data=0"
    np.testing.assert_allclose(time_grid(name + option, steps, flow), 1 / (1 + np.array(official)), rtol=0,
                               atol=1e-12)
    if name != "logsnr":     # logsnr's default is the path's whole range
        vp = VPSDEFlow(lambda x, t: x)
        assert time_grid(name + option, steps, vp) == time_grid(name, steps, vp)
    with pytest.raises(ValueError, match=r"grid polynomial: to_data must be 1 \(a flow's last step goes to the data\) "
                                         r"or 0 \(the grid ends at sigma_min\), got 0.5"):
        time_grid("polynomial:to_data=0.5", 3, flow)


def test_logsnr_with_a_sigma_range_is_uniform_in_log_sigma():
    """logsnr with an option: diff-sampler's uniform log sigma on karras's range, ends as karras (to the data on a
    flow); without one, the path's whole range as before."""
    flow = GaussianFlow(torch.zeros(2), 0.5)
    times = time_grid("logsnr:sigma_max=80", 6, flow)
    assert times[-1] == 1.0 and times[:-1] == time_grid("logsnr:to_data=0", 5, flow)
    np.testing.assert_allclose(times[:-1], 1 / (1 + np.array(DIFF_SAMPLER_LOGSNR[6])), rtol=0, atol=1e-12)
    assert time_grid("logsnr", 5, flow)[0] == 0.0


def test_time_uniform_on_a_vp_models_whole_range_is_its_own_sde_time():
    """The VP SDE time_uniform fits to score-SDE's whole sigma range is that model's own (beta 0.1 to 20, from SDE
    time 1 to 1e-3): rho=1 then gives rfbench's uniform grid there (DPM-Solver's time_uniform)."""
    vp = VPSDEFlow(lambda x, t: x)
    whole = f"time_uniform:sigma_min={VP_SIGMA_MIN!r},sigma_max=152.16697028394645"
    np.testing.assert_allclose(time_grid(whole, 5, vp), time_grid("uniform", 5, vp), rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="grid time_uniform: rho must be > 0, got -1"):
        time_grid("time_uniform:rho=-1", 3, vp)


def test_flow_grids_cover_the_path_and_follow_their_spacing():
    flow = GaussianFlow(torch.zeros(2), 0.5)
    assert time_grid("uniform", 4, flow) == [0.0, 0.25, 0.5, 0.75, 1.0]
    np.testing.assert_allclose(time_grid("quadratic", 4, flow), 1 - (1 - np.arange(5) / 4) ** 2, atol=1e-15)
    path = RectifiedPath()
    t = np.array(time_grid("logsnr", 6, flow))
    assert t[0] == 0 and t[-1] == 1 and np.all(np.diff(t) > 0)          # the whole path, increasing
    for name in ("karras", "karras:rho=3"):                              # from EDM's sigma_max = 80 to the data
        t = np.array(time_grid(name, 6, flow))
        assert t[0] == pytest.approx(1 / 81, rel=1e-12) and t[-1] == 1 and np.all(np.diff(t) > 0)
    lam = path.log_snr(np.array(time_grid("logsnr", 6, flow))[1:-1])   # interior points: uniform in log-SNR
    np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-9)
    # karras: sigma = (1 - t) / t uniform in sigma^(1/rho) over its first N points (EDM, eq. 5), then the data
    # (sigma 0), EDM's defaults 0.002 and 80
    t = np.array(time_grid("karras", 5, flow))
    expected = (80 ** (1 / 7) + np.arange(5) / 4 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose((1 - t[:-1]) / t[:-1], expected, rtol=1e-10)
    assert t[-1] == 1
    np.testing.assert_allclose(time_grid("karras:sigma_min=0.01,sigma_max=20,rho=3", 4, flow)[:2],
                               [1 / 21, 1 / (1 + (20 ** (1 / 3) + (0.01 ** (1 / 3) - 20 ** (1 / 3)) / 3) ** 3)])
    with pytest.raises(ValueError, match=r"grid karras: sigma in \[0.002, 2000\] leaves the model's range"):
        time_grid("karras:sigma_max=2000", 4, flow)
    # a rectified flow on a window [t_min, 1] (the published checkpoints) has a finite log-SNR at its start
    window = TimeWindowFlow(torch.nn.Identity(), 1e-3)
    assert isinstance(path_of(window), RectifiedPath) and time_grid("logsnr", 3, window)[0] == 0
    assert isinstance(path_of(VPSDEFlow(lambda x, t: x, sub_vp=True)), VPPath)
    with pytest.raises(ValueError, match="grid karras: rho must be > 0"):
        time_grid("karras:rho=0", 3, flow)
    with pytest.raises(ValueError, match=r"grid karras got unknown option\(s\) roh; it takes: rho, sigma_min"):
        sample(flow, torch.zeros(2, 2), "euler", 3, grid="karras:roh=2")


def test_a_diffusion_models_grids_run_on_its_own_schedule():
    model = GaussianEpsNet(torch.zeros(3), 0.7).model
    for name in ("quadratic", "logsnr", "karras"):
        t = np.array(time_grid(name, 8, model))
        assert (t[0] == 0 or name == "karras") and t[-1] == 1 and np.all(np.diff(t) > 0)
    lam = path_of(model).log_snr(np.array(time_grid("logsnr", 8, model)))
    np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-6)    # its spline's log-SNR, inverted


def test_explicit_grids_fix_the_steps_and_start_where_they_start():
    flow = TangentODE()
    x0 = torch.full((3, 1), 0.2, dtype=torch.float64)
    full = sample(flow, x0, "euler", 4)
    same = sample(flow, x0, "euler", grid=[0.0, 0.25, 0.5, 0.75, 1.0])
    torch.testing.assert_close(same.x, full.x, rtol=0, atol=0)
    assert same.steps == 4 and same.nfe == 4
    # from t = 0.5, with the state sigma(0.5) x0 = x0 / 2 there (the starting rule; a plain callable is a flow): the
    # exact solution from (0.5, x0 / 2) is tan(sin 1 - sin 0.5 + atan(x0 / 2))
    late = sample(flow, x0, "rk4", grid=np.linspace(0.5, 1.0, 65).tolist())
    exact = torch.tan(math.sin(1.0) - math.sin(0.5) + torch.atan(x0 / 2))
    torch.testing.assert_close(late.x, exact, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="a grid of 3 entries makes 2 steps; steps=4 differs"):
        sample(flow, x0, "euler", 4, grid=[0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match=r"times must be 3 increasing values in \[0, 1\]"):
        sample(flow, x0, "euler", grid=[0.0, 0.7, 0.5])
    with pytest.raises(ValueError, match="an adaptive solver chooses its own times; grid does not apply"):
        sample(flow, x0, "rk45", grid="logsnr")
    with pytest.raises(KeyError, match="Unknown grid 'logsrn'. Did you mean: logsnr"):
        sample(flow, x0, "euler", 3, grid="logsrn")


def test_higher_order_solvers_keep_their_order_on_every_grid():
    flow, x0 = TangentODE(), torch.linspace(-0.5, 0.5, 5, dtype=torch.float64).reshape(-1, 1)
    exact = TangentODE.exact(x0)
    for grid in ("uniform", "quadratic", "logsnr"):
        errors = [float((sample(flow, x0, "heun", n, grid=grid).x - exact).abs().max()) for n in (32, 64)]
        assert 1.7 < math.log2(errors[0] / errors[1]) < 2.3, (grid, errors)


def test_every_solver_on_a_grid_that_starts_late_starts_from_the_same_state():
    """The starting rule: x0 is the source noise; on a grid from t0 > 0 every fixed-grid solver starts from
    sigma(t0) x0 (1 - t0 on a flow, EDM's sigma_max x0 in its variables), edm-heun as the others."""
    flow = GaussianFlow(torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for grid in ("karras", [0.25, 0.5, 1.0]):
        t0 = time_grid(grid, 2, flow)[0]
        for solver in ("euler", "heun", "dpm++2m", "unipc", "edm-heun", "ipndm", "deis", "euler-ancestral",
                       "dpm++2m-sde"):
            first = []
            seeds = list(range(5)) if solver in ("euler-ancestral", "dpm++2m-sde") else None
            sample(flow, x, solver, 2, grid=grid, seeds=seeds,
                   callback=lambda i, t, s, v: first.append((t, s)) if i == 0 else None)
            assert first[0][0] == t0
            torch.testing.assert_close(first[0][1], (1 - t0) * x, rtol=1e-14, atol=0)


def test_a_grid_that_starts_after_the_source_levels_off():
    """karras starts at sigma_max = 80 (t = 1/81 on a flow): the samples miss the path's first stretch, so the error
    against the model's ODE solution from x0 levels off at ~1.5e-2 (the number the docs give) for every solver,
    while the same solvers from t=0 keep converging."""
    flow = GaussianFlow(torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5)
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = flow.exact(x)

    def rms(solver, steps, grid):
        return float((sample(flow, x, solver, steps, grid=grid).x - exact).pow(2).sum(1).mean().sqrt())
    for solver in ("heun", "dpm++2m", "edm-heun"):
        floor = [rms(solver, n, "karras") for n in (64, 128)]
        assert all(1e-2 < e < 2.5e-2 for e in floor) and abs(floor[0] / floor[1] - 1) < 0.1, (solver, floor)
    for solver in ("heun", "dpm++2m"):
        assert rms(solver, 128, "uniform") < 1e-3


def test_discrete_spacings_are_diffusers_and_ddim_matches_it_step_for_step():
    diffusers = pytest.importorskip("diffusers")
    for spacing in ("leading", "linspace", "trailing"):
        for steps in (7, 10, 50):
            scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
            scheduler.set_timesteps(steps)
            assert discrete_timesteps(spacing, steps, 1000) == scheduler.timesteps.tolist(), (spacing, steps)
    assert discrete_timesteps(None, 4, 1000) == [750, 500, 250, 0]              # rfbench's default, as before
    # DDIM on the same timesteps as diffusers' DDIMScheduler (eta 0, alpha 1 after the last step, no clipping)
    problem = GaussianEpsNet(torch.full((4,), 0.3), 0.6, linear_betas(1000))
    x0 = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                                        set_alpha_to_one=True, timestep_spacing="trailing")
    scheduler.set_timesteps(10)
    x = x0.clone()
    for t in scheduler.timesteps:
        eps = problem(x, torch.full((6,), int(t), dtype=torch.long))
        x = scheduler.step(eps, t, x, eta=0.0).prev_sample
    ours = sample(problem.model, x0, "ddim", grid=scheduler.timesteps.tolist())
    assert ours.nfe == 10
    torch.testing.assert_close(ours.x, x, rtol=1e-5, atol=1e-5)
    same = sample(problem.model, x0, "ddim", 10, grid="trailing")
    torch.testing.assert_close(same.x, ours.x, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"grid 'logsnr': discrete samplers take the spacings uniform, leading"):
        sample(problem.model, x0, "ddim", 10, grid="logsnr")
    with pytest.raises(ValueError, match=r"timesteps must be distinct, decreasing \(sampling order\)"):
        sample(problem.model, x0, "ddim", grid=[10, 500, 999])


def test_without_grids_every_cell_keeps_its_own_grid_as_the_help_says():
    """--solvers unipc keeps toy2d's unipc cells on both their grids (uniform and logsnr), and a solver the run adds
    takes its default grid: what --grids' help says happens without --grids (it said "default: uniform")."""
    plan = make_plan(SUITES["toy2d"], RunConfig(models=("1-rf",), solvers=("unipc", "midpoint", "edm-heun")))
    by_solver = {s: sorted({c.fields()["grid"] for c in plan.cells if c.solver == s})
                 for s in ("unipc", "midpoint", "edm-heun")}
    assert by_solver == {"unipc": ["logsnr", "uniform"], "midpoint": ["uniform"], "edm-heun": ["karras"]}
    own = {(c.solver, c.steps, c.grid) for c in SUITES["toy2d"].grid("1-rf") if c.solver == "unipc"}
    assert {(c.solver, c.steps, c.grid) for c in plan.cells if c.solver == "unipc"} == own
    narrowed = make_plan(SUITES["toy2d"], RunConfig(models=("1-rf",), solvers=("unipc",), grids=("uniform",)))
    assert {c.fields()["grid"] for c in narrowed.cells} == {"uniform"}
    text = "".join(build_parser().format_help().split())     # argparse wraps lines, also at hyphens
    said = ("Without --grids every cell keeps its own grid: a suite's cells theirs (toy2d's unipc cells run on "
            "uniform and logsnr), a solver that --solvers adds its default (uniform; karras for edm-heun)")
    assert "".join(said.split()) in text and "eachthatapplies(default:uniform)" not in text


def test_the_grid_is_an_axis_of_a_sweep_with_its_column(tmp_path, capsys):
    plan = make_plan(SUITES["toy2d"], RunConfig(models=("1-rf", "ddpm"), solvers=("euler", "ddim", "rk45"),
                                                steps=(4,), grids=("uniform", "logsnr", "trailing")))
    assert [c.label for c in plan.cells] == ["1-rf/euler/4", "1-rf/euler/4@logsnr", "1-rf/rk45/adaptive",
                                             "ddpm/ddim/4", "ddpm/ddim/4@trailing", "ddpm/rk45/adaptive"]
    with pytest.raises(ValueError, match=r"--grids lgsnr: not a time grid \(gits, karras, logsnr, polynomial"):
        make_plan(SUITES["toy2d"], RunConfig(grids=("lgsnr",)))
    # --steps keeps each cell's grid; --grids leaves edm-heun on its karras family (the others start at a flow's
    # source, where it cannot)
    stepped = make_plan(SUITES["toy2d"], RunConfig(models=("1-rf",), solvers=("unipc", "edm-heun"), steps=(4,)))
    assert [c.label for c in stepped.cells] == ["1-rf/unipc/4", "1-rf/unipc/4@logsnr", "1-rf/edm-heun/4"]
    for grids, edm in ((("uniform", "logsnr"), ["1-rf/unipc/4", "1-rf/unipc/4@logsnr", "1-rf/edm-heun/4"]),
                       (("logsnr", "karras:rho=5"), ["1-rf/unipc/4@logsnr", "1-rf/unipc/4@karras:rho=5",
                                                     "1-rf/edm-heun/4@karras:rho=5"])):
        plan = make_plan(SUITES["toy2d"], RunConfig(models=("1-rf",), solvers=("unipc", "edm-heun"), steps=(4,),
                                                    grids=grids))
        assert [c.label for c in plan.cells] == edm
    with pytest.raises(ValueError, match=r"no cell of this run takes them .*; edm-heun takes only karras and the other "
                                         r"grids from a finite sigma \(karras, polynomial, time_uniform, gits\)"):
        make_plan(SUITES["toy2d"], RunConfig(models=("1-rf",), solvers=("edm-heun",), grids=("logsnr",)))
    # ... and every grid that starts at a finite sigma: deis's own time_uniform (with options), karras, gits
    sigma = make_plan(SUITES["toy2d"], RunConfig(models=("1-rf",), solvers=("deis", "ipndm", "edm-heun"), steps=(4,),
                                                 grids=("uniform", "time_uniform:rho=3", "gits")))
    assert sorted(c.label for c in sigma.cells) == sorted(f"1-rf/{s}/4@{g}" for s in ("ipndm", "deis", "edm-heun")
                                                          for g in ("time_uniform:rho=3", "gits"))

    class Pull(torch.nn.Module):
        input_shape = (2,)

        def forward(self, x, t):
            return torch.tanh(x) * (1 + t.reshape(-1, 1))

    suite = standin("toy2d", "toy2d-grid", {"pull": Pull()}, cells=(Cell("pull", "heun", 2), Cell("pull", "rk45")),
                    num_samples=100)
    with registered(suite):
        assert main(["--suite", "toy2d-grid", "--grids", "uniform", "karras", "--steps", "2", "4", "--out",
                     str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--quiet", "--device", "cpu"]) == 0
        frame = pd.read_csv(tmp_path / "out" / "results.csv")
        assert [None if pd.isna(g) else g for g in frame["grid"]] == [None, "uniform", "karras", "uniform", "karras",
                                                                        None]
        assert frame["status"].eq("ok").all() and len(set(frame["w2"].iloc[1:5])) == 4
        assert main(["table", str(tmp_path / "out")]) == 0
        assert "| Grid" in capsys.readouterr().out                      # shown when a grid other than uniform is
        # resume: the grid is part of a cell's key
        again = rfbench.run("toy2d-grid", grids=["karras"], steps=[2], solvers=["heun"], out=tmp_path / "out",
                            device="cpu", plots=False)
        assert list(again["grid"].dropna()) == ["karras"]
    assert sorted(GRIDS.names()) == ["gits", "karras", "logsnr", "polynomial", "quadratic", "time_uniform", "uniform"]
