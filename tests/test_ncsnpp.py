"""NCSN++ (DDPM++) and the official rectified-flow / score-SDE checkpoint format.

The layout constants below were measured on score_sde_pytorch's own ``NCSNpp`` (CIFAR-10 DDPM++ config: nf 128,
ch_mult (1, 2, 2, 2), 4 residual blocks, attention at 16, BigGAN blocks, positional embedding), run outside this
repository: 565 state_dict entries whose "key:shape" lines hash to LAYOUT_SHA1, 61,804,419 parameters. rfbench's
network gave the same keys in the same order and, with the official weights loaded strictly, outputs equal to
1.4e-6 (float32; attention through scaled_dot_product_attention instead of two einsums).
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from rfbench import sample
from rfbench.models import CheckpointError
from rfbench.models.ncsnpp import NCSNpp, NCSNppConfig, load_score_sde_checkpoint

LAYOUT_KEYS = 565
LAYOUT_SHA1 = "0ea727c567db389675ba0b8936bfe94424c3c975"
PARAMETERS = 61_804_419
TINY = NCSNppConfig(image_size=16, nf=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.15)


def _randomised(config: NCSNppConfig, seed: int) -> NCSNpp:
    """A network whose every weight is random (init_scale 0 zeroes the last convolutions, which would hide bugs)."""
    torch.manual_seed(seed)
    net = NCSNpp(config)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return net.eval()


def _official_file(path, raw: NCSNpp, ema: NCSNpp, step: int = 1234) -> None:
    """What score_sde's / RectifiedFlow's save_checkpoint writes: the DataParallel model's state_dict, the EMA as a
    list of shadow parameters aligned with model.parameters(), the optimizer's state_dict and the step."""
    wrapped = torch.nn.DataParallel(raw)
    optimizer = torch.optim.Adam(wrapped.parameters(), lr=2e-4)
    torch.save({"optimizer": optimizer.state_dict(), "model": wrapped.state_dict(),
                "ema": {"decay": 0.999999, "num_updates": step,
                        "shadow_params": [p.detach().clone() for p in ema.parameters() if p.requires_grad]},
                "step": step}, path)


def test_forward_equals_score_sde_reference_numbers():
    """Every parameter set to a fixed pattern (no RNG), a fixed input; the numbers were produced by score_sde's own
    NCSNpp with the same weights (VP DDPM++ settings at nf 16, run outside this repository)."""
    net = NCSNpp(NCSNppConfig(image_size=16, nf=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,)))
    net.eval()
    with torch.no_grad():
        for i, (_, p) in enumerate(net.named_parameters()):
            p.copy_((torch.sin(torch.arange(p.numel(), dtype=torch.float64) * 0.37 + i) * 0.2).reshape(p.shape))
        x = torch.cos(torch.arange(2 * 3 * 16 * 16, dtype=torch.float64) * 0.11).reshape(2, 3, 16, 16).float()
        out = net.forward_labels(x, torch.tensor([0.999, 700.0])).double().reshape(-1)
    assert out.sum().item() == pytest.approx(-260.92620125024405, rel=1e-5)
    assert out.abs().sum().item() == pytest.approx(262.85195118897536, rel=1e-5)
    expected = [-0.2702453, -0.2111427, -0.2507997, -0.2183256, -0.149009, -0.0666879, -0.1249917]
    got = [out[i].item() for i in (0, 100, 555, 777, 1000, 1234, 1535)]
    assert got == pytest.approx(expected, abs=2e-6)


def test_full_size_network_has_the_official_layout():
    net = NCSNpp(NCSNppConfig())
    state = net.state_dict()
    signature = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in state.items())
    assert len(state) == LAYOUT_KEYS
    assert hashlib.sha1(signature.encode()).hexdigest() == LAYOUT_SHA1
    assert sum(p.numel() for p in net.parameters()) == PARAMETERS
    assert state["sigmas"].dtype == torch.float64 and state["sigmas"].shape == (1000,)


def test_official_checkpoint_round_trip_uses_the_ema_weights(tmp_path):
    raw, ema = _randomised(TINY, 0), _randomised(TINY, 1)
    _official_file(tmp_path / "checkpoint_8.pth", raw, ema)
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([0.001, 0.5, 1.0])
    net = NCSNpp(TINY).eval()
    payload = load_score_sde_checkpoint(tmp_path / "checkpoint_8.pth", net)
    assert payload["step"] == 1234
    with torch.no_grad():
        torch.testing.assert_close(net(x, t), ema(x, t), rtol=0, atol=0)
        assert not torch.equal(net(x, t), raw(x, t))
        plain = NCSNpp(TINY).eval()
        load_score_sde_checkpoint(tmp_path / "checkpoint_8.pth", plain, use_ema=False)
        torch.testing.assert_close(plain(x, t), raw(x, t), rtol=0, atol=0)
        # labels as the official forward takes them: t * 999
        torch.testing.assert_close(net.forward_labels(x, t * 999), net(x, t), rtol=0, atol=0)
    # the network is a flow for rfbench's samplers (t a scalar per step)
    assert sample(net, torch.randn(2, 3, 16, 16), "euler", 2).nfe == 2


def test_unprefixed_state_dict_loads_too(tmp_path):
    raw = _randomised(TINY, 2)
    torch.save({"model": raw.state_dict(), "ema": {"shadow_params": list(raw.parameters())}, "step": 0},
               tmp_path / "plain.pth")
    net = NCSNpp(TINY).eval()
    load_score_sde_checkpoint(tmp_path / "plain.pth", net)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x, 0.5), raw(x, 0.5), rtol=0, atol=0)


def test_bad_checkpoints_are_one_error_naming_the_file_and_key(tmp_path):
    raw = _randomised(TINY, 3)
    good = tmp_path / "good.pth"
    _official_file(good, raw, raw)
    payload = torch.load(good, weights_only=True)

    def write(name, change):
        doctored = {**payload, "model": dict(payload["model"]), "ema": dict(payload["ema"])}
        change(doctored)
        torch.save(doctored, tmp_path / name)
        return tmp_path / name

    cases = [
        (write("missing.pth", lambda p: p["model"].pop("module.all_modules.3.Conv_0.weight")),
         r"missing\.pth \('model'\) does not fit NCSNpp: missing key\(s\) all_modules\.3\.Conv_0\.weight"),
        (write("extra.pth", lambda p: p["model"].update({"module.all_modules.99.weight": torch.zeros(1)})),
         r"unexpected key\(s\) all_modules\.99\.weight"),
        (write("mixed.pth", lambda p: p["model"].update({"all_modules.0.bias": torch.zeros(64)})),
         r"mixes keys with and without the DataParallel prefix 'module\.' \(e\.g\. 'all_modules\.0\.bias'\)"),
        (write("short_ema.pth", lambda p: p["ema"].update(shadow_params=p["ema"]["shadow_params"][:-1])),
         r"'ema\.shadow_params' has \d+ tensors, the model has \d+ trainable parameters"),
        (write("no_ema.pth", lambda p: p.pop("ema")), r"has no EMA weights .* use_ema=False"),
    ]
    for path, message in cases:
        with pytest.raises(CheckpointError, match=message):
            load_score_sde_checkpoint(path, NCSNpp(TINY))
    wider = NCSNpp(NCSNppConfig(image_size=16, nf=24, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,)))
    with pytest.raises(CheckpointError, match=r"key 'all_modules\.0\.weight' has shape \(64, 16\) in the file, the "
                                              r"model expects \(96, 24\)"):
        load_score_sde_checkpoint(good, wider)
    blob = good.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(blob[:len(blob) // 2])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*truncated\.pth"):
        load_score_sde_checkpoint(tmp_path / "truncated.pth", NCSNpp(TINY))
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"other\.pth is not a score_sde-style checkpoint: expected a dict with "
                                              r"keys 'model', 'ema', 'optimizer', 'step'; found \['state_dict'\]"):
        load_score_sde_checkpoint(tmp_path / "other.pth", NCSNpp(TINY))
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nowhere.pth"):
        load_score_sde_checkpoint(tmp_path / "nowhere.pth", NCSNpp(TINY))


@pytest.mark.parametrize("kwargs, message", [
    (dict(nf=12), "nf must be a multiple of 8"),
    (dict(image_size=30), "image_size 30 must be divisible by"),
    (dict(ch_mult=()), "ch_mult must be positive"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NCSNppConfig(**kwargs)
