"""The bad-input catalogue of the command line: every mistake a user can make on a flag, a file or a folder is one
line naming the thing, the value and what is allowed, before any work (nothing trained, sampled or written), with
exit status 2; never a traceback. Each case is one kind of mistake; `python -m tests.test_bad_input_cli` prints the
catalogue's verdicts (the count that goes into the issue note)."""

from __future__ import annotations

import contextlib
import io
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rfbench.cli import main
from rfbench.models import MLP, MLPConfig, network_spec, save_checkpoint
from rfbench.models.sources import Recipe

TOY_NET = MLPConfig(dim=2, hidden=16, depth=2, time_features=4)


def make_files(root: Path) -> dict[str, Path]:
    """The files the catalogue's cases point at, written in their real formats."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["garbage"] = root / "garbage.pt"
    files["garbage"].write_bytes(b"\x00\x01not a checkpoint at all\xff" * 40)
    files["empty"] = root / "empty.pt"
    files["empty"].write_bytes(b"")
    net = MLP(TOY_NET)
    problem = {"kind": "toy2d"}
    files["ddpm"] = root / "ddpm.pt"
    save_checkpoint(files["ddpm"], net, {"family": "ddpm", "model": "ddpm", "num_timesteps": 1000,
                                         "beta_start": 1e-4, "beta_end": 0.02, "net": network_spec(TOY_NET),
                                         "problem": problem})
    files["2-rf"] = root / "2-rf.pt"
    save_checkpoint(files["2-rf"], net, {"family": "rectified_flow", "model": "2-rf", "net": network_spec(TOY_NET)})
    files["misfit"] = root / "misfit.pt"       # its config says hidden=16, its weights are of hidden=8
    save_checkpoint(files["misfit"], MLP(MLPConfig(dim=2, hidden=8, depth=2, time_features=4)),
                    {"family": "rectified_flow", "model": "1-rf", "net": network_spec(TOY_NET)})
    files["truncated"] = root / "truncated.pt"
    files["truncated"].write_bytes(files["2-rf"].read_bytes()[:300])
    files["pickled"] = root / "pickled.pt"     # a whole module pickled (torch.save(model)), not a state_dict
    torch.save(net, files["pickled"])
    files["zip"] = root / "other.pt"        # a zip archive that is not a torch file
    with zipfile.ZipFile(files["zip"], "w") as archive:
        archive.writestr("readme.txt", "hello")
    files["image"] = root / "mnist"          # a data folder without the dataset's files
    files["image"].mkdir(exist_ok=True)
    files["a_file"] = root / "a_file.txt"
    files["a_file"].write_text("I am a file, not a folder\n")
    files["csv_garbage"] = root / "base.csv"
    files["csv_garbage"].write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage\xff\xfe")
    files["csv_empty"] = root / "empty.csv"
    files["csv_empty"].write_text("")
    files["npz_bad"] = root / "samples.npz"
    np.savez(files["npz_bad"], arr_0=np.zeros((4, 3, 5), dtype=np.float32))
    files["plugin_broken"] = root / "broken_plugin.py"
    files["plugin_broken"].write_text("import rfbench\nraise RuntimeError('this plugin is broken')\n")
    files["plugin_syntax"] = root / "syntax_plugin.py"
    files["plugin_syntax"].write_text("def oops(:\n")
    files["script"] = root / "wrong_shape.pt"
    torch.jit.save(torch.jit.script(_ThreeD()), str(files["script"]))
    # folders of 8x8 PNGs (the digits suite's shape), each with one file that is not a readable image
    for name, bad in (("png_empty", b""), ("png_lfs", b"version https://git-lfs.github.com/spec/v1\noid sha256:"
                                                       + b"4d7a21" * 10 + b"\nsize 12345\n"),
                      ("png_huge", _png_header(20000, 20000))):
        files[name] = root / name
        files[name].mkdir(exist_ok=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 60 * i, dtype=np.uint8)).save(files[name] / f"{i}.png")
        (files[name] / "zz.png").write_bytes(bad)
    files["npy_beyond_float32"] = root / "big.npy"     # finite float64 samples that float32 cannot hold
    np.save(files["npy_beyond_float32"], np.array([[1e300, 0.0], [0.0, 1.0], [2.0, 3.0]]))
    files["npz_beyond_images"] = root / "wide.npz"    # float images in [-1.4, 1.4], not [-1, 1]
    np.savez(files["npz_beyond_images"], arr_0=np.linspace(-1.4, 1.4, 256, dtype=np.float32).reshape(4, 1, 8, 8))
    return files


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height grayscale pixels, followed by almost no image data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))


class _ThreeD(torch.nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x[:, :3] if x.shape[1] >= 3 else torch.cat([x, x[:, :1]], dim=1)


# (name, argv with {NAME} placeholders for the files above and {out} for the run's folder, a word the message must
# hold). Each is one kind of mistake; argv is for `benchmark.py` unless it starts with a subcommand.
CASES: list[tuple[str, list[str], str]] = [
    ("unknown suite", ["--suite", "nope"], "nope"),
    ("empty suite", ["--suite", ""], "suite"),
    ("zero samples", ["--num-samples", "0"], "num-samples"),
    ("negative samples", ["--num-samples", "-5"], "num-samples"),
    ("non-integer samples", ["--num-samples", "abc"], "num-samples"),
    ("zero batch", ["--batch-size", "0"], "batch-size"),
    ("text batch", ["--batch-size", "big"], "batch-size"),
    ("zero steps", ["--steps", "0"], "steps"),
    ("negative steps", ["--steps", "-2", "4"], "steps"),
    ("unknown solver", ["--solvers", "eulr"], "eulr"),
    ("unknown model", ["--models", "4-rf"], "4-rf"),
    ("unknown grid", ["--grids", "cosine"], "cosine"),
    ("option not a number", ["--solver-option", "rtol=abc"], "rtol"),
    ("option out of range", ["--solver-option", "rtol=2"], "rtol"),
    ("unknown option", ["--solver-option", "tolerance=1"], "tolerance"),
    ("option of a solver without it", ["--solver-option", "euler:rtol=0.1"], "euler"),
    ("option without =", ["--solver-option", "rtol"], "rtol"),
    ("negative first seed", ["--first-seed", "-1"], "first-seed"),
    ("zero repeats", ["--repeats", "0"], "repeats"),
    ("negative bootstrap", ["--bootstrap", "-1"], "bootstrap"),
    ("unknown device", ["--device", "tpu"], "tpu"),
    ("cuda missing", ["--device", "cuda:7"], "cuda"),
    ("empty out", ["--out", ""], "--out"),
    ("out is a file", ["--out", "{a_file}"], "a_file.txt"),
    ("out not writable", ["--out", "/proc/rfbench-out"], "/proc/rfbench-out"),
    ("cache is a file", ["--cache", "{a_file}"], "a_file.txt"),
    ("cache not writable", ["--cache", "/proc/rfbench-cache"], "/proc/rfbench-cache"),
    ("steps beyond memory", ["--models", "1-rf", "--solvers", "euler", "--steps", "1000000000000", "--dry-run"],
     "--steps 1000000000000: the time grid of 1000000000001 points needs about 80.0 TB of memory"),
    ("samples beyond memory", ["--models", "1-rf", "--solvers", "euler", "--num-samples", "10000000000000",
                               "--dry-run"], "--num-samples 10000000000000: 10000000000000 samples of shape (2,) "
                                             "need about 320.0 TB of memory (float32: x0, the samples, the reference) "
                                             "and w2 about 4800.0 YB more"),
    ("zero threads", ["--threads", "0"], "threads"),
    ("shard zero", ["--shard", "0/3"], "--shard"),
    ("shard past the count", ["--shard", "4/3"], "--shard"),
    ("shard without a count", ["--shard", "3"], "--shard"),
    ("shard of words", ["--shard", "a/b"], "--shard"),
    ("checkpoint missing", ["--checkpoint", "1-rf=/nowhere/1-rf.pt"], "/nowhere/1-rf.pt"),
    ("checkpoint garbage", ["--checkpoint", "1-rf={garbage}"], "garbage.pt"),
    ("checkpoint empty", ["--checkpoint", "1-rf={empty}"], "empty.pt"),
    ("checkpoint truncated", ["--checkpoint", "1-rf={truncated}"], "truncated.pt"),
    ("checkpoint a zip", ["--checkpoint", "1-rf={zip}"], "other.pt"),
    ("checkpoint whose weights are not its network's", ["--checkpoint", "1-rf={misfit}"], "misfit.pt"),
    ("checkpoint of pickled objects", ["--checkpoint", "1-rf={pickled}"], "pickled Python objects"),
    ("cifar checkpoint garbage, dry run", ["--suite", "cifar", "--data-dir", "{image}", "--models", "1-rf",
                                           "--checkpoint", "1-rf={garbage}", "--dry-run"], "garbage.pt"),
    ("checkpoint of another kind", ["--checkpoint", "1-rf={ddpm}"], "ddpm"),
    ("checkpoint of another model", ["--checkpoint", "1-rf={2-rf}"], "2-rf"),
    ("checkpoint of a model the suite lacks", ["--checkpoint", "4-rf={2-rf}"], "4-rf"),
    ("checkpoint without =", ["--checkpoint", "1-rf"], "MODEL=PATH"),
    ("checkpoint-dir missing", ["--checkpoint-dir", "/nowhere/ckpts"], "/nowhere/ckpts"),
    ("checkpoint-dir is a file", ["--checkpoint-dir", "{a_file}"], "a_file.txt"),
    ("model file missing", ["--model", "mine=/nowhere/mine.pt"], "/nowhere/mine.pt"),
    ("model file garbage", ["--model", "mine={garbage}"], "garbage.pt"),
    ("model of unknown kind", ["--model", "mine:wobbly={2-rf}"], "wobbly"),
    ("model factory missing", ["--model", "mine=nowhere_pkg.mod:make"], "nowhere_pkg"),
    ("model of the wrong shape", ["--model", "mine={script}"], "mine"),
    ("model without =", ["--model", "mine"], "NAME=PATH"),
    ("plugin missing", ["--plugin", "/nowhere/plugin.py"], "/nowhere/plugin.py"),
    ("plugin raising", ["--plugin", "{plugin_broken}"], "broken_plugin.py"),
    ("plugin with a syntax error", ["--plugin", "{plugin_syntax}"], "syntax_plugin.py"),
    ("gate baseline missing", ["--check", "/nowhere/base.csv"], "/nowhere/base.csv"),
    ("gate baseline garbage", ["--check", "{csv_garbage}"], "base.csv"),
    ("gate baseline empty", ["--check", "{csv_empty}"], "empty.csv"),
    ("gate baseline garbage and an unknown solver", ["--check", "{csv_garbage}", "--solvers", "eulr"], "eulr"),
    ("gate tolerance garbage", ["--check", "results/toy2d.csv", "--fail-on", "w2:lots"], "w2:lots"),
    ("gate tolerance unknown metric", ["--check", "results/toy2d.csv", "--fail-on", "nope:+1"], "nope"),
    ("gate tolerance without baseline", ["--fail-on", "w2:+10%"], "--check"),
    ("ref-stats on a 2D suite", ["--ref-stats", "{garbage}"], "ref-stats"),
    ("ref-stats missing", ["--suite", "digits", "--ref-stats", "/nowhere/stats.npz"], "/nowhere/stats.npz"),
    ("extractor unknown", ["--suite", "digits", "--extractor", "clip"], "clip"),
    ("inception weights missing", ["--suite", "mnist", "--inception-weights", "/nowhere/w.pt"], "/nowhere/w.pt"),
    ("data folder missing", ["--suite", "mnist", "--data-dir", "/nowhere/mnist"], "/nowhere/mnist"),
    ("data folder without the data", ["--suite", "fashion-mnist", "--data-dir", "{image}"], "mnist"),
    ("cifar without data or checkpoints", ["--suite", "cifar"], "cifar"),
    ("plot format", ["--plot-format", "gif"], "gif"),
    ("unknown flag", ["--sampels", "10"], "--sampels"),
    ("table of nothing", ["table", "/nowhere/run"], "/nowhere/run"),
    ("table of garbage", ["table", "{csv_garbage}"], "base.csv"),
    ("table of an empty csv", ["table", "{csv_empty}"], "empty.csv"),
    ("table format", ["table", "results/toy2d.csv", "--format", "html"], "html"),
    ("spread of nothing", ["spread", "/nowhere/a", "/nowhere/b", "--out", "{out}/s.csv"], "/nowhere/a"),
    ("score of nothing", ["score", "/nowhere/s.npz", "--suite", "toy2d", "--label", "x", "--out", "{out}"],
     "/nowhere/s.npz"),
    ("score of the wrong shape", ["score", "{npz_bad}", "--suite", "toy2d", "--label", "x", "--out", "{out}"],
     "samples.npz"),
    ("score of an unknown suite", ["score", "{npz_bad}", "--suite", "nope", "--label", "x", "--out", "{out}"],
     "nope"),
    ("score of garbage", ["score", "{garbage}", "--suite", "toy2d", "--label", "x", "--out", "{out}"],
     "garbage.pt"),
    ("score of an empty png", ["score", "{png_empty}", "--suite", "digits", "--label", "x", "--out", "{out}"],
     "zz.png: the file is empty (0 bytes), not an image"),
    ("score of a git-lfs pointer png", ["score", "{png_lfs}", "--suite", "digits", "--label", "x", "--out", "{out}"],
     "zz.png: a Git LFS pointer, not the image itself"),
    ("score of a png claiming 20000x20000", ["score", "{png_huge}", "--suite", "digits", "--label", "x", "--out",
                                             "{out}"],
     "zz.png: its header claims 400000000 pixels; images of at most 16777216 pixels are read"),
    ("score of samples beyond float32", ["score", "{npy_beyond_float32}", "--suite", "toy2d", "--label", "x",
                                         "--out", "{out}"],
     "big.npy: the samples hold values up to 1e+300 in absolute value (float64), beyond float32's range"),
    ("score of float images beyond [-1, 1]", ["score", "{npz_beyond_images}", "--suite", "digits", "--label", "x",
                                              "--out", "{out}"],
     "wide.npz: float images must be NCHW in [-1, 1]; 74 of 256 values (28.9%) lie outside it, in [-1.4, 1.4]"),
]


# cases with several problems, each reported on its own line, all at once
MANY = {"cifar without data or checkpoints", "cifar checkpoint garbage, dry run",
        "gate baseline garbage and an unknown solver"}


def run_cli(argv: list[str]) -> tuple[int, str, str, float]:
    """``main(argv)`` in this process: (exit status, stderr, stdout, seconds); an exception that escapes is
    reported as status -1 with its traceback (which the tests count as a failure)."""
    err, out = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv, prog="benchmark.py")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        except BaseException:       # noqa: BLE001  (escaped: what the test must never see)
            import traceback
            traceback.print_exc(file=err)
            code = -1
    return code, err.getvalue(), out.getvalue(), time.perf_counter() - start


def expand(argv: list[str], files: dict[str, Path], out: Path) -> list[str]:
    names = {**{k: str(v) for k, v in files.items()}, "out": str(out)}
    return [a.format(**names) if "{" in a else a for a in argv]


def judge(name: str, argv: list[str], word: str, files: dict[str, Path], root: Path) -> tuple[bool, str]:
    """(clear, why not): exit status 2, an error that is one line naming ``word``, no traceback, nothing written
    in the run's folder or the cache."""
    out, cache = root / "out" / name.replace(" ", "-"), root / "cache" / name.replace(" ", "-")
    args = expand(argv, files, out)
    if args[0] not in ("table", "spread", "score"):
        args = args + (["--out", str(out)] if "--out" not in args else []) + (
            ["--cache", str(cache)] if "--cache" not in args else []) + ["--quiet", "--no-plots"]
    code, err, _, seconds = run_cli(args)
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    problems = []
    if code != 2:
        problems.append(f"exit status {code}")
    if "Traceback" in err:
        problems.append("a traceback")
    if "weights_only=False" in err:
        problems.append("torch's advice to unpickle code")
    others = [ln for ln in lines if ": error: " not in ln and not ln.startswith(("note:", "(see "))]
    if others or not errors or (len(errors) > 1 and name not in MANY):
        problems.append(f"{len(errors)} error lines and {len(others)} other lines on stderr")
    if word.lower() not in err.lower():
        problems.append(f"no mention of {word!r}")
    written = [p for p in (out / "cells", cache / "models") if p.exists() and any(p.iterdir())]
    if written:
        problems.append(f"wrote {written}")
    return not problems, "; ".join(problems) + (f" [{err.strip()[:300]}]" if problems else "")


def test_independent_mistakes_are_said_at_once(catalogue):
    files, root = catalogue
    code, err, _, _ = run_cli(["--check", str(files["csv_garbage"]), "--solvers", "eulr", "--dry-run"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2 and "base.csv" in lines[0] and "eulr" in lines[1], err
    code, err, _, _ = run_cli(["--suite", "cifar", "--data-dir", str(files["image"]), "--checkpoint-dir",
                               str(root / "files"), "--dry-run"])
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert code == 2 and len(errors) >= 2 and any("cifar" in line for line in errors), err


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalogue")
    return make_files(root / "files"), root


@pytest.mark.parametrize("name,argv,word", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_before_any_work(catalogue, name, argv, word):
    files, root = catalogue
    clear, why = judge(name, argv, word, files, root)
    assert clear, why


if __name__ == "__main__":       # the catalogue's verdicts, for the issue note
    import tempfile

    from rfbench.plugins import load_entry_points
    load_entry_points()
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp) / "files")
        verdicts = [(name, *judge(name, argv, word, files, Path(tmp))) for name, argv, word in CASES]
    for name, clear, why in verdicts:
        print(f"{'clear' if clear else 'NOT  '}  {name}: {why}")
    print(f"{sum(v[1] for v in verdicts)} of {len(verdicts)} clear", file=sys.stderr)


class Shift:
    input_shape = (2,)

    def __call__(self, x, t):
        return torch.full_like(x, 0.5)


class BrokenRecipe(Recipe):
    """A recipe whose training fails (found only when the run loads it: recipes are not probed up front)."""

    def spec(self) -> dict:
        return {"family": "test", "model": "broken"}

    def input_shape(self, suite):
        return (2,)

    def load(self, ctx):
        raise RuntimeError("training broken diverged: loss nan at step 3")


@pytest.fixture
def shift_suite():
    import dataclasses

    from rfbench.suites import Cell, SuiteModel
    from tests.standins import registered, standin
    suite = standin("toy2d", "toy2d-shift", {"shift": Shift()},
                    cells=tuple(Cell("shift", "euler", n) for n in (1, 2, 3, 4)), num_samples=200)
    suite = dataclasses.replace(suite, models=suite.models + (SuiteModel("broken", BrokenRecipe()),),
                                cells=suite.cells + (Cell("broken", "euler", 1),))
    with registered(suite):
        yield suite


def test_a_full_disk_mid_sweep_stops_in_one_line_and_the_same_command_resumes(shift_suite, tmp_path, monkeypatch):
    """The third cell's write fails with ENOSPC: one line saying which file, how many cells are safe and how to
    resume, exit status 1; the cells written before it stay, and the rerun computes only the rest."""
    import errno

    import rfbench.results.store as store
    real, calls = store.atomic_write_text, []

    def filling(path, text):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)
    monkeypatch.setattr(store, "atomic_write_text", filling)
    argv = ["--suite", "toy2d-shift", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
            "--quiet", "--no-plots", "--models", "shift"]
    code, err, _, _ = run_cli(argv)
    assert code == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "2 finished cell(s)" in lines[0], err
    assert "rerun the same command" in lines[0] and str(tmp_path / "out" / "cells") in lines[0]
    assert len(list((tmp_path / "out" / "cells").glob("*.json"))) == 2
    monkeypatch.setattr(store, "atomic_write_text", real)
    code, err, _, _ = run_cli(argv[:-2] + ["--models", "shift"])
    assert code == 0, err
    assert len(list((tmp_path / "out" / "cells").glob("*.json"))) == 5      # the independent row and 4 cells


def test_with_quiet_a_model_that_fails_to_load_says_why(shift_suite, tmp_path):
    code, err, out, _ = run_cli(["--suite", "toy2d-shift", "--out", str(tmp_path / "out"), "--cache",
                                 str(tmp_path / "cache"), "--quiet", "--no-plots"])
    assert code == 1 and out == ""
    assert "training broken diverged: loss nan at step 3" in err and "1 of 6 cell(s) failed" in err, err


def test_an_unexpected_error_is_one_line_and_debug_shows_its_traceback(shift_suite, tmp_path, monkeypatch):
    import rfbench.suites.runner as runner

    def bug(*args, **kwargs):
        raise ZeroDivisionError("division by zero in a place nobody checked")
    monkeypatch.setattr(runner, "sweep", bug)
    argv = ["--suite", "toy2d-shift", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--quiet"]
    code, err, _, _ = run_cli(argv)
    assert code == 1 and err.count("\n") == 1 and "ZeroDivisionError: division by zero" in err and "--debug" in err
    code, err, _, _ = run_cli(argv + ["--debug"])
    assert code == -1 and "Traceback" in err        # run_cli saw the exception escape main


def test_rows_record_threads_and_load_and_threads_can_be_set(shift_suite, tmp_path):
    import pandas as pd

    from rfbench.threads import SMALL_MODEL_PARAMS, threads_for
    argv = ["--suite", "toy2d-shift", "--cache", str(tmp_path / "cache"), "--quiet", "--no-plots", "--models",
            "shift", "--steps", "1"]
    before = torch.get_num_threads()
    assert run_cli(argv + ["--out", str(tmp_path / "auto")])[0] == 0
    assert run_cli(argv + ["--out", str(tmp_path / "two"), "--threads", "2"])[0] == 0
    assert torch.get_num_threads() == before            # the run's setting does not outlive it
    auto = pd.read_csv(tmp_path / "auto" / "results.csv")
    two = pd.read_csv(tmp_path / "two" / "results.csv")
    cells = auto["model"] == "shift"
    assert (auto.loc[cells, "threads"] == 1).all() and (two.loc[two["model"] == "shift", "threads"] == 2).all()
    assert auto.loc[cells, ["load_start", "load_end"]].notna().all().all()
    big = torch.nn.Linear(SMALL_MODEL_PARAMS // 1000, 1000)
    assert threads_for(big, None, torch.device("cpu")) == torch.get_num_threads() or \
        threads_for(big, None, torch.device("cpu")) >= 1
    assert threads_for(torch.nn.Linear(2, 2), None, torch.device("cpu")) == 1
    assert threads_for(torch.nn.Linear(2, 2), 3, torch.device("cpu")) == 3


def test_busy_machine_note():
    from rfbench.threads import busy_note, cores
    assert busy_note(0.5, 0.7) is None
    note = busy_note(cores() + 3.0, 1.0)
    assert note is not None and f"on {cores()} cores" in note


def test_folders_are_judged_as_the_run_will_use_them(tmp_path):
    from rfbench.files import folder_problem
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "gone")
    assert "does not exist" in folder_problem(link, "--out", "results")
    assert folder_problem(tmp_path / "new" / "deeper", "--out", "results") is None
    assert not (tmp_path / "new").exists()                       # the probe made nothing
    assert list(tmp_path.iterdir()) == [link]


def test_sizes_beyond_memory_are_refused_before_any_work_one_line_each(tmp_path):
    """A step count whose time grid, and a sample count whose samples (and w2's n x n cost), cannot fit in the
    machine's memory: one line each naming the option, the memory needed and the memory available; nothing run."""
    code, err, _, _ = run_cli(["--models", "1-rf", "--solvers", "euler", "--steps", "1000000000000", "--num-samples",
                               "10000000", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
                               "--quiet"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2, err
    assert lines[0].startswith("benchmark.py: error: --steps 1000000000000: the time grid of 1000000000001 points "
                               "needs about 80.0 TB of memory; this machine has ")
    assert lines[1].startswith("benchmark.py: error: --num-samples 10000000: 10000000 samples of shape (2,) need "
                               "about 320.0 MB of memory (float32: x0, the samples, the reference) and w2 about 4.8 "
                               "PB more; this machine has ")
    assert all(" available (" in line for line in lines)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_a_missing_baseline_and_a_bad_solver_are_said_at_once(tmp_path):
    code, err, _, _ = run_cli(["--check", str(tmp_path / "none.csv"), "--solvers", "eulr", "--dry-run"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2 and "none.csv" in lines[0] and "eulr" in lines[1], err


def test_score_refuses_an_empty_out(tmp_path):
    np.savez(tmp_path / "s.npz", arr_0=np.zeros((4, 2), dtype=np.float32))
    code, err, _, _ = run_cli(["score", str(tmp_path / "s.npz"), "--suite", "toy2d", "--label", "x", "--out", ""])
    assert code == 2 and "--out is empty" in err and err.count("\n") == 1, err


def test_threads_asked_for_are_part_of_what_a_resumed_cell_must_match(shift_suite, tmp_path):
    import pandas as pd
    argv = ["--suite", "toy2d-shift", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--quiet",
            "--no-plots", "--models", "shift", "--steps", "1"]
    timed = []
    for threads in ("1", "2", "2"):
        code, err, _, _ = run_cli(argv + ["--threads", threads])
        assert code == 0, err
        frame = pd.read_csv(tmp_path / "out" / "results.csv")
        assert (frame.loc[frame["model"] == "shift", "threads"] == int(threads)).all()
        timed.append(frame.loc[frame["model"] == "shift", "wall_clock_s"].tolist())
    # the second run (2 threads) times its cell again; the third keeps the second's
    assert timed[1] != timed[0] and timed[2] == timed[1]


class CachedRecipe(Recipe):
    """A recipe that trains a tiny network into the cache (instantly)."""

    def spec(self) -> dict:
        return {"family": "test", "model": "cached"}

    def input_shape(self, suite):
        return (2,)

    def load(self, ctx):
        config = {"model": "cached", "train": {"steps": 1, "batch_size": 1}}
        return ctx.cache.network("cached", config, lambda: MLP(TOY_NET), lambda: (MLP(TOY_NET), {}), ctx.device)


def test_a_cache_that_holds_every_model_need_not_be_writable(tmp_path):
    import dataclasses

    from rfbench.models.cache import Cache
    from rfbench.models.sources import LoadContext
    from rfbench.suites import SUITES, SuiteModel
    from rfbench.suites.plan import RunConfig, make_plan
    suite = dataclasses.replace(SUITES["toy2d"], name="toy2d-cached", models=(SuiteModel("1-rf", CachedRecipe()),),
                                cells=tuple(c for c in SUITES["toy2d"].cells if c.model == "1-rf")[:1])
    config = RunConfig(cache_dir=str(tmp_path / "cache"))
    assert make_plan(suite, config).trains
    CachedRecipe().load(LoadContext(suite, Cache(tmp_path / "cache", log=lambda m: None), torch.device("cpu"),
                                    lambda m: None))
    assert not make_plan(suite, config).trains
