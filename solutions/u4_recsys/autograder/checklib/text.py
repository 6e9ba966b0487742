"""Text and sequence data for Unit 3, made in code: nothing is downloaded.

* `spanish_text`: Spanish-like prose from a small grammar (gender and number agreement,
  conjugated verbs, subordinate clauses), lower case, for character-level language models.
  d2l trains on H. G. Wells' *The Time Machine*; `load_time_machine` reads it the way d2l
  does when a user has the book's file, and the course falls back to the grammar.
* `CharVocab`: characters <-> indices, d2l's `Vocab` for characters.
* `ordered_markers`: a sequence classification task that needs attention and positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

#: Every character `spanish_text` can produce, in a fixed order (the vocabulary of the checks).
SPANISH_ALPHABET = " ,.abcdefghijlmnopqrstuvyáéíñó¿?"

_NOUNS = {  # noun: (gender, plural)
    "gato": ("m", "gatos"), "perro": ("m", "perros"), "niño": ("m", "niños"), "libro": ("m", "libros"),
    "río": ("m", "ríos"), "árbol": ("m", "árboles"), "pueblo": ("m", "pueblos"), "camino": ("m", "caminos"),
    "viento": ("m", "vientos"), "maestro": ("m", "maestros"), "casa": ("f", "casas"), "niña": ("f", "niñas"),
    "mesa": ("f", "mesas"), "ciudad": ("f", "ciudades"), "montaña": ("f", "montañas"), "luna": ("f", "lunas"),
    "puerta": ("f", "puertas"), "canción": ("f", "canciones"), "maestra": ("f", "maestras"),
    "flor": ("f", "flores"),
}
_ADJECTIVES = ["pequeñ", "viej", "nuev", "blanc", "negr", "alt", "tranquil", "oscur", "buen", "rápid"]
_ARTICLES = {("m", False): "el", ("f", False): "la", ("m", True): "los", ("f", True): "las"}
_INDEFINITE = {("m", False): "un", ("f", False): "una", ("m", True): "unos", ("f", True): "unas"}
_VERBS = {  # infinitive stem and class: -ar, -er, -ir
    "mir": "ar", "busc": "ar", "encontr": "ar", "cant": "ar", "llev": "ar", "cuid": "ar",
    "com": "er", "le": "er", "aprend": "er", "ve": "er", "escrib": "ir", "abr": "ir", "viv": "ir", "sub": "ir",
}
_ENDINGS = {"ar": ("a", "an"), "er": ("e", "en"), "ir": ("e", "en")}
_INTRANSITIVE = ["duerme", "duermen", "canta", "cantan", "llega", "llegan", "sueña", "sueñan", "espera", "esperan"]
_PLACES = ["en", "cerca de", "junto a", "sobre", "detrás de", "hacia"]
_LINKS = ["y", "pero", "porque", "mientras", "cuando"]
_TIMES = ["hoy", "de noche", "por la mañana", "siempre", "a veces", "después"]


def _pick(rng: torch.Generator, items: list):
    return items[int(torch.randint(len(items), (1,), generator=rng))]


def _noun_phrase(rng: torch.Generator) -> tuple[str, bool]:
    noun = _pick(rng, list(_NOUNS))
    gender, plural_form = _NOUNS[noun]
    plural = bool(torch.rand(1, generator=rng) < 0.35)
    article = (_ARTICLES if torch.rand(1, generator=rng) < 0.7 else _INDEFINITE)[(gender, plural)]
    words = [article, plural_form if plural else noun]
    if torch.rand(1, generator=rng) < 0.45:
        ending = ("o" if gender == "m" else "a") + ("s" if plural else "")
        words.append(_pick(rng, _ADJECTIVES) + ending)
    return " ".join(words), plural


def _clause(rng: torch.Generator) -> str:
    subject, plural = _noun_phrase(rng)
    if torch.rand(1, generator=rng) < 0.3:
        verb = _pick(rng, _INTRANSITIVE[1::2] if plural else _INTRANSITIVE[0::2])
        words = [subject, verb]
    else:
        stem = _pick(rng, list(_VERBS))
        words = [subject, stem + _ENDINGS[_VERBS[stem]][plural], _noun_phrase(rng)[0]]
    if torch.rand(1, generator=rng) < 0.4:
        words += [_pick(rng, _PLACES), _noun_phrase(rng)[0]]
    if torch.rand(1, generator=rng) < 0.2:
        words.append(_pick(rng, _TIMES))
    return " ".join(words)


def spanish_text(rng: torch.Generator, sentences: int) -> str:
    """`sentences` sentences of grammatical, Spanish-like prose, one after another (about 45 characters each)."""
    out = []
    for _ in range(sentences):
        sentence = _clause(rng)
        while torch.rand(1, generator=rng) < 0.35:
            sentence += ("," if torch.rand(1, generator=rng) < 0.5 else "") + " " + _pick(rng, _LINKS) + " " + \
                _clause(rng)
        out.append(f"¿{sentence}?" if torch.rand(1, generator=rng) < 0.1 else sentence + ".")
    return " ".join(out)


def load_time_machine(path: str | Path) -> str:
    """d2l's preprocessing of *The Time Machine* (`timemachine.txt`): letters only, lower case, one space."""
    text = Path(path).read_text(encoding="utf-8")
    return re.sub("[^A-Za-z]+", " ", text).lower().strip()


@dataclass(frozen=True)
class CharVocab:
    """Characters <-> indices (d2l's `Vocab`, for characters); unknown characters map to index 0."""

    chars: str

    def encode(self, text: str) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.chars)}
        return torch.tensor([index.get(c, 0) for c in text], dtype=torch.long)

    def decode(self, indices) -> str:
        return "".join(self.chars[int(i)] for i in indices)

    def __len__(self) -> int:
        return len(self.chars)


def ordered_markers(rng: torch.Generator, n: int, *, length: int = 10,
                    vocab: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences of `length` tokens in [0, vocab) holding token 1 once and token 2 once, at random
    places, among filler tokens 3..vocab-1 (0 is never used); the label is 1 when the 1 comes before the 2.

    No bag of tokens can tell the two classes apart: a model needs positions and attention.
    Returns X (n, length) int64 and y (n,) int64.
    """
    X = torch.randint(3, vocab, (n, length), generator=rng)
    places = torch.rand(n, length, generator=rng).argsort(dim=1)[:, :2]  # two distinct positions per row
    rows = torch.arange(n)
    X[rows, places[:, 0]] = 1
    X[rows, places[:, 1]] = 2
    return X, (places[:, 0] < places[:, 1]).long()
