"""Class labels drawn from the seeds: a class-conditional model whose every sample's class comes from its own seed
(:func:`rfbench.noise.classes`), so that a run of N seeds samples a reproducible set, class-balanced in expectation,
and the class of seed s is the same whatever the batch, the shard or the device.

Such a model states ``classes_from_seeds`` (its number of classes; 0 or absent: it draws none) and takes the rows'
classes as ``model(x, t, class_labels=...)`` (and ``denoise(x, t, class_labels=...)``), class indices (B,). Every
evaluation binds it to the seeds of its rows first, :func:`seeded`: :func:`rfbench.sample` does so with its
``seeds``, and so do the suite runner's evaluations outside it (warm-up, probes, the GITS search). Evaluated unbound,
such a model refuses (:func:`unbound_error`) rather than sample with another class than its seeds'.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from rfbench.noise import classes

SEEDS = "seeds"     # a model's class_label when each sample's class comes from its seed

def seed_classes(model: Any) -> int:
    """The number of classes ``model`` draws from the seeds of its rows (0: it draws none)."""
    value = getattr(model, "classes_from_seeds", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def unbound_error(model: Any) -> TypeError:
    """The error of a seeds-labelled model evaluated without the seeds of its rows."""
    return TypeError(f"{type(model).__name__} draws each sample's class (of {seed_classes(model)}) from its seed: "
                     f"evaluate it through rfbench.sample(..., seeds=...) (one seed per row of x0), or bind it with "
                     f"rfbench.models.labels.seeded(model, seeds)")


class SeedLabelled(torch.nn.Module):
    """``model`` evaluated on the rows of ``seeds`` (in order): each row with its seed's class. Every attribute but
    the evaluations is the model's own (its path, input shape, sigma range)."""

    classes_from_seeds = 0      # bound: it needs no more seeds

    def __init__(self, model: Any, seeds: Sequence[int]):
        super().__init__()
        self.model = model
        self.seeds = [int(s) for s in seeds]
        self.labels = classes(self.seeds, seed_classes(model))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            value = getattr(self.model, name)
            if name == "denoise":       # the model's data prediction, where it has one, with the rows' classes
                return lambda x, t: value(x, t, class_labels=self._labels(x))
            return value

    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != len(self.seeds):
            raise ValueError(f"a model with classes from the seeds was bound to {len(self.seeds)} seeds but evaluated "
                             f"on {x.shape[0]} rows: evaluate it on exactly the rows of its seeds")
        return self.labels.to(x.device)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x, t, class_labels=self._labels(x))


def seeded(model: Any, seeds: Sequence[int] | None) -> Any:
    """``model`` bound to the seeds of the rows it will evaluate, where it draws its classes from them (else the
    model itself). Without seeds such a model is refused (:func:`unbound_error`)."""
    if not seed_classes(model):
        return model
    if seeds is None:
        raise unbound_error(model)
    return SeedLabelled(model, seeds)
