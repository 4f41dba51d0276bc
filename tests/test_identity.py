"""A model's identity covers the weights it loads: a factory (``--model NAME=module:factory``) whose file was
retrained between two runs of the same command is recomputed, and the gate refuses to compare across the change;
an unchanged factory keeps its cells; a factory may state its own id; the gate refuses a model object whose
weights changed."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

import rfbench

FACTORY = '''
import torch


class Shift(torch.nn.Module):
    """A constant velocity, read from a weights file: every point moves by it."""

    input_shape = (2,)

    def __init__(self):
        super().__init__()
        self.velocity = torch.nn.Parameter(torch.zeros(2), requires_grad=False)

    def forward(self, x, t):
        return self.velocity.expand_as(x)


def make():
    net = Shift()
    net.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return net


def stated():
    net = make()
    net.model_id = "shift-v1"
    return net
'''


@pytest.fixture
def factory(tmp_path, monkeypatch):
    """A factory module that loads ``weights.pt`` (written by the returned function, a velocity per call)."""
    module = "identity_" + re.sub(r"\W", "_", tmp_path.name)
    weights = tmp_path / "weights.pt"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / f"{module}.py").write_text(f"WEIGHTS = {str(weights)!r}\n" + textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))

    def write(velocity: tuple[float, float]) -> str:
        torch.save({"velocity": torch.tensor(velocity)}, weights)
        return module
    return write


def _run(out: Path, spec, messages: list[str] | None = None, **options) -> pd.DataFrame:
    log = messages.append if messages is not None else (lambda msg: None)
    return rfbench.run("toy2d", models={"mine": spec}, solvers=["euler"], steps=[1, 2], num_samples=200, out=out,
                       cache=out.parent / "cache", device="cpu", plots=False, log=log, **options)


def _kept(messages: list[str]) -> int:
    """The cells a run said it kept from an earlier run (the independent row among them)."""
    said = [int(m.split()[1]) for m in messages if m.startswith("resuming: ")]
    return said[0] if said else 0


def test_a_retrained_factory_model_is_recomputed_and_the_gate_refuses_to_compare(tmp_path, factory):
    module = factory((0.5, 0.5))
    out = tmp_path / "out"
    first = _run(out, f"{module}:make").set_index(["model", "steps"])
    (tmp_path / "baseline.csv").write_bytes((out / "results.csv").read_bytes())
    factory((1.0, -0.5))          # the file the factory loads is retrained
    messages: list[str] = []
    with pytest.raises(rfbench.GateFailed) as failed:      # the same command, gated on the first run
        _run(out, f"{module}:make", messages, check=tmp_path / "baseline.csv", fail_on=["w2:+0"])
    assert _kept(messages) == 1               # the independent row only: the model's cells are computed again
    second = failed.value.frame.set_index(["model", "steps"])
    old_id, new_id = first.loc["mine", "model_id"].iloc[0], second.loc["mine", "model_id"].iloc[0]
    assert old_id != new_id and (second.loc["mine", "status"] == "ok").all()
    assert (second.loc["mine", "w2"] - first.loc["mine", "w2"]).abs().min() > 0.1
    assert second.loc["mine", "transport_cost"].tolist() == pytest.approx([1.25, 1.25], rel=1e-4)
    assert failed.value.failures == [
        f"gate: the run is not comparable with the baseline (model mine model_id: baseline {old_id!r}, run "
        f"{new_id!r}); a changed model (its recipe, file or weights) needs a new baseline"]
    # the folder holds the two versions of each cell side by side, under their own keys
    cells = [pd.read_json(p, typ="series") for p in (out / "cells").glob("*.json")]
    assert sorted(c["model_id"] for c in cells if c["model"] == "mine") == sorted([old_id] * 2 + [new_id] * 2)


def test_an_unchanged_factory_model_keeps_its_cells(tmp_path, factory):
    module = factory((0.5, 0.5))
    out = tmp_path / "out"
    first = _run(out, f"{module}:make")
    factory((0.5, 0.5))           # written again, the same weights
    messages: list[str] = []
    again = _run(out, f"{module}:make", messages, check=out / "results.csv", fail_on=["w2:+0"])
    assert _kept(messages) == 3 and again.attrs["gate"]["failures"] == []
    assert again["model_id"].tolist() == first["model_id"].tolist()
    model_id = first.loc[first["model"] == "mine", "model_id"].iloc[0]
    assert model_id.startswith(f"factory:{module}:make@") and "weights:" in model_id


def test_a_factory_that_states_its_id_is_known_by_it(tmp_path, factory):
    module = factory((0.5, 0.5))
    out = tmp_path / "out"
    first = _run(out, f"{module}:stated")
    assert (first.loc[first["model"] == "mine", "model_id"] == f"factory:{module}:stated@shift-v1").all()
    factory((1.0, -0.5))          # the factory's statement is trusted: the same id, the cells kept
    messages: list[str] = []
    _run(out, f"{module}:stated", messages)
    assert _kept(messages) == 3


def test_the_gate_refuses_a_model_object_whose_weights_changed(tmp_path, factory):
    module = factory((0.5, 0.5))
    net = __import__(module).make()
    out = tmp_path / "out"
    first = _run(out, net)
    assert first.loc[first["model"] == "mine", "model_id"].str.fullmatch(r"object:Shift@weights:[0-9a-f]{12}").all()
    _run(tmp_path / "again", net, check=out / "results.csv", fail_on=["w2:+0"])     # the same weights: compared
    with torch.no_grad():
        net.velocity.add_(0.5)
    with pytest.raises(ValueError, match=r"^the run is not comparable with the baseline \(model mine model_id: "
                                         r"baseline 'object:Shift@weights:\w{12}', run 'object:Shift@weights:\w{12}'"):
        _run(tmp_path / "changed", net, check=out / "results.csv", fail_on=["w2:+0"])     # refused before the run
    assert not (tmp_path / "changed").exists()
