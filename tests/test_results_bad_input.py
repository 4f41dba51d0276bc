"""Bad input gives one clear line, naming the file, before any work: a garbage, empty or column-less baseline, a
corrupt spread file or one with a non-numeric entry, a missing results path. Resume reads each stored cell's
recorded identity: a file under a wanted cell's name that records another cell is stale, recomputed and moved aside;
a table built from cells/ shows one row per cell."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from rfbench.api import load_gate
from rfbench.cli import main
from rfbench.results.report import load_results
from rfbench.results.resume import Wanted, finished_cells
from rfbench.results.store import ResultStore, cell_key
from rfbench.suites import Cell
from rfbench.suites.runner import run_suite
from tests.standins import standin

ROOT = Path(__file__).resolve().parents[1]


def _one_line(exc: pytest.ExceptionInfo, *names) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message, message
    for name in names:
        assert str(name) in message, message
    return message


@pytest.fixture
def baseline(tmp_path) -> Path:
    """A copy of the recorded toy2d baseline and its spread file."""
    for name in ("toy2d.csv", "toy2d-spread.csv"):
        shutil.copy(ROOT / "results" / name, tmp_path / name)
    return tmp_path / "toy2d.csv"


# --- the gate's inputs --------------------------------------------------------------------------------------------

def test_the_recorded_baseline_loads(baseline):
    gate = load_gate(baseline)
    assert len(gate.baseline) > 0 and gate.spread["sd"].dtype == float and str(gate.spread["steps"].dtype) == "Int64"


def test_a_garbage_baseline_is_one_line_naming_it(tmp_path):
    path = tmp_path / "base.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) + os.urandom(64))
    with pytest.raises(ValueError) as exc:
        load_gate(path, ["w2:+1%"])
    assert "is not a text CSV" in _one_line(exc, path)
    path.write_text('suite,model\n"toy2d,1-rf\n')               # an unterminated quote: not CSV
    with pytest.raises(ValueError) as exc:
        load_gate(path, ["w2:+1%"])
    assert "is not a well-formed CSV" in _one_line(exc, path)


def test_an_empty_baseline_is_one_line_naming_it(tmp_path, baseline):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(ValueError) as exc:
        load_gate(path, ["w2:+1%"])
    assert "is empty" in _one_line(exc, path)
    pd.read_csv(baseline).iloc[:0].to_csv(path, index=False)            # the header, no rows
    with pytest.raises(ValueError) as exc:
        load_gate(path, ["w2:+1%"])
    assert "no rows" in _one_line(exc, path)


def test_a_baseline_without_the_columns_is_one_line_naming_it(tmp_path, baseline):
    path = tmp_path / "other.csv"
    path.write_text("name,score\na,1\n")
    with pytest.raises(ValueError) as exc:
        load_gate(path, ["w2:+1%"])
    assert "no model, solver, status column" in _one_line(exc, path)
    pd.read_csv(baseline).drop(columns=["suite_version"]).to_csv(path, index=False)
    with pytest.raises(ValueError) as exc:
        load_gate(path, ["w2:+1%"])
    assert "no suite_version column" in _one_line(exc, path)
    frame = pd.read_csv(baseline)
    frame["w2"] = frame["w2"].astype(object)
    frame.loc[3, "w2"] = "0.1o"                                         # a gated number that is not one
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError) as exc:
        load_gate(path, ["w2:+1%"])
    assert "line 5: column w2 holds '0.1o'; w2 must be a number" in _one_line(exc, path)


def test_a_corrupt_spread_file_is_one_line_naming_it(baseline):
    spread = baseline.with_name("toy2d-spread.csv")
    spread.write_bytes(os.urandom(512) + b"\xff\xfe")
    with pytest.raises(ValueError) as exc:
        load_gate(baseline)
    assert "is not a text CSV" in _one_line(exc, spread)
    spread.write_text("")
    with pytest.raises(ValueError) as exc:
        load_gate(baseline)
    assert "is empty" in _one_line(exc, spread)


def test_a_non_numeric_spread_entry_is_refused_before_the_run(baseline, capsys):
    spread = baseline.with_name("toy2d-spread.csv")
    frame = pd.read_csv(spread)
    for col, value, allowed in (("sd", "abc", "a number >= 0"), ("sd", None, "a number >= 0"),
                                ("sd", "-0.5", "a number >= 0"),
                                ("steps", "four", "an integer >= 0, or empty for an adaptive solver"),
                                ("n_samples", "1e3x", "an integer >= 1")):
        bad = frame.astype({col: object})
        bad.loc[2, col] = value
        bad.to_csv(spread, index=False)
        with pytest.raises(ValueError) as exc:
            load_gate(baseline)
        shown = "an empty entry" if value is None else repr(float(value) if value == "-0.5" else value)
        assert f"line 4: column {col} holds {shown}; {col} must be {allowed}" in _one_line(exc, spread)
    # through the command line: refused at once (a dry run does no work either), one line naming the file
    with pytest.raises(SystemExit) as exit_:
        main(["--suite", "toy2d", "--check", str(baseline), "--dry-run"])
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and str(spread) in errors[0] and "column n_samples holds '1e3x'" in errors[0]


def test_missing_or_unreadable_results_say_which_path(tmp_path):
    with pytest.raises(FileNotFoundError) as exc:
        load_results(tmp_path / "nowhere")
    _one_line(exc, tmp_path / "nowhere")
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError) as exc:
        load_results(tmp_path / "run")
    assert "holds neither results.csv nor cells/" in _one_line(exc, tmp_path / "run")
    (tmp_path / "run" / "cells").mkdir()
    with pytest.raises(ValueError) as exc:
        load_results(tmp_path / "run")
    assert "holds no result cell" in _one_line(exc, tmp_path / "run" / "cells")
    (tmp_path / "run" / "results.csv").write_bytes(b"\x00\xff" * 40)
    with pytest.raises(ValueError) as exc:
        load_results(tmp_path / "run")
    assert "expected the results.csv an rfbench run writes" in _one_line(exc, tmp_path / "run" / "results.csv")
    (tmp_path / "run" / "results.csv").write_text("model,solver,status,steps\nm,euler,ok,2.5\n")
    with pytest.raises(ValueError) as exc:
        load_results(tmp_path / "run")
    assert "column steps holds 2.5; steps must be an integer" in _one_line(exc, tmp_path / "run" / "results.csv")


# --- resume reads each cell's recorded identity -------------------------------------------------------------------

class Counting:
    input_shape = (2,)

    def __init__(self):
        self.calls = 0

    def __call__(self, x, t):
        self.calls += 1
        return torch.full_like(x, 0.5)


def _suite(flow: Counting, name: str):
    return standin("toy2d", name, {"count": flow}, num_samples=30, metrics=("w2",), independent_row=False,
                   cells=(Cell("count", "euler", 1), Cell("count", "euler", 2)))


def _run(suite, out: Path, flow: Counting, cache: Path) -> tuple[pd.DataFrame, list[str]]:
    flow.calls, said = 0, []
    frame = run_suite(suite, out, device="cpu", cache_dir=cache, progress=False, plots=False,
                      log=said.append).frame
    return frame, said


def _cells(out: Path) -> dict[int, Path]:
    return {json.loads(p.read_text())["steps"]: p for p in (out / "cells").glob("*.json")}


def test_a_cell_recorded_by_another_suite_version_is_stale(tmp_path):
    flow, out = Counting(), tmp_path / "out"
    suite = _suite(flow, "toy2d-stale")
    _run(suite, out, flow, tmp_path / "cache")
    path = _cells(out)[2]
    record = json.loads(path.read_text())
    old = {**record, "suite_version": suite.version - 1, "w2": 123.0}      # copied from a run of another version
    path.write_text(json.dumps(old))
    frame, said = _run(suite, out, flow, tmp_path / "cache")
    assert flow.calls > 0 and frame["w2"].max() < 123 and (frame["suite_version"] == suite.version).all()
    lines = [line for line in said if line.startswith("resume: ")]
    assert lines == [f"resume: cells/{path.name} records suite_version {suite.version - 1} (this run: "
                     f"{suite.version}): count/euler/2 is recomputed; old file moved to cells/stale/{path.name}"]
    assert json.loads((out / "cells" / "stale" / path.name).read_text()) == old        # moved aside, not deleted
    assert json.loads(path.read_text())["suite_version"] == suite.version
    assert len(ResultStore(out).records()) == 2 and len(pd.read_csv(out / "results.csv")) == 2
    _, said = _run(suite, out, flow, tmp_path / "cache")
    assert flow.calls == 0 and not [line for line in said if line.startswith("resume: ")]   # now kept
    path.write_text(json.dumps(old))                                   # again: the stale copy gets a suffix
    _, said = _run(suite, out, flow, tmp_path / "cache")
    stem = path.name.removesuffix(".json")
    lines = [line for line in said if line.startswith("resume: ")]
    assert len(lines) == 1 and lines[0].endswith(f"old file moved to cells/stale/{stem}-2.json")
    assert {p.name for p in (out / "cells" / "stale").iterdir()} == {path.name, f"{stem}-2.json"}


def test_a_renamed_cell_file_is_not_the_cell_its_name_says(tmp_path):
    flow, out = Counting(), tmp_path / "out"
    suite = _suite(flow, "toy2d-renamed")
    _run(suite, out, flow, tmp_path / "cache")
    cells = _cells(out)
    one = json.loads(cells[1].read_text())
    os.replace(cells[1], cells[2])                       # the 1-step cell under the 2-step cell's name
    frame, said = _run(suite, out, flow, tmp_path / "cache")
    assert frame["steps"].tolist() == [1, 2] and (frame["nfe"] == [1, 2]).all()
    lines = [line for line in said if line.startswith("resume: ")]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith(f"resume: cells/{cells[2].name} records steps 1 (this run: 2)")
    assert lines[0].endswith(f"old file moved to cells/stale/{cells[2].name}")
    assert json.loads((out / "cells" / "stale" / cells[2].name).read_text()) == one
    assert {k: json.loads(p.read_text())["steps"] for k, p in _cells(out).items()} == {1: 1, 2: 2}


def test_resume_decides_on_the_record_and_a_dry_run_moves_nothing(tmp_path):
    store = ResultStore(tmp_path / "out")
    base = {"suite": "s", "suite_version": 2, "model": "independent", "solver": "none", "steps": None, "grid": None,
            "n_samples": 100, "seed": 0, "options": "", "extractor": "x", "reference": "r", "model_id": None}
    # an image suite's independent row records fewer samples (the held-out split) than its key says: kept
    independent = Wanted.of("independent", base, own=("n_samples",))
    store.write({**base, "n_samples": 60, "status": "ok"}, key=independent.key)
    assert finished_cells(store, [independent], []) == {"independent": independent.key}
    cell = {**base, "model": "m", "solver": "euler", "steps": 4, "grid": "uniform", "model_id": "recipe:abc"}
    wanted = Wanted.of("m/euler/4", cell)
    assert wanted.key == cell_key(cell)
    store.write({**cell, "model_id": "recipe:old", "status": "ok"}, key=wanted.key)     # another model's cell
    said = []
    assert finished_cells(store, [wanted], [], said.append) == {}
    assert said == [f"resume: cells/{wanted.key}.json records model_id 'recipe:old' (this run: 'recipe:abc'): "
                    f"m/euler/4 is recomputed"]
    assert (store.cells_dir / f"{wanted.key}.json").is_file() and not store.stale_dir.exists()   # dry run


def test_a_cell_edited_by_hand_is_recomputed_not_kept(tmp_path):
    """Each cell file holds a digest of its record; a resumed run keeps a cell only while the two agree. A metric
    edited by hand (its key columns left alone) used to be kept and shown (w2 0.123 for the computed value)."""
    flow, out = Counting(), tmp_path / "out"
    suite = _suite(flow, "toy2d-edited")
    first, _ = _run(suite, out, flow, tmp_path / "cache")
    computed = dict(zip(first["steps"], first["w2"]))
    cells = _cells(out)
    record = json.loads(cells[2].read_text())
    cells[2].write_text(json.dumps({**record, "w2": 0.123}, indent=1))
    frame, said = _run(suite, out, flow, tmp_path / "cache")
    assert dict(zip(frame["steps"], frame["w2"])) == computed and flow.calls > 0
    assert len(record[DIGEST]) == 64
    assert [line for line in said if line.startswith("resume: ")] == [
        f"resume: cells/{cells[2].name} does not match the digest stored with it (its content changed since it was "
        f"written): count/euler/2 is recomputed"]
    assert json.loads(cells[2].read_text())["w2"] == computed[2]
    # records written before records carried a digest: not known to be unchanged, so recomputed, said in one line
    for path in cells.values():
        old = json.loads(path.read_text())
        del old[DIGEST]
        path.write_text(json.dumps(old))
    frame, said = _run(suite, out, flow, tmp_path / "cache")
    assert flow.calls > 0 and dict(zip(frame["steps"], frame["w2"])) == computed
    assert [line for line in said if line.startswith("resume: ")] == [
        "resume: 2 stored cell(s) carry no digest of their content (written before rfbench recorded one), so nothing "
        "shows they are unchanged: recomputed: count/euler/1, count/euler/2"]
    frame, said = _run(suite, out, flow, tmp_path / "cache")                # now kept, silently
    assert flow.calls == 0 and not [line for line in said if line.startswith("resume: ")]
    # the digest stays in the cell files: no table has it (the recorded baselines are tables)
    assert DIGEST not in frame and DIGEST not in pd.read_csv(out / "results.csv")
    assert DIGEST not in load_results(out) and DIGEST not in ResultStore(out).load()


DIGEST = "record_sha256"        # the field of a cell file that holds the digest of the rest of its record


# --- a table from cells/ --------------------------------------------------------------------------------------------

def _record(version: int, w2: float, date: str, **changes) -> dict:
    return {"suite": "toy2d-table", "suite_version": version, "model": "m", "solver": "euler", "steps": 2,
            "grid": "uniform", "options": "", "n_samples": 30, "seed": 0, "seeds": "0-29", "nfe": 2, "w2": w2,
            "model_id": "recipe:abc", "status": "ok", "error": None, "date": date, **changes}


def test_a_table_without_results_csv_shows_one_row_per_cell(tmp_path, capsys):
    out = tmp_path / "run"
    store = ResultStore(out)
    store.write(_record(1, 0.9, "2026-01-01"))                   # a cell copied from a run of version 1
    store.write(_record(2, 0.5, "2025-12-01"))                   # the same cell in version 2, written earlier
    store.write(_record(2, 0.7, "2026-01-02", steps=4, nfe=4))   # another cell
    store.write(_record(1, 0.8, "2026-01-01", steps=8, nfe=8))   # a cell only version 1 has: one row, kept
    store.stale_dir.mkdir()
    (store.stale_dir / "old.json").write_text(json.dumps(_record(2, 7.7, "2026-02-01")))   # set aside: never read
    said = []
    frame = load_results(out, say=said.append)
    assert sorted(zip(frame["steps"], frame["w2"])) == [(2, 0.5), (4, 0.7), (8, 0.8)]
    assert len(said) == 1 and said == [frame.attrs["left_out"]] and "\n" not in said[0]
    assert said[0].startswith(f"{out}: 1 cell record(s) under cells/ left out of the table (1 of an older suite "
                              f"version")
    assert main(["table", str(out), "--format", "csv", "--columns", "steps", "w2"]) == 0
    captured = capsys.readouterr()
    shown = pd.read_csv(io.StringIO(captured.out))
    assert sorted(map(tuple, shown.values.tolist())) == [(2, 0.5), (4, 0.7), (8, 0.8)]     # one row per cell
    assert captured.err.strip() == said[0]
    # the same cell twice in one version (another sample count, a renamed copy): the last written is shown
    store.write(_record(2, 0.6, "2026-03-01", n_samples=40, seeds="0-39"))
    frame = load_results(out, say=said.append)
    assert sorted(zip(frame["steps"], frame["w2"])) == [(2, 0.6), (4, 0.7), (8, 0.8)]
    assert "2 cell record(s)" in said[-1] and "1 written before another record of the same cell" in said[-1]
