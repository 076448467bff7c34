"""How failure-domain tags are spelled: which spellings name the same provider, region, zone,
site, account or host, and which ones only look alike.

Owns: ``fold`` (the spelling the map compares: Unicode NFKC compatibility forms, case,
invisible format characters and surrounding whitespace ignored), ``skeleton`` (the
UTS #39 confusable skeleton of a folded spelling), the mixed-script check, and
``DomainNames``, which groups every tag value of a graph by skeleton and says, as notes,
which spellings it merged and which characters looked odd (``U+0430 CYRILLIC SMALL
LETTER A``).

Why group look-alikes rather than only warn: a common-cause group that a stray Cyrillic
``\u0430`` splits in two hides a single point of failure, and the map's job is to find those.
Merging errs on the side of reporting a SPOF; the note says exactly which character made
the spellings differ, so a user who meant two different names can rename one.

The confusable data: no maintained package on PyPI offers the UTS #39 skeleton itself
(PyICU has it but needs ICU's C++ library and a compiler; the others fold to ASCII or keep
their own tables). ``confusable-homoglyphs`` (maintained) ships the Unicode data this needs:
``confusables.txt`` as pairs (U+0430 <-> ``a``), and the ``Scripts.txt`` property. Its
pairs do not say which side is the prototype, so the skeleton here maps each character to
one fixed member of its confusable class instead of to Unicode's prototype. That is a
one-to-one renaming of prototypes, so two strings have equal skeletons here exactly when
they have equal UTS #39 skeletons (up to the final re-normalisation, which only matters for
combining marks out of canonical order).

Must never: change a graph, or treat two spellings as different because of case, width,
invisible characters or surrounding whitespace.
"""

from __future__ import annotations

import functools
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DomainNames", "SpellingNote", "describe", "fold", "odd_characters", "skeleton"]

# Scripts whose characters belong to every script (digits, punctuation, combining marks).
_NEUTRAL = frozenset({"COMMON", "INHERITED", "Unknown"})
# UTS #39 section 5.1: these scripts are written together, so mixing them is one script.
_WRITTEN_TOGETHER = (
    frozenset({"HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"HAN", "HANGUL"}),
    frozenset({"HAN", "BOPOMOFO"}),
)


def _invisible(char: str) -> bool:
    # Format characters (zero-width space and joiners, soft hyphen, bidi controls, BOM)
    # render as nothing: two spellings that differ only in them look identical.
    return unicodedata.category(char) == "Cf"


def fold(value: str) -> str:
    """The spelling the map compares: NFKC, case-folded, no invisible format characters,
    inner whitespace runs as one space, no surrounding whitespace."""
    text = unicodedata.normalize("NFKC", value)
    text = unicodedata.normalize("NFKC", text.casefold())
    text = "".join(c for c in text if not _invisible(c))
    return " ".join(text.split())


@functools.cache
def _class_map() -> dict[str, str]:
    """Each confusable character -> the string that stands for its class in a skeleton."""
    from confusable_homoglyphs.confusables import confusables_data

    parent: dict[str, str] = {}

    def find(c: str) -> str:
        root = c
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(c, c) != root:  # path compression
            parent[c], c = root, parent[c]
        return root

    def preferred(c: str) -> tuple[bool, int]:
        # A class's stand-in is a character NFD leaves alone (so the final NFD of a
        # skeleton cannot merge two classes), the lowest code point among those.
        return (unicodedata.normalize("NFD", c) != c, ord(c))

    def clean(text: str) -> str:
        # The package read its pairs from confusables.txt's comments, where right-to-left
        # characters are wrapped in U+200E LEFT-TO-RIGHT MARK; without the marks every pair
        # matches its character names. fold() drops format characters before a skeleton is
        # taken, so none is ever looked up.
        return "".join(c for c in text if not _invisible(c))

    expansion: dict[str, str] = {}  # a character whose prototype is a sequence ("m" -> "rn")
    for raw_key, entries in confusables_data.items():
        key = clean(raw_key)
        for entry in entries:
            other = clean(entry["c"])
            if not key or not other:
                continue
            if len(key) == 1 and len(other) == 1:
                a, b = find(key), find(other)
                if a != b:
                    if preferred(b) < preferred(a):
                        a, b = b, a
                    parent[b] = a
            elif len(key) == 1:
                expansion[key] = other
            elif len(other) == 1:
                expansion[other] = key
    out = {c: find(c) for c in parent}
    for c, sequence in expansion.items():
        out[c] = "".join(out.get(x, x) for x in sequence)
    return out


def skeleton(value: str) -> str:
    """The UTS #39 skeleton of ``fold(value)``: equal for spellings that look alike."""
    table = _class_map()
    text = unicodedata.normalize("NFD", fold(value))
    return unicodedata.normalize("NFD", "".join(table.get(c, c) for c in text))


def _script(char: str) -> str:
    from confusable_homoglyphs.categories import alias

    return str(alias(char))


def describe(char: str) -> str:
    """``U+0430 CYRILLIC SMALL LETTER A``: a character as a person can look it up."""
    return f"U+{ord(char):04X} {unicodedata.name(char, 'UNNAMED CHARACTER')}"


def _base_script(value: str) -> str | None:
    """The script the other letters of a name stand out from: Latin when there is any (the
    script of nearly every vendor, region and host name), else the most frequent one."""
    counts = Counter(s for s in map(_script, value) if s not in _NEUTRAL)
    if not counts:
        return None
    if "LATIN" in counts:
        return "LATIN"
    return min(counts, key=lambda s: (-counts[s], s))


def odd_characters(value: str) -> list[str]:
    """Characters of ``value`` that stand out: letters of another script in a mixed-script
    name, and invisible ones, in order of first appearance; empty for a clean name.

    One script is clean, and so is Latin with the scripts written together with Han (UTS #39
    "highly restrictive": Japanese, Korean, Chinese with Bopomofo)."""
    scripts = {s for s in map(_script, value) if s not in _NEUTRAL}
    clean = len(scripts) <= 1 or any(scripts <= g | {"LATIN"} for g in _WRITTEN_TOGETHER)
    base = _base_script(value)
    out: list[str] = []
    for c in value:
        script = _script(c)
        odd = _invisible(c) or (not clean and script not in _NEUTRAL and script != base)
        if odd and c not in out:
            out.append(c)
    return out


@dataclass(frozen=True)
class SpellingNote:
    """What ``DomainNames`` noticed about one group of spellings.

    ``severity``: ``warning`` for look-alike, mixed-script or invisible characters (the
    spellings were merged, and may not have been meant to be); ``info`` when they differed
    only in case, width or whitespace. ``subject`` is ``TAG=VALUE`` with the value the map uses.
    """

    severity: str
    subject: str
    message: str
    fix: str


class DomainNames:
    """Every tag value of a graph, grouped by what it names.

    ``entries``: ``(node_id, tag, value as written)``. ``canonical(tag, value)`` is the
    spelling the map uses for that value's group; ``notes`` say what was merged and why.
    """

    def __init__(self, entries: Iterable[tuple[str, str, str]]) -> None:
        groups: dict[tuple[str, str], dict[str, list[str]]] = {}
        for node_id, tag, raw in entries:
            key = (tag, skeleton(raw))
            groups.setdefault(key, {}).setdefault(raw, []).append(node_id)
        self._canonical: dict[tuple[str, str], str] = {}
        self.notes: list[SpellingNote] = []
        for (tag, _), spellings in groups.items():
            self._group(tag, spellings)

    def canonical(self, tag: str, value: str) -> str:
        return self._canonical.get((tag, value), fold(value))

    def _group(self, tag: str, spellings: dict[str, list[str]]) -> None:
        folded: dict[str, dict[str, list[str]]] = {}  # folded -> as written -> nodes
        for raw, nodes in spellings.items():
            folded.setdefault(fold(raw), {})[raw] = nodes

        def nodes_of(spelling: str) -> list[str]:
            return [n for nodes in folded[spelling].values() for n in nodes]

        def rank(spelling: str) -> tuple[bool, bool, int, str]:
            return (
                bool(odd_characters(spelling)),
                not spelling.isascii(),
                -len(nodes_of(spelling)),
                spelling,
            )

        chosen = min(folded, key=rank)
        # Shown as most of its nodes wrote it (width and stray spaces aside), so a lone
        # "AWS" stays "AWS"; compared as folded.
        shown: Counter[str] = Counter()
        for raw, nodes in folded[chosen].items():
            shown[_display(raw)] += len(nodes)
        value = min(shown, key=lambda v: (-shown[v], v))
        for raw in spellings:
            self._canonical[(tag, raw)] = value
        subject = f"{tag}={value}"

        def on(nodes: Iterable[str]) -> str:
            return "on " + ", ".join(dict.fromkeys(nodes))

        for spelling in folded:
            if spelling == chosen:
                continue
            odd = [c for c in spelling if c not in chosen] or odd_characters(spelling)
            names = ", ".join(describe(c) for c in dict.fromkeys(odd))
            self.notes.append(
                SpellingNote(
                    "warning",
                    subject,
                    f"{tag} {spelling!r} ({on(nodes_of(spelling))}) looks like {value!r} "
                    f"({on(nodes_of(chosen))}) but is spelled with {names}: treated as the "
                    f"same {tag}, so they share one common-cause group",
                    f"if they are one {tag}, spell them alike; if not, give them names that "
                    "do not look alike",
                )
            )
        odd = odd_characters(chosen)
        if odd:
            self.notes.append(
                SpellingNote(
                    "warning",
                    subject,
                    f"{tag} {value!r} ({on(nodes_of(chosen))}) mixes scripts: "
                    f"{', '.join(describe(c) for c in odd)} in a "
                    f"{_base_script(chosen) or 'symbol'} name",
                    f"retype the {tag} in one script",
                )
            )
        for spelling, written in folded.items():
            invisible = [c for raw in written for c in raw if _invisible(c)]
            if len(written) < 2 and not invisible:
                continue
            ways = ", ".join(f"{raw!r} ({on(nodes)})" for raw, nodes in written.items())
            extra = (
                f"; invisible {', '.join(describe(c) for c in dict.fromkeys(invisible))} ignored"
                if invisible
                else ""
            )
            self.notes.append(
                SpellingNote(
                    "warning" if invisible else "info",
                    subject,
                    f"{tag} written as {ways}: the same {tag} {spelling!r} (case, width and "
                    f"surrounding spaces do not count){extra}",
                    f"spell the {tag} one way",
                )
            )


def _display(raw: str) -> str:
    text = "".join(c for c in unicodedata.normalize("NFKC", raw) if not _invisible(c))
    return " ".join(text.split())
