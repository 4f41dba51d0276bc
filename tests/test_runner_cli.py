"""The sweep runner and the command line, with stand-in baselines that need no training."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from rfbench.cli import main
from rfbench.models import MLP, MLPConfig
from rfbench.models.sources import Recipe
from rfbench.progress import ADAPTIVE_NFE_GUESS, Progress
from rfbench.results import ResultStore
from rfbench.suites import SUITES, Cell, SuiteModel, runner
from rfbench.suites.runner import run_suite
from rfbench.training import TrainConfig, fit, independent_pairs, rectified_flow_loss, seeded_init
from tests.standins import registered, standin

REQUIRED_COLUMNS = ("suite", "model", "solver", "steps", "nfe", "n_samples", "seed", "wall_clock_s",
                    "samples_per_s", "crossing_prob", "transport_cost", "straightness", "w2", "device",
                    "torch_version", "git_commit")


class ShiftFlow:
    """A constant velocity: moves every point by the mean of the target (a crude but finite model)."""

    input_shape = (2,)

    def __call__(self, x, t):
        return torch.full_like(x, 0.5)


class NaNFlow:
    input_shape = (2,)

    def __call__(self, x, t):
        return torch.full_like(x, float("nan"))


def broken():
    raise FileNotFoundError("weights file /nowhere/model.pt not found")


@pytest.fixture
def stand_in_suite():
    suite = standin("toy2d", "toy2d-standin", {"shift": ShiftFlow(), "nan": NaNFlow(), "broken": broken},
                    cells=(Cell("shift", "euler", 2), Cell("shift", "rk45"), Cell("nan", "euler", 4),
                           Cell("nan", "rk45"), Cell("shift", "heun", 3), Cell("broken", "euler", 1)),
                    num_samples=300)
    with registered(suite):
        yield suite


def test_a_sweep_records_failures_and_goes_on(stand_in_suite, tmp_path):
    out = run_suite(stand_in_suite, tmp_path / "run", device="cpu", cache_dir=tmp_path / "cache", progress=False,
                    log=lambda msg: None)
    frame = out.frame
    assert list(frame["model"]) == ["independent", "shift", "shift", "shift", "nan", "nan", "broken"]  # by model
    for col in REQUIRED_COLUMNS:
        assert col in frame.columns, col
    ok = frame[frame["status"] == "ok"]
    assert set(ok["model"]) == {"independent", "shift"}
    nan_rows = frame[frame["model"] == "nan"]
    assert (nan_rows["status"] == "failed").all()
    assert nan_rows["error"].str.contains("NonFiniteError").all()
    assert nan_rows["w2"].isna().all()                     # no number for a failed cell
    broken = frame[frame["model"] == "broken"].iloc[0]
    assert broken["status"] == "failed" and "/nowhere/model.pt" in broken["error"]
    shift = frame[(frame["model"] == "shift") & (frame["solver"] == "euler")].iloc[0]
    assert shift["nfe"] == 2 and shift["n_samples"] == 300 and shift["seed"] == 0
    assert shift["transport_cost"] == pytest.approx(0.5, rel=1e-5)   # every point moved by (0.5, 0.5)
    assert shift["straightness"] == pytest.approx(0.0, abs=1e-10)     # a constant velocity is straight
    assert shift["model_metrics_solver"] == "rk4/100"
    assert frame.loc[frame["model"] == "independent", "nfe"].iloc[0] == 0
    # everything on disk: the CSV, the Markdown table, one JSON per cell
    csv = pd.read_csv(tmp_path / "run" / "results.csv")
    assert len(csv) == len(frame) == len(ResultStore(tmp_path / "run").load())
    md = (tmp_path / "run" / "results.md").read_text()
    assert "| model" in md and "nan" in md and "failed" in md
    assert (tmp_path / "run" / "w2_vs_nfe.png").stat().st_size > 0
    assert (tmp_path / "run" / "trajectories.png").stat().st_size > 0


def test_cli_exits_non_zero_when_a_cell_failed(stand_in_suite, tmp_path, capsys):
    code = main(["--suite", "toy2d-standin", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
                 "--models", "shift", "nan", "--quiet", "--no-plots", "--num-samples", "200"])
    assert code == 1
    err = capsys.readouterr().err
    assert "2 of 6 cell(s) failed (nan): NonFiniteError: euler (steps=4) produced non-finite samples" in err
    assert "200 samples per cell, fewer than the suite's default 300" in err
    assert len(pd.read_csv(tmp_path / "out" / "results.csv")) == 6


def test_cli_list_and_dry_run(capsys):
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert "toy2d" in listed and "toy2d-transfer" in listed and "rk45" in listed and "ddim" in listed
    assert main(["--suite", "toy2d", "--dry-run", "--models", "2-rf", "--solvers", "euler", "--device", "cpu"]) == 0
    cells = capsys.readouterr().out
    assert "2-rf/euler/1" in cells and "2-rf/euler/32" in cells and "heun" not in cells


@pytest.mark.parametrize("argv,message", [
    (["--suite", "toy2", "--dry-run"], "Unknown suite 'toy2'. Did you mean: toy2d"),
    (["--num-samples", "1", "--dry-run"], "--num-samples must be >= 2, got 1"),
    (["--models", "4-rf", "--dry-run"], "suite toy2d has no model '4-rf'"),
    (["--solvers", "rk23", "--dry-run"], "Unknown solver 'rk23'. Did you mean: rk4, rk45"),
    (["--models", "2-rf-distill", "--solvers", "rk45", "--dry-run"], "nothing to run"),
    (["--model", "x=/nowhere/f.pt", "--dry-run"], "'/nowhere/f.pt' is neither an existing file or folder nor "
                                                  "package.module:function"),
    (["--model", "x:nope=f.pt", "--dry-run"], "KIND must be one of flow, one-step, diffusion, vp, subvp"),
    (["--plugin", "/nowhere/plugin.py", "--dry-run"], "--plugin /nowhere/plugin.py: no such file"),
    (["--plugin", "no_such_module_xyz", "--dry-run"], "no module named 'no_such_module_xyz'"),
    (["--models", "2-rf-distill", "--steps", "4", "--dry-run"], "--steps applies to fixed-grid and discrete"),
    (["--device", "tpu7", "--dry-run"], "is not a torch device"),
    (["--inception-weights", "x.pt", "--dry-run"], "apply to suites scored with the inception extractor; suite "
                                                   "toy2d uses no extractor"),
    (["--suite", "digits", "--inception-mode", "clean", "--dry-run"], "suite digits uses digits"),
])
def test_cli_bad_arguments_exit_with_one_clear_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when CUDA is missing")
def test_cli_cuda_without_a_gpu(capsys):
    with pytest.raises(SystemExit):
        main(["--device", "cuda", "--dry-run"])
    assert "CUDA is not available" in capsys.readouterr().err


def test_a_run_naming_an_unknown_model_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="suite toy2d has no model '1-fr' and no model of that name is registered"):
        run_suite(SUITES["toy2d"], tmp_path / "out", device="cpu", cache_dir=tmp_path / "cache", progress=False,
                  models=("1-rf", "1-fr"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="cell 1-fr/euler/1 names model '1-fr', not one of the suite's models"):
        dataclasses.replace(SUITES["toy2d"], cells=(Cell("1-fr", "euler", 1),))


class SleepyFlow:
    """A constant velocity whose evaluations of a 50-row batch sleep for given durations: the two warm-up calls, then
    one per timed run (one Euler step, one batch). The straightness trajectory (10 rows) does not sleep."""

    input_shape = (2,)

    def __init__(self, sleeps):
        self.sleeps = list(sleeps)

    def __call__(self, x, t):
        import time
        if x.shape[0] == 50:
            time.sleep(self.sleeps.pop(0) if self.sleeps else 0.0)
        return torch.full_like(x, 0.5)


def test_wall_clock_is_the_median_of_timed_runs_after_an_untimed_warm_up(tmp_path):
    flow = SleepyFlow([1.0, 1.0, 0.6, 0.0, 0.2])      # warm-up 2 x 1 s (untimed), then runs of 0.6, 0, 0.2 s
    suite = standin("toy2d", "toy2d-timing", {"sleepy": flow}, cells=(Cell("sleepy", "euler", 1),), num_samples=50,
                    metrics=("transport_cost",), quality_metric="transport_cost", independent_row=False,
                    straightness_samples=10)
    frame = run_suite(suite, tmp_path / "run", device="cpu", cache_dir=tmp_path / "cache", progress=False,
                      plots=False, log=lambda msg: None, repeats=3).frame
    row = frame.iloc[0]
    assert 0.2 <= row["wall_clock_s"] < 0.55                 # the median run, not the first or the warm-up
    assert row["samples_per_s"] == pytest.approx(50 / row["wall_clock_s"])
    assert 200 <= row["ms_per_nfe"] < 550                    # median over (run, batch) of ms / the batch's NFE
    assert row["timing"] == "warmup=2nfe,repeats=3,repeat_noise=fresh,processes=1"
    assert row["transport_cost"] == pytest.approx(0.5, rel=1e-5) and not flow.sleeps


class RecordingFlow:
    """v = -x / 2, keeping the x0 of every sampler run on the cell's 50 rows: the input of its call at t = 0 (the
    warm-up evaluates at t = 0.5, the straightness trajectory 10 rows)."""

    input_shape = (2,)

    def __init__(self):
        self.seen = []

    def __call__(self, x, t):
        if x.shape[0] == 50 and float(t[0]) == 0.0:
            self.seen.append(x.clone())
        return -0.5 * x


@pytest.fixture
def memo_euler():
    """A solver that remembers its samples by (steps, jitter, x0) and answers a repeated input from memory (with
    the declared evaluations made anyway): the adversarial plugin of a timing that repeats the first run's x0.
    With jitter > 0 it is stochastic (x += jitter * noise(i) per step) and keeps the step noise it was given."""
    import rfbench
    from rfbench.samplers import SOLVERS

    seen = {"hits": 0, "noise": []}
    memory = {}

    @rfbench.register_solver("memo-euler", "fixed", expected_nfe=lambda n: n,
                             stochastic=lambda options: options.get("jitter", 0.0) > 0)
    def memo(model, x, *, times, callback=None, noise=None, jitter: float = 0.0):
        key = (len(times), jitter, x.cpu().numpy().tobytes())
        if key in memory:
            seen["hits"] += 1
            for t in times[:-1]:
                model(x, float(t))
            return memory[key].clone(), {}
        out = x
        for i, (t_cur, t_next) in enumerate(zip(times[:-1], times[1:])):
            out = out + (t_next - t_cur) * model(out, float(t_cur))
            if noise is not None:
                z = noise(i)
                if i == 0:
                    seen["noise"].append(z.clone())
                out = out + jitter * z
        memory[key] = out.clone()
        return out, {}

    try:
        yield seen
    finally:
        SOLVERS.remove("memo-euler")


def test_timed_repeats_sample_fresh_noise_and_the_cell_keeps_the_first_runs_samples(memo_euler, tmp_path):
    from rfbench import noise
    flow = RecordingFlow()
    cells = (Cell("rec", "memo-euler", 2), Cell("rec", "memo-euler", 2, (("jitter", 0.1),)), Cell("rec", "euler", 2))
    suite = standin("toy2d", "toy2d-repeats", {"rec": flow}, cells=cells, num_samples=50,
                    metrics=("transport_cost",), quality_metric="transport_cost", independent_row=False,
                    straightness_samples=10)

    def run(name: str, repeats: int) -> pd.DataFrame:
        return run_suite(suite, tmp_path / name, device="cpu", cache_dir=tmp_path / "cache", progress=False,
                         plots=False, log=lambda msg: None, repeats=repeats).frame

    three = run("three", 3)
    assert (three["status"] == "ok").all(), three["error"].tolist()
    assert memo_euler["hits"] == 0        # no run of any cell saw an input it had seen before
    seeds = list(range(50))
    x0 = suite.problem.initial(seeds)
    assert len(flow.seen) == 3 * len(cells)
    for i, cell in enumerate(cells):      # the first run on the suite's x0, each later one on its own fresh noise
        first, *later = flow.seen[3 * i:3 * i + 3]
        assert torch.equal(first, x0)
        for run_index, x in enumerate(later, start=1):
            fresh = noise.repeat_seeds(seeds, run_index, cell.label)
            assert torch.equal(x, suite.problem.initial(fresh)), (cell.label, run_index)
            assert not (x == x0).all(dim=1).any()
    # the stochastic cell's step noise: the suite's seeds first, then the fresh seeds of each later run
    steps = memo_euler["noise"]
    assert len(steps) == 3 and torch.equal(steps[0], noise.StepNoise(seeds, (2,))(0))
    for run_index in (1, 2):
        fresh = noise.repeat_seeds(seeds, run_index, cells[1].label)
        assert torch.equal(steps[run_index], noise.StepNoise(fresh, (2,))(0))
    assert (three["timing"] == "warmup=2nfe,repeats=3,repeat_noise=fresh,processes=1").all()
    one = run("one", 1)                   # the cell's samples are the first run's: every number as with one run
    for col in ("nfe", "transport_cost", "transport_cost_se"):
        pd.testing.assert_series_equal(three[col], one[col], check_exact=True)
    assert (one["timing"] == "warmup=2nfe,repeats=1,processes=1").all()     # one run: timed as it always was


def test_cli_repeats_batch_size_and_fewer_samples_are_recorded(stand_in_suite, tmp_path, capsys):
    code = main(["--suite", "toy2d-standin", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
                 "--models", "shift", "--quiet", "--no-plots", "--num-samples", "120", "--repeats", "2",
                 "--batch-size", "auto", "--device", "cpu"])
    assert code == 0
    frame = pd.read_csv(tmp_path / "out" / "results.csv")
    sampled = frame[frame["model"] == "shift"]
    assert sampled["timing"].str.contains("repeats=2").all() and sampled["ms_per_nfe"].notna().all()
    # every row says its sample count is below the suite's default, so it is not mistaken for a comparable one
    assert frame["notes"].str.contains("120 samples, fewer than the suite's default 300: not comparable").all()
    for bad in ("0", "many"):
        with pytest.raises(SystemExit):
            main(["--suite", "toy2d-standin", "--batch-size", bad, "--dry-run"])
        assert f"--batch-size takes an integer >= 1 or auto, got '{bad}'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--suite", "toy2d-standin", "--repeats", "0", "--dry-run"])
    assert "--repeats must be >= 1, got 0" in capsys.readouterr().err


def _dry_cells(text: str) -> dict[str, tuple[str, str]]:
    """A dry run's cell lines: label -> (NFE, kept or to compute)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("    ") and "/" in parts[0] and parts[1] == "NFE":
            out[parts[0]] = (parts[2], " ".join(parts[3:5]) if parts[3] == "to" else parts[3])
    return out


def test_dry_run_honours_resume_lists_the_independent_row_and_estimates(stand_in_suite, tmp_path, capsys):
    out, cache = str(tmp_path / "out"), str(tmp_path / "cache")
    common = ["--suite", "toy2d-standin", "--out", out, "--cache", cache, "--models", "shift", "--device", "cpu"]
    assert main(common + ["--dry-run"]) == 0
    before = capsys.readouterr().out
    assert "independent row (the independent coupling, real data against real data): to compute" in before
    assert _dry_cells(before) == {"shift/euler/2": ("2", "to compute"), "shift/rk45/adaptive": ("~200", "to compute"),
                                  "shift/heun/3": ("6", "to compute")}      # adaptive: rk45's usual NFE before a run
    assert "3 cell(s) to compute, 62.4k sample-evaluations" in before   # (2 + 6 + 200) x 300
    assert "sampling about" in before and "a probe" in before and "1 adaptive cell(s) counted at ~200" in before
    assert not (tmp_path / "out").exists()                 # a dry run writes nothing
    assert main(common + ["--quiet", "--no-plots"]) == 0
    capsys.readouterr()
    assert main(common + ["--dry-run", "--steps", "2", "5"]) == 0
    after = capsys.readouterr().out
    cells = _dry_cells(after)
    assert "resume: 2 of 5 cells are finished" in after     # euler/2 and rk45 kept; euler/5, heun/2 and /5 new
    assert "independent row (the independent coupling, real data against real data): kept" in after
    assert cells["shift/euler/2"] == ("2", "kept") and cells["shift/euler/5"] == ("5", "to compute")
    assert cells["shift/heun/2"] == ("4", "to compute") and cells["shift/heun/5"] == ("10", "to compute")
    assert cells["shift/rk45/adaptive"][1] == "kept"
    assert not cells["shift/rk45/adaptive"][0].startswith("~")   # the earlier run's NFE
    assert "earlier cell(s) in" in after                   # times from the run's own cells, not a probe
    assert main(common + ["--dry-run", "--force"]) == 0
    assert "resume:" not in capsys.readouterr().out


def test_solver_options_and_cell_origins(stand_in_suite, tmp_path, capsys):
    from rfbench.suites.options import parse_solver_options
    from rfbench.suites.plan import RunConfig, make_plan
    assert parse_solver_options(["rtol=1e-4", "unipc:order=3", "rk45:atol=1e-5", "x=true", "y=abc"]) == (
        (None, "rtol", 1e-4), ("unipc", "order", 3), ("rk45", "atol", 1e-5), (None, "x", True), (None, "y", "abc"))
    assert parse_solver_options({"rtol": 1e-4, "unipc": {"order": 3}}) == ((None, "rtol", 1e-4),
                                                                           ("unipc", "order", 3))
    suite = SUITES["toy2d-standin"]
    plan = make_plan(suite, RunConfig(models=("shift",), solver_options=("rtol=1e-4",)))
    cells = {c.label: c for c in plan.cells}
    assert "shift/rk45/adaptive,rtol=0.0001" in cells and "shift/euler/2" in cells
    assert cells["shift/euler/2"].origin == "suite"
    assert cells["shift/rk45/adaptive,rtol=0.0001"].origin == "run (--solver-option rtol=0.0001)"
    plan = make_plan(suite, RunConfig(models=("shift",), steps=(2, 8)))
    origins = {c.label: c.origin for c in plan.cells}
    assert origins["shift/euler/2"] == "suite" and origins["shift/euler/8"] == "run (--steps 2 8)"
    assert origins["shift/rk45/adaptive"] == "suite"
    for options, message in [(("rtol=1e-4",), "no solver of this run (euler) takes 'rtol'; solvers that take 'rtol': "
                                              "dopri5, rk45 (add one with --solvers)"),
                             (("euler:rtol=1",), "euler takes no option 'rtol' (it takes: none)"),
                             (("rtol",), "--solver-option takes KEY=VALUE or SOLVER:KEY=VALUE"),
                             (("rk23:rtol=1",), "Unknown solver 'rk23'")]:
        with pytest.raises(ValueError, match=None) as exc:
            make_plan(suite, RunConfig(models=("shift",), solvers=("euler",), solver_options=options))
        assert message in str(exc.value)
    code = main(["--suite", "toy2d-standin", "--out", str(tmp_path / "o"), "--cache", str(tmp_path / "c"),
                 "--models", "shift", "--solvers", "rk45", "--solver-option", "rtol=1e-3", "--solver-option",
                 "atol=1e-3", "--quiet", "--no-plots", "--device", "cpu"])
    assert code == 0
    row = pd.read_csv(tmp_path / "o" / "results.csv").set_index("model").loc["shift"]
    assert row["options"] == "rtol=0.001,atol=0.001"
    assert row["cell_origin"] == "run (--solvers rk45; --solver-option rtol=0.001; --solver-option atol=0.001)"


def test_argument_errors_are_one_line_and_help_lists_subcommands(capsys, monkeypatch):
    from rfbench.cli import program_name
    with pytest.raises(SystemExit) as exc:
        main(["--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["benchmark.py: error: unrecognized arguments: --bogus", "(see benchmark.py --help)"]
    with pytest.raises(SystemExit):
        main(["table"])
    assert capsys.readouterr().err.splitlines()[-1] == "(see benchmark.py table --help)"
    assert program_name("/venv/bin/rfbench") == "rfbench" and program_name("benchmark.py") == "benchmark.py"
    monkeypatch.setattr("sys.argv", ["/venv/bin/rfbench", "--help"])
    with pytest.raises(SystemExit):
        main()
    text = capsys.readouterr().out
    assert text.startswith("usage: rfbench ") and "rfbench table RESULTS" not in text
    for command in ("table RESULTS", "spread RUN RUN", "score SAMPLES"):
        assert command in text
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("rfbench ")


TINY_TRAIN = TrainConfig(steps=20, batch_size=32, lr=1e-2, seed=0)


class TinyRecipe(Recipe):
    """A flow rfbench trains (20 steps of an MLP 16x2) and caches, reporting its training as a recipe should."""

    kind = "flow"

    def spec(self) -> dict:
        return {"family": "test-tiny", "train": dataclasses.asdict(TINY_TRAIN)}

    def input_shape(self, suite) -> tuple[int, ...]:
        return (2,)

    def load(self, ctx):
        target = torch.randn(256, 2, generator=torch.Generator().manual_seed(1)) + 2

        def train():
            net = seeded_init(lambda: MLP(MLPConfig(hidden=16, depth=2)), TINY_TRAIN.seed)
            with ctx.cache.progress.training("tiny", TINY_TRAIN) as job:
                net, history = fit(net, rectified_flow_loss(independent_pairs(
                    lambda g, n: torch.randn((n, 2), generator=g), target)), TINY_TRAIN, ctx.device, progress=job)
            return net, {"final_loss": history[-1]}
        return ctx.cache.network("tiny", self.spec(), lambda: MLP(MLPConfig(hidden=16, depth=2)), train, ctx.device)


class Bars:
    """Stands in for tqdm in the runner: keeps every bar made, with its total, count and postfixes."""

    def __init__(self):
        self.made = []

    def __call__(self, **kwargs):
        bars = self

        class Bar:
            def __init__(self):
                self.total, self.n, self.postfix, self.kwargs = kwargs["total"], 0, [], kwargs
                bars.made.append(self)

            def update(self, n):
                self.n += n

            def set_postfix_str(self, text, refresh=True):
                self.postfix.append(text)

            def close(self):
                pass
        return Bar()


def test_the_sweep_bar_counts_model_evaluations_of_training_references_and_cells_but_not_resumed_ones(
        tmp_path, monkeypatch):
    bars = Bars()
    monkeypatch.setattr(runner, "tqdm", bars)
    cells = (Cell("tiny", "euler", 2), Cell("tiny", "rk45"), Cell("tiny", "heun", 3))
    suite = dataclasses.replace(SUITES["toy2d"], name="toy2d-work", models=(SuiteModel("tiny", TinyRecipe()),),
                                cells=cells, num_samples=40, metrics=("w2",), independent_row=False,
                                straightness_samples=10)

    def run(cells, cache: str, progress: bool = True):
        lines: list[str] = []
        out = run_suite(dataclasses.replace(suite, cells=cells), tmp_path / cache, device="cpu", repeats=2,
                        cache_dir=tmp_path / cache / "cache", progress=progress, plots=False, log=lines.append)
        return out, bars.made[-1], lines

    out, bar, lines = run(cells, "a")
    rk45 = out.frame.set_index("solver").loc["rk45", "nfe"]
    # training: 20 steps x 3 x batch 32; the straightness trajectory (drawn, 2D): rk4 100 steps on 10 rows;
    # euler 2 and heun 3 (6 NFE) on 40 samples, 2 timed runs each; rk45 as measured, first estimated and corrected
    assert bar.total == pytest.approx(20 * 3 * 32 + 4 * 100 * 10 + (2 + 6 + rk45) * 40 * 2)
    assert bar.n == pytest.approx(bar.total) and bar.kwargs["unit"] == "NFE"
    assert "training tiny" in bar.postfix and "tiny/rk45/adaptive" in bar.postfix
    steps = [line for line in lines if line.startswith("training tiny: step ")]
    assert [line.split()[3] for line in steps] == [f"{2 * k}/20" for k in range(1, 11)]     # every 10%
    assert all("loss " in line and "elapsed" in line for line in steps) and "ETA" in steps[0]
    timings = out.timings
    assert set(timings) == set(runner.TIMINGS) == {"training", "sampling", "metrics", "total"}
    assert min(timings.values()) >= 0
    assert timings["training"] + timings["sampling"] + timings["metrics"] <= timings["total"]

    # a rerun with one more cell: the model is loaded (not trained), the finished cells are kept, not counted
    _, bar, lines = run(cells + (Cell("tiny", "euler", 4),), "a")
    assert bar.total == bar.n == 4 * 100 * 10 + 4 * 40 * 2
    assert not any(line.startswith("training tiny: step") for line in lines)
    _, bar, _ = run(cells, "a")                   # every cell kept: the model is not even loaded
    assert bar.total == bar.n == 0

    _, _, lines = run(cells, "quiet", progress=False)     # trained, but quietly: no step lines
    assert any(line.startswith("trained tiny") for line in lines)
    assert not any(line.startswith("training tiny: step") for line in lines)


def test_adaptive_work_is_estimated_then_corrected_as_it_is_measured():
    shown = Progress()
    shown.expect("a/euler/4", 4 * 10)
    shown.expect("a/rk45", adaptive="rk45", rows=10)
    shown.expect("b/rk45", adaptive="rk45", rows=20)
    assert shown.total == 40 + ADAPTIVE_NFE_GUESS * 30 and shown.done == 0
    shown.finish("a/rk45", 50 * 10)           # measured: 50 NFE, so b's rk45 is now expected to take 50 too
    assert shown.total == 40 + 500 + 50 * 20 and shown.done == 500
    shown.finish("a/euler/4", None)           # failed: its work leaves the total
    shown.finish("b/rk45", 60 * 20)
    assert shown.total == shown.done == 500 + 1200
    with shown.training("net", TrainConfig(steps=10, batch_size=8)) as job:
        job(4)                                # stopped after 4 of 10 steps (an error): the rest leaves the total
    assert shown.total == shown.done == 1700 + 4 * 3 * 8


def test_a_run_ends_with_a_summary_of_cells_failures_time_and_files(stand_in_suite, tmp_path, capsys):
    argv = ["--suite", "toy2d-standin", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
            "--no-plots", "--device", "cpu"]
    assert main(argv + ["--models", "shift", "nan"]) == 1
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("toy2d-standin: 5 cells, 3 ok, 2 failed (1 x NonFiniteError: euler (steps=4) produced "
                              "non-finite samples")
    assert "; 1 x " in summary and ". Time " in summary
    assert summary.endswith(f"Results: {tmp_path / 'out' / 'results.csv'} (rfbench table {tmp_path / 'out'} for a "
                            f"paper table).")
    assert main(argv + ["--models", "shift"]) == 0
    again = capsys.readouterr().out.strip().splitlines()[-1]
    assert again.startswith("toy2d-standin: 3 cells, 3 ok (3 kept from an earlier run in this folder). Time ")


def test_the_dry_run_predicts_what_the_run_trains_and_keeps(tmp_path):
    from rfbench.suites.estimate import describe, estimate
    from rfbench.suites.plan import RunConfig, make_plan
    cells = (Cell("tiny", "euler", 2), Cell("tiny", "rk45"))
    suite = dataclasses.replace(SUITES["toy2d"], name="toy2d-plan", models=(SuiteModel("tiny", TinyRecipe()),),
                                cells=cells, num_samples=40, metrics=("w2", "solver_error"), independent_row=False,
                                repeats=1)
    plan = make_plan(suite, RunConfig(cache_dir=str(tmp_path / "a")))
    cold = estimate(plan, tmp_path / "out", torch.device("cpu"))
    (model,) = cold.models
    assert [(job.name, job.steps, job.batch_size) for job in model.training] == [("tiny", 20, 32)]
    assert model.seconds_per_train_step[32] > 0 and "to train: tiny (20 steps of 32)" in describe(cold)
    out = run_suite(suite, tmp_path / "out", device="cpu", cache_dir=tmp_path / "a", progress=False, plots=False,
                    log=lambda msg: None)
    assert out.trained == ["tiny"]
    # the same folder with an empty cache: every cell is kept, so the run would not even load (or train) the model
    warm = estimate(make_plan(suite, RunConfig(cache_dir=str(tmp_path / "b"))), tmp_path / "out", torch.device("cpu"))
    assert all(c.kept for c in warm.models[0].cells) and warm.models[0].training == []
    assert "nothing to compute" in describe(warm)
    # a cell whose solver_error was left empty by a failed reference solution is computed again: not kept
    store = ResultStore(tmp_path / "out")
    key, record = next((k, r) for k, r in store.records().items() if r["solver"] == "rk45")
    store.write({**record, "solver_error": None}, key=key)
    again = estimate(make_plan(suite, RunConfig(cache_dir=str(tmp_path / "a"))), tmp_path / "out", torch.device("cpu"))
    assert again.models[0].training == []      # a plan made once the model is cached trains nothing
    assert {c.cell.label: c.kept for c in again.models[0].cells} == {"tiny/euler/2": True, "tiny/rk45/adaptive": False}
    rerun = run_suite(suite, tmp_path / "out", device="cpu", cache_dir=tmp_path / "a", progress=False, plots=False,
                      log=lambda msg: None)
    assert rerun.kept == ["tiny/euler/2"]


def test_the_dry_run_probes_a_model_on_the_threads_the_run_samples_it_on(tmp_path):
    """The probe behind --dry-run's estimate runs where the run will: a small model on one CPU thread (or --threads),
    whatever torch's thread count is when the estimate is made."""
    from rfbench.suites.estimate import estimate
    from rfbench.suites.plan import RunConfig, make_plan
    seen = []

    class Counting(ShiftFlow):
        def __call__(self, x, t):
            seen.append(torch.get_num_threads())
            return super().__call__(x, t)
    suite = standin("toy2d", "toy2d-probe", {"shift": Counting()}, (Cell("shift", "euler", 2),), num_samples=40,
                    metrics=("w2",), independent_row=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for threads, expected in ((None, 1), (2, 2)):
            seen.clear()
            estimate(make_plan(suite, RunConfig(threads=threads, cache_dir=str(tmp_path))), tmp_path / "out",
                     torch.device("cpu"))
            assert seen and set(seen) == {expected}, (threads, seen)
            assert torch.get_num_threads() == 2       # restored after the probe
    finally:
        torch.set_num_threads(before)


def test_solver_options_name_one_cell_however_they_are_spelled(stand_in_suite):
    from rfbench.suites.plan import RunConfig, make_plan
    suite = SUITES["toy2d-standin"]

    def cells(*options, solvers=("euler", "rk45")):
        plan = make_plan(suite, RunConfig(models=("shift",), solvers=solvers, solver_options=options))
        return {c.label: c.origin for c in plan.cells}

    def labels(*options):
        return set(cells(*options))
    # the default value is the suite's own cell; int and float spellings of a float option are one cell
    assert cells("rtol=1e-5")["shift/rk45/adaptive"] == "suite"
    assert "shift/rk45/adaptive,rtol=0.0001" in labels("rtol=0.0001") and \
        labels("rtol=1e-4") == labels("rtol=0.0001")
    # the order of the options does not change the cell; one solver's own option wins over the same for all
    assert labels("rk45:atol=1e-4", "rk45:rtol=1e-4") == labels("rk45:rtol=1e-4", "rk45:atol=1e-4")
    assert "shift/rk45/adaptive,rtol=0.001,atol=0.0001" in labels("rk45:atol=1e-4", "rk45:rtol=1e-3")
    assert "shift/rk45/adaptive,rtol=0.01" in labels("rk45:rtol=1e-2", "rtol=1e-3") == labels("rtol=1e-3",
                                                                                               "rk45:rtol=1e-2")
    for options, message in [(("rtol=1e-4", "rtol=1e-3"), "--solver-option rtol given twice"),
                             (("rtol=abc",), "rk45 option rtol must be a number in (0, 1), got 'abc'"),
                             (("rtol=nan",), "rk45 option rtol must be a number in (0, 1), got nan")]:
        with pytest.raises(ValueError) as exc:
            labels(*options)
        assert message in str(exc.value)


def test_the_bar_expects_a_cells_nfe_for_its_model_once_loaded(tmp_path, monkeypatch):
    """edm-heun takes 2N + 1 evaluations on a DDPM (its path ends short of sigma = 0), 2N - 1 on a flow: the bar
    expects the right one as soon as the model is loaded, not only when the cell has run."""
    from rfbench.models import DiffusionModel, linear_betas
    from rfbench.progress import Progress
    finished: dict[str, tuple[float, float]] = {}

    class Ledger(Progress):
        def finish(self, key, work):
            finished[key] = (self.pending.get(key, (0.0,))[0], work)
            super().finish(key, work)
    monkeypatch.setattr(runner, "Progress", Ledger)
    ddpm = DiffusionModel(lambda x, t: 0.1 * x, linear_betas(100))
    suite = standin("toy2d", "toy2d-nfe", {"ddpm": (ddpm, "diffusion"), "shift": ShiftFlow()},
                    cells=(Cell("ddpm", "edm-heun", 3), Cell("shift", "edm-heun", 3)), num_samples=50,
                    metrics=("w2",), independent_row=False)
    with registered(suite):
        out = run_suite(suite, tmp_path / "out", device="cpu", cache_dir=tmp_path / "cache", progress=True,
                        plots=False, log=lambda msg: None)
    assert list(out.frame["nfe"]) == [7, 5]
    assert finished["ddpm/edm-heun/3"] == (7 * 50, 7 * 50) and finished["shift/edm-heun/3"] == (5 * 50, 5 * 50)
