"""Networks by configuration: which network a config builds, its input shape, and the config as a plain dict."""

from __future__ import annotations

from dataclasses import asdict

from rfbench.models.mlp import MLP, MLPConfig
from rfbench.models.ncsnpp import NCSNpp, NCSNppConfig
from rfbench.models.unet import UNet, UNetConfig

NETWORKS = {MLPConfig: MLP, UNetConfig: UNet, NCSNppConfig: NCSNpp}
CONFIG_TYPES = {config.__name__: config for config in NETWORKS}
NetworkConfig = MLPConfig | UNetConfig | NCSNppConfig


def build_network(config: NetworkConfig):
    """The network a config describes (an MLP for the 2D suites, a U-Net or DDPM++ for images)."""
    try:
        network = NETWORKS[type(config)]
    except KeyError:
        raise TypeError(f"no network for config type {type(config).__name__}; known: "
                        f"{', '.join(c.__name__ for c in NETWORKS)}") from None
    return network(config)


def network_spec(config: NetworkConfig) -> dict:
    """A config as a plain dict that names its architecture (for cache keys and checkpoint files)."""
    return {"arch": type(config).__name__, **asdict(config)}


def network_input_shape(config: NetworkConfig) -> tuple[int, ...]:
    """The shape of one input sample of the network a config builds."""
    if isinstance(config, MLPConfig):
        return (config.dim,)
    return (config.in_channels, config.image_size, config.image_size)
