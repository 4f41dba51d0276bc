"""Seeded noise, the registry, checkpoints, training steps and their progress reports."""

from __future__ import annotations

import re

import pytest
import torch

from rfbench import noise
from rfbench.models import MLP, CheckpointError, MLPConfig, load_checkpoint, save_checkpoint
from rfbench.progress import TRAIN_EVALS_PER_SAMPLE, Progress
from rfbench.registry import Registry, UnknownNameError
from rfbench.training import TrainConfig, ddpm_loss, fit, independent_pairs, rectified_flow_loss


def test_same_seeds_same_x0_at_any_batch_size():
    seeds = list(range(300))
    whole = noise.initial(seeds, (2, 3))
    for batch in (1, 7, 256):
        parts = torch.cat([noise.initial(seeds[i:i + batch], (2, 3)) for i in range(0, len(seeds), batch)])
        torch.testing.assert_close(parts, whole, rtol=0, atol=0)
    assert whole.shape == (300, 2, 3)
    torch.testing.assert_close(noise.initial([5], (2, 3))[0], whole[5], rtol=0, atol=0)
    assert noise.initial([1], (4,), dtype=torch.float64).dtype == torch.float64


def test_step_noise_is_per_seed_and_in_order():
    a = noise.StepNoise([3, 4, 5], (2,))
    b = noise.StepNoise([5], (2,))
    draws_a = [a(i) for i in range(130)]           # crosses two chunk boundaries
    draws_b = [b(i) for i in range(130)]
    for i in (0, 63, 64, 129):
        torch.testing.assert_close(draws_a[i][2], draws_b[i][0], rtol=0, atol=0)
    assert not torch.equal(draws_a[0][0], draws_a[1][0])
    # step noise is independent of the x0 stream of the same seed
    assert not torch.equal(draws_b[0][0], noise.initial([5], (2,))[0])
    with pytest.raises(ValueError, match="must be read in order"):
        b(7)


def test_repeat_seeds_are_per_seed_deterministic_and_fresh():
    """A timed repeat's seeds: row i's from seeds[i] alone (a torchrun rank making rows a:b gets exactly those rows
    of the whole), the same on every call, and new for every run and every cell."""
    seeds = list(range(40, 340))
    whole = noise.repeat_seeds(seeds, 1, "m/euler/4")
    assert whole == noise.repeat_seeds(seeds, 1, "m/euler/4")
    for a, b in [(0, 150), (150, 300), (17, 18)]:
        assert noise.repeat_seeds(seeds[a:b], 1, "m/euler/4") == whole[a:b]
    others = [noise.repeat_seeds(seeds, 2, "m/euler/4"), noise.repeat_seeds(seeds, 1, "m/euler/8")]
    used = set(seeds)
    for derived in [whole, *others]:
        assert len(set(derived)) == len(seeds) and not used & set(derived) and min(derived) >= 0
        used |= set(derived)
    x0, fresh = noise.initial(seeds, (2,)), noise.initial(whole, (2,))
    assert fresh.shape == x0.shape and not (fresh == x0).all(dim=1).any()
    with pytest.raises(ValueError, match="run must be an integer >= 1"):
        noise.repeat_seeds(seeds, 0, "m/euler/4")


def test_seed_errors():
    with pytest.raises(ValueError, match="seeds is empty"):
        noise.initial([], (2,))
    with pytest.raises(ValueError, match="non-negative"):
        noise.initial([-1], (2,))


def test_registry_refuses_duplicates_and_suggests_names():
    reg = Registry("widget")
    reg.add("alpha", 1)

    @reg.register("beta")
    def beta():
        return 2

    with pytest.raises(ValueError, match="widget 'alpha' is already registered"):
        reg.add("alpha", 3)
    with pytest.raises(UnknownNameError, match=r"Unknown widget 'alpah'\. Did you mean: alpha\? Known widgets: "
                                               r"alpha, beta"):
        reg["alpah"]
    assert reg.names() == ["alpha", "beta"] and "beta" in reg and len(reg) == 2


def test_checkpoint_round_trip(tmp_path):
    cfg = MLPConfig(hidden=16, depth=2)
    net = MLP(cfg)
    path = tmp_path / "m.pt"
    save_checkpoint(path, net, cfg.to_dict(), note="x")
    other = MLP(cfg)
    payload = load_checkpoint(path, other, expected_config=cfg.to_dict())
    assert payload["note"] == "x"
    x, t = torch.randn(5, 2), torch.rand(5)
    torch.testing.assert_close(other(x, t), net(x, t), rtol=0, atol=0)


def test_checkpoint_errors_name_the_file_and_key(tmp_path):
    cfg = MLPConfig(hidden=16, depth=2)
    path = tmp_path / "m.pt"
    save_checkpoint(path, MLP(cfg), cfg.to_dict())
    with pytest.raises(CheckpointError, match="config key 'hidden' is 16 in the file, expected 32"):
        load_checkpoint(path, MLP(MLPConfig(hidden=32, depth=2)),
                        expected_config=MLPConfig(hidden=32, depth=2).to_dict())
    with pytest.raises(CheckpointError, match=r"key 'net.0.weight' has shape \(16, 19\) in the file, the model "
                                              r"expects \(32, 19\)"):
        load_checkpoint(path, MLP(MLPConfig(hidden=32, depth=2)))
    with pytest.raises(CheckpointError, match="unexpected key\\(s\\) net.4.bias"):
        load_checkpoint(path, MLP(MLPConfig(hidden=16, depth=1)))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*truncated.pt"):
        load_checkpoint(truncated, MLP(cfg))
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*missing.pt"):
        load_checkpoint(tmp_path / "missing.pt", MLP(cfg))
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(CheckpointError, match="is not an rfbench checkpoint"):
        load_checkpoint(foreign, MLP(cfg))


def test_training_steps_lower_the_losses():
    target = torch.randn(512, 2) * 0.3 + torch.tensor([2.0, -1.0])
    config = TrainConfig(steps=200, batch_size=256, lr=3e-3, ema_decay=0.0)
    _, history = fit(MLP(MLPConfig(hidden=32, depth=2)),
                     rectified_flow_loss(independent_pairs(lambda g, n: torch.randn((n, 2), generator=g), target)),
                     config)
    assert history[-1] < 0.7 * history[0]
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    _, history = fit(MLP(MLPConfig(hidden=32, depth=2, time_scale=1e-3)), ddpm_loss(target, ab), config)
    assert history[-1] < 0.9 * history[0]


def test_training_is_seeded():
    target = torch.randn(256, 2)
    config = TrainConfig(steps=20, batch_size=64, seed=5)
    loss = rectified_flow_loss(independent_pairs(lambda g, n: torch.randn((n, 2), generator=g), target))
    nets = []
    for _ in range(2):
        torch.manual_seed(0)
        nets.append(fit(MLP(MLPConfig(hidden=16, depth=2)), loss, config)[0])
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_shape_may_be_an_int_and_is_checked():
    assert noise.initial([0, 1], 3).shape == (2, 3)
    with pytest.raises(TypeError, match="shape must be the shape of one sample"):
        noise.initial([0], None)
    with pytest.raises(ValueError, match="positive sizes"):
        noise.initial([0], (0, 2))


def test_suite_cells_are_checked_when_the_suite_is_built():
    import dataclasses

    from rfbench.suites import SUITES, Cell

    base = SUITES["toy2d"]
    with pytest.raises(ValueError, match="cell 1-rf/rk45/8: rk45 is adaptive"):
        dataclasses.replace(base, cells=(Cell("1-rf", "rk45", 8),))
    with pytest.raises(ValueError, match="cell 1-rf/euler/4,eta=0.5: euler got unknown option"):
        dataclasses.replace(base, cells=(Cell("1-rf", "euler", 4, (("eta", 0.5),)),))
    with pytest.raises(ValueError, match="Unknown solver 'eular'"):
        dataclasses.replace(base, cells=(Cell("1-rf", "eular", 4),))
    with pytest.raises(ValueError, match="names model '9-rf'"):
        dataclasses.replace(base, cells=(Cell("9-rf", "euler", 4),))


LINE = re.compile(r"training tiny: step (\d+)/20 \((\d+)%\), loss (\S+), \d+(?:s|m\d\ds|h\d\dm) elapsed"
                  r"(, ETA \S+)?$")


def test_training_reports_steps_loss_and_eta_every_tenth_without_a_terminal_and_nothing_when_quiet():
    target = torch.randn(256, 2)
    config = TrainConfig(steps=20, batch_size=32, seed=5)
    loss = rectified_flow_loss(independent_pairs(lambda g, n: torch.randn((n, 2), generator=g), target))
    nets, said = [], {}
    for enabled in (True, False, None):          # shown (no terminal), quiet, no hook at all
        lines: list[str] = []
        shown = Progress(enabled=bool(enabled), say=lines.append, tty=False)
        torch.manual_seed(0)
        with shown.training("tiny", config) as job:
            nets.append(fit(MLP(MLPConfig(hidden=16, depth=2)), loss, config,
                            progress=job if enabled is not None else None)[0])
        said[enabled] = lines
        if enabled is not None:   # a step of batch B counts 3 B model evaluations on the sweep's bar
            assert shown.total == shown.done == 20 * TRAIN_EVALS_PER_SAMPLE * 32
    matches = [LINE.match(line) for line in said[True]]
    assert all(matches), said[True]
    assert [(int(m[1]), int(m[2])) for m in matches] == [(2 * k, 10 * k) for k in range(1, 11)]
    assert all(m[4] for m in matches[:-1]) and matches[-1][4] is None      # an ETA until the last step
    assert all(float(m[3]) > 0 for m in matches)
    assert said[False] == [] and said[None] == []
    for a, b in zip(nets[0].parameters(), nets[2].parameters()):   # reporting never changes the weights
        torch.testing.assert_close(a, b, rtol=0, atol=0)
