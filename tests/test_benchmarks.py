"""Micro benchmarks (pytest-benchmark), each one test that runs rfbench's function under the benchmark fixture and
its reference beside it, asserts that both give the same answer, and checks the speed ratio the benchmark exists to
show: a hard check only where the ratio is large (any speed-up at all, `ratio > 1`), a warning where it is close to
1 (a busy machine can flip it). No absolute time is checked. In the test run (--benchmark-disable in pyproject)
each function runs at a smaller size and the ratio comes from the fastest of a few plain calls of each; for timings,
on one process: `python -m pytest tests/test_benchmarks.py -n 0 --benchmark-enable` (the ratio, in each
benchmark's extra_info, then uses the benchmark's fastest round).

- w2 on 2,000 points: POT's network simplex against scipy's linear_sum_assignment, on samples collapsed near the
  origin as a one-step 1-RF produces them (the case where the assignment solver is slow), same optimum;
- the Frechet distance at d=2,048 against clean-fid's sqrtm route, and with the reference's factor cached against
  without;
- precision/recall at 6,000 x 6,000 x 2,048 against prdc, time and peak memory;
- rfbench.sample against a bare Euler/Heun loop (the harness's overhead).
"""

import contextlib
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize
import scipy.spatial.distance
import torch

from rfbench.metrics import w2
from rfbench.suites import SUITES
from tests.feature_sets import inception_like, prdc_precision_recall


def timed(config) -> bool:
    """Whether the benchmarks are timed (--benchmark-enable overrides the --benchmark-disable of the test run)."""
    return bool(config.getoption("benchmark_enable") or not config.getoption("benchmark_disable"))


def fastest(fn, rounds: int):
    """``fn()``'s answer and the fastest of ``rounds`` calls, in seconds."""
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        answer = fn()
        seconds.append(time.perf_counter() - start)
    return answer, min(seconds)


def against_reference(benchmark, request, ours, reference, rounds: int = 1, reference_rounds: int = 1):
    """Runs ``ours()`` under the benchmark fixture and ``reference()`` beside it; returns both answers and the
    speed-up: the reference's fastest of ``reference_rounds`` calls over ours (the fastest of the benchmark's rounds
    when timed, else of ``rounds`` plain calls after the benchmark's one). The speed-up and both times go into the
    benchmark's extra_info and the test's properties (the junit report)."""
    answer = benchmark(ours)
    ours_s = benchmark.stats.stats.min if benchmark.stats is not None else fastest(ours, rounds)[1]
    expected, reference_s = fastest(reference, reference_rounds)
    ratio = reference_s / ours_s
    for key, value in (("seconds", ours_s), ("reference_seconds", reference_s), ("speedup", ratio)):
        benchmark.extra_info[key] = value
        request.node.user_properties.append((key, value))
    return answer, expected, ratio


def soft_check(ratio: float, at_least: float, what: str) -> None:
    """A speed-up too close to 1 for a hard check on a busy machine: a warning when it falls below ``at_least``."""
    if ratio < at_least:
        warnings.warn(f"{what}: speed-up {ratio:.2f}x, expected at least {at_least}x (a busy machine?)",
                      stacklevel=2)


@pytest.fixture(scope="module")
def clouds():
    rng = np.random.default_rng(0)
    collapsed = 0.3 * rng.standard_normal((2000, 2))
    target = SUITES["toy2d"].problem.reference(2000)[:2000].double().numpy()
    return collapsed, target


def lsa_w2(x, y):
    """W2 from scipy's linear_sum_assignment on the squared distances: the reference optimum."""
    cost = scipy.spatial.distance.cdist(x, y, "sqeuclidean")
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    return math.sqrt(cost[rows, cols].mean())


def test_bench_w2_pot_against_scipy_assignment(benchmark, request, clouds):
    """The same optimum as scipy's assignment solver, several times faster (11.5x in the README)."""
    value, expected, ratio = against_reference(benchmark, request, lambda: w2(*clouds),
                                               lambda: lsa_w2(*clouds))
    assert value == pytest.approx(expected, rel=1e-12)
    assert ratio > 1, f"w2 (POT) {ratio:.2f}x the speed of scipy's linear_sum_assignment"


# -- image metrics: frechet_distance against clean-fid's sqrtm route, and with the reference's factor cached ----------

@pytest.fixture(scope="module")
def stats_2048(request):
    """Statistics of Inception's 2048 dimensions when the benchmarks are timed; with them disabled (the test run)
    768, where clean-fid's sqrtm takes 1 s instead of 30."""
    from rfbench.metrics.image import GaussianStats

    rng = np.random.default_rng(0)
    d = 2048 if timed(request.config) else 768
    mix = rng.standard_normal((d, d)) / math.sqrt(d)
    a = GaussianStats.from_features(rng.standard_normal((4096, d)) @ mix)
    b = GaussianStats.from_features(rng.standard_normal((4096, d)) @ mix * 1.1 + 0.05)
    return a, b


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # clean-fid passes scipy's deprecated disp argument
def test_bench_frechet_distance_against_clean_fid_sqrtm(benchmark, request, stats_2048):
    """The same distance as clean-fid's scipy sqrtm route, several times faster (12x in the README at d=2,048)."""
    from cleanfid.fid import frechet_distance as cleanfid_frechet_distance

    from rfbench.metrics.image import frechet_distance

    a, b = stats_2048
    value, expected, ratio = against_reference(
        benchmark, request, lambda: frechet_distance(a.mu, a.sigma, b.mu, b.sigma),
        lambda: cleanfid_frechet_distance(a.mu, a.sigma, b.mu, b.sigma))
    assert value == pytest.approx(expected, rel=1e-6)
    assert ratio > 1, f"frechet_distance {ratio:.2f}x the speed of clean-fid's sqrtm route"


def test_bench_frechet_distance_with_the_references_factor_cached(benchmark, request, stats_2048):
    """A reference's factor, computed once per reference set and cached on its GaussianStats, leaves one eigvalsh
    per call: the same distance as computing everything anew, faster (a soft check: the factor is about half of
    the work)."""
    from rfbench.metrics.image import GaussianStats, frechet_distance, frechet_distance_stats

    a, b = stats_2048
    cached = GaussianStats(b.mu, b.sigma, b.n)
    cached.factor  # the reference's factor, computed once per reference set
    value, expected, ratio = against_reference(
        benchmark, request, lambda: frechet_distance_stats(a, cached),
        lambda: frechet_distance(a.mu, a.sigma, b.mu, b.sigma), rounds=3, reference_rounds=3)
    assert value == pytest.approx(expected, rel=1e-12)
    soft_check(ratio, 1.0, "frechet_distance_stats with the factor cached against frechet_distance")


# -- precision/recall against prdc (NAVER's reference implementation) on Inception-sized features ---------------------

@pytest.fixture(scope="module")
def pr_2048(request):
    """6,000 x 6,000 x 2,048 when timed (prdc about 10 s on 2 cores); 1,500 in the test run."""
    n = 6000 if timed(request.config) else 1500
    return inception_like(n, 1, np.full(10, 0.1)), inception_like(n, 2, np.r_[np.full(5, 0.15), np.full(5, 0.05)])


def test_bench_precision_recall_against_prdc(benchmark, request, pr_2048):
    """The same precision and recall as prdc, several times faster (4.0x in the README at 6,000 rows)."""
    from rfbench.metrics.image import precision_recall

    value, expected, ratio = against_reference(benchmark, request,
                                               lambda: precision_recall(*pr_2048, k=3, device="cpu"),
                                               lambda: prdc_precision_recall(*pr_2048))
    assert 0.3 < value[0] < 0.9 and 0.3 < value[1] < 0.9      # no degenerate 0 or 1 that any method would get
    assert value == expected
    assert ratio > 1, f"precision_recall {ratio:.2f}x the speed of prdc"


PEAK_RSS = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from tests.feature_sets import inception_like, prdc_precision_recall as _prdc
n = {n}
real = inception_like(n, 1, np.full(10, 0.1))
fake = inception_like(n, 2, np.r_[np.full(5, 0.15), np.full(5, 0.05)])
if {ours}:
    import torch
    from rfbench.metrics.image import precision_recall
    run = lambda real, fake: precision_recall(real, fake, k=3, device="cpu")
else:
    run = _prdc
run(real[:50], fake[:50])     # libraries' code and thread pools in memory: not the call's own cost
def status(field):
    line = next(line for line in open("/proc/self/status") if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as f:   # resets the peak (VmHWM) to the present RSS
    f.write("5")
before = status("VmRSS")
value = run(real, fake)
peak = status("VmHWM")
print(peak - before, peak, value)
"""


def _peak_rss(n: int, ours: bool) -> tuple[int, int, str]:
    """(peak RSS above the process's RSS just before the call, the peak itself, the answer), in a fresh process."""
    import subprocess
    import sys
    from pathlib import Path

    code = PEAK_RSS.format(root=str(Path(__file__).parents[1]), n=n, ours=ours)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(None, 2)
    return int(out[0]), int(out[1]), out[2].strip()


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures peak RSS through Linux's /proc")
def test_precision_recall_needs_at_most_half_of_prdcs_memory(request):
    """Peak memory of the call itself: fresh processes, peak RSS (reset through /proc) above what each held just
    before the call (the inputs, the libraries, warmed up by a call on 50 rows). 6,000 x 6,000 x 2,048 when
    benchmarking (prdc about 0.6 GB), 3,000 in the test run (fewer seconds; prdc's distance matrices still dominate)."""
    n = 6000 if timed(request.config) else 3000
    ours, ours_peak, ours_value = _peak_rss(n, True)
    theirs, theirs_peak, theirs_value = _peak_rss(n, False)
    print(f"\nprecision/recall peak RSS above the inputs, {n} x {n} x 2048: rfbench {ours / 2**20:.0f} MiB, "
          f"prdc {theirs / 2**20:.0f} MiB, ratio {ours / theirs:.2f} (peaks {ours_peak / 2**20:.0f} and "
          f"{theirs_peak / 2**20:.0f} MiB)")
    assert ours_value == theirs_value
    assert ours <= theirs / 2


# -- the harness against a bare loop: rfbench.sample's counting, checks and grids cost next to nothing ----------------

def _bare(net, x0, solver: str, steps: int):
    """Euler or Heun on the uniform grid, written out as a user would, with nothing else."""
    with torch.no_grad():
        x, h = x0.clone(), 1.0 / steps
        for i in range(steps):
            t = torch.full((x.shape[0],), i * h)
            d = net(x, t)
            if solver == "euler":
                x = x + h * d
            else:
                d2 = net(x + h * d, torch.full((x.shape[0],), (i + 1) * h))
                x = x + h * (0.5 * d + 0.5 * d2)
    return x


@pytest.fixture(scope="module")
def harness_models():
    """The toy suites' MLP at batch 2,000 and the digits U-Net at batch 64, on one thread (the runner's choice for
    models this small)."""
    from rfbench.models import MLP, MLPConfig, UNet, UNetConfig

    torch.manual_seed(0)
    mlp = MLP(MLPConfig(hidden=128, depth=4)).eval()
    unet = UNet(UNetConfig()).eval()
    g = torch.Generator().manual_seed(0)
    return {"mlp": (mlp, torch.randn(2000, 2, generator=g)), "unet": (unet, torch.randn(64, 1, 8, 8, generator=g))}


HARNESS = [("mlp", "euler", 16), ("mlp", "heun", 8), ("unet", "euler", 8)]


@pytest.mark.parametrize("model, solver, steps", HARNESS)
def test_bench_harness_rfbench_sample_against_a_bare_loop(benchmark, request, harness_models, model, solver, steps):
    """rfbench.sample does the same arithmetic as the bare loop, step for step, and its counting, checks and grid
    cost next to nothing (within 1% in the README): a soft check, warned below 0.8 (the bare loop at most 25%
    faster), as a few calls of 0.02-0.3 s on a busy machine vary by more than the overhead itself."""
    from rfbench.samplers import sample

    net, x0 = harness_models[model]
    with one_thread():
        sample(net, x0, solver, steps)          # warm-up: first calls allocate
        _bare(net, x0, solver, steps)
        result, expected, ratio = against_reference(benchmark, request, lambda: sample(net, x0, solver, steps).x,
                                                    lambda: _bare(net, x0, solver, steps), rounds=3, reference_rounds=3)
    assert torch.equal(result, expected)
    soft_check(ratio, 0.8, f"rfbench.sample ({model}, {solver}, {steps} steps) against a bare loop")


@contextlib.contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- on a GPU: DDPM++ (the published CIFAR-10 network, 61.8M parameters) per evaluation, in each mode ------------------

DDPMPP_MODES = [("fp32", None, False), ("tf32", None, False), ("bf16", None, True), ("fp16", None, True),
                ("bf16", "default", True), ("bf16", "reduce-overhead", True)]


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [256, 1024, 2048])
@pytest.mark.parametrize("precision, compile_mode, channels_last", DDPMPP_MODES)
def test_bench_ddpmpp_evaluation_on_gpu(benchmark, batch, precision, compile_mode, channels_last):
    """One network evaluation of DDPM++ at ``batch`` 32x32 images: samples/s = batch / the time. Compilation (and
    the CUDA graphs of reduce-overhead) happen in the untimed warm-up, as in a run's."""
    from rfbench.models.ncsnpp import NCSNpp, NCSNppConfig
    from rfbench.models.speed import prepare
    from rfbench.samplers import CountingModel
    from rfbench.samplers.precision import float32_mode

    torch.manual_seed(0)
    net = prepare(NCSNpp(NCSNppConfig()).cuda().eval(), compile_mode=compile_mode, channels_last=channels_last)
    model = CountingModel(net, precision=precision)
    x = torch.randn(batch, 3, 32, 32, device="cuda")
    t = torch.full((batch,), 0.5, device="cuda")

    def evaluate():
        out = model(x, t)
        torch.cuda.synchronize()
        return out

    with torch.no_grad(), float32_mode(precision):
        for _ in range(3):
            evaluate()
        benchmark.extra_info["samples_per_s"] = None
        out = benchmark(evaluate)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    if benchmark.stats is not None:
        benchmark.extra_info["samples_per_s"] = batch / benchmark.stats.stats.median
