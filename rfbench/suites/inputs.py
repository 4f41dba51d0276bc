"""What a run cannot start without, found before any work: data files, checkpoints and reference files
(:func:`missing_inputs`), and models that do not fit the suite (:func:`model_problems`); one line each."""

from __future__ import annotations

from pathlib import Path

import torch

from rfbench.data.base import DatasetNotFoundError
from rfbench.data.registry import check_dataset
from rfbench.protocols import is_diffusion_model
from rfbench.suites.base import SuiteModel
from rfbench.suites.plan import Plan


def missing_inputs(plan: Plan) -> list[str]:
    """One line per input the run cannot start without (data files, checkpoints), each naming its flag."""
    missing = []
    problem = plan.problem
    if hasattr(problem, "data_dir") and getattr(problem, "dataset", None) is not None:
        splits = (problem.train_split, problem.reference_split) + (
            (problem.independent_split,) if plan.independent_row else ())
        for split in dict.fromkeys(splits):
            try:
                check_dataset(problem.dataset, split, problem.data_dir)
            except DatasetNotFoundError as exc:
                missing.append(str(exc))
                break
    if plan.reference_file is not None and not Path(plan.reference_file).is_file():
        missing.append(f"--ref-stats {plan.reference_file}: no such file")
    for model in plan.models:
        line = model.source.missing(model.name)
        if line is not None:
            missing.append(line)
    return missing


def model_problems(plan: Plan, load=None, device: torch.device | str = "cpu") -> list[str]:
    """One line per model that cannot run in this suite: a file of another kind than asked for, or an input shape
    that does not fit the suite's samples. The shape is read from the file or the recipe's network; a model that
    does not say it and is cheap to load (``source.probe``: a TorchScript file, a factory, an object; never a
    recipe, which would train) is loaded by ``load(model)`` and evaluated once on two rows of the suite's shape on
    ``device`` (a diffusion model's network at integer timesteps, as ddim calls it)."""
    problems = []
    shape = tuple(plan.problem.shape)
    for model in plan.models:
        source = model.source
        if source.missing(model.name) is not None:
            continue          # missing_inputs says so
        try:
            if hasattr(source, "check"):
                source.check(plan.suite)
            expected = source.input_shape(plan.suite)
        except Exception as exc:
            problems.append(f"model {model.name} ({source.describe()}): {type(exc).__name__}: {_line(exc)}")
            continue
        if expected is not None:
            if tuple(expected) != shape:
                problems.append(_shape_message(plan, model, tuple(expected)))
            continue
        if load is None or not source.probe:
            continue
        try:
            net = load(model)
            declared = getattr(net, "input_shape", None)
            if declared is not None:
                if tuple(declared) != shape:
                    problems.append(_shape_message(plan, model, tuple(declared)))
                continue
            x = torch.zeros((2, *shape), device=device)
            with torch.no_grad():
                if is_diffusion_model(net):
                    out = net.eps(x, torch.full((2,), net.num_timesteps // 2, dtype=torch.long, device=device))
                else:
                    out = net(x, torch.full((2,), 0.5, device=device))
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, *shape):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                problems.append(f"model {model.name} ({source.describe()}) returned {got} for an input of shape "
                                f"{(2, *shape)} (suite {plan.name}'s samples); it must return a tensor shaped like "
                                f"its input")
        except Exception as exc:
            problems.append(f"model {model.name} ({source.describe()}) fails on a batch of suite {plan.name}'s "
                            f"shape {(2, *shape)}: {type(exc).__name__}: {_line(exc)}")
    return problems


def _line(exc: BaseException) -> str:
    """An exception's message on one line: its last non-empty line (TorchScript puts the cause last)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _shape_message(plan: Plan, model: SuiteModel, expected: tuple[int, ...]) -> str:
    return (f"model {model.name} ({model.source.describe()}) takes inputs of shape (B, "
            f"{', '.join(map(str, expected))}); suite {plan.name}'s samples have shape (B, "
            f"{', '.join(map(str, plan.problem.shape))})")
