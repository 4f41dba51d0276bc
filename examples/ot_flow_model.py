"""A model plugin: your own model, trained by your own recipe, benchmarked beside rfbench's baselines.

    python benchmark.py --suite toy2d --plugin examples/ot_flow_model.py --models 1-rf 2-rf ot-cfm

The model is a flow trained by minibatch optimal-transport conditional flow matching (OT-CFM; Tong et al. 2024,
Pooladian et al. 2023): the rectified-flow objective, but each minibatch's noise and data are paired by the exact
optimal assignment instead of at random. The coupling is nearly straight from the start, which is what reflow buys
rectified flow with a second training: rfbench's table puts the two side by side (straightness, crossing
probability, transport cost, w2 at each NFE).

It enters rfbench by the door rfbench's own baselines use: a ``Recipe`` (everything that determines the model,
whose hash is the model's identity: editing the recipe makes it another model, recomputed and never gated against
the old one) registered under a name with ``rfbench.register_model``. On first use rfbench trains it on the suite's
data through its model cache (a file under the cache, keyed by the recipe and the data); later runs load it.
It fits 2D suites; a suite of another shape refuses it before any work, naming both shapes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import scipy.optimize
import torch

import rfbench
from rfbench.models import MLPConfig, build_network, network_input_shape, network_spec
from rfbench.training import TrainConfig, fit, seeded_init


def ot_pairs(source, target: torch.Tensor):
    """Minibatches (x0, x1) drawn independently, then re-paired by the exact optimal assignment of squared
    distances within the batch (scipy's Hungarian solver)."""

    def batch(gen: torch.Generator, n: int):
        x1 = target[torch.randint(target.shape[0], (n,), generator=gen)]
        x0 = source(gen, n) if callable(source) else source[torch.randint(source.shape[0], (n,), generator=gen)]
        cost = torch.cdist(x0.double(), x1.double()).pow(2).numpy()
        rows, cols = scipy.optimize.linear_sum_assignment(cost)
        return x0[torch.from_numpy(rows)], x1[torch.from_numpy(np.asarray(cols))]

    return batch


def flow_matching_loss(pairs):
    """E_t ||(X1 - X0) - v(X_t, t)||^2 at X_t = t X1 + (1 - t) X0 (the rectified-flow regression)."""

    def loss(net, gen: torch.Generator, n: int, device) -> torch.Tensor:
        x0, x1 = pairs(gen, n)
        t = torch.rand((n, 1), generator=gen)
        xt = t * x1 + (1 - t) * x0
        return (net(xt.to(device), t[:, 0].to(device)) - (x1 - x0).to(device)).pow(2).sum(1).mean()

    return loss


@dataclass(frozen=True)
class OTFlow(rfbench.Recipe):
    """OT-CFM on a 2D suite's data: an MLP velocity trained once and cached by rfbench."""

    net: MLPConfig = MLPConfig(hidden=128, depth=4)
    train: TrainConfig = TrainConfig(steps=1500, batch_size=256, lr=2e-3, ema_decay=0.99, seed=7)
    kind = "flow"

    def spec(self) -> dict:
        return {"family": "ot-cfm", "net": network_spec(self.net), "train": asdict(self.train)}

    def describe(self) -> str:
        return f"flow, minibatch OT conditional flow matching (examples/ot_flow_model.py, recipe {self.recipe_hash()})"

    def input_shape(self, suite) -> tuple[int, ...]:
        return network_input_shape(self.net)

    def load(self, ctx):
        problem = ctx.suite.problem
        source = problem.train_source()       # a fixed set for data-to-data problems, else fresh Gaussian noise
        if source is None:
            source = lambda gen, n: torch.randn((n, *problem.shape), generator=gen)  # noqa: E731

        def train():
            start = time.perf_counter()
            net = seeded_init(lambda: build_network(self.net), self.train.seed)
            with ctx.cache.progress.training("ot-cfm", self.train) as job:     # steps, loss and ETA as it trains
                net, history = fit(net, flow_matching_loss(ot_pairs(source, problem.train_target())), self.train,
                                   ctx.device, progress=job)
            return net, {"seconds": time.perf_counter() - start, "final_loss": history[-1]}

        spec = {**self.spec(), "problem": problem.to_dict()}     # the cache entry: this recipe on this data
        return ctx.cache.network("ot-cfm", spec, lambda: build_network(self.net), train, ctx.device)


rfbench.register_model("ot-cfm", OTFlow())
