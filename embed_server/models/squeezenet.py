"""SqueezeNet 1.1 with ImageNet weights from the `ndf` package (MIT; the weights are
keras-squeezenet's conversion of DeepScale's Caffe release, BSD-2).

A faithful port of the network `ndf.example_models.squeezenet` runs in numpy, not
torchvision's squeezenet1_1: the weights were trained with Keras/TensorFlow "same"
padding on conv1 (3x3, stride 2: one pixel each side at 227 px, so a 114x114 map where
torchvision's unpadded conv1 gives 113) and unpadded ("valid") max pooling, which
leaves fire9's map at 13x13. The classifier (conv10) is dropped: the global vector is
fire9's map average-pooled (512-d), the patches its 169 cells.

The weights are a pickle. A pickle is a program, so it is read with a restricted
unpickler that rebuilds numpy arrays and nothing else (embed_server.models.safe_pickle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embed_server.models.base import Towers, l2_normalise
from embed_server.models.cards import CARDS, Architecture, ModelCard
from embed_server.models.safe_pickle import load_restricted
from embed_server.models.weights import SQUEEZENET_WEIGHTS_FILE as WEIGHTS_FILE

# (name, squeeze, expand 1x1, expand 3x3), in order; a max pool follows fire3 and fire5.
_FIRES = (
    ("fire2", 16, 64, 64), ("fire3", 16, 64, 64),
    ("fire4", 32, 128, 128), ("fire5", 32, 128, 128),
    ("fire6", 48, 192, 192), ("fire7", 48, 192, 192),
    ("fire8", 64, 256, 256), ("fire9", 64, 256, 256),
)
_POOL_AFTER = frozenset({"fire3", "fire5"})


def load_keras_weights(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Layer name -> (kernel [h, w, in, out], bias [out]), read without running the pickle."""
    loaded = load_restricted(folder / WEIGHTS_FILE, what="a weights file holds only numpy arrays")
    if not isinstance(loaded, dict):
        raise ValueError(f"{folder / WEIGHTS_FILE} is not a dict of layers")
    return {str(name): (np.asarray(pair[0]), np.asarray(pair[1])) for name, pair in loaded.items()}


class Fire(nn.Module):
    def __init__(self, inputs: int, squeeze: int, expand1: int, expand3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(inputs, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1, 1)
        # Keras "same" with a 3x3 kernel at stride 1: one pixel each side, as torch's padding=1.
        self.expand3x3 = nn.Conv2d(squeeze, expand3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(s)), F.relu(self.expand3x3(s))], dim=1)


class SqueezeNetFeatures(nn.Module):
    """conv1 ... fire9 of SqueezeNet 1.1 as Keras ran it; (B, 3, 227, 227) -> (B, C, 13, 13)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()

        def channels(n: int) -> int:
            return max(2, int(n * width))

        # Keras "same" for a 3x3 kernel at stride 2 pads total = 2 - (size % 2) pixels,
        # the odd one after: at 227 px (odd; the only size served) one on every side.
        self.conv1 = nn.Conv2d(3, channels(64), 3, stride=2, padding=1)
        fires: dict[str, nn.Module] = {}
        inputs = channels(64)
        for name, squeeze, expand1, expand3 in _FIRES:
            fires[name] = Fire(inputs, channels(squeeze), channels(expand1), channels(expand3))
            inputs = channels(expand1) + channels(expand3)
        self.fires = nn.ModuleDict(fires)
        self.out_channels = inputs

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(pixels))
        x = F.max_pool2d(x, 3, 2)
        for name, fire in self.fires.items():
            x = fire(x)
            if name in _POOL_AFTER:
                x = F.max_pool2d(x, 3, 2)
        return x

    def load_keras(self, weights: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Copy Keras kernels ([h, w, in, out]) into torch's ([out, in, h, w])."""
        convs: dict[str, nn.Conv2d] = {"conv1": self.conv1}
        for name, fire in self.fires.items():
            assert isinstance(fire, Fire)
            convs[f"{name}/squeeze1x1"] = fire.squeeze
            convs[f"{name}/expand1x1"] = fire.expand1x1
            convs[f"{name}/expand3x3"] = fire.expand3x3
        missing = sorted(set(convs) - set(weights))
        if missing:
            raise ValueError(f"the weights file lacks layers {', '.join(missing)}")
        with torch.no_grad():
            for name, conv in convs.items():
                kernel, bias = weights[name]
                kernel_t = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), np.float32))
                if kernel_t.shape != conv.weight.shape or bias.shape != tuple(conv.bias.shape):  # type: ignore[union-attr]
                    raise ValueError(f"layer {name}: kernel {kernel.shape} does not fit {tuple(conv.weight.shape)}")
                conv.weight.copy_(kernel_t)
                conv.bias.copy_(torch.from_numpy(np.asarray(bias, np.float32)))  # type: ignore[union-attr]


class SqueezeNetImageTower(nn.Module):
    def __init__(self, features: SqueezeNetFeatures) -> None:
        super().__init__()
        self.features = features

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.features(pixels)                  # (B, C, 13, 13)
        tokens = fmap.flatten(2).transpose(1, 2)      # (B, 169, C), row-major as the ViTs' grids
        return l2_normalise(fmap.mean(dim=(2, 3))), l2_normalise(tokens)


class SqueezeNetFamily:
    card: ModelCard = CARDS["squeezenet"]

    def build_random(self, architecture: Architecture) -> Towers:
        # "tiny": the same layers at 1/8 of the channels (13x13 grid kept), for tests.
        features = SqueezeNetFeatures(1.0 if architecture == "full" else 0.125)
        # torch's default initialisation shrinks activations layer by layer until fire9
        # holds little but biases, and every image gets the same vector (as DINOv3's
        # tiny layerscale did). He initialisation without biases keeps images apart.
        for module in features.modules():
            if isinstance(module, nn.Conv2d):
                # generator=None: the seeded builder (seeded.py) hands it this model's generator.
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=None)
                nn.init.zeros_(module.bias)  # type: ignore[arg-type]
        return Towers(image=SqueezeNetImageTower(features))

    def load_pretrained(self, folder: Path) -> Towers:
        features = SqueezeNetFeatures()
        features.load_keras(load_keras_weights(folder))
        return Towers(image=SqueezeNetImageTower(features))
