"""The cifar-edm suite: the fast solvers on EDM's published CIFAR-10 network, the cells of zju-pi/diff-sampler's
table (diff-solvers-main/README.md, "FID on CIFAR-10"; nothing is trained).

The model is a :class:`~rfbench.models.sources.CheckpointSlot` for NVlabs/edm's ``edm-cifar10-32x32-uncond-vp.pkl``
(``--checkpoint-dir`` holding it under that name, or ``edm-vp.pth``; or ``--checkpoint edm-vp=PATH``), read without
running the code it embeds (:mod:`rfbench.models.edm`) and sampled as a flow through sigma = (1 - t) / t.

Each solver runs on the schedule diff-sampler's table uses for it (its README's "General Settings" and launch.sh:
no AFS, ``denoise_to_zero=False``): N + 1 sigmas from 80 to 0.002 and no step to the data (the grids'
``to_data=0``), N steps, N NFE:

* ``euler`` and ``ipndm`` (max_order 4): ``polynomial``, rho 7;
* ``dpm++3m`` and ``unipc`` (order 3, bh2), data prediction, lower order at the final steps: ``logsnr`` (uniform in
  log sigma); dpm++3m's ``lower_order_final=11`` lowers them at 10 steps too, as diff-sampler does at any number;
* ``deis`` (tAB3, diff-sampler's max_order 4): ``time_uniform``, rho 2;
* ``edm-heun``: EDM's own sampler on its own grid (karras, rho 7, then its Euler step to sigma 0), N steps cost
  2N - 1 evaluations: NFE 5, 7, 9 and 11. diff-sampler's Heun stops at sigma 0.002 without that step (2N; its
  columns 6, 8, 10), which edm-heun cannot do, so its NFE sit one either side of the table's;
* ``gits`` grids (rfbench's search, :mod:`rfbench.samplers.gits`) for euler and ipndm, the two solvers
  gits-main/launch.sh runs it with on CIFAR-10.

Where a row may still differ from diff-sampler's beyond sampling noise: its samples are rfbench's state at the grid's
last time, x_t = x_sigma / (1 + sigma) at sigma 0.002 (0.2 % smaller than diff-sampler's x_sigma: at most a quarter
of a uint8 level). diff-sampler's DPM-Solver++ and UniPC clip each data prediction (DPM-Solver's dynamic
thresholding: clamped to [-s, s] and divided by s, s = max(1, the 0.995 quantile of |x0|)), and so do this suite's
dpm++3m and unipc cells (their option ``thresholding=0.995``). rfbench has no AFS (the table does not use it
either). tests/test_cifar_edm_suite.py checks each cell against diff-sampler's sampler for its row. The metrics are the
cifar suite's image metrics (FID, IS, precision/recall, KID); its solver_error and straightness are left out (both solve
the model's ODE from the source, where an EDM network has no velocity: sigma is infinite there), and so are the coupling
metrics.
"""

from __future__ import annotations

from rfbench.data.images import ImageProblem
from rfbench.models.sources import CheckpointSlot
from rfbench.suites import Cell, Suite, SuiteModel, fixed_grid, register_suite

EDM_FILE = "edm-cifar10-32x32-uncond-vp.pkl"
EDM_URL = f"https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/{EDM_FILE}"
METRICS = ("fid", "inception_score", "precision_recall", "kid")
NFE = (5, 6, 8, 10)                     # the table's columns rfbench fills
EDM_HEUN_STEPS = (3, 4, 5, 6)           # NFE 5, 7, 9, 11
POLYNOMIAL, LOGSNR, TIME_UNIFORM = "polynomial:to_data=0", "logsnr:to_data=0", "time_uniform:rho=2,to_data=0"
THRESHOLDING = 0.995                    # diff-sampler's DPM-Solver++ and UniPC threshold each data prediction

# diff-sampler's table (FID, 50k samples) by solver and NFE; None: "-" (Heun at odd NFE)
PUBLISHED = {
    "euler": (49.66, 35.62, 22.32, 15.69),
    "edm-heun": (None, 99.74, 38.06, 15.93),
    "dpm++3m": (24.97, 11.99, 4.54, 3.00),
    "unipc": (23.98, 11.14, 3.99, 2.89),
    "deis": (14.39, 9.40, 5.55, 4.09),
    "ipndm": (13.59, 7.05, 3.69, 2.77),
}


def edm_models() -> tuple[SuiteModel, ...]:
    return (SuiteModel("edm-vp", CheckpointSlot(
        "flow", description=f"flow, EDM's CIFAR-10 DDPM++ network ({EDM_FILE}, a published checkpoint)",
        file_names=(EDM_FILE,))),)


def edm_cells(model: str = "edm-vp") -> tuple[Cell, ...]:
    return (fixed_grid(model, ("euler", "ipndm"), NFE, grids=(POLYNOMIAL,))
            + fixed_grid(model, ("dpm++3m",), NFE, grids=(LOGSNR,),
                         options=(("lower_order_final", 11), ("thresholding", THRESHOLDING)))
            + fixed_grid(model, ("unipc",), NFE, grids=(LOGSNR,),
                         options=(("order", 3), ("thresholding", THRESHOLDING)))
            + fixed_grid(model, ("deis",), NFE, grids=(TIME_UNIFORM,))
            + fixed_grid(model, ("edm-heun",), EDM_HEUN_STEPS)
            + fixed_grid(model, ("euler", "ipndm"), NFE, grids=("gits",)))


CIFAR_EDM = register_suite(Suite(
    name="cifar-edm",
    version=1,
    description="N(0, I) -> CIFAR-10 32x32 (--data-dir): EDM's published edm-cifar10-32x32-uncond-vp.pkl "
                "(--checkpoint-dir), the fast solvers at 5-10 NFE on diff-sampler's schedules; FID/IS/precision/"
                "recall on Inception; a GPU's work",
    problem=ImageProblem("cifar10", (3, 32, 32)),
    models=edm_models(),
    cells=edm_cells(),
    metrics=METRICS,
    num_samples=50_000,
    independent_row=True,
    extractor="inception",
    quality_metric="fid",
    batch_size=1000,
    steps=(("fixed", NFE),),
))
