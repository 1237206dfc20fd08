"""Build the router's word lexicon (``hadis/scoring/data/lexicon.tsv``) from its sources.

Run by ``make lexicon`` (a maintainer's step; the result is committed). It needs the
``lexicon`` extra (``wordfreq``) and the concreteness norms that HADIS ships:

    python -m hadis.scoring.build_lexicon --concreteness ../shared/data/hadis/router/concreteness.csv

The lexicon has one row per word: ``word<TAB>pos<TAB>abstract<TAB>common`` where

- ``pos`` is the dominant part of speech from the norms' SUBTLEX ``Dom_Pos`` column as one
  letter (N noun, V verb, A adjective, B adverb, Q name, P preposition, R pronoun, D
  determiner, C conjunction, M number, I interjection) or ``-`` when unknown;
- ``abstract`` is 1 when the concreteness ``Conc.M < 2.5`` (HADIS's abstract-token rule);
- ``common`` is 1 when ``wordfreq.word_frequency(word, "en") >= 1e-5`` (HADIS counts a token
  as rare below that).

Shipping a 60 kB table instead of wordfreq and the full norms keeps the router small (no 30 MB
frequency list in memory) and fast (one dict lookup per token).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

RARE_BELOW = 1e-5
ABSTRACT_BELOW = 2.5
POS_LETTERS = {
    "Noun": "N",
    "Verb": "V",
    "Adjective": "A",
    "Adverb": "B",
    "Name": "Q",
    "Preposition": "P",
    "Pronoun": "R",
    "Determiner": "D",
    "Article": "D",
    "Conjunction": "C",
    "Number": "M",
    "Interjection": "I",
}
CLITICS = ("'s", "n't", "'re", "'ll", "'ve", "'m", "'d")
DEFAULT_OUT = Path(__file__).with_name("data") / "lexicon.tsv"


def build(concreteness_csv: Path) -> list[tuple[str, str, int, int]]:
    import wordfreq  # the lexicon extra; imported here so the router never needs it

    rows: dict[str, list] = {}
    with concreteness_csv.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            word = row["Word"].strip().lower()
            if not word or " " in word:
                continue  # HADIS looks up single tokens only
            pos = POS_LETTERS.get(row.get("Dom_Pos", "").strip(), "-")
            rows[word] = [pos, int(float(row["Conc.M"]) < ABSTRACT_BELOW), 0]
    common = [w for w in wordfreq.iter_wordlist("en", "best") if wordfreq.word_frequency(w, "en") >= RARE_BELOW]
    extra = [str(i) for i in range(10000)] + list(CLITICS)  # tokens the word list spells differently
    common += [w for w in extra if wordfreq.word_frequency(w, "en") >= RARE_BELOW]
    for word in common:
        rows.setdefault(word, ["-", 0, 0])[2] = 1
    return sorted((w, pos, a, c) for w, (pos, a, c) in rows.items() if pos != "-" or a or c)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concreteness", type=Path, required=True, help="concreteness.csv (Brysbaert et al.)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    from importlib.metadata import version

    rows = build(args.concreteness)
    with args.out.open("w", encoding="utf-8", newline="\n") as f:
        source = f"concreteness norms (Brysbaert et al. 2014) + wordfreq {version('wordfreq')}"
        f.write(f"# hadis router lexicon: {source}\n")
        f.write("# word\tpos\tabstract\tcommon\n")
        for word, pos, a, c in rows:
            f.write(f"{word}\t{pos}\t{a}\t{c}\n")
    print(f"wrote {args.out}: {len(rows)} words")


if __name__ == "__main__":
    main()
