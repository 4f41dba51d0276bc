"""The feature-extractor interface the image metrics use (registered by name in :mod:`rfbench.metrics.features`)."""

from __future__ import annotations

import torch


class FeatureExtractor:
    """Interface: ``extract(images_uint8) -> (features (N, dim) float64, logits (N, num_classes) or None)``.

    ``num_classes`` is None when the extractor has no classifier head; ``logits_note`` then says why and what would
    provide one (the Inception Score is left empty with that note, never computed from something else).
    """

    name: str
    dim: int
    num_classes: int | None
    resize_mode: str
    resolution: int
    checkpoint: str
    logits_note: str = ""

    @property
    def identity(self) -> str:
        """A plain name that changes whenever the features would (part of reference-statistics keys)."""
        return self.name

    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.extract(images)[0]

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.num_classes is None:
            raise MissingLogitsError(f"the {self.name} extractor has no logits: {self.logits_note}")
        return self.extract(images)[1]


class MissingLogitsError(RuntimeError):
    """The extractor's weights have no classifier head (so no Inception Score)."""
