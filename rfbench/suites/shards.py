"""Sharded runs: N independent jobs (``--shard K/N``, a SLURM job array or N shell jobs) fill one shared ``--out``.

Each job runs the plan's cells of its shard (:func:`shard_cells`) and stores each as it
finishes (the store takes concurrent writers: one file per cell, written atomically). At its end every job writes
the table of the whole plan from what the folder holds, in the plan's order: its own cells and whatever the other
jobs have finished, so the last job to end writes the complete table. A job rerun after it stopped computes only
its missing cells (resume), then writes the table again.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator, Sequence

from rfbench.files import exclusive
from rfbench.models.sources import ModelObject
from rfbench.results.resume import Wanted, finished_cells, recorded_key
from rfbench.results.store import ResultStore
from rfbench.suites.base import Cell
from rfbench.suites.evaluate import INDEPENDENT

GATHER_LOCK = ".results.lock"   # in --out: one job at a time reads the cells and writes the table

# What may differ between the jobs that made a gathered table's rows (each row records its own): the GPU model of
# the node it ran on, and how many torchrun processes shared it. Batch plan, replicates and threads may not.
ANY_MACHINE = ("device", "timing")


def shard_cells(cells: tuple[Cell, ...], shard: tuple[int, int]) -> tuple[Cell, ...]:
    """Shard K of N's cells: cell i of the plan (numbered 0, 1, ... in the plan's, hence the table's, order) belongs
    to shard ``i % N + 1``. Fixed by the plan alone, so N jobs running the same command with K = 1..N compute every
    cell exactly once; consecutive cells (one model's step counts) go to different shards, which spreads each
    model's cost over the jobs."""
    k, n = shard
    return tuple(cell for i, cell in enumerate(cells) if i % n == k - 1)


def shard_plan(plan, shard: tuple[int, int]):
    """The :class:`~rfbench.suites.plan.Plan` of shard K of N (``plan``: the whole plan): its cells
    (:func:`shard_cells`), the models that have one (a model without a cell in this shard is not loaded) and, from
    shard 1 only, the independent row (``Plan.independent_row``); the seeds, batch size and everything else as the
    whole plan's, so that a cell's row is the one a single process makes."""
    objects = [m.name for m in plan.models if isinstance(m.source, ModelObject)]
    if objects:     # its cells cannot be told apart from another object's in the shared folder (never resumed)
        raise ValueError(f"--shard (shard=) {shard[0]}/{shard[1]}: model {objects[0]} is a Python object, whose "
                         f"cells other jobs cannot identify; give it as a file or module:factory to shard the run")
    cells = shard_cells(plan.cells, shard)
    models = tuple(m for m in plan.models if any(c.model == m.name for c in cells))
    training = tuple((name, jobs) for name, jobs in plan.training if any(m.name == name for m in models))
    return dataclasses.replace(plan, cells=cells, models=models, training=training, shard=shard, whole=plan)


def gathered(store: ResultStore, wanted: Sequence[Wanted], columns: Sequence[str]) -> tuple[list[str], list[str]]:
    """The stored keys of the ``wanted`` cells (the whole plan's, in its order) that the folder holds, and the
    labels of those it does not. A cell is held when its record is that cell and either finished (as a resumed run
    would keep it, measured on any machine: :data:`ANY_MACHINE`) or failed (a row with its error, as in a single
    process's table)."""
    anywhere = [dataclasses.replace(w, equal={k: v for k, v in w.equal.items() if k not in ANY_MACHINE})
                for w in wanted]
    done = finished_cells(store, anywhere, columns, say=lambda msg: None)
    stored = store.records()
    keys, missing = [], []
    for want in wanted:
        record = stored.get(want.key)
        failed = record is not None and record.get("status") != "ok" and recorded_key(record, want) == want.key
        if want.label in done or failed:
            keys.append(want.key)
        else:
            missing.append(want.label)
    return keys, missing


@contextlib.contextmanager
def table_keys(run, wanted: Sequence[Wanted]) -> Iterator[list[str]]:
    """The keys of the rows of ``run``'s table (a :class:`~rfbench.suites.runner.Sweep` that has swept), held while
    the table is written: the run's own rows when it is not a shard; for a shard, the ``wanted`` cells of the whole
    plan that the folder holds (:func:`gathered`), under a lock on the folder, so that of two jobs ending together
    the one that writes last has read every cell the other stored. A shard says how much of the plan its table
    holds."""
    shard, store = run.plan.shard, run.store
    if shard is None:
        yield run.keys
        return
    with exclusive(store.out_dir / GATHER_LOCK):
        rows, missing = gathered(store, wanted, store.metric_columns)
        cells = [w.label for w in wanted if w.label != INDEPENDENT]
        lacking = [label for label in missing if label != INDEPENDENT]
        kept = len([cell for cell in run.plan.cells if cell.label in run.resumed])
        text = (f"shard {shard[0]}/{shard[1]}: {len(run.plan.cells) - kept} cell(s) computed, {kept} kept; the "
                f"table holds {len(cells) - len(lacking)} of the plan's {len(cells)} cells"
                f"{', without the independent row' if INDEPENDENT in missing else ''}")
        if missing:
            shown = ", ".join(lacking[:3]) + (f" and {len(lacking) - 3} more" if len(lacking) > 3 else "")
            text += (f"{f'; missing: {shown}' if lacking else ''}. The other shards add theirs as they finish and "
                     f"the last one writes the whole table (rerun a shard that stopped: it computes only its missing "
                     f"cells; rfbench table {store.out_dir} shows the table)")
        run.say(text)
        yield rows
