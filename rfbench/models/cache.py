"""On-disk cache of trained models and generated pairs, keyed by a hash of everything that determines them.

Used by every trained model's recipe, rfbench's baselines and plugins alike (``ctx.cache`` in
:meth:`rfbench.models.sources.ModelSource.load`)."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from rfbench.files import disk_full, exclusive, free_space, size_text
from rfbench.models.checkpoint import (CheckpointError, atomic_torch_save, config_hash, jsonable, load_checkpoint,
                                       save_checkpoint)
from rfbench.progress import Progress
from rfbench.training.counting import TrainingCost, counting

# where an entry stores what making it cost (TrainingCost.to_dict): a network's in its checkpoint's info, a dict of
# tensors' beside them
COST_KEY = "training_cost"

# Bump when training code changes in a way that changes the weights, so stale caches are not reused.
TRAINING_CODE_VERSION = 1


def default_cache_dir() -> Path:
    """``$RFBENCH_CACHE`` if set, else ``~/.cache/rfbench``."""
    return Path(os.environ.get("RFBENCH_CACHE") or Path.home() / ".cache" / "rfbench")


def config_key(config: dict) -> str:
    """A short stable hash of a JSON-able config (sorted keys)."""
    return config_hash({"training_code_version": TRAINING_CODE_VERSION, **config})


class CacheFullError(OSError):
    """No space left on the cache's disk for an entry: ``path`` the cache file, ``need`` the bytes it takes,
    ``free`` those its disk has (None: unknown)."""

    def __init__(self, what: str, path: Path, need: int, free: int | None):
        have = "" if free is None else f", its disk has {size_text(free)} free"
        self.message = (f"{what}: no space left on device for the cache file {path} (about {size_text(need)}"
                        f"{have}); free space or give another cache folder (--cache, cache_dir=), then rerun")
        super().__init__(errno.ENOSPC, self.message, str(path))

    def __str__(self) -> str:
        return self.message


def entry_bytes(tensors) -> int:
    """The bytes a cache entry of these tensors takes on disk, about: their data (a checkpoint's zip headers and
    config add a few kB), with a margin."""
    return int(1.1 * sum(t.numel() * t.element_size() for t in tensors)) + (1 << 20)


class Cache:
    """Trained networks and tensors under ``root``; ``log`` receives one line per train or load. ``progress``: how the
    run shows long jobs (a recipe reports its training with ``fit(..., progress=cache.progress.training(name,
    config))``); by default nothing is shown."""

    def __init__(self, root: str | os.PathLike | None = None, log: Callable[[str], None] = print,
                 progress: Progress | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.log = log
        self.progress = progress if progress is not None else Progress(say=log)
        self.trained: list[str] = []  # names trained (not loaded) during this run
        self.keys: dict[str, str] = {}  # name -> checkpoint file stem, for the provenance of result rows
        self.last_key: str | None = None  # the entry of the last network() call: the model a recipe just loaded
        # cache entry -> (its name, what making it cost; None: stored without its cost), of the entries asked for
        # since start_chain(): everything a model's load used, so what it cost to make (chain_cost)
        self.chain: dict[str, tuple[str, TrainingCost | None]] = {}

    def start_chain(self) -> None:
        """Forget the entries asked for so far: those asked for from now on are one model's chain (the runner calls
        it before each model's load)."""
        self.chain = {}

    def chain_cost(self) -> tuple[TrainingCost | None, str]:
        """What making every entry asked for since :meth:`start_chain` cost together, counted when each was made
        (:func:`rfbench.training.counting.counting`: the model's own training, its parents', its teachers' and the
        pairs they generated, each entry once), and a line listing them; (None, why) where no entry was asked for or
        one holds no cost."""
        if not self.chain:
            return None, "not counted: no training through rfbench's cache made this model"
        unknown = [name for name, cost in self.chain.values() if cost is None]
        if unknown:
            return None, (f"not counted: cache entry {', '.join(unknown)} was stored without its training cost (made "
                          f"before costs were recorded; delete it to train it again)")
        total = TrainingCost()
        for _, cost in self.chain.values():
            total = total + cost
        return total, "; ".join(f"{name} {cost.forward}+{cost.backward} ({cost.seconds:.1f} s)"
                                for name, cost in self.chain.values())

    def _charge(self, name: str, path: Path, cost: TrainingCost | None) -> None:
        self.chain[path.stem] = (name, cost)

    def network_path(self, name: str, config: dict) -> Path:
        return self.root / "models" / f"{name}-{config_key(config)}.pt"

    def tensors_path(self, name: str, config: dict) -> Path:
        return self.root / "pairs" / f"{name}-{config_key(config)}.pt"

    def network(self, name: str, config: dict, make: Callable[[], nn.Module],
                train: Callable[[], tuple[nn.Module, dict]], device: str | torch.device) -> nn.Module:
        """Load the network for ``config`` from the cache, or train it with ``train()`` and store it. Jobs sharing
        the cache train an entry once: training holds the entry's lock (:meth:`entry`), and a job that finds it
        held waits, then loads what the other trained. A cache whose disk has no room for the network (``make()``'s
        size) is refused before training, and a disk that fills up meanwhile when it is stored: both a
        :class:`CacheFullError` naming the file."""
        path = self.network_path(name, config)
        self.keys[name] = self.last_key = path.stem

        def make_entry():
            with torch.random.fork_rng(devices=[]):    # its size from an untrained network; the RNG left as it was
                need = entry_bytes(make().state_dict().values())
            free = free_space(path)
            if free is not None and free < need:
                raise CacheFullError(f"cannot train {name}", path, need, free)
            self.log(f"training {name} ...")
            with counting() as count:
                net, info = train()
            info = {**info, COST_KEY: count.cost.to_dict()}
            self._charge(name, path, count.cost)
            _saved(f"trained {name}, but could not store it", path,
                   lambda: save_checkpoint(path, net, jsonable(config), info=info),
                   entry_bytes(net.state_dict().values()))
            self.trained.append(name)
            loss = info.get("final_loss", float("nan"))
            self.log(f"trained {name} ({info.get('seconds', 0):.1f} s, final loss {loss:.4g}) -> {path}")
            return net.to(device).eval()
        return self._load_or_make(name, path, "training",
                                  lambda: self._load_network(name, path, config, make, device), make_entry)

    def _load_network(self, name: str, path: Path, config: dict, make: Callable[[], nn.Module],
                      device: str | torch.device) -> nn.Module | None:
        if not path.exists():
            return None
        net = make()
        try:
            payload = load_checkpoint(path, net, expected_config=jsonable(config))
        except CheckpointError as exc:
            self.log(f"ignoring unusable cache entry ({exc}); training {name} again")
            return None
        info = payload.get("info")
        self._charge(name, path, TrainingCost.from_dict(info.get(COST_KEY) if isinstance(info, dict) else None))
        self.log(f"loaded {name} from {path}")
        return net.to(device).eval()

    def entry(self, name: str, path: Path, doing: str):
        """The lock of the cache entry ``path`` (``PATH.lock`` beside it), held while the entry is made: a second
        job asking for it waits (saying so once) instead of making it again. An entry that exists is read without
        the lock (it is written atomically), so a read-only cache that holds every entry needs no lock file.

        No deadlock: a job holds an entry's lock only while making that entry, and making it may take the locks of
        the entries it is made from (a recipe that loads 1-RF inside 2-RF's ``train``), never of an entry made from
        it (1-RF's training never asks for 2-RF). Locks are thus taken along the models' dependency graph, which
        has no cycle, so no two jobs can each wait for a lock the other holds. (rfbench's recipes load the parent
        and its pairs before asking for the child: they never hold two locks at all.)"""
        lock = path.with_name(path.name + ".lock")
        return exclusive(lock, waiting=lambda: self.log(f"waiting for another job {doing} {name} (lock {lock})"))

    def tensors(self, name: str, config: dict, build: Callable[[], dict[str, torch.Tensor]]) -> dict:
        """Load a dict of tensors (e.g. reflow pairs) for ``config``, or build and store it (under the entry's lock,
        as :meth:`network` trains)."""
        path = self.tensors_path(name, config)

        def make_entry():
            with counting() as count:
                data = build()
            data = {**data, COST_KEY: count.cost.to_dict()}
            self._charge(name, path, count.cost)
            _saved(f"made {name}, but could not store it", path, lambda: atomic_torch_save(data, path),
                   entry_bytes(v for v in data.values() if isinstance(v, torch.Tensor)))
            return data

        def load():
            data = self._load_tensors(path)
            if data is not None:
                self._charge(name, path, TrainingCost.from_dict(data.get(COST_KEY)))
            return data
        data = self._load_or_make(name, path, "making", load, make_entry)
        return {key: value for key, value in data.items() if key != COST_KEY}

    def _load_or_make(self, name: str, path: Path, doing: str, load: Callable[[], object | None],
                      make: Callable[[], object]):
        """``load()`` the entry at ``path`` (None: missing or unusable) without a lock, else ``make()`` it under the
        entry's lock (:meth:`entry`), loading it instead when another job made it while this one waited."""
        seen = _stamp(path)
        value = load()
        if value is not None:
            return value
        with self.entry(name, path, doing):
            if _stamp(path) != seen:        # made by another job meanwhile
                value = load()
            return value if value is not None else make()

    def _load_tensors(self, path: Path) -> dict | None:
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated file from an interrupted run: rebuild it
            self.log(f"ignoring unreadable {path} ({type(exc).__name__}: {exc})")
            return None


def _saved(what: str, path: Path, save: Callable[[], None], need: int) -> None:
    """``save()`` the cache file ``path`` of about ``need`` bytes; a full disk (torch says only "unexpected pos")
    is a :class:`CacheFullError` naming the file."""
    try:
        save()
    except (OSError, RuntimeError) as exc:
        if not disk_full(exc, path, need):
            raise
        raise CacheFullError(what, path, need, free_space(path)) from exc


def _stamp(path: Path) -> tuple[int, int] | None:
    """What tells a file from the one written over it (inode, modification time), or None when there is none."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


@dataclass
class Training:
    """A network a recipe would train (not in the cache), or reflow pairs it would generate."""

    name: str
    steps: int | None = None          # optimisation steps (networks)
    batch_size: int | None = None
    pairs: int | None = None          # pairs to generate with rk45 (reflow pairs)


class PlanningCache(Cache):
    """A cache that trains nothing, for planning a run (``--dry-run``, the progress bar's up-front estimate):
    ``network`` records whether the entry exists and, when it does not, the training it would take, and returns the
    network's architecture untrained (it costs the same to evaluate); ``tensors`` records the pairs it would
    generate and returns none.

    The training is read from the config a recipe passes to :meth:`Cache.network`: its ``"train"`` entry's
    ``steps`` and ``batch_size`` (a :class:`~rfbench.training.TrainConfig` as a dict, as rfbench's recipes pass it);
    a recipe whose config says neither is listed without a cost. Pairs: the config's ``num_pairs``."""

    def __init__(self, root, log: Callable[[str], None] = lambda msg: None):
        super().__init__(root, log=log)
        self.to_train: list[Training] = []

    def network(self, name, config, make, train, device):
        if not self.network_path(name, config).exists():
            spec = config.get("train") if isinstance(config, dict) else None
            spec = spec if isinstance(spec, dict) else {}
            self.to_train.append(Training(name, spec.get("steps"), spec.get("batch_size")))
        return make().to(device).eval()

    def tensors(self, name, config, build):
        if not self.tensors_path(name, config).exists():
            self.to_train.append(Training(name, pairs=config.get("num_pairs") if isinstance(config, dict) else None))
        return {"z0": None, "z1": None}
