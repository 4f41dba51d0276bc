"""The rectified-flow recipes' parts that the toy suites' claims rest on, on small budgets: reflow pairs are drawn
as many as the recipe asks (data-to-data included), and distilling the independent coupling collapses to the
conditional mean, E[X1 | X0], which is the target's mean: distillation alone cannot improve a coupling."""

from __future__ import annotations

import torch

from baselines.rectified_flow import FlowRecipe, flow_pairs, load_independent_distilled
from rfbench.models import MLPConfig
from rfbench.models.cache import Cache
from rfbench.suites import SUITES
from rfbench.training import TrainConfig


class Still(torch.nn.Module):
    """v = 0: the flow's pairs are (z0, z0), so what flow_pairs drew as z0 is visible in z1 too."""

    def forward(self, x, t):
        return torch.zeros_like(x)


def test_reflow_pairs_of_a_data_to_data_problem_are_as_many_as_the_recipe_asks(tmp_path):
    problem = SUITES["toy2d-rings"].problem
    recipe = FlowRecipe(num_pairs=30_000)
    assert problem.num_train < recipe.num_pairs        # the training set alone is too small (it used to be reused)
    z0, z1 = flow_pairs(1, Still(), {"test": "still"}, recipe, problem, Cache(tmp_path, log=lambda m: None), "cpu")
    assert z0.shape == (30_000, 2) and torch.equal(z0, z1)
    train = {tuple(row) for row in problem.train_source().tolist()}
    assert not any(tuple(row) in train for row in z0.tolist())                 # fresh draws, not the training set
    radius = z0.norm(dim=1)                                                     # the source: a ring of radius 2
    assert abs(radius.mean().item() - 2.0) < 0.05 and radius.std().item() < 0.4


def test_distilling_the_independent_coupling_collapses_to_the_targets_mean(tmp_path):
    problem = SUITES["toy2d-rings"].problem                  # 12 modes on a ring of radius 5: mean 0, spread 5
    recipe = FlowRecipe(net=MLPConfig(hidden=64, depth=2),
                        distill=TrainConfig(steps=400, batch_size=512, lr=2e-3, ema_decay=0.9, seed=2))
    net = load_independent_distilled(recipe, problem, Cache(tmp_path, log=lambda m: None), "cpu")
    x0 = problem.initial(list(range(2000)))
    with torch.no_grad():
        x1 = x0 + net(x0, torch.zeros(len(x0)))              # one Euler step from t = 0
    target = problem.reference(2000)
    assert x1.mean(0).norm().item() < 0.5, x1.mean(0)
    assert x1.norm(dim=1).mean().item() < 0.1 * target.norm(dim=1).mean().item()   # no sample reaches the ring
