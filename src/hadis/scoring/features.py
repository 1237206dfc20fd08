"""HADIS's 8 router features, computed live without spaCy.

HADIS computes its features with spaCy's ``en_core_web_sm`` pipeline, which is not published on
PyPI, and ``wordfreq``, whose English list costs ~30 MB of memory. We reproduce the same
definitions with a regex tokenizer shaped like spaCy's, a lexicon tagger (the concreteness
norms' dominant part of speech, closed-class word lists and suffix rules) and a shallow
phrase reading for the dependency roles. Per-feature agreement with HADIS's precomputed values
is measured by ``hadis route eval`` and documented in docs/router.md.

Definitions (HADIS's, as the authors' code computes them):

==================  ===================================================================
prompt_length       tokens that are not punctuation
token_rarity        tokens with English word frequency < 1e-5 (punctuation counts: its
                    frequency is 0)
num_objects         tokens in a subject, direct-object or prepositional-object role
abstractness        tokens whose concreteness is < 2.5 (unknown words count as concrete)
attribute_density   adjectives and adjectival modifiers (participles before a noun)
spatial_relations   occurrences of HADIS's 38 spatial terms (multi-word terms included)
action_verbs        verbs (not auxiliaries or copulas)
named_entities      person, organisation and place names
==================  ===================================================================

Any ``str`` is valid input: control characters count as spaces, text past
``MAX_PROMPT_CHARS`` is not read (``Features.truncated`` says so), an empty prompt has all
features 0. Nothing here raises on user text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import NamedTuple

MAX_PROMPT_CHARS = 2000
"""Characters of a prompt that scoring reads. Text encoders of the served models stop far
earlier (CLIP reads 77 tokens, T5 256 to 512), so a longer prompt's tail cannot change the
image much; the bound keeps scoring time and memory per request bounded."""

# Tokens: a word before "n't" (do|n't), clitics, numbers with separators, words, or any other
# single non-space character (punctuation, symbols, emoji).
_TOKEN_RE = re.compile(
    r"[^\W\d_]+(?=n't\b)|n't\b|'(?:s|re|ll|ve|m|d)\b|\d+(?:[.,]\d+)+|\w+|[^\w\s]",
    re.IGNORECASE,
)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")

# Tags: N noun, Q proper name, R pronoun, M number, A adjective, V verb, X auxiliary or
# copula, B adverb, P preposition, D determiner, C coordinating conjunction, S subordinator
# or relative pronoun, T "to" before a verb, I interjection, . punctuation.
_NOMINAL = frozenset("NQR")
_CLOSED: dict[str, str] = {}
for _tag, _words in {
    "D": "a an the this that these those each every some any no another all both either neither its his her their "
    "my your our whose",
    "P": "of in on at by with from into onto over under above below behind beside besides between near through "
    "across along among amongst around against toward towards upon within without inside outside beneath "
    "underneath beyond past off out up down like during for about after before since until via per amid atop "
    "throughout",
    "R": "i you he she it we they me him us them itself himself herself themselves myself yourself ourselves "
    "something someone everything everyone nothing anything one",
    "X": "is are was were be been being am 's 're 'm has have had do does did will would can could should may "
    "might must shall ca wo",
    "C": "and or but nor & +",
    "S": "which who whom while as if because when where whether than though although",
    "B": "not n't very too so also just only really quite almost next",
    "A": "many few several other such same",
}.items():
    for _w in _words.split():
        _CLOSED[_w] = _tag
_ADJ_SUFFIXES = ("ous", "ful", "ive", "able", "ible", "less", "ish", "ical", "ic", "al", "ary", "ese", "ian", "esque")


@dataclass(frozen=True)
class Lexicon:
    """Word data the features need, loaded once per process (~36k words)."""

    pos: dict[str, str]
    abstract: frozenset[str]
    common: frozenset[str]
    spatial_single: frozenset[str]
    spatial_multi: tuple[tuple[str, ...], ...]


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The lexicon shipped in the package (see ``build_lexicon`` for its provenance)."""
    data = resources.files("hadis.scoring") / "data"
    pos: dict[str, str] = {}
    abstract: set[str] = set()
    common: set[str] = set()
    for line in (data / "lexicon.tsv").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        word, tag, is_abstract, is_common = line.split("\t")
        if tag != "-":
            pos[word] = tag
        if is_abstract == "1":
            abstract.add(word)
        if is_common == "1":
            common.add(word)
    terms = [t.strip().lower() for t in (data / "spatial_terms.txt").read_text(encoding="utf-8").splitlines()]
    terms = [t for t in terms if t]
    return Lexicon(
        pos=pos,
        abstract=frozenset(abstract),
        common=frozenset(common),
        spatial_single=frozenset(t for t in terms if " " not in t),
        spatial_multi=tuple(tuple(t.split()) for t in terms if " " in t),
    )


@dataclass(frozen=True)
class Features:
    """The 8 features of one prompt (HADIS's order) plus its tokens."""

    values: tuple[int, ...]
    tokens: tuple[str, ...]
    truncated: bool

    def as_dict(self) -> dict[str, int]:
        from hadis.core.routing import HADIS_FEATURES

        return dict(zip(HADIS_FEATURES, self.values, strict=True))


def normalise(text: str) -> tuple[str, bool]:
    """The part of a prompt that scoring reads: control characters as spaces, bounded length."""
    truncated = len(text) > MAX_PROMPT_CHARS
    if truncated:
        text = text[:MAX_PROMPT_CHARS]
    return _CONTROL_RE.sub(" ", text), truncated


def tokenize(text: str) -> list[str]:
    """Split like spaCy's English tokenizer does on prompts (words, clitics, punctuation)."""
    return _TOKEN_RE.findall(text)


def _stem_tag(word: str, pos: dict[str, str]) -> str | None:
    """The lexicon tag of an inflected form's stem (sits -> sit, running -> run, tried -> try)."""
    candidates: list[str] = []
    if word.endswith("ing") and len(word) > 4:
        s = word[:-3]
        candidates += [s, s + "e", s[:-1] if len(s) > 2 and s[-1] == s[-2] else s]
    elif word.endswith("ied") and len(word) > 4:
        candidates.append(word[:-3] + "y")
    elif word.endswith("ed") and len(word) > 3:
        s = word[:-2]
        candidates += [s, word[:-1], s[:-1] if len(s) > 2 and s[-1] == s[-2] else s]
    elif word.endswith("ies") and len(word) > 4:
        candidates.append(word[:-3] + "y")
    elif word.endswith("es") and len(word) > 3:
        candidates += [word[:-2], word[:-1]]
    elif word.endswith("s") and not word.endswith("ss") and len(word) > 2:
        candidates.append(word[:-1])
    for c in candidates:
        tag = pos.get(c)
        if tag is not None:
            return tag
    return None


class _Word(NamedTuple):
    """What the tagger and the counters need to know about one distinct (lower-case) word."""

    tag: str  # context-free tag
    participle: bool  # ends in -ing/-ed (a verb form that can modify a noun)
    verb_s: bool  # an -s form whose stem is a verb ("sits")
    rare: bool
    abstract: bool
    spatial: bool


def _base_tag(word: str, lexicon: Lexicon) -> str:
    """A word's tag without context: closed classes, the lexicon, then suffix rules."""
    if not any(ch.isalnum() for ch in word):
        return "."
    if word[0].isdigit():
        return "M"
    tag = _CLOSED.get(word) or lexicon.pos.get(word)
    if tag is not None:
        return "N" if tag == "I" else tag
    stem = _stem_tag(word, lexicon.pos)
    if word.endswith(("ing", "ed")) and stem in ("V", "N", None) and len(word) > 4:
        return "N" if stem == "N" and word.endswith("ing") else "V"
    if word.endswith("ly") and len(word) > 4:
        return "B"
    if stem is not None:
        return stem if stem in "NVAQ" else "N"
    if word.endswith(_ADJ_SUFFIXES) and len(word) > 5:
        return "A"
    return "N"  # unknown content words are mostly nouns and names


_WORD_CACHE_LIMIT = 200_000


def _word(word: str, lexicon: Lexicon, cache: dict[str, _Word]) -> _Word:
    info = cache.get(word)
    if info is None:
        if len(cache) >= _WORD_CACHE_LIMIT:
            cache.clear()  # bounded memory under adversarial vocabularies
        info = _Word(
            tag=_base_tag(word, lexicon),
            participle=_is_participle(word),
            verb_s=word.endswith("s") and not word.endswith("ss") and _stem_tag(word, lexicon.pos) == "V",
            rare=word not in lexicon.common,
            abstract=word in lexicon.abstract,
            spatial=word in lexicon.spatial_single,
        )
        cache[word] = info
    return info


def _tags(lower: list[str], words: list[_Word]) -> list[str]:
    """Tags in context: a left-to-right pass on the previous tag, then one on both neighbours."""
    tags: list[str] = []
    prev = "."
    for w, info in zip(lower, words, strict=True):
        t = info.tag
        if w == "to":
            t = "P"
        elif t == "V" and prev in "DAM" and not info.participle:
            t = "N"  # "a walk", "the swing", "two pay phones"
        elif prev == "X" and info.participle:
            t = "V"  # "are practicing"
        elif t == "N" and prev in "NR" and info.verb_s:
            t = "V"  # "a ball sits"
        if prev in _NOMINAL and w in ("has", "have", "had"):
            t = "X"
        tags.append(t)
        prev = t
    n = len(tags)
    for i, w in enumerate(lower):
        t = tags[i]
        if t in "NQRDA.M":
            continue
        nxt = tags[i + 1] if i + 1 < n else "."
        before = tags[i - 1] if i > 0 else "."
        if t == "V" and before in "DA" and nxt not in "NQ" and w.endswith("ing"):
            tags[i] = "N"  # a gerund as a noun: "a japanese writing on it"
        elif t in "BP" and w not in _CLOSED and w != "to" and (before in "DP" or nxt in "NQ"):
            # adverb- or preposition-dominant words inside a noun phrase: "its back",
            # "in front of", "long hair"
            tags[i] = "A" if nxt in "NQ" else "N"
        elif w == "to" and nxt == "V":
            tags[i] = "T"
        elif w in ("has", "have", "had") and nxt in "DANQRM":
            tags[i] = "V"  # a possession verb, not an auxiliary
        elif w == "that" and nxt in "VX":
            tags[i] = "S"  # a relative pronoun ("a sign that reads ...")
    return tags


def _is_participle(word: str) -> bool:
    return len(word) > 4 and word.endswith(("ing", "ed"))


def _count(tokens: list[str], words: list[_Word], tags: list[str], has_caps: bool) -> tuple[int, ...]:
    """Every per-token count in one pass: HADIS's 8 features less the multi-word spatial terms.

    Dependency roles are a shallow reading of what spaCy assigns: noun-phrase heads after a
    preposition are ``pobj``, after a verb ``dobj``; the first phrase of a clause becomes
    ``nsubj`` when a finite verb or auxiliary follows it (else it is the fragment's root, not
    counted); relative pronouns before a verb are ``nsubj``; heads after "and" are conjuncts.
    Named entities are runs of lexicon names, or of capitalised words not starting a sentence.
    """
    length = rare = abstract = spatial = verbs = objects = attributes = entities = 0
    role = "root"
    root_pending = False
    in_name = False
    n = len(tags)
    prev = "."
    for i in range(n):
        t = tags[i]
        info = words[i]
        nxt = tags[i + 1] if i + 1 < n else "."
        if info.rare:
            rare += 1
        if info.abstract:
            abstract += 1
        if info.spatial:
            spatial += 1
        if t == ".":
            role = "root"
            root_pending = False
            in_name = False
            prev = t
            continue
        length += 1
        if t == "P":
            role = "pobj"
        elif t == "C":
            if prev in _NOMINAL:
                role = "conj"
        elif t == "X" or t == "V":
            if t == "V":
                verbs += 1
                if info.participle:
                    if nxt in "NQAM" and prev in "DAPCM.":
                        attributes += 1  # amod: "embroidered star"
                    role = "dobj"
                    prev = t
                    in_name = False
                    continue
            if root_pending:
                objects += 1  # the clause's first phrase was its subject
                root_pending = False
            role = "dobj" if t == "V" else "attr"
        elif t == "S":
            if nxt in "VX":
                objects += 1  # relative pronoun as subject
            root_pending = False
            role = "rel"
        elif t == "A":
            attributes += 1
        if t in _NOMINAL and (nxt not in "NQ" or t == "R"):
            # the head of a noun phrase
            if role == "pobj" or role == "dobj":
                objects += 1
            elif role == "root":
                root_pending = True
            role = "after"
        is_name = t == "Q" or (has_caps and t == "N" and prev != "." and tokens[i][0].isupper())
        if is_name and not in_name:
            entities += 1
        in_name = is_name
        prev = t
    return length, rare, objects, abstract, attributes, spatial, verbs, entities


def _count_spatial_phrases(lower: list[str], lexicon: Lexicon) -> int:
    """Occurrences of the multi-word spatial terms ("in front of"), on token boundaries."""
    joined = " " + " ".join(lower) + " "
    return sum(joined.count(" " + " ".join(phrase) + " ") for phrase in lexicon.spatial_multi)


def extract(text: str, lexicon: Lexicon | None = None) -> Features:
    """HADIS's 8 features of one prompt. Total over ``str``: never raises."""
    lex = lexicon or default_lexicon()
    cache = _word_cache(lex)
    clean, truncated = normalise(text)
    tokens = tokenize(clean)
    has_caps = not clean.islower() and clean != clean.lower()
    lower = [t.lower() for t in tokens] if has_caps else tokens
    words = [cache.get(w) or _word(w, lex, cache) for w in lower]
    tags = _tags(lower, words)
    values = list(_count(tokens, words, tags, has_caps))
    values[5] += _count_spatial_phrases(lower, lex)
    return Features(values=tuple(values), tokens=tuple(tokens), truncated=truncated)


_CACHES: dict[int, dict[str, _Word]] = {}


def _word_cache(lexicon: Lexicon) -> dict[str, _Word]:
    """One word cache per lexicon object (the default lexicon lives for the process)."""
    cache = _CACHES.get(id(lexicon))
    if cache is None:
        cache = _CACHES[id(lexicon)] = {}
    return cache
