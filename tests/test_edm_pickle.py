"""EDM network pickles (rfbench.models.edm, rfbench.models.songunet): read without running the source they embed, and
equal to EDM's own networks.

The fixtures in tests/data/edm (see BUILD.md there) were made with NVlabs/edm's code (commit 008a4e5) outside this
repository: three random-weight networks pickled as EDM's training loop pickles a snapshot (EDMPrecond around a
DDPM++ SongUNet, VPPrecond around an NCSN++ one, VEPrecond around one with skip encoder and decoder), gzipped, and
EDM's outputs on fixed inputs: the networks' D(x, sigma) and generate.py's edm_sampler (4 steps, S_churn=0).
"""

from __future__ import annotations

import copy
import gzip
import os
import pickle
from pathlib import Path

import pytest
import torch

import rfbench
from rfbench.models.checkpoint import CheckpointError
from rfbench.models.edm import EDMFlow, network_from_record, read_edm_pickle
from rfbench.models.formats import file_kind, sniff
from rfbench.models.sources import ModelFile

DATA = Path(__file__).parent / "data" / "edm"
NETWORKS = ("edm-ddpmpp", "vp-ncsnpp", "ve-skip")
# the first line of both embedded sources (training/networks.py, training/loss.py), and code of the same length that
# writes a marker into the current folder when the source is exec'd, as EDM's own loader does
LICENCE_LINE = b"# Copyright (c) 2022, NVIDIA CORPORATION & AFFILIATES. All rights reserved."
MARKER_CODE = b"open('edm-marker.txt', 'w').write('embedded source ran')".ljust(len(LICENCE_LINE))


@pytest.fixture(scope="module")
def outputs():
    return torch.load(DATA / "outputs.pt", weights_only=True)


def pickle_file(tmp_path: Path, name: str, tamper: bool = False) -> Path:
    data = gzip.decompress((DATA / f"{name}.pkl.gz").read_bytes())
    if tamper:
        assert data.count(LICENCE_LINE) == 2
        data = data.replace(LICENCE_LINE, MARKER_CODE)
    path = tmp_path / f"network-snapshot-{name}{'-tampered' if tamper else ''}.pkl"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", NETWORKS)
def test_network_equals_edm(tmp_path, outputs, name):
    model = rfbench.load_model(pickle_file(tmp_path, name), device="cpu")
    assert isinstance(model, EDMFlow) and model.input_shape == (3, 8, 8)
    x, sigma, expected = outputs["x"], outputs["sigma"], outputs[name]
    with torch.no_grad():
        got = model.net(x, sigma)
        # the same evaluation in rfbench's flow time: x_t = t x_sigma at t = 1 / (1 + sigma)
        t = 1 / (1 + sigma.double())
        flow = model.denoise(x.double() * t[:, None, None, None], t)
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= 1e-5 * scale
    assert (flow - expected.double()).abs().max().item() <= 1e-5 * scale


def test_tampered_source_runs_nothing_and_loads_the_same(tmp_path, outputs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clean = rfbench.load_model(pickle_file(tmp_path, "edm-ddpmpp"), device="cpu")
    tampered_path = pickle_file(tmp_path, "edm-ddpmpp", tamper=True)
    assert MARKER_CODE in tampered_path.read_bytes()
    tampered = rfbench.load_model(tampered_path, device="cpu")
    assert not (tmp_path / "edm-marker.txt").exists()
    assert read_edm_pickle(tampered_path)["ema"].source_sha1 != read_edm_pickle(
        pickle_file(tmp_path, "edm-ddpmpp"))["ema"].source_sha1
    with torch.no_grad():
        assert torch.equal(tampered.net(outputs["x"], outputs["sigma"]), clean.net(outputs["x"], outputs["sigma"]))
    assert not (tmp_path / "edm-marker.txt").exists()


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch edm-marker.txt",))


def test_other_globals_are_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    # it names torch_utils.persistence (so it is read as an EDM pickle) and calls os.system
    path.write_bytes(pickle.dumps({"note": "torch_utils.persistence", "ema": _RunsCode()}, protocol=4))
    assert sniff(path) == "edm"
    with pytest.raises(CheckpointError) as err:
        rfbench.load_model(path, device="cpu")
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "system" in message and "refused" in message
    with pytest.raises(CheckpointError, match="refused"):       # the check before a run says it too
        ModelFile(path).check()
    assert not (tmp_path / "edm-marker.txt").exists()


def test_a_pickle_cannot_change_the_functions_it_may_call(tmp_path):
    """BUILD sets attributes on any object a pickle holds, the globals it names included: here the defaults of
    torch's tensor rebuild function. The load gets its own stand-ins; torch's function is left as it was."""
    path = tmp_path / "defaults.pkl"
    path.write_bytes(b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}V__defaults__\n(Vx\nts\x86b0"
                     b"ctorch_utils.persistence\n_reconstruct_persistent_obj\n0}.")
    before = torch._utils._rebuild_tensor_v2.__defaults__
    with pytest.raises(CheckpointError, match="an EDM network pickle is a dict whose 'ema' entry is the network"):
        read_edm_pickle(path)
    assert torch._utils._rebuild_tensor_v2.__defaults__ == before


def test_formats_and_model_file(tmp_path):
    path = pickle_file(tmp_path, "vp-ncsnpp")
    assert sniff(path) == "edm" and file_kind(path) == "flow"
    source = ModelFile(path)
    assert source.input_shape(None) == (3, 8, 8) and source.format() == "EDM network pickle"
    source.check()
    with pytest.raises(ValueError, match=r"\(EDM network pickle\) holds a flow model, not a diffusion one"):
        ModelFile(path, kind="diffusion").check()
    model = rfbench.load_model(path)              # the default device
    assert model.sigma_min == pytest.approx(0.002013235, rel=1e-6)
    assert model.sigma_max == pytest.approx(112.72605, rel=1e-6)


@pytest.mark.parametrize("name", ["edm-ddpmpp", "vp-ncsnpp"])
def test_edm_heun_equals_edm_sampler(tmp_path, outputs, name):
    """rfbench's edm-heun on the karras grid, on the flow (sigma = (1 - t) / t), is EDM's edm_sampler on its network
    (num_steps 4, its sigma range clipped to the network's: 0.002013 for the VP file)."""
    model = rfbench.load_model(pickle_file(tmp_path, name), device="cpu")
    with torch.no_grad():
        result = rfbench.sample(model, outputs["latents"], "edm-heun", 4, grid="karras")
    expected = outputs[f"heun4-{name}"]
    assert result.nfe == 7
    assert (result.x - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()


def test_flow_velocity_and_time_range(tmp_path, outputs):
    model = rfbench.load_model(pickle_file(tmp_path, "edm-ddpmpp"), device="cpu")
    x = outputs["x"].double()
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    with torch.no_grad():
        v = model(x, t)
        denoised = model.denoise(x, t)
        assert torch.allclose(v, (denoised - x) / (1 - t)[:, None, None, None])
        assert torch.equal(model.denoise(x, torch.ones(3, dtype=torch.float64)), x)     # sigma = 0
    with pytest.raises(ValueError, match=r"t=0 .*karras"):
        model(x, torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(0, 1\), got t=1"):
        model(x, torch.ones(3))


def _record(tmp_path, name="edm-ddpmpp"):
    return read_edm_pickle(pickle_file(tmp_path, name))["ema"]


def test_strict_key_shape_and_argument_checks(tmp_path):
    record = _record(tmp_path)
    unet = record.state["_modules"]["model"]
    network_from_record(copy.deepcopy(record), "f.pkl")        # the unaltered record builds

    missing = copy.deepcopy(record)
    del missing.state["_modules"]["model"].state["_modules"]["map_layer1"].state["_parameters"]["bias"]
    with pytest.raises(CheckpointError, match=r"^f.pkl \('ema'\) does not fit EDMDenoiser: missing key\(s\) "
                                              r"model.map_layer1.bias$"):
        network_from_record(missing, "f.pkl")

    wider = copy.deepcopy(record)
    wider.state["_modules"]["model"].state["_init_kwargs"]["channel_mult_emb"] = 8
    with pytest.raises(CheckpointError, match=r"^f.pkl: model.map_layer0 records out_features=16, rfbench's "
                                              r"network built from the recorded arguments has 32$"):
        network_from_record(wider, "f.pkl")

    misshapen = copy.deepcopy(record)
    misshapen.state["_modules"]["model"].state["_modules"]["map_layer0"].state["_parameters"]["weight"] = \
        torch.zeros(16, 5)
    with pytest.raises(CheckpointError, match=r"^f.pkl \('ema'\) does not fit EDMDenoiser: key 'model.map_layer0"
                                              r".weight' has shape \(16, 5\) in the file, the model expects "
                                              r"\(16, 4\)$"):
        network_from_record(misshapen, "f.pkl")

    eps = copy.deepcopy(record)
    norm = eps.state["_modules"]["model"].state["_modules"]["enc"].state["_modules"]["8x8_block0"]
    norm.state["_modules"]["norm0"].state["eps"] = 1e-5
    with pytest.raises(CheckpointError, match=r"^f.pkl: model.enc.8x8_block0.norm0 records eps=1e-05, rfbench's "
                                              r"network built from the recorded arguments has 1e-06$"):
        network_from_record(eps, "f.pkl")

    sigma_data = copy.deepcopy(record)
    sigma_data.state["sigma_data"] = 0.5       # the constructor was given 0.4: the layer records otherwise
    with pytest.raises(CheckpointError, match=r"records sigma_data=0.5, .* has 0.4$"):
        network_from_record(sigma_data, "f.pkl")
    assert unet.class_name == "SongUNet"


@pytest.mark.parametrize("change, message", [
    (lambda r: setattr(r, "class_name", "iDDPMPrecond"), r"iDDPMPrecond, not supported yet"),
    (lambda r: setattr(r.state["_modules"]["model"], "class_name", "DhariwalUNet"),
     r"EDMPrecond around DhariwalUNet; not supported yet"),
    (lambda r: r.state["_modules"]["model"].state["_init_kwargs"].update(label_dim=10),
     r"label_dim=10 \(class-conditional\) is not supported yet"),
    (lambda r: r.state["_init_kwargs"].update(model_channels=8),
     r"EDMPrecond was given model_channels=8 for its network, which records model_channels=4$"),
])
def test_unsupported_networks_are_refused_in_one_line(tmp_path, change, message):
    record = _record(tmp_path)
    change(record)
    with pytest.raises(CheckpointError, match=message) as err:
        network_from_record(record, "f.pkl")
    assert "\n" not in str(err.value) and str(err.value).startswith("f.pkl")


def test_not_a_network_pickle(tmp_path):
    path = tmp_path / "no-ema.pkl"
    path.write_bytes(pickle.dumps({"torch_utils.persistence": 1}, protocol=4))
    with pytest.raises(CheckpointError, match=r"no-ema.pkl holds a dict with keys torch_utils.persistence; an EDM "
                                              r"network pickle is a dict whose 'ema' entry is the network"):
        rfbench.load_model(path, device="cpu")
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(gzip.decompress((DATA / "ve-skip.pkl.gz").read_bytes())[:5000])
    with pytest.raises(CheckpointError, match=r"truncated.pkl: not a readable EDM network pickle"):
        rfbench.load_model(truncated, device="cpu")
