"""What the command line's entry point and its subcommands share: the argument parser (one-line errors, rank 0
only under torchrun), the loading of plugins before the arguments are parsed, and the run's arguments turned into
a :class:`~rfbench.suites.plan.RunConfig`."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from rfbench import distributed
from rfbench.models.labels import SEEDS
from rfbench.models.sources import KINDS, CheckpointSlot, ModelFile, as_source
from rfbench.plugins import PluginError, load_plugins
from rfbench.suites.base import SUITES
from rfbench.suites.plan import RunConfig


class Parser(argparse.ArgumentParser):
    """Under torchrun only rank 0 prints usage and errors (every rank parses the same arguments). An argument error
    is one line and a pointer to --help, not the usage block."""

    def _print_message(self, message, file=None):
        if distributed.env_rank() == 0:
            super()._print_message(message, file)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")


def plugins_first(argv: list[str], prog: str) -> None:
    """Load the installed plugins and those named by --plugin (before the arguments are parsed: they add suites,
    models and solvers); a plugin that fails is one line and exit status 2."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    try:
        load_plugins(known.plugin)
    except PluginError as exc:
        if distributed.env_rank() == 0:
            print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _checkpoints(args, suite) -> dict[str, str]:
    """--checkpoint-dir's MODEL.pth / MODEL.pt files (or a slot's published file names) for the suite's models, then
    --checkpoint MODEL=PATH."""
    found: dict[str, str] = {}
    if args.checkpoint_dir is not None:
        if not args.checkpoint_dir.is_dir():
            raise ValueError(f"--checkpoint-dir {args.checkpoint_dir} is not a folder")
        for entry in suite.models:
            model = entry.name
            published = entry.source.file_names if isinstance(entry.source, CheckpointSlot) else ()
            for name in (f"{model}.pth", f"{model}.pt", *published, model):   # a folder: diffusers' UNet2DModel
                candidate = args.checkpoint_dir / name
                if candidate.is_file() or (candidate.is_dir() and name == model):
                    found[model] = str(candidate)
                    break
    for item in args.checkpoint:
        model, sep, path = item.partition("=")
        if not sep or not model or not path:
            raise ValueError(f"--checkpoint takes MODEL=PATH, got {item!r}")
        found[model] = path
    return found


def parse_model(item: str):
    """``--model NAME[:KIND]=PATH|package.module:factory`` -> (name, source); KIND ``classN``: a class-conditional
    EDM file sampled with class N; ``classes``: with each sample's class drawn from its seed."""
    head, sep, spec = item.partition("=")
    name, _, kind = head.partition(":")
    if not sep or not name or not spec:
        raise ValueError(f"--model takes NAME=PATH or NAME=package.module:factory (NAME:KIND=... to say its kind), "
                         f"got {item!r}")
    label = re.fullmatch(r"class(\d+)|classes", kind)
    if label:
        if not Path(spec).expanduser().is_file():
            raise ValueError(f"--model {item}: {kind} applies to a class-conditional EDM network pickle, and "
                             f"{spec!r} is not a file")
        return name, ModelFile(spec, class_label=int(label.group(1)) if label.group(1) else SEEDS)
    allowed = KINDS + ("vp", "subvp")
    if kind and kind not in allowed:
        raise ValueError(f"--model {item}: KIND must be one of {', '.join(allowed)}, classN (a class-conditional "
                         f"EDM file sampled with class N) or classes (each sample's class from its seed), got "
                         f"{kind!r}")
    return name, as_source(spec, kind or None, what=f"--model {item}")


def _count_or_auto(flag: str, value: str | None) -> int | str | None:
    """An integer >= 1, or "auto" (or None, not given) as it is."""
    if value is None or value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{flag} takes an integer >= 1 or auto, got {value!r}")
    return count


def config_from_args(args) -> RunConfig:
    suite = SUITES[args.suite]
    options = {}
    if args.inception_weights is not None or args.inception_mode is not None:
        options = {"weights": args.inception_weights, "mode": args.inception_mode or "clean"}
    return RunConfig(models=args.models, add_models=tuple(parse_model(m) for m in args.model),
                     checkpoints=tuple(_checkpoints(args, suite).items()), solvers=args.solvers,
                     steps=tuple(args.steps) if args.steps else None, grids=args.grids,
                     solver_options=tuple(args.solver_option),
                     num_samples=args.num_samples,
                     first_seed=args.first_seed, batch_size=_count_or_auto("--batch-size", args.batch_size),
                     repeats=args.repeats,
                     bootstrap=args.bootstrap, extractor=args.extractor, extractor_options=tuple(options.items()),
                     data_dir=args.data_dir, reference_file=None if args.ref_stats is None else str(args.ref_stats),
                     device=args.device, cache_dir=None if args.cache is None else str(args.cache),
                     resume=args.resume and not args.force, save_samples=args.save_samples,
                     threads=_count_or_auto("--threads", args.threads), precision=args.dtype,
                     compile=args.compile, channels_last=args.channels_last, shard=args.shard)
