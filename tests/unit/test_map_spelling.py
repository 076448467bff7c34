"""The map does not trust spelling (issue 19, item 5): failure-domain tags that name one
provider, region, zone, site or account however they are written share one common-cause
group; look-alike and mixed-script names are findings that name the odd character; URL
backends without a provider are grouped by host.

The spelling variants are generated (hypothesis, fixed seeds so a run can be repeated):
case, surrounding and odd whitespace, NFKC compatibility forms (fullwidth, mathematical
bold), invisible format characters, and Cyrillic/Greek homoglyphs from a table written
here, independently of the confusables data the map uses.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from hypothesis import given, seed, settings
from hypothesis import strategies as st

from bastion.manifest import loads
from bastion.map import MapReport, map_manifest
from bastion.map._spelling import describe, fold, odd_characters, skeleton

BASES = ["openai", "anthropic", "aws", "gcp", "azure", "vendor-b", "cohere", "us-east-1", "dc1"]

# Lower-case look-alikes from other scripts (what a copy-paste from a web page brings in).
HOMOGLYPHS = {
    "a": ["\u0430"],  # CYRILLIC SMALL LETTER A
    "c": ["\u0441"],  # CYRILLIC SMALL LETTER ES
    "e": ["\u0435"],  # CYRILLIC SMALL LETTER IE
    "i": ["\u0456"],  # CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I
    "o": ["\u043e", "\u03bf"],  # CYRILLIC SMALL LETTER O, GREEK SMALL LETTER OMICRON
    "p": ["\u0440"],  # CYRILLIC SMALL LETTER ER
    "s": ["\u0455"],  # CYRILLIC SMALL LETTER DZE
    "x": ["\u0445"],  # CYRILLIC SMALL LETTER HA
    "y": ["\u0443"],  # CYRILLIC SMALL LETTER U
    "h": ["\u04bb"],  # CYRILLIC SMALL LETTER SHHA
}
SPACES = [" ", "\t", "\u00a0", "\u3000", "\u2003", "\u202f"]
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]


def _wide(c: str, style: int) -> str:
    """An NFKC compatibility form of an ASCII letter: fullwidth or mathematical bold."""
    if not c.isascii() or not c.isalpha():
        return c
    offset = ord(c.lower()) - ord("a")
    upper = c.isupper()
    if style == 0:
        return chr((0xFF21 if upper else 0xFF41) + offset)
    return chr((0x1D400 if upper else 0x1D41A) + offset)


@st.composite
def variant(draw: st.DrawFn, base: str, *, homoglyphs: bool = True) -> tuple[str, list[str]]:
    """A spelling of ``base`` and the homoglyphs put into it."""
    chars = list(base)
    put: list[str] = []
    out = []
    for char in chars:
        how = draw(
            st.sampled_from(
                ["keep", "upper", "wide", "glyph"] if homoglyphs else ["keep", "upper", "wide"]
            )
        )
        c = char
        if how == "upper":
            c = char.upper()
        elif how == "wide":
            c = _wide(char.upper() if draw(st.booleans()) else char, draw(st.integers(0, 1)))
        elif how == "glyph" and char in HOMOGLYPHS:
            c = draw(st.sampled_from(HOMOGLYPHS[char]))
            put.append(c)
        out.append(c)
        if draw(st.integers(0, 9)) == 0:
            out.append(draw(st.sampled_from(INVISIBLE)))
    left = "".join(draw(st.lists(st.sampled_from(SPACES), max_size=2)))
    right = "".join(draw(st.lists(st.sampled_from(SPACES), max_size=2)))
    return left + "".join(out) + right, put


def two_backends(p1: str, p2: str) -> dict[str, Any]:
    return {
        "version": 1,
        "system": "shop",
        "services": {
            "api": {
                "backends": [
                    {"name": "one", "url": "http://10.1.0.1:9001", "provider": p1},
                    {
                        "name": "two",
                        "url": "http://10.2.0.1:9002",
                        "provider": p2,
                        "tier": "fallback",
                    },
                ]
            }
        },
    }


def two_regions(r1: str, r2: str) -> dict[str, Any]:
    return {
        "version": 1,
        "system": "shop",
        "components": [
            {"id": "db-a", "kind": "storage", "availability": 0.999, "domains": {"region": r1}},
            {"id": "db-b", "kind": "storage", "availability": 0.999, "domains": {"region": r2}},
            {"id": "db", "kind": "storage", "redundancy": {"members": ["db-a", "db-b"]}},
        ],
        "jobs": {"etl": {"command": ["true"], "depends_on": ["db"]}},
    }


def analyse(doc: dict[str, Any]) -> MapReport:
    # Through the loader, as `bastion map` reads a file: JSON is YAML.
    return map_manifest(loads(json.dumps(doc, ensure_ascii=False)))


def common_cause_spofs(report: MapReport, tag: str) -> list[str]:
    return [e for e in report.spofs if e.startswith(f"ccf:{tag}=")]


@seed(19051)
@settings(max_examples=150, deadline=None)
@given(data=st.data(), base=st.sampled_from(BASES), tag=st.sampled_from(["provider", "region"]))
def test_one_name_spelled_two_ways_is_one_common_cause_group(
    data: st.DataObject, base: str, tag: str
) -> None:
    (v1, put1) = data.draw(variant(base), label="first spelling")
    (v2, put2) = data.draw(variant(base), label="second spelling")
    report = analyse(two_backends(v1, v2) if tag == "provider" else two_regions(v1, v2))
    top = "api" if tag == "provider" else "etl"
    (event,) = common_cause_spofs(report, tag)
    assert report.spofs[event] == [top]
    assert not report.ok
    # Each homoglyph that made a spelling differ is named, as a person can look it up.
    messages = " ".join(f.message for f in report.findings if f.severity == "warning")
    for glyph in {*put1, *put2}:
        assert describe(glyph) in messages, (glyph, messages)
    if put1 or put2:
        assert "CYRILLIC" in messages or "GREEK" in messages


@seed(19052)
@settings(max_examples=100, deadline=None)
@given(data=st.data(), bases=st.permutations(BASES))
def test_different_names_however_spelled_stay_different(
    data: st.DataObject, bases: list[str]
) -> None:
    (v1, _) = data.draw(variant(bases[0]), label="first")
    (v2, _) = data.draw(variant(bases[1]), label="second")
    report = analyse(two_backends(v1, v2))
    assert common_cause_spofs(report, "provider") == []
    assert report.ok
    report = analyse(two_regions(v1, v2))
    assert common_cause_spofs(report, "region") == []


def test_the_reported_case_a_cyrillic_a_names_u0430() -> None:
    report = analyse(two_backends("vendor-a", "vendor-\u0430"))
    assert common_cause_spofs(report, "provider") == ["ccf:provider=vendor-a"]
    (warning,) = [f for f in report.findings if f.severity == "warning"]
    assert "U+0430 CYRILLIC SMALL LETTER A" in warning.message
    assert warning.subject == "provider=vendor-a"
    # The lone mixed-script name is flagged even with nothing to look like.
    report = analyse(two_backends("aws", "vendor-\u0430"))
    assert report.ok
    (warning,) = [f for f in report.findings if f.severity == "warning"]
    assert warning.message == (
        "provider 'vendor-\u0430' (on api:two) mixes scripts: "
        "U+0430 CYRILLIC SMALL LETTER A in a LATIN name"
    )


def test_case_and_space_variants_are_an_info_finding_and_keep_the_written_name() -> None:
    report = analyse(two_backends("AWS", " aws "))
    assert common_cause_spofs(report, "provider") == ["ccf:provider=AWS"]
    infos = [f for f in report.findings if f.severity == "info"]
    assert any(
        "provider written as 'AWS' (on api:one), ' aws ' (on api:two)" in f.message for f in infos
    )
    assert not [f for f in report.findings if f.severity == "warning"]


def test_scripts_written_together_are_not_mixed() -> None:
    assert odd_characters(fold("東京リージョン")) == []  # Han with Katakana (Japanese)
    assert odd_characters(fold("서울-리전")) == []
    assert odd_characters(fold("us-east-1")) == []
    assert odd_characters(fold("us-e\u0430st-1")) == ["\u0430"]


def test_skeletons_follow_uts39_examples() -> None:
    # From UTS #39's own examples, and what the map relies on.
    assert skeleton("paypal") == skeleton("\u0440\u0430ypal")
    assert skeleton("m") == skeleton("rn")
    assert skeleton("vendor-l") == skeleton("vendor-1")
    assert skeleton("aws") != skeleton("gcp")
    assert fold("\uff21\uff37\uff33\u200b ") == "aws"
    assert unicodedata.name("\u0430") == "CYRILLIC SMALL LETTER A"


def url_backends(*urls: str) -> dict[str, Any]:
    backends = [{"name": f"b{i}", "url": url} for i, url in enumerate(urls)]
    return {"version": 1, "system": "s", "services": {"api": {"backends": backends}}}


def test_url_backends_with_no_provider_on_one_host_share_fate() -> None:
    report = analyse(url_backends("http://10.0.0.5:9001", "https://10.0.0.5:9443/v1"))
    assert list(report.spofs) == ["ccf:host=10.0.0.5"]
    report = analyse(url_backends("http://Models.Example.com:9001", "http://models.example.com"))
    assert list(report.spofs) == ["ccf:host=models.example.com"]
    # Loopback in any form is this machine, where the local replicas also run.
    report = analyse(url_backends("http://127.0.0.1:9001", "http://localhost:9002"))
    assert list(report.spofs) == ["ccf:host=localhost"]
    report = analyse(url_backends("http://[::1]:9001", "http://127.0.0.2:9002"))
    assert list(report.spofs) == ["ccf:host=localhost"]


def test_url_backends_on_two_hosts_or_with_providers_are_independent() -> None:
    assert analyse(url_backends("http://10.0.0.5:9001", "http://10.0.0.6:9001")).ok
    doc = url_backends("http://10.0.0.5:9001", "http://10.0.0.5:9002")
    for i, backend in enumerate(doc["services"]["api"]["backends"]):
        backend["provider"] = f"vendor-{i}"
    assert analyse(doc).ok
