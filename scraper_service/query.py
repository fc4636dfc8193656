"""Query text helpers: normalisation (for cache keys), words, and the tier-3 simplification."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")

STOP_WORDS = frozenset(
    "a an and for from in into of on or the to with without my your ideas idea design designs".split()
)

# Words that describe how a tattoo looks rather than what it shows. Tier 3 drops them:
# "minimalist fine-line red rose tattoo" becomes "rose tattoo", which the web has far
# more pictures of.
STYLE_WORDS = frozenset(
    """
    traditional neo-traditional neotraditional american japanese irezumi old-school oldschool
    new-school tribal polynesian maori celtic minimalist minimal minimalistic simple small tiny
    big large huge little delicate dainty cute beautiful cool aesthetic elegant bold fine-line
    fineline fine line single-line linework dotwork blackwork blackandgrey black-and-grey
    realistic realism hyperrealistic surreal abstract illustrative sketch sketchy watercolor
    watercolour geometric ornamental trash-polka stick-and-poke handpoked hand-poked vintage
    retro modern colorful colourful coloured colored
    black grey gray white red blue green yellow orange purple pink gold golden
    """.split()
)

MAX_SIMPLIFIED_WORDS = 3


def normalise_query(query: str) -> str:
    """Casefolded with whitespace collapsed: the form used in cache keys."""
    return " ".join(query.casefold().split())


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def simplify_query(query: str) -> str:
    """Keep the main nouns: drop stop words and style adjectives, keep the first few left.

    Without a part-of-speech tagger this is a word list, which is good enough for short
    tattoo queries; when nothing is left the original words are kept.
    """
    kept = [w for w in words(query) if w not in STOP_WORDS and w not in STYLE_WORDS]
    if not kept:
        return normalise_query(query)
    return " ".join(kept[:MAX_SIMPLIFIED_WORDS])
