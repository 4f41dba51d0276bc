"""Training compute, counted: the train_nfe of a model is every sample its making sent through a network (forward 1,
backward 1), its parents', teachers' and reflow pairs' included, counted by hooks (never stated by a recipe); it
survives the cache, and a model rfbench did not train leaves it empty and says why."""

from __future__ import annotations

import contextlib
import dataclasses

import pandas as pd
import pytest
import torch

from baselines.ddpm import DDPMRecipe, load_ddpm
from baselines.rectified_flow import (FlowRecipe, RectifiedFlow, flow_pairs, load_distilled, load_flow,
                                      load_independent_distilled)
from rfbench.metrics import column_directions
from rfbench.models import MLP, MLPConfig, network_spec, save_checkpoint
from rfbench.models.cache import Cache
from rfbench.models.sources import ModelFile
from rfbench.results.gate import compare, parse_tolerance
from rfbench.samplers import sample
from rfbench.suites import SUITES, Cell, SuiteModel
from rfbench.suites.runner import run_suite
from rfbench.training import TrainConfig, fit, independent_pairs, rectified_flow_loss, seeded_init
from rfbench.training.counting import TrainingCost, counted, counting
from tests.standins import factory

NET = MLPConfig(hidden=32, depth=2)
STEPS, BATCH, PAIRS = 30, 64, 256


def _tiny(seed: int) -> TrainConfig:
    return TrainConfig(steps=STEPS, batch_size=BATCH, lr=1e-3, ema_decay=0.9, seed=seed)


RECIPE = FlowRecipe(net=NET, train=_tiny(0), reflow=_tiny(1), distill=_tiny(2), num_pairs=PAIRS, pair_rtol=1e-3,
                    pair_atol=1e-3)


class Wrapper(torch.nn.Module):
    """A network inside another: one evaluation, not two."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        return self.net(x, t)


def test_a_forward_counts_its_rows_a_backward_as_many_again_and_nested_blocks_count_once():
    inner_net = MLP(MLPConfig(hidden=8, depth=2))
    net, other = Wrapper(inner_net), MLP(MLPConfig(hidden=8, depth=2))
    with counting() as outer, counted(net, inner_net), counted(net):      # counted twice, or wrapped: once
        net(torch.randn(5, 2), torch.rand(5)).sum().backward()        # a training step of batch 5: 5 + 5
        with torch.no_grad():
            net(torch.randn(3, 2), torch.rand(3))                     # a teacher's call: 3, no backward
        inner_net(torch.randn(2, 2), torch.rand(2))                   # the inner network alone: 2
        other(torch.randn(9, 2), torch.rand(9))                       # a network not counted: nothing
        torch.nn.functional.mse_loss(torch.randn(4), torch.zeros(4))  # no network
        with counting() as inner:
            net(torch.randn(7, 2), torch.rand(7))                     # counted in the inner block only
    assert (outer.cost.forward, outer.cost.backward) == (10, 5)
    assert (inner.cost.forward, inner.cost.backward) == (7, 0)
    assert outer.cost.nfe == 15 and inner.cost.seconds <= outer.cost.seconds + inner.cost.seconds
    with counting() as after:
        net(torch.randn(2, 2), torch.rand(2))                         # after counted(): no hook is left on it
    with counted(net):
        net(torch.randn(2, 2), torch.rand(2))                         # outside any block: nothing counts it
    assert outer.cost.forward == 10 and after.cost.nfe == 0
    with pytest.raises(TypeError, match="counted.. takes torch modules.*got function"):
        with counted(lambda x, t: x):
            pass


def test_a_jvp_through_a_network_is_one_forward_and_its_backward_one_backward():
    net = MLP(MLPConfig(hidden=8, depth=2))
    x, t = torch.randn(6, 2), torch.rand(6)
    with counting() as block, counted(net):
        for _ in range(2):        # MeanFlow's step: u and du/dt by one JVP, the loss's gradient through u
            u, dudt = torch.func.jvp(net, (x, t), (torch.ones_like(x), torch.ones_like(t)))
            (u - (u - dudt).detach()).pow(2).sum().backward()
        torch.func.jvp(net, (x, t), (torch.ones_like(x), torch.ones_like(t)))    # no backward follows
    assert (block.cost.forward, block.cost.backward) == (18, 12)
    for p in net.parameters():    # a backward after the block ends counts nowhere
        p.grad = None
    u, _ = torch.func.jvp(net, (x, t), (torch.ones_like(x), torch.ones_like(t)))
    u.sum().backward()
    assert block.backward == 12          # the live count: no hook of the block was left behind


def test_fit_counts_its_network_a_teacher_its_loss_evaluates_counts_inside_counted_and_sampling_counts_once():
    config = TrainConfig(steps=4, batch_size=8, lr=1e-3, ema_decay=0.9, seed=0)
    teacher, student = MLP(MLPConfig(hidden=8, depth=2)), MLP(MLPConfig(hidden=8, depth=2))

    def loss(net, gen, n, device):              # regress the student on a teacher under no_grad (distillation)
        x, t = torch.randn(n, 2, generator=gen), torch.rand(n, generator=gen)
        with torch.no_grad():
            target = teacher(x, t)
        return (net(x, t) - target).pow(2).mean()

    with counting() as alone:
        fit(student, loss, config)              # the teacher not counted: the student's steps only
    with counting() as block, counted(teacher):
        fit(student, loss, config)
        x0 = torch.randn(5, 2)
        result = sample(teacher, x0, "rk45", rtol=1e-3, atol=1e-3)     # counted by the solver's counter, once
        plain = sample(lambda x, t: -x, x0, "heun", steps=3)            # a model without a network: counted too
    assert (alone.cost.forward, alone.cost.backward) == (4 * 8, 4 * 8)
    assert block.cost.backward == 4 * 8
    assert block.cost.forward == 4 * 8 + 4 * 8 + 5 * result.nfe + 5 * plain.nfe and result.nfe > 6


def test_counting_leaves_the_trained_weights_bit_identical():
    config = TrainConfig(steps=5, batch_size=16, lr=1e-3, ema_decay=0.9, seed=0)
    pairs = independent_pairs(lambda gen, n: torch.randn(n, 2, generator=gen), torch.randn(64, 2))
    nets = []
    for block in (contextlib.nullcontext(), counting()):
        with block:
            nets.append(fit(seeded_init(lambda: MLP(MLPConfig(hidden=8, depth=2)), 0), rectified_flow_loss(pairs),
                            config)[0])
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(a, b)


def _chain(cache: Cache) -> tuple[TrainingCost, str]:
    cache.start_chain()
    load_distilled(2, RECIPE, SUITES["toy2d-rings"].problem, cache, "cpu")
    cost, text = cache.chain_cost()
    assert cost is not None, text
    return cost, text


def test_a_reflowed_distilled_models_cost_is_its_chain_counted_and_survives_the_cache(tmp_path):
    problem = SUITES["toy2d-rings"].problem
    cost, text = _chain(Cache(tmp_path, log=lambda m: None))
    assert [part.split()[0] for part in text.split("; ")] == ["1-rf", "1-rf-pairs", "2-rf", "2-rf-pairs",
                                                              "2-rf-distill"]

    # derived independently: each training step sends its batch forward and back once; each pair costs the
    # rk45 NFE of its parent flow (one batch of all pairs)
    quiet = Cache(tmp_path, log=lambda m: None)
    pair_nfe = []
    for k in (1, 2):
        flow, spec = load_flow(k, RECIPE, problem, quiet, "cpu")
        z0, _ = flow_pairs(k, flow, spec, RECIPE, problem, quiet, "cpu")
        pair_nfe.append(sample(flow, z0, "rk45", rtol=RECIPE.pair_rtol, atol=RECIPE.pair_atol).nfe)
    training = 3 * STEPS * BATCH                     # 1-rf, 2-rf, 2-rf-distill
    assert cost.backward == training
    assert cost.forward == training + PAIRS * sum(pair_nfe)
    assert cost.nfe == 2 * training + PAIRS * sum(pair_nfe) and min(pair_nfe) > 6
    assert cost.seconds > 0

    again = Cache(tmp_path, log=lambda m: None)      # a second run, everything from the cache
    assert _chain(again) == (cost, text) and again.trained == []


def test_cache_entries_stored_without_a_cost_leave_it_unknown(tmp_path):
    cache = Cache(tmp_path, log=lambda m: None)
    cache.start_chain()
    net, spec = load_flow(1, RECIPE, SUITES["toy2d-rings"].problem, cache, "cpu")
    path = cache.network_path("1-rf", spec)
    payload = torch.load(path, weights_only=True)
    del payload["info"]["training_cost"]             # as an entry made before costs were recorded holds it
    torch.save(payload, path)
    cache.start_chain()
    load_flow(1, RECIPE, SUITES["toy2d-rings"].problem, cache, "cpu")
    cost, why = cache.chain_cost()
    assert cost is None and "1-rf" in why and "without its training cost" in why


def test_ddpm_and_independent_distillation_cost_their_own_training_steps(tmp_path):
    problem = SUITES["toy2d-rings"].problem
    cache = Cache(tmp_path, log=lambda m: None)
    for load in (lambda: load_ddpm(DDPMRecipe(net=MLPConfig(hidden=32, depth=2, time_scale=1 / 1000), train=_tiny(3)),
                                   problem, cache, "cpu"),
                 lambda: load_independent_distilled(RECIPE, problem, cache, "cpu")):
        cache.start_chain()
        load()
        cost, text = cache.chain_cost()
        assert (cost.forward, cost.backward) == (STEPS * BATCH, STEPS * BATCH), text


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A toy2d-rings run of the tiny 2-RF-distill recipe beside a checkpoint file and a factory."""
    root = tmp_path_factory.mktemp("cost")
    torch.manual_seed(0)
    save_checkpoint(root / "flow.pt", MLP(NET), {"family": "rectified_flow", "net": network_spec(NET)})
    models = (SuiteModel("2-rf-distill", RectifiedFlow(2, RECIPE, distilled=True)),
              SuiteModel("file", ModelFile(root / "flow.pt", kind="flow")),
              SuiteModel("made", factory(MLP(NET))))
    cells = tuple(Cell(m.name, "euler", 1) for m in models)
    suite = dataclasses.replace(SUITES["toy2d-rings"], name="toy2d-rings-cost", models=models, cells=cells,
                                num_samples=64, straightness_samples=8, straightness_steps=4,
                                solver_error_samples=8, solver_error_tolerance=1e-3, repeats=1)
    first = run_suite(suite, root / "out", device="cpu", cache_dir=root / "cache", progress=False, plots=False,
                      log=lambda msg: None)
    second = run_suite(suite, root / "out2", device="cpu", cache_dir=root / "cache", progress=False, plots=False,
                       log=lambda msg: None)
    return first, second, root


def test_every_trained_models_row_records_its_chains_cost_and_the_others_say_why_not(run, tmp_path):
    first, second, root = run
    rows = first.frame.set_index("model")
    expected, text = _chain(Cache(root / "cache", log=lambda m: None))
    assert rows.loc["2-rf-distill", "train_nfe"] == expected.nfe
    assert rows.loc["2-rf-distill", "train_wall_s"] == pytest.approx(expected.seconds, abs=1e-3)
    assert rows.loc["2-rf-distill", "train_cost"] == text
    for name in ("file", "made"):
        assert pd.isna(rows.loc[name, "train_nfe"]) and pd.isna(rows.loc[name, "train_wall_s"])
        assert rows.loc[name, "train_cost"].startswith("not counted: not trained by rfbench")
    assert pd.isna(rows.loc["independent", "train_nfe"])
    # the second run trained nothing and records the same cost; the written table reads it back as an integer
    assert second.trained == [] and second.frame.set_index("model").loc["2-rf-distill", "train_nfe"] == expected.nfe
    table = pd.read_csv(root / "out" / "results.csv").set_index("model")
    assert table.loc["2-rf-distill", "train_nfe"] == expected.nfe


def test_a_baseline_without_the_cost_columns_gates_a_run_that_has_them(run):
    first, _, _ = run
    baseline = first.frame.drop(columns=["train_nfe", "train_wall_s", "train_cost"])
    directions = column_directions()
    result = compare(first.frame, baseline, directions, [parse_tolerance("energy:+0", directions)])
    assert result.passed and result.checked >= 3, result.failures
