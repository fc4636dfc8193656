"""Finding pretrained weights on this machine. Never downloads."""

from __future__ import annotations

import hashlib
from pathlib import Path

from embed_server.errors import WeightsNotFound
from embed_server.models.cards import ModelCard

FETCH_COMMAND = "python -m embed_server.fetch_weights --dir DIR"


def locate_pretrained(card: ModelCard, weights_dir: Path | None) -> Path:
    """EMBED_WEIGHTS_DIR/<name>/ first, then the Hugging Face cache."""
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


def fingerprint_files(folder: Path, patterns: tuple[str, ...] = ("*.safetensors", "*.bin", "*.pt", "*.pth")) -> str:
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
