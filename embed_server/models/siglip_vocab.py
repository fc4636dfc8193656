"""A SentencePiece vocabulary the project makes itself, for SigLIP without its files.

SigLIP's real tokenizer ships with its weights. With random weights (demos, benchmarks,
tests) there is no such file and nothing may be downloaded, so we train a small
unigram model on a corpus of tattoo vocabulary in a fraction of a second. Its ids are
meaningless to real weights, which is fine: random weights are meaningless too.
"""

from __future__ import annotations

import functools
import itertools
import tempfile
from pathlib import Path

import sentencepiece
from transformers import SiglipTokenizer

VOCAB_SIZE = 600  # below the tiny test model's 1000-entry embedding table

_STYLES = (
    "traditional neo-traditional tribal geometric mandala watercolor blackwork dotwork "
    "realism minimalist fine line japanese script illustrative sketch ornamental"
).split()
_SUBJECTS = (
    "rose skull snake dragon wolf lion butterfly tiger eagle koi lotus moon sun "
    "compass anchor heart dagger swallow owl fox bird flower tree mountain wave"
).split()
_PLACES = "arm sleeve forearm back chest ankle wrist shoulder leg hand neck".split()


def _corpus() -> list[str]:
    lines = [
        f"a {style} {subject} tattoo on the {place}"
        for style, subject, place in itertools.product(_STYLES, _SUBJECTS, _PLACES)
    ]
    lines += ["a photo of a tattoo", "tattoo artwork", "black and grey ink", "colour ink design"]
    return lines


@functools.cache
def _model_file() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="siglip-vocab-"))
    prefix = folder / "spiece"
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_prefix=str(prefix),
        vocab_size=VOCAB_SIZE,
        hard_vocab_limit=False,
        model_type="unigram",
        # The special tokens SiglipTokenizer looks up by name.
        pad_id=0,
        pad_piece="<pad>",
        eos_id=1,
        eos_piece="</s>",
        unk_id=2,
        unk_piece="<unk>",
        bos_id=-1,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def offline_tokenizer() -> SiglipTokenizer:
    return SiglipTokenizer(vocab_file=str(_model_file()))
