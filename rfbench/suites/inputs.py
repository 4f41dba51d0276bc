"""What a run cannot start without, found before any work: data files, checkpoints and reference files
(:func:`missing_inputs`), models that do not fit the suite (:func:`model_problems`), and the memory its sizes need
(:func:`memory_problems`); one line each."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from rfbench.data.base import DatasetNotFoundError
from rfbench.data.registry import check_dataset
from rfbench.files import size_text
from rfbench.metrics import METRICS
from rfbench.models.labels import seeded
from rfbench.protocols import is_diffusion_model
from rfbench.samplers import SOLVERS
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


# a time grid is a list of Python floats (32 bytes a point), built through float64 arrays: the karras grid peaks at
# 72 bytes a point (tracemalloc, 10^6 steps)
GRID_BYTES_PER_POINT = 80
# float32 copies of the samples a run holds at once: x0, a cell's samples (batch by batch, then joined), the
# reference set
SAMPLE_COPIES = 4


def memory_problems(plan: Plan, available: tuple[int, str] | None = None) -> list[str]:
    """One line per size of the run that needs more memory than the machine has available (``available``: bytes
    and where that number comes from; default :func:`available_memory`): the time grid of the fixed-grid cell with
    the most steps, and the samples with what the metrics need for them (:attr:`Metric.memory`)."""
    available = available or available_memory()
    if available is None:
        return []
    have, where = available
    machine = f"this machine has {size_text(have)} available ({where})"
    problems = []
    gridded = [c for c in plan.cells if c.steps is not None and SOLVERS[c.solver].kind == "fixed"]
    if gridded:
        cell = max(gridded, key=lambda c: c.steps)
        need = (cell.steps + 1) * GRID_BYTES_PER_POINT
        if need > have:
            what = f"--steps {cell.steps}" if cell.origin != "suite" else f"cell {cell.label}"
            problems.append(f"{what}: the time grid of {cell.steps + 1} points needs about {size_text(need)} of "
                            f"memory; {machine}")
    n, shape = plan.num_samples, tuple(plan.problem.shape)
    samples = SAMPLE_COPIES * n * math.prod(shape) * 4
    metrics = {name: METRICS[name].memory(n, math.prod(shape)) for name in plan.metrics
               if METRICS[name].memory is not None}
    if samples + sum(metrics.values()) > have:
        what = f"--num-samples {n}" if n != plan.suite.num_samples else f"suite {plan.name}'s {n} samples"
        more = "".join(f" and {name} about {size_text(b)} more" for name, b in metrics.items())
        problems.append(f"{what}: {n} samples of shape {shape} need about {size_text(samples)} of memory (float32: "
                        f"x0, the samples, the reference){more}; {machine}")
    return problems


def available_memory() -> tuple[int, str] | None:
    """Bytes that this process can still allocate, and where that number comes from: the system's available memory
    (psutil, else MemAvailable of /proc/meminfo, else sysconf), or what the process's cgroup (a SLURM job's, a
    container's memory limit) has left when that is less; None where none of these can be read."""
    system = None
    try:
        import psutil
        system = int(psutil.virtual_memory().available), "psutil"
    except ImportError:
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    system = int(line.split()[1]) * 1024, "MemAvailable of /proc/meminfo"
        except (OSError, ValueError, IndexError):
            pass
        if system is None:
            try:
                system = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "sysconf"
            except (ValueError, OSError, AttributeError):
                pass
    limit = _cgroup_left()
    if limit is not None and (system is None or limit < system[0]):
        return limit, "the memory limit of this process's cgroup, less its usage"
    return system


def _cgroup_left() -> int | None:
    """What this process's cgroup and those above it may still allocate (limit less usage, the usage without the
    inactive file cache, which the kernel reclaims; cgroup v2 or v1), or None when none has a limit. A container
    sees its own cgroup as the root of the mount."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    left = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            root, limit_file, usage_file, cache_key = (Path("/sys/fs/cgroup"), "memory.max", "memory.current",
                                                       "inactive_file")
        elif "memory" in controllers.split(","):
            root, limit_file, usage_file, cache_key = (Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes",
                                                       "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        folder = root / path.lstrip("/")
        for level in [folder, *folder.parents]:
            if level != root and root not in level.parents:
                break
            try:
                limit = (level / limit_file).read_text().strip()
                usage = int((level / usage_file).read_text())
                stats = dict(line.split() for line in (level / "memory.stat").read_text().splitlines())
                usage -= int(stats.get(cache_key, 0))
            except (OSError, ValueError):
                continue
            if limit.isdigit() and int(limit) < 1 << 60:   # "max" (v2) or about 2^63 (v1): no limit
                left.append(max(int(limit) - usage, 0))
    return min(left) if left else None


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
        except ImportError as exc:     # a factory's module: its message says which and why
            problems.append(f"model {model.name} ({source.describe()}): {_line(exc)}")
            continue
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
                    out = seeded(net, [plan.seeds[0]] * 2)(x, torch.full((2,), 0.5, device=device))
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
