"""Generated bad values (hypothesis) thrown at the command line's flags and at the Python API's arguments: whatever
the value, the result is a clean exit (0 for a value that happens to be valid, 2 for bad input) or an rfbench
exception, every error one line, never a traceback, and nothing written anywhere (the runs are dry runs, their
estimate included: it probes the toy MLP's untrained network, about half a second for a valid value)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rfbench.api import input_problems, prepare
from rfbench.registry import UnknownNameError
from rfbench.suites.plan import RunConfig
from tests.test_bad_input_cli import run_cli

FLAGS = ("--suite", "--num-samples", "--batch-size", "--steps", "--solvers", "--models", "--grids",
         "--solver-option", "--first-seed", "--repeats", "--bootstrap", "--device", "--out", "--cache", "--threads",
         "--checkpoint", "--model", "--extractor", "--ref-stats", "--fail-on", "--inception-mode", "--plot-format")

TRICKY = ["", " ", "-", "--", "=", ":", "0", "-1", "1e999", "nan", "inf", "-inf", "auto", "..", ".", "/", "\x00",
          "euler", "euler:", "rtol=", "=1", "rk45:rtol=0", "1-rf=", "1-rf=/", "a:b", "w2:+", "karras:rho=",
          "1.5", "2**64", "18446744073709551617", "toy2d", "NaN=NaN", "é", "%s", "{}"]

values = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12),
                   st.integers(-10**20, 10**20).map(str), st.floats().map(repr))

# one dry run is a few hundred ms; 40 examples keep this under half a minute on the 2-core CI machine
SETTINGS = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """An empty working folder (relative --out values land in it) and an empty cache."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@SETTINGS
@given(flag=st.sampled_from(FLAGS), value=values)
def test_any_value_of_any_flag_is_a_clean_exit_and_writes_nothing(sandbox, flag, value):
    before = _listing(sandbox)
    argv = ["--suite", "toy2d", "--models", "1-rf", "--solvers", "euler", "--dry-run", "--cache", "cache",
            "--quiet", "--no-plots"]
    if flag == "--fail-on":
        argv += ["--check", str(Path(__file__).parent.parent / "results" / "toy2d.csv")]
    code, err, _, _ = run_cli(argv + [flag, value])
    assert code in (0, 2), (flag, value, code, err)
    assert "Traceback" not in err, (flag, value, err)
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 2:
        assert lines and all(": error: " in line or line.startswith(("(see ", "note:", "usage:")) for line in lines), \
            (flag, value, err)
    assert _listing(sandbox) == before, (flag, value, "wrote", _listing(sandbox) - before)


API_ARGS = {
    "num_samples": st.one_of(st.integers(-5, 5), st.floats(), st.text(max_size=5), st.none()),
    "steps": st.one_of(st.integers(-3, 3).map(lambda n: (n,)), st.lists(st.integers(-3, 3), max_size=3).map(tuple),
                       st.text(max_size=5), st.none()),
    "solvers": st.one_of(st.text(max_size=8), st.lists(st.text(max_size=6), max_size=2), st.none(),
                         st.just(["euler"]), st.just([["euler"]])),
    "models": st.one_of(st.text(max_size=8), st.lists(st.sampled_from(["1-rf", "", "x", "ddpm"]), max_size=2),
                        st.none()),
    "batch_size": st.one_of(st.integers(-3, 3), st.sampled_from(["auto", "x", ""]), st.none(), st.floats()),
    "first_seed": st.one_of(st.integers(-3, 3), st.text(max_size=3), st.none(), st.floats()),
    "repeats": st.one_of(st.integers(-2, 3), st.none(), st.text(max_size=3)),
    "bootstrap": st.one_of(st.integers(-2, 3), st.none(), st.text(max_size=3)),
    "threads": st.one_of(st.integers(-2, 3), st.none(), st.text(max_size=3), st.booleans()),
    "device": st.one_of(st.sampled_from(["cpu", "cuda", "tpu", "", "cuda:9", "auto"]), st.none()),
    "grids": st.one_of(st.lists(st.sampled_from(["uniform", "karras", "x", ""]), max_size=2), st.none(),
                       st.text(max_size=4)),
    "solver_options": st.one_of(st.dictionaries(st.sampled_from(["rtol", "eta", "x"]),
                                                st.one_of(st.floats(), st.text(max_size=3), st.integers(-2, 2)),
                                                max_size=2), st.text(max_size=8), st.none()),
}


@SETTINGS
@given(args=st.fixed_dictionaries({}, optional=API_ARGS))
def test_any_api_argument_is_accepted_or_an_rfbench_error_in_one_line(args):
    before = _working_runs()
    try:
        config = RunConfig(**args)
        plan, _ = prepare("toy2d", config)
        input_problems(plan, config)
    except (ValueError, TypeError, UnknownNameError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        assert message and "\n" not in str(message), (args, message)
    assert _working_runs() == before, "the API wrote into the working folder"


def _working_runs() -> tuple[bool, set[str]]:
    """Whether the working folder's runs/ exists and what it holds: the README's main command, run in this checkout
    before the tests, leaves runs/toy2d there."""
    return os.path.exists("runs"), _listing(Path("runs"))
