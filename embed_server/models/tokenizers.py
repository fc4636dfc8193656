"""Text tokenizers, without torch.

CLIP: OpenAI's byte-level BPE, built with the `tokenizers` library from the merges
file open_clip ships (the same for every checkpoint of the architecture), cleaned,
padded and truncated as open_clip does; a test holds it to open_clip's own tokenizer.
SigLIP: its SentencePiece tokenizer from the weights folder, or one the project
trains when weights are random (see siglip_vocab).
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
from pathlib import Path

import numpy as np

from embed_server.models.cards import ModelCard, Tokenizer

CLIP_CONTEXT = 77
SIGLIP_TEXT_LENGTH = 64  # SigLIP was trained on text padded to exactly 64 tokens


def load_tokenizer(card: ModelCard, folder: Path | None) -> Tokenizer | None:
    if card.name == "clip":
        return _clip_tokenizer()
    if card.name == "siglip":
        return _siglip_tokenizer(folder)
    return None


@functools.cache
def _clip_tokenizer() -> Tokenizer:
    import ftfy
    from tokenizers import Regex, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as BpeTokenizer
    from tokenizers.models import BPE

    spec = importlib.util.find_spec("open_clip")  # its data file, without importing it (and torch)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed: its BPE vocabulary is needed for clip's text tower")
    vocabulary = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(vocabulary).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    base = list(_byte_characters())
    tokens = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    start, end = len(tokens) - 2, len(tokens) - 1
    bpe = BpeTokenizer(
        BPE(
            vocab={token: index for index, token in enumerate(tokens)},
            merges=merges,  # type: ignore[arg-type]
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
            unk_token="<|endoftext|>",
        )
    )
    bpe.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""), behavior="removed", invert=True
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )

    def clean(text: str) -> str:
        return html.unescape(html.unescape(ftfy.fix_text(text))).strip()

    def run(texts: list[str]) -> np.ndarray:
        ids = np.zeros((len(texts), CLIP_CONTEXT), np.int64)  # padding is 0, as in open_clip
        for row, encoding in enumerate(bpe.encode_batch([clean(t) for t in texts], add_special_tokens=False)):
            sequence = [start, *encoding.ids, end][:CLIP_CONTEXT]
            sequence[-1] = end  # a truncated text still ends with end-of-text (the pooled token)
            ids[row, : len(sequence)] = sequence
        return ids

    return run


def _byte_characters() -> list[str]:
    """GPT-2's reversible map of the 256 byte values to printable characters, in the
    order CLIP's vocabulary lists them."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def _siglip_tokenizer(folder: Path | None) -> Tokenizer:
    from transformers import SiglipTokenizer

    if folder is None:
        from embed_server.models.siglip_vocab import offline_tokenizer

        tokenizer = offline_tokenizer()
    else:
        tokenizer = SiglipTokenizer.from_pretrained(str(folder), local_files_only=True)

    def run(texts: list[str]) -> np.ndarray:
        encoded = tokenizer(texts, padding="max_length", max_length=SIGLIP_TEXT_LENGTH, truncation=True, return_tensors="np")
        return np.asarray(encoded["input_ids"], dtype=np.int64)

    return run
