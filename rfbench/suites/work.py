"""The work a run will do, put on its progress bar before it starts (in model evaluations on one sample each, as
:mod:`rfbench.progress` counts): each cell's sampling, each model's reference flow and solution, and the training
of every model the cache lacks."""

from __future__ import annotations

from rfbench.progress import TRAIN_EVALS_PER_SAMPLE
from rfbench.suites.base import SuiteModel, cell_nfe, ode_cell, search_work


def scope_key(model: SuiteModel) -> str:
    return f"{model.name}: reference flow"


def exact_key(model: SuiteModel) -> str:
    return f"{model.name}: reference solution"


def expect_work(run) -> None:
    """Put the sweep's known work on the bar, in model evaluations on one sample each: per cell to compute its NFE
    x samples x timed runs, and its grid's search where it has one (the untimed warm-up, a few evaluations of one
    batch, is not counted); per model to load its reference trajectory and, when a cell needs it, its reference
    solution. Adaptive solvers are estimated (:meth:`Progress.expect`) and corrected as they are measured; training
    and reflow pairs are put on the bar when they start (a cached model costs nothing). Resumed cells, and models
    all of whose cells are resumed, count nothing."""
    plan, progress, n = run.plan, run.progress, run.x0.shape[0]
    for model in plan.models:
        todo = [cell for cell in plan.grid(model.name) if cell.label not in run.resumed]
        if not todo:
            continue
        progress.expect(scope_key(model), run.evaluation.model_scope_work(model.kind, run.x0))
        rows = run.evaluation.exact_rows(model.kind, run.x0)
        if rows and any(ode_cell(cell) for cell in todo):
            progress.expect(exact_key(model), adaptive="reference rk45", rows=rows)
        for cell in todo:
            nfe = cell_nfe(cell)
            if nfe is None:
                progress.expect(cell.label, adaptive=cell.solver, rows=n * plan.repeats)
            else:
                progress.expect(cell.label, nfe * n * plan.repeats + search_work(cell, n))


def expect_training(run) -> None:
    """Put the training of every recipe model the run will load on the bar before it starts, so that the ETA
    includes it from the first second: the plan's training jobs (:func:`~rfbench.suites.plan.plan_training`), with
    their steps and batch sizes. A job that starts replaces its estimate (the key is its description, ``training
    NAME``)."""
    for name, jobs in run.plan.training:
        if not jobs or all(c.label in run.resumed for c in run.plan.grid(name)):
            continue
        keys = []
        for job in jobs:
            if job.steps and job.batch_size:
                key = f"training {job.name}"
                if key not in run.progress.pending:
                    run.progress.expect(key, job.steps * TRAIN_EVALS_PER_SAMPLE * job.batch_size)
                keys.append(key)
        run.planned_training[name] = keys
