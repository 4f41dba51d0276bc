"""The fast solvers of the field: DPM-Solver++(2M/3M), UniPC-bh2 and EDM's Heun, against their official code
(run outside this repository on the same analytic models; the outputs pinned below), against diffusers' schedulers
on flows and DDPM-style models, and their convergence orders."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from rfbench.models import linear_betas
from rfbench.models.paths import path_of
from rfbench.models.score_sde import VPSDEFlow
from rfbench.samplers import sample
from tests.problems import GaussianEpsNet, GaussianFlow

MU, S = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64).reshape(1, 3, 1, 1), 0.6


def vp_eps_net(x, labels):
    """score_sde's noise network for data N(MU, S^2 I) under the VP SDE (beta 0.1..20): labels = 999 t."""
    t = (labels.to(torch.float64) / 999.0).reshape(-1, 1, 1, 1)
    m = -0.25 * t ** 2 * 19.9 - 0.5 * t * 0.1
    a, var = torch.exp(m), -torch.expm1(2 * m)
    return (var.sqrt() * (x - a * MU) / (a ** 2 * S ** 2 + var)).to(x.dtype)


def x0():
    return torch.randn(4, 3, 1, 1, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


# The official code in float64 on vp_eps_net and x0() above, from t=1 to 1e-3 (multistep, lower_order_final=True):
# LuChengTHU/dpm-solver 52bc3fb, DPM_Solver(model_wrapper(lambda x, t: vp_eps_net(x, 999 t), NoiseScheduleVP(
# "linear"), model_type="noise"), algorithm_type="dpmsolver++").sample(..., order, skip_type); wl-zhao/UniPC
# uni_pc.py, UniPC(..., algorithm_type="data_prediction", variant="bh2").sample(...); NVlabs/edm generate.py's
# edm_sampler(net, x0(), num_steps, sigma_min=0.002, sigma_max=80, rho=7) with net the posterior mean of N(MU, S^2)
# (sigma_min clipped to the network's: 0 for the flow, VP's smallest sigma for the VP model).
OFFICIAL = {
    "dpm++2m/logSNR/6": [
        [0.41680376861, -0.560655685904, 2.517296786461],
        [-0.119372615875, -0.059335984741, 1.496729309413],
        [0.301078688636, -0.313365106575, 2.069176327472],
        [-0.43405453672, -0.820258877528, 2.066202874551],
    ],
    "dpm++2m/time_uniform/12": [
        [0.379962577005, -0.366064041691, 2.746492029049],
        [-0.393723427223, 0.357324842371, 1.273844601428],
        [0.212974851874, -0.009231354276, 2.099868012473],
        [-0.847799744247, -0.740663449319, 2.095577411515],
    ],
    "dpm++3m/time_quadratic/6": [
        [0.409156740364, -0.520264815385, 2.564870233945],
        [-0.176318884779, 0.027149195987, 1.450465722828],
        [0.28279120935, -0.250236871757, 2.075546918973],
        [-0.519934530039, -0.803737465996, 2.072300069134],
    ],
    "dpm++3m/logSNR/12": [
        [0.407201228039, -0.509935986648, 2.57703580466],
        [-0.190881290867, 0.049265347697, 1.438635112185],
        [0.278114701041, -0.234093601816, 2.077176018513],
        [-0.541895922096, -0.799512579827, 2.073859255104],
    ],
    "unipc2/time_uniform/6": [
        [0.436859968158, -0.666590610277, 2.392523799478],
        [0.029982884819, -0.286164497282, 1.618066866223],
        [0.34904207022, -0.47893432297, 2.052467895089],
        [-0.208813275994, -0.86359031502, 2.05021149237],
    ],
    "unipc2/logSNR/12": [
        [0.40728687456, -0.510388363367, 2.576502983262],
        [-0.190243494108, 0.04829671588, 1.439153263174],
        [0.278319520342, -0.234800636435, 2.077104668051],
        [-0.540934068362, -0.799697619215, 2.07379096668],
    ],
    "unipc3/time_quadratic/12": [
        [0.40866522483, -0.517668677429, 2.56792803466],
        [-0.179979127013, 0.032708062569, 1.447492113901],
        [0.281615774939, -0.246179281405, 2.075956391069],
        [-0.525454497979, -0.802675546235, 2.072691968543],
    ],
    "unipc3/logSNR/6": [
        [0.400293674352, -0.473450949902, 2.620008856671],
        [-0.242320803975, 0.127387333094, 1.396845256338],
        [0.26159563757, -0.177069924499, 2.082930568045],
        [-0.619471242253, -0.784588803759, 2.079366845447],
    ],
    "edm/5": [
        [0.288103037672, 0.105750317851, 3.276298306621],
        [-1.051506536378, 1.358272231851, 0.726462090817],
        [-0.001030220669, 0.723593321063, 2.156692008095],
        [-1.837723397366, -0.542855124344, 2.149262986384],
    ],
    "edm/18": [
        [0.403373240678, -0.495768751665, 2.582002535297],
        [-0.207499753794, 0.075391552851, 1.41925622866],
        [0.271526094506, -0.214027255638, 2.071452845701],
        [-0.566021115152, -0.791538173129, 2.06806515064],
    ],
    # edm_sampler on the VP model's denoiser (the posterior mean), sigma_min clipped to VP's smallest sigma 0.010486:
    # EDM's num_steps N is rfbench's N - 1 steps on VP (Heun on each, then the Euler step to sigma = 0)
    "edm-vp/6": [
        [0.350790614448, -0.221374748898, 2.898718339421],
        [-0.592508993189, 0.660601203589, 1.103225422306],
        [0.147194511202, 0.213685640189, 2.110336259623],
        [-1.146131534304, -0.678096820004, 2.105105038974],
    ],
    "edm-vp/18": [
        [0.404121419824, -0.499673004559, 2.577496100819],
        [-0.202021596758, 0.067064816664, 1.423752916553],
        [0.273295163578, -0.220113027536, 2.070899587686],
        [-0.557766934085, -0.79315228906, 2.067538123483],
    ],
}
GRIDS = {"time_uniform": "uniform", "time_quadratic": "quadratic", "logSNR": "logsnr"}


@pytest.mark.parametrize("key", list(OFFICIAL))
def test_equal_to_the_official_code(key):
    expected = torch.tensor(OFFICIAL[key], dtype=torch.float64)
    if key.startswith("edm/"):
        steps = int(key.split("/")[1])
        result = sample(GaussianFlow(MU[0], S), x0(), "edm-heun", steps)     # the karras grid, EDM's sigmas
        assert result.nfe == 2 * steps - 1
    elif key.startswith("edm-vp/"):
        steps = int(key.split("/")[1]) - 1
        result = sample(VPSDEFlow(vp_eps_net), x0(), "edm-heun", steps)
        assert result.nfe == 2 * steps + 1
    else:
        solver, skip, steps = key.split("/")
        options = {"order": int(solver[-1])} if solver.startswith("unipc") else {}
        result = sample(VPSDEFlow(vp_eps_net), x0(), solver.rstrip("23") if solver.startswith("unipc") else solver,
                        int(steps), grid=GRIDS[skip], **options)
        assert result.nfe == int(steps)
    torch.testing.assert_close(result.x.reshape(4, 3), expected, rtol=0, atol=1e-9)   # 5e-13 measured


def test_a_first_order_step_on_a_flow_is_eulers():
    """DDIM is the exponential integrators' first-order case; on a rectified flow that step is Euler's."""
    flow = GaussianFlow(torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for solver in ("dpm++2m", "dpm++3m", "unipc"):
        torch.testing.assert_close(sample(flow, x, solver, 1).x, sample(flow, x, "euler", 1).x, rtol=0, atol=1e-14)


@pytest.mark.parametrize("solver,options,order", [("dpm++2m", {}, 2), ("unipc", {"order": 1}, 2),
                                                  ("unipc", {"order": 2}, 3)])
def test_convergence_orders_on_a_smooth_vp_problem(solver, options, order):
    """On VP with eps = 0.05 (smooth), the logsnr grid: the error against the exact probability-flow ODE falls as
    N^-order (UniPC-p is of order p + 1; DPM-Solver++(3M) is held to order 2 by its lower-order first steps, as
    the official code is)."""
    vp = VPSDEFlow(lambda x, labels: vp_eps_net(x.reshape(-1, 3, 1, 1), labels).reshape(x.shape), eps=0.05)
    x = torch.randn(50, 3, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def marginal(t):
        m = -0.25 * t ** 2 * 19.9 - 0.5 * t * 0.1
        return math.exp(m), -math.expm1(2 * m)
    (a1, v1), (ae, ve) = marginal(1.0), marginal(0.05)
    exact = ae * MU + math.sqrt(ae ** 2 * S ** 2 + ve) * (x - a1 * MU) / math.sqrt(a1 ** 2 * S ** 2 + v1)
    errors = [float((sample(vp, x, solver, n, grid="logsnr", lower_order_final=False, **options).x - exact)
                    .abs().max()) for n in (64, 128, 256)]
    observed = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(abs(o - order) < 0.25 for o in observed), (errors, observed)


def _diffusers_loop(scheduler, x, output):
    for t in scheduler.timesteps:
        x = scheduler.step(output(x, t), t, x).prev_sample
    return x


def _sigma(model, t0: float) -> float:
    """sigma(t0) on the model's path, or 1 at t0 = 0: rfbench starts a grid from t0 > 0 at the state sigma(t0) x0
    (rfbench.samplers.start_state), diffusers' schedulers from x0 itself."""
    return float(path_of(model).alpha_sigma(np.array([t0]))[1][0]) if t0 > 0 else 1.0


@pytest.mark.parametrize("name", ["dpm++2m", "dpm++3m", "unipc2", "unipc3"])
def test_equal_to_diffusers_on_flows_and_ddpm_models(name):
    diffusers = pytest.importorskip("diffusers")
    if name.startswith("dpm"):
        cls, kw = diffusers.DPMSolverMultistepScheduler, dict(solver_order=int(name[5]), algorithm_type="dpmsolver++")
        solver, options = name, {"lower_order_final": 15}                # diffusers lowers the order below 15 steps
    else:
        cls, kw = diffusers.UniPCMultistepScheduler, dict(solver_order=int(name[-1]), solver_type="bh2")
        solver, options = "unipc", {"order": int(name[-1])}     # diffusers' UniPC lowers at any number of steps
    # a rectified flow: diffusers' flow sigmas (sigma = 1 - t), its model output noise - data = -v
    flow = GaussianFlow(torch.tensor([1.0, -2.0]), 0.5)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    for steps in (6, 12, 20):
        scheduler = cls(num_train_timesteps=1000, use_flow_sigmas=True, prediction_type="flow_prediction",
                        flow_shift=1.0, final_sigmas_type="zero", **kw)
        scheduler.set_timesteps(steps)
        expected = x.clone()
        for t, sigma in zip(scheduler.timesteps, scheduler.sigmas[:-1]):
            expected = scheduler.step(-flow(expected, torch.full((50,), 1 - float(sigma))), t, expected).prev_sample
        grid = (1 - scheduler.sigmas.double().numpy()).tolist()
        ours = sample(flow, x / _sigma(flow, grid[0]), solver, grid=grid, **options)   # diffusers starts from x
        torch.testing.assert_close(ours.x, expected, rtol=0, atol=1e-5)    # diffusers computes in float32
    # a DDPM eps model on its discrete schedule, ending at timestep 0 (final_sigmas_type sigma_min)
    net = GaussianEpsNet(torch.tensor([0.5, -1.0, 2.0]), 0.6, linear_betas(1000))
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    for spacing, steps in (("linspace", 6), ("trailing", 12), ("leading", 20)):
        scheduler = cls(num_train_timesteps=1000, beta_schedule="linear", final_sigmas_type="sigma_min",
                        timestep_spacing=spacing, **kw)
        scheduler.set_timesteps(steps)
        expected = _diffusers_loop(scheduler, x.clone(), lambda z, t: net(z, torch.full((6,), int(t))))
        grid = [1 - float(t) / 999 for t in scheduler.timesteps] + [1.0]      # integer timesteps in flow time
        ours = sample(net.model, x / _sigma(net.model, grid[0]), solver, grid=grid, **options)
        torch.testing.assert_close(ours.x, expected, rtol=0, atol=5e-5)


@pytest.mark.parametrize("grid", ["uniform", "logsnr", "quadratic"])
def test_unipc_of_order_3_from_a_flows_source(grid):
    """A grid from t=0 puts lambda = -inf into UniPC's history; it must drop out (it gave NaN or a singular matrix
    at order 3), and the error against the exact flow still falls with the steps."""
    flow = GaussianFlow(torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5)
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = flow.exact(x)
    for lower_order_final in (True, False):
        errors = [float((sample(flow, x, "unipc", n, grid=grid, order=3, lower_order_final=lower_order_final).x
                         - exact).pow(2).sum(1).mean().sqrt()) for n in (4, 16, 64)]
        assert all(math.isfinite(e) for e in errors), errors
        assert errors[2] < errors[1] < errors[0] and errors[2] < 2e-3, (grid, lower_order_final, errors)


def test_unipc_lower_order_final_takes_the_number_of_steps():
    """True lowers the final orders at any number of steps (the official UniPC), an int n only below n steps."""
    flow = GaussianFlow(torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5)
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for steps in (8, 20):
        always, never, below_15 = (sample(flow, x, "unipc", steps, order=3, lower_order_final=v).x
                                   for v in (True, False, 15))
        assert not torch.equal(always, never)
        assert torch.equal(below_15, always if steps < 15 else never)


def test_the_fast_solvers_refuse_what_they_cannot_do():
    flow = GaussianFlow(torch.zeros(2), 0.5)
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="edm-heun starts at a finite sigma"):
        sample(flow, x, "edm-heun", 4, grid="uniform")
    with pytest.raises(ValueError, match="unipc: order must be 1, 2 or 3, got 4"):
        sample(flow, x, "unipc", 4, order=4)
    with pytest.raises(ValueError, match="lower_order_final must be True, False or a number of steps"):
        sample(flow, x, "dpm++2m", 4, lower_order_final=-1)
    with pytest.raises(ValueError, match="unipc option lower_order_final must be True, False or an integer"):
        sample(flow, x, "unipc", 4, lower_order_final="yes")    # refused by the check that runs before any work
    for solver in ("dpm++2m", "dpm++3m", "unipc", "edm-heun"):        # any grid length, counted NFE
        result = sample(flow, x, solver, 3)
        assert result.nfe == (5 if solver == "edm-heun" else 3) and torch.isfinite(result.x).all()
    ddpm = GaussianEpsNet(torch.tensor([0.5, -1.0]), 0.6, linear_betas(1000)).model   # ends at sigma > 0
    assert sample(ddpm, x, "edm-heun", 3).nfe == 7


@pytest.mark.parametrize("solver", ["dpm++2m", "dpm++3m", "unipc"])
def test_dynamic_thresholding_clips_each_data_prediction(solver):
    """thresholding=p: each data prediction x0 becomes clamp(x0, -s, s) / s, s = max(1, the p-quantile of |x0|) per
    sample (DPM-Solver's, diff-sampler's; pinned against diff-sampler on an EDM network in test_cifar_edm_suite).
    Predictions inside [-1, 1] pass unchanged; a wide target is pulled into [-1, 1]."""
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    narrow = GaussianFlow(torch.tensor([0.2, -0.3, 0.1], dtype=torch.float64), 0.05)
    torch.testing.assert_close(sample(narrow, x, solver, 6, thresholding=0.995).x, sample(narrow, x, solver, 6).x,
                               rtol=0, atol=0)
    wide = GaussianFlow(torch.tensor([3.0, -2.0, 0.5], dtype=torch.float64), 0.5)
    free, clipped = sample(wide, x, solver, 6).x, sample(wide, x, solver, 6, thresholding=0.995).x
    assert free.abs().max() > 2.5 and clipped.abs().max() <= 1 + 1e-9
    # one step of dpm++ from a flow's source is its data prediction there: the clipped one, computed by hand
    if solver != "unipc":
        x0 = x + wide(x, torch.zeros(64, dtype=torch.float64))      # X1 = x + (1 - t) v at t = 0
        s = torch.quantile(x0.abs(), 0.995, dim=1).clamp(min=1.0)[:, None]
        torch.testing.assert_close(sample(wide, x, solver, 1, thresholding=0.995).x, torch.clamp(x0, -s, s) / s,
                                   rtol=0, atol=1e-12)
    for bad in (1.5, -0.1):
        with pytest.raises(ValueError, match=f"thresholding must be a quantile ratio in \\(0, 1\\] .*got {bad!r}"):
            sample(wide, x, solver, 4, thresholding=bad)
    for bad in (True, "0.9"):
        with pytest.raises(ValueError, match=f"{re.escape(solver)} option thresholding takes a number .*got {bad!r}"):
            sample(wide, x, solver, 4, thresholding=bad)
