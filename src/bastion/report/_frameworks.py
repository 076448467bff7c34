"""The table that maps each part of the readiness report to the frameworks auditors ask
about: DORA (EU 2022/2554) Articles 24 and 25, NIST AI RMF 1.0 MEASURE 2.7 and ISO 22301
clause 8.5.

Owns: ``FRAMEWORKS``, one row per part of the report, saying what the part is evidence
towards. It is evidence for an assessor to weigh, not a claim of compliance.

Must never: claim more than the part measures.
"""

from __future__ import annotations

__all__ = ["FRAMEWORKS"]

_DORA_24 = "DORA Art. 24 (general requirements for digital operational resilience testing)"
_DORA_25 = "DORA Art. 25 (testing of ICT tools and systems: scenario-based tests, performance)"
_NIST = "NIST AI RMF MEASURE 2.7 (AI system security and resilience are evaluated and documented)"
_ISO = "ISO 22301 §8.5 (exercise programme: exercises with objectives, reviewed and reported)"

FRAMEWORKS: list[dict[str, str]] = [
    {
        "part": "drills",
        "evidence": "fault-injection drills with measured time to detect, RTO and RPO, each "
        "verdict read from the event log",
        "dora_art_24": f"{_DORA_24}: a risk-based testing programme, run and recorded",
        "dora_art_25": f"{_DORA_25}: scenario-based tests of the ICT systems",
        "nist_ai_rmf_measure_2_7": f"{_NIST}: resilience exercised under faults, measured",
        "iso_22301_8_5": f"{_ISO}: each drill is an exercise with targets and a result",
    },
    {
        "part": "slos",
        "evidence": "SLOs and error budgets from the SLI rows, burn-rate alerts as events",
        "dora_art_24": f"{_DORA_24}: results feed the assessment of resilience",
        "dora_art_25": f"{_DORA_25}: performance measured against objectives",
        "nist_ai_rmf_measure_2_7": f"{_NIST}: availability and latency of the AI service "
        "monitored in production",
        "iso_22301_8_5": f"{_ISO}: evidence of the service levels the exercises protect",
    },
    {
        "part": "map",
        "evidence": "the dependency map: single points of failure and exact availability, "
        "with spend and unavailability concentration per vendor",
        "dora_art_24": f"{_DORA_24}: weaknesses and gaps identified, with remediation",
        "dora_art_25": f"{_DORA_25}: gap analyses of the ICT systems",
        "nist_ai_rmf_measure_2_7": f"{_NIST}: dependencies and third-party concentration "
        "documented",
        "iso_22301_8_5": f"{_ISO}: findings that plan the next exercises",
    },
    {
        "part": "changes",
        "evidence": "DORA's four keys for models (promotions, lead time, change failure "
        "rate, time to restore) from events",
        "dora_art_24": f"{_DORA_24}: remediation of issues found, and its follow-up",
        "dora_art_25": f"{_DORA_25}: testing of changes before and after they go live",
        "nist_ai_rmf_measure_2_7": f"{_NIST}: model changes and their rollbacks recorded",
        "iso_22301_8_5": f"{_ISO}: post-exercise reports and improvement actions",
    },
    {
        "part": "findings",
        "evidence": "every finding with its remediation and the drill that retests it",
        "dora_art_24": f"{_DORA_24}: issues prioritised, classified and remedied",
        "dora_art_25": f"{_DORA_25}: results of the tests documented",
        "nist_ai_rmf_measure_2_7": f"{_NIST}: findings tracked to resolution",
        "iso_22301_8_5": f"{_ISO}: formal post-exercise reports with outcomes and actions",
    },
]
