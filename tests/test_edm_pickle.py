"""EDM network pickles (rfbench.models.edm, rfbench.models.songunet): read without running the source they embed, and
equal to EDM's own networks.

The fixtures in tests/data/edm (see BUILD.md there) were made with NVlabs/edm's code (commit 008a4e5) outside this
repository: random-weight networks pickled as EDM's training loop pickles a snapshot (EDMPrecond around a DDPM++
SongUNet, VPPrecond around an NCSN++ one, VEPrecond around one with skip encoder and decoder, EDMPrecond around a
class-conditional use_fp16 DhariwalUNet (ADM), iDDPMPrecond around a DhariwalUNet with one and two attention heads
and around a class-conditional SongUNet), compressed, and EDM's outputs on fixed inputs: the networks' D(x, sigma)
(without and with class labels) and generate.py's edm_sampler (4 steps, S_churn=0).
"""

from __future__ import annotations

import copy
import gzip
import lzma
import os
import pickle
from pathlib import Path

import pytest
import torch

import rfbench
from rfbench.models.checkpoint import CheckpointError
from rfbench.models.edm import EDMFlow, network_from_record, read_edm_pickle
from rfbench.models.formats import file_kind, sniff
from rfbench.cli_parsing import parse_model
from rfbench.models.sources import LoadContext, ModelFile
from rfbench.samplers.grids import time_grid
from rfbench.samplers.precision import float32_mode

DATA = Path(__file__).parent / "data" / "edm"
NETWORKS = ("edm-ddpmpp", "vp-ncsnpp", "ve-skip", "adm-cond-fp16", "iddpm-adm-heads", "iddpm-ddpmpp-cond")
CONDITIONAL = {"adm-cond-fp16": 5, "iddpm-ddpmpp-cond": 3}      # label_dim
ROW_CLASSES = (1, -1, 0)     # the class of each row of x in the pinned outputs with labels (-1: the last class)
# the first line of both embedded sources (training/networks.py, training/loss.py), and code of the same length that
# writes a marker into the current folder when the source is exec'd, as EDM's own loader does
LICENCE_LINE = b"# Copyright (c) 2022, NVIDIA CORPORATION & AFFILIATES. All rights reserved."
MARKER_CODE = b"open('edm-marker.txt', 'w').write('embedded source ran')".ljust(len(LICENCE_LINE))


@pytest.fixture(scope="module")
def outputs():
    return torch.load(DATA / "outputs.pt", weights_only=True)


def pickle_file(tmp_path: Path, name: str, tamper: bool = False) -> Path:
    packed = DATA / f"{name}.pkl.gz"
    data = (gzip.decompress(packed.read_bytes()) if packed.exists()
            else lzma.decompress((DATA / f"{name}.pkl.xz").read_bytes()))
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


@pytest.mark.parametrize("name", ["edm-ddpmpp", "vp-ncsnpp", "adm-cond-fp16"])
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
    (lambda r: setattr(r, "class_name", "EDM2Precond"),
     r"'ema' is a EDM2Precond; rfbench reads EDM's EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond$"),
    (lambda r: setattr(r.state["_modules"]["model"], "class_name", "StyleGAN"),
     r"EDMPrecond around StyleGAN; rfbench reads SongUNet \(DDPM\+\+, NCSN\+\+\) and DhariwalUNet \(ADM\)$"),
    (lambda r: r.state["_init_kwargs"].update(model_type="UNet2D"),
     r"EDMPrecond around UNet2D; rfbench reads SongUNet \(DDPM\+\+, NCSN\+\+\) and DhariwalUNet \(ADM\)$"),
    (lambda r: setattr(r.state["_modules"]["model"], "class_name", "DhariwalUNet"),
     r"EDMPrecond records model_type='SongUNet', and its network 'model' is a DhariwalUNet$"),
    (lambda r: r.state["_modules"].pop("model"), r"EDMPrecond records model_type='SongUNet', and its network "
                                                 r"'model' is missing$"),
    (lambda r: r.state["_modules"]["model"].state["_init_kwargs"].update(label_dim=10),
     r"the network's label_dim is 10; the edm preconditioning with .* label_dim=0 gives it 0$"),
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


def _labels(label_dim: int, classes=ROW_CLASSES) -> torch.Tensor:
    labels = torch.zeros(len(classes), label_dim)
    labels[torch.arange(len(classes)), torch.tensor(classes) % label_dim] = 1
    return labels


@pytest.mark.parametrize("name", sorted(CONDITIONAL))
def test_class_labels_equal_edm(tmp_path, outputs, name):
    """A class-conditional file samples unconditionally by default (the all-zero label vector, EDM's default, pinned
    in test_network_equals_edm); with ``class_label`` every sample is of that class; the denoiser takes per-row
    labels as EDM's does."""
    path = pickle_file(tmp_path, name)
    label_dim = CONDITIONAL[name]
    x, sigma, expected = outputs["x"], outputs["sigma"], outputs[f"{name}-labels"]
    scale = expected.abs().max().item()
    plain = rfbench.load_model(path, device="cpu")
    assert plain.class_label is None and plain.net.label_dim == label_dim
    with torch.no_grad():
        assert (plain.net(x, sigma, _labels(label_dim)) - expected).abs().max().item() <= 1e-5 * scale
        assert (plain.net(x, sigma) - expected).abs().max().item() > 1e-2 * scale     # the labels matter
        t = 1 / (1 + sigma.double())
        for row, cls in enumerate(ROW_CLASSES):
            model = rfbench.load_model(path, device="cpu", class_label=cls % label_dim)
            got = model.denoise(x.double() * t[:, None, None, None], t)[row]
            assert (got - expected[row].double()).abs().max().item() <= 1e-5 * scale


def test_class_label_errors(tmp_path):
    with pytest.raises(ValueError, match=r"^class_label must be an integer in 0..4, 'seeds' \(each sample's class "
                                         r"from its seed\) or None \(unconditional\), got 5$"):
        rfbench.load_model(pickle_file(tmp_path, "adm-cond-fp16"), device="cpu", class_label=5)
    with pytest.raises(ValueError, match=r"^class_label must be None: the network is unconditional \(label_dim 0\), "
                                         r"got 0$"):
        rfbench.load_model(pickle_file(tmp_path, "edm-ddpmpp"), device="cpu", class_label=0)
    checkpoint = tmp_path / "flow.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), checkpoint)
    with pytest.raises(CheckpointError, match=r"flow.pt is a TorchScript file; class_label applies to "
                                              r"class-conditional EDM network pickles only$"):
        rfbench.load_model(checkpoint, device="cpu", class_label=1)


def test_class_label_from_the_command_line(tmp_path):
    """``--model NAME:classN=PATH``: every sample of class N, and the class part of the model's identity (another
    cell than the unconditional file's); checked against the file before any work."""
    path = pickle_file(tmp_path, "adm-cond-fp16")
    name, source = parse_model(f"imagenet:class3={path}")
    plain = parse_model(f"imagenet={path}")[1]
    assert name == "imagenet" and source.class_label == 3 and plain.class_label is None
    assert source.identity(None).id == plain.identity(None).id + ":class3"
    assert source.identity(None).checkpoint == plain.identity(None).checkpoint[:-1] + ", class 3)"
    source.check()
    model = source.load(LoadContext(suite=None, cache=None, device=torch.device("cpu")))
    assert isinstance(model, EDMFlow) and model.class_label == 3
    assert model.class_labels.tolist() == [[0, 0, 0, 1, 0]]
    with pytest.raises(ValueError, match=r"^class_label must be an integer in 0..4, 'seeds'"):
        parse_model(f"imagenet:class5={path}")[1].check()
    with pytest.raises(ValueError, match=r"^class_label must be None: the network is unconditional"):
        parse_model(f"x:class0={pickle_file(tmp_path, 'edm-ddpmpp')}")[1].check()
    with pytest.raises(ValueError, match=r"class2 applies to a class-conditional EDM network pickle, and "
                                         r"'/nowhere/f.pkl' is not a file$"):
        parse_model("x:class2=/nowhere/f.pkl")
    checkpoint = tmp_path / "flow.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), checkpoint)
    with pytest.raises(ValueError, match=r"flow.pt is a TorchScript file; a class label applies to "
                                         r"class-conditional EDM network pickles only$"):
        ModelFile(checkpoint, class_label=1).check()


def test_iddpm_sigma_range_reaches_the_grids(tmp_path):
    """iDDPM's sigma range is its noise-level table's [u_{M-1}, u_0] (EDM's values, pinned), computed from C_1, C_2
    and M; the karras grid clips EDM's 0.002 .. 80 to it."""
    model = rfbench.load_model(pickle_file(tmp_path, "iddpm-adm-heads"), device="cpu")     # C_1 .002, C_2 .01, M 500
    assert (model.sigma_min, model.sigma_max) == (0.010317649692296982, 7187.9326171875)
    assert model.net.u.shape == (501,) and model.net.u[-1] == 0
    cond = rfbench.load_model(pickle_file(tmp_path, "iddpm-ddpmpp-cond"), device="cpu")     # EDM's defaults
    assert (cond.sigma_min, cond.sigma_max) == (0.006422337144613266, 20291.169921875)
    times = time_grid("karras", 4, cond)
    sigmas = [(1 - t) / t for t in times]
    assert sigmas[0] == pytest.approx(80.0) and sigmas[-2] == pytest.approx(0.006422337144613266) and times[-1] == 1


def test_iddpm_levels_are_checked_against_its_arguments(tmp_path):
    record = _record(tmp_path, "iddpm-ddpmpp-cond")
    record.state["_buffers"]["u"] = record.state["_buffers"]["u"].clone()
    record.state["_buffers"]["u"][7] *= 1.001
    with pytest.raises(CheckpointError, match=r"^f.pkl: its iDDPM noise levels u differ from those of its C_1, C_2, "
                                              r"M \(first at u\[7\]: .* in the file, .* computed\)$"):
        network_from_record(record, "f.pkl")


def _network_input_dtype(model, x, sigma) -> torch.dtype:
    seen = []
    hook = model.net.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    try:
        with torch.no_grad():
            model.net(x, sigma)
    finally:
        hook.remove()
    return seen[0]


def test_fp16_network_runs_in_float32_off_cuda(tmp_path, outputs):
    model = rfbench.load_model(pickle_file(tmp_path, "adm-cond-fp16"), device="cpu")
    assert model.net.use_fp16 and _network_input_dtype(model, outputs["x"], outputs["sigma"]) == torch.float32
    assert model.notes is None          # nothing for its rows to say: it ran as net_dtype says


def test_fp16_arithmetic_of_the_network(tmp_path, outputs):
    """The network's float16 path (what a use_fp16 file runs on CUDA), here on the CPU: the preconditioning in
    float32 around it, within half precision of EDM's float32 output."""
    model = rfbench.load_model(pickle_file(tmp_path, "adm-cond-fp16"), device="cpu")
    model.net.network_dtype = lambda device, force_fp32=False: torch.float32 if force_fp32 else torch.float16
    x, sigma, expected = outputs["x"], outputs["sigma"], outputs["adm-cond-fp16"]
    assert _network_input_dtype(model, x, sigma) == torch.float16
    assert model.notes.startswith("the network ran in float16 on CUDA")      # each row says so
    with torch.no_grad():
        half = model.net(x, sigma)
        full = model.net(x, sigma, force_fp32=True)
    scale = expected.abs().max().item()
    assert half.dtype == torch.float32 and 1e-6 * scale < (half - expected).abs().max().item() <= 2e-3 * scale
    assert (full - expected).abs().max().item() <= 1e-5 * scale


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_network_runs_in_float16_on_cuda(tmp_path, outputs):
    """On CUDA a use_fp16 network runs in float16, as EDM's does (its output within half precision of EDM's float32
    one), and in float32 with force_fp32."""
    model = rfbench.load_model(pickle_file(tmp_path, "adm-cond-fp16"), device="cuda")
    x, sigma, expected = outputs["x"].cuda(), outputs["sigma"].cuda(), outputs["adm-cond-fp16"].cuda()
    assert _network_input_dtype(model, x, sigma) == torch.float16 and "float16" in model.notes
    scale = expected.abs().max().item()
    with torch.no_grad(), float32_mode("fp32"):
        half = model.net(x, sigma)
        full = model.net(x, sigma, force_fp32=True)
    assert half.dtype == torch.float32
    assert 1e-6 * scale < (half - expected).abs().max().item() <= 2e-2 * scale
    assert (full - expected).abs().max().item() <= 1e-5 * scale
