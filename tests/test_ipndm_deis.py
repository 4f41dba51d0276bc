"""iPNDM and DEIS-tAB (rfbench/samplers/multistep.py) against zju-pi/diff-sampler's ``ipndm_sampler`` and
``deis_sampler`` (run outside this repository on the same closed-form denoisers, float64; the outputs pinned below),
DEIS's weights against the integrals they stand for, and the orders of convergence on EDM's grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import torch

from rfbench.models import linear_betas
from rfbench.models.score_sde import VPSDEFlow
from rfbench.samplers import sample
from rfbench.samplers.multistep import deis_coefficients, vp_time
from tests.problems import GaussianEpsNet, GaussianFlow, GaussianMixtureFlow
from tests.test_fast_solvers import MU, S, vp_eps_net, x0

MIXTURE = GaussianMixtureFlow([0.3, 0.7], [[-1.0, 0.5], [1.5, -0.5]], [0.4, 0.7])


def x0_2d():
    return torch.randn(4, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def edm_sigmas(points: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> np.ndarray:
    """EDM's polynomial schedule (Karras et al. 2022, eq. 5): ``points`` sigmas from sigma_max to sigma_min."""
    ramp = np.linspace(0.0, 1.0, points)
    return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


# zju-pi/diff-sampler 68d5ce4, diff-solvers-main/solvers.py, in float64 (torch.set_default_dtype(torch.float64)):
# ipndm_sampler(D, x, t_steps=sigmas, max_order=k) and deis_sampler(D, x, t_steps=sigmas, max_order=order + 1,
# coeff_list=solver_utils.get_deis_coeff_list(sigmas, order + 1, N=10**7, deis_mode="tab")), D the closed-form
# denoiser of the data: N(MU, S^2 I) ("gauss", x = x0()) or MIXTURE ("mix", x = x0_2d()). Keys are
# solver/data/sigmas/NFE, the sigmas: "flow", those of rfbench's karras grid on a flow, edm_sigmas(NFE) then 0
# (EDM's grid); "end", edm_sigmas(NFE + 1), ending at 0.002 as diff-sampler's own schedules do (its DEIS weights are
# infinite on a step to sigma = 0, where its VP time's alpha is 1); "vp", rfbench's karras grid on
# VPSDEFlow(vp_eps_net), edm_sigmas(NFE + 1) down to VP's smallest sigma. The outputs are x in EDM's variables at the
# last sigma.
# Measured differences: iPNDM 7e-15. DEIS 5.7e-7: diff-sampler integrates the weights by a Riemann sum whose error
# is C / N (5.7e-4 at its default N = 10^4, 5.7e-7 at 10^7); from the two, by Richardson extrapolation, the limit
# N -> infinity equals rfbench's weights (exact integrals) to 6e-11.
OFFICIAL = {
    "ipndm4/gauss/flow/5": [
        [0.41994492506, -0.582245429159, 2.482187925013],
        [-0.086162117069, -0.10904027045, 1.518854958383],
        [0.310709830751, -0.348823168739, 2.059198538349],
        [-0.383196340842, -0.827289797472, 2.056391839833],
    ],
    "ipndm4/gauss/flow/8": [
        [0.401949605464, -0.488339739598, 2.590577378431],
        [-0.217923590528, 0.091235665745, 1.410699931327],
        [0.268159910029, -0.202447249397, 2.072505585004],
        [-0.581727170171, -0.788466833476, 2.069067977869],
    ],
    "ipndm4/mix/flow/5": [
        [1.751631338087, -0.314758918904],
        [1.159565198125, -0.692903776369],
        [1.271677663131, -1.185928194254],
        [1.080991914412, 0.304593536181],
    ],
    "ipndm4/mix/flow/8": [
        [1.970180613599, -0.321142871587],
        [1.344087207794, -0.861709952626],
        [1.39572404943, -1.458111927204],
        [1.320557147315, 0.387965399764],
    ],
    "ipndm2/mix/flow/8": [
        [1.816776894852, -0.326299446221],
        [1.270191234439, -0.754336150785],
        [1.337797928734, -1.253142242588],
        [1.214541055148, 0.278844264583],
    ],
    "ipndm3/mix/flow/5": [
        [1.734675839978, -0.329089103814],
        [1.160844972539, -0.66826816008],
        [1.284289111959, -1.133091850681],
        [1.056153597928, 0.26381752321],
    ],
    "ipndm4/mix/end/8": [
        [1.922851189261, -0.30084733786],
        [1.353998262483, -0.871302218573],
        [1.351915497349, -1.445789325242],
        [1.415251315791, 0.368144802284],
    ],
    "ipndm4/gauss/vp/5": [
        [0.404216527201, -0.500169307157, 2.576923249828],
        [-0.201325221896, 0.066006334821, 1.424324528574],
        [0.273520044906, -0.220886641461, 2.070829258382],
        [-0.556717675336, -0.793357472985, 2.067471128605],
    ],
    "ipndm4/gauss/vp/8": [
        [0.402204653308, -0.489670665869, 2.589041173631],
        [-0.216056133855, 0.088397152912, 1.4122328136],
        [0.268762970478, -0.204521836756, 2.0723169841],
        [-0.578913390754, -0.789017071731, 2.068888318838],
    ],
    "deis3/gauss/end/5": [
        [0.423227901523, -0.599377115367, 2.462413893078],
        [-0.062124210227, -0.145577614565, 1.53858622274],
        [0.318472426323, -0.375527262285, 2.056770867047],
        [-0.34697736533, -0.834372465625, 2.054079268356],
    ],
    "deis3/gauss/end/8": [
        [0.414782133161, -0.555304227542, 2.51328446593],
        [-0.123964005735, -0.051581831015, 1.487825673539],
        [0.298502412879, -0.306828448574, 2.063016281753],
        [-0.440154115448, -0.816151629963, 2.060028577843],
    ],
    "deis3/mix/end/5": [
        [1.956629984761, -0.379450411998],
        [1.449187350027, -0.828877702564],
        [1.489725792552, -1.32216366849],
        [1.354602497944, 0.21604371772],
    ],
    "deis3/mix/end/8": [
        [1.874696110101, -0.323436727455],
        [1.361402379282, -0.82496673993],
        [1.367212373684, -1.337499513684],
        [1.390782425999, 0.279233551029],
    ],
    "deis1/mix/end/8": [
        [1.767878036748, -0.322076299854],
        [1.278482108187, -0.742250227967],
        [1.315133294174, -1.203070956663],
        [1.263428658121, 0.232996757872],
    ],
    "deis2/mix/end/5": [
        [1.861171524437, -0.368927351741],
        [1.377193021003, -0.768133709101],
        [1.42910880927, -1.222318502444],
        [1.276643419931, 0.188046628389],
    ],
    "deis3/gauss/vp/5": [
        [0.422309488844, -0.594584526078, 2.467945678596],
        [-0.068848814768, -0.135356292394, 1.533066401452],
        [0.316300840178, -0.368056792002, 2.057450008104],
        [-0.357109623883, -0.832391089179, 2.054726210237],
    ],
    "deis3/gauss/vp/8": [
        [0.413686297873, -0.549585786821, 2.519884903741],
        [-0.131987696086, -0.039385913236, 1.481239511255],
        [0.2959113111, -0.297914803176, 2.063826621976],
        [-0.452243763946, -0.813787483347, 2.060800498525],
    ],
}


def _run(key: str) -> tuple[torch.Tensor, int | float]:
    """rfbench's sample of a key of OFFICIAL, in EDM's variables (x_t / alpha at the last time), and its NFE."""
    solver, data, end, nfe = key.split("/")
    options = {"max_order": int(solver[-1])} if solver.startswith("ipndm") else {"order": int(solver[-1])}
    model, x = (GaussianFlow(MU[0], S), x0()) if data == "gauss" else (MIXTURE, x0_2d())
    if end == "flow":
        result, alpha = sample(model, x, solver[:-1], int(nfe), grid="karras", **options), 1.0
    elif end == "end":
        times = (1 / (1 + edm_sigmas(int(nfe) + 1))).tolist()
        result, alpha = sample(model, x, solver[:-1], grid=times, **options), times[-1]
    else:
        vp = VPSDEFlow(vp_eps_net)
        result = sample(vp, x, solver[:-1], int(nfe), grid="karras", **options)
        alpha = float(vp.gaussian_path.alpha_sigma(np.array([1.0]))[0][0])
    return (result.x / alpha).reshape(4, -1), result.nfe


@pytest.mark.parametrize("key", list(OFFICIAL))
def test_equal_to_the_official_code(key):
    got, nfe = _run(key)
    assert nfe == int(key.split("/")[-1])
    tolerance = 1e-9 if key.startswith("ipndm") else 1e-6    # DEIS: the official Riemann sum's error (above)
    torch.testing.assert_close(got, torch.tensor(OFFICIAL[key], dtype=torch.float64), rtol=0, atol=tolerance)


def test_deis_weights_are_the_integrals_of_the_lagrange_basis_in_vp_time():
    """DEIS-tAB's weights are int L_j(tau) (dsigma / dtau) dtau over each step (tau the VP time, through sigma = 0.002
    at 1e-3 and 80 at 1), computed here by scipy's quad in tau, as the paper writes them, on EDM's grid and on
    last steps to sigma = 0, short and long (tau(sigma) has branch points 7e-4 off sigma = 0); they sum to the step
    in sigma."""
    assert vp_time(np.array([0.002, 80.0])) == pytest.approx([1e-3, 1.0], rel=1e-12)
    sigmas = np.append(edm_sigmas(6), 0.0)
    beta_d = 2 * (math.log1p(0.002 ** 2) / 1e-3 - math.log1p(80.0 ** 2)) / (1e-3 - 1)
    beta_min = math.log1p(80.0 ** 2) - 0.5 * beta_d
    tau_0 = -2 * beta_min / beta_d          # sigma(tau)^2 = exp(beta_d tau^2 / 2 + beta_min tau) - 1 is 0 there

    def dsigma_du(u):                        # tau = tau_0 + u^2: dsigma/dtau ~ 1 / u near sigma = 0, times 2u
        tau = tau_0 + u * u
        q = 0.5 * beta_d * tau ** 2 + beta_min * tau
        return (beta_d * tau + beta_min) * math.exp(q) / math.sqrt(math.expm1(q)) * u
    for sigmas, i in [(sigmas, i) for i in range(len(sigmas) - 1)] + [(np.array([3.0, 2.0, 1.0, 0.0]), 2)]:
        lo, hi = np.sqrt(vp_time(np.array([sigmas[i], sigmas[i + 1]])) - tau_0)
        for points in range(1, min(i + 1, 4) + 1):
            taus = vp_time(np.array([sigmas[i - k] for k in range(points)]))
            expected = []
            for j in range(points):
                def integrand(u, j=j):
                    tau = tau_0 + u * u
                    return dsigma_du(u) * math.prod((tau - taus[k]) / (taus[j] - taus[k])
                                                    for k in range(points) if k != j)
                expected.append(scipy.integrate.quad(integrand, lo, hi, epsabs=0, epsrel=1e-12, limit=200)[0])
            got = deis_coefficients(sigmas, i, points)
            assert got == pytest.approx(expected, rel=1e-10, abs=1e-14), (i, points)
            assert sum(got) == pytest.approx(sigmas[i + 1] - sigmas[i], rel=1e-13)


def test_orders_of_convergence_on_edms_grid():
    """Against solve_ivp (DOP853, tolerance 1e-12) on EDM's ODE dx/dsigma = (x - D) / sigma of the Gaussian mixture,
    from sigma = 80 to 0.002 on EDM's sigmas: iPNDM is of order 1 with max_order=1 and 2 with any higher one (its
    fixed-step weights lose the higher orders on a grid of unequal steps); DEIS-tAB's Lagrange weights follow the
    grid, and it reaches order 3 with order=3 (measured 3.1-3.4; the first-order first step costs little at
    sigma = 80, where the slope barely changes)."""
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def slope(u, y):                         # in u = sigma^(1/7), where EDM's grid is uniform: few steps
        state, sigma = torch.from_numpy(y).reshape(x.shape), u ** 7
        return ((state - MIXTURE.denoiser(state, sigma)) / sigma * (7 * u ** 6)).reshape(-1).numpy()
    solution = scipy.integrate.solve_ivp(slope, (80.0 ** (1 / 7), 0.002 ** (1 / 7)), (80.0 * x).reshape(-1).numpy(),
                                         method="DOP853", rtol=1e-12, atol=1e-12).y[:, -1]
    exact = torch.from_numpy(solution).reshape(x.shape) / 1.002        # x_t = t x_sigma at sigma = 0.002
    expected = {("ipndm", 1): (0.8, 1.2), ("ipndm", 2): (1.8, 2.2), ("ipndm", 4): (1.8, 2.4),
                ("deis", 1): (1.7, 2.2), ("deis", 3): (2.9, 3.6)}
    for (solver, order), (low, high) in expected.items():
        option = {"max_order": order} if solver == "ipndm" else {"order": order}
        errors = [float((sample(MIXTURE, x, solver, grid=(1 / (1 + edm_sigmas(n + 1))).tolist(), **option).x
                         - exact).abs().max()) for n in (32, 64, 128)]
        observed = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
        assert all(low < o < high for o in observed), (solver, order, errors, observed)


def test_ipndm_of_order_1_is_euler_from_the_same_state():
    """Euler's step on EDM's ODE is DDIM's, which on a rectified flow is Euler's step in t: iPNDM with max_order=1
    equals euler on the same grid, both starting from the state (1 - t_0) x0 (the starting rule: EDM's sigma_max x0)."""
    times = (1 / (1 + edm_sigmas(6))).tolist() + [1.0]
    torch.testing.assert_close(sample(MIXTURE, x0_2d(), "ipndm", grid=times, max_order=1).x,
                               sample(MIXTURE, x0_2d(), "euler", grid=times).x, rtol=0, atol=1e-13)


def test_one_evaluation_per_step_on_every_kind_of_model():
    """N steps, N evaluations: on a flow (karras: its last step to sigma = 0), on VP and on a DDPM model (whose grids
    end at their smallest sigma > 0, with no step beyond)."""
    ddpm = GaussianEpsNet(torch.tensor([0.5, -1.0], dtype=torch.float64), 0.6, linear_betas(1000)).model
    vp = VPSDEFlow(lambda x, labels: vp_eps_net(x.reshape(-1, 3, 1, 1), labels).reshape(x.shape))
    for model, dim in ((MIXTURE, 2), (ddpm, 2), (vp, 3)):
        x = torch.randn(3, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        for solver in ("ipndm", "deis"):
            for steps in (1, 2, 5):
                result = sample(model, x, solver, steps)
                assert result.nfe == steps and torch.isfinite(result.x).all()


def test_ipndm_and_deis_refuse_what_they_cannot_do():
    flow = GaussianFlow(torch.zeros(2), 0.5)
    x = torch.zeros(3, 2)
    for solver in ("ipndm", "deis"):
        with pytest.raises(ValueError, match=f"{solver} starts at a finite sigma .* t=0 has alpha = 0"):
            sample(flow, x, solver, 4, grid="uniform")
    with pytest.raises(ValueError, match="ipndm: max_order must be 1, 2, 3 or 4, got 5"):
        sample(flow, x, "ipndm", 4, max_order=5)
    with pytest.raises(ValueError, match="deis: order must be 1, 2 or 3, got 4"):
        sample(flow, x, "deis", 4, order=4)
    with pytest.raises(ValueError, match="deis option order takes a number \\(default 3\\), got True"):
        sample(flow, x, "deis", 4, order=True)


def test_deis_runs_on_diff_samplers_schedule_unless_asked_otherwise():
    """diff-sampler's table runs DEIS-tAB on its time_uniform schedule with rho = 2 (in VP time): deis's default
    grid, on a flow and on VP; ipndm keeps EDM's karras."""
    for model, x in ((MIXTURE, x0_2d()), (VPSDEFlow(vp_eps_net), x0())):
        default = sample(model, x, "deis", 6)
        assert torch.equal(default.x, sample(model, x, "deis", 6, grid="time_uniform:rho=2").x)
        assert not torch.allclose(default.x, sample(model, x, "deis", 6, grid="karras").x)
    assert torch.equal(sample(MIXTURE, x0_2d(), "ipndm", 6).x, sample(MIXTURE, x0_2d(), "ipndm", 6, grid="karras").x)
