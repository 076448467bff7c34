"""The readiness report: where the system stands, as one signed, self-contained page.

``build_report(manifest)`` gathers the drills, SLOs, dependency map findings, outcome
metrics, spend and vendor concentration from the state directory into one document
(schema ``bastion.report/1``: ``report.schema.json`` beside this module, documented in
docs/report.md); ``write_report(document, out, signer)`` writes it as ``report.html``
(inline SVG charts, no script from anywhere else), ``report.json`` and ``junit.xml``, and
signs the three with the vault key into ``report.sig``; ``verify_report(out, verifier)``
checks them. ``score`` is the readiness score, bounded to 0-100.
"""

from __future__ import annotations

from pathlib import Path

from bastion.report._collect import DEFAULT_MAX_AGE_S, SCHEMA, WEIGHTS, build_report, drill_verdict
from bastion.report._frameworks import FRAMEWORKS
from bastion.report._render import html, junit
from bastion.report._score import VERDICTS, Part, score, verdict_passes
from bastion.report._sign import FILES, SIGNATURE, Verified, verify_report, write_report

__all__ = [
    "DEFAULT_MAX_AGE_S",
    "FILES",
    "FRAMEWORKS",
    "SCHEMA",
    "SIGNATURE",
    "VERDICTS",
    "WEIGHTS",
    "Part",
    "Verified",
    "build_report",
    "drill_verdict",
    "html",
    "junit",
    "schema_path",
    "score",
    "verdict_passes",
    "verify_report",
    "write_report",
]


def schema_path() -> Path:
    """The JSON Schema of ``report.json``."""
    return Path(__file__).with_name("report.schema.json")
