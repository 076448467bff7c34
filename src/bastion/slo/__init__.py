"""SLOs and error budgets, measured from the running system (docs/slo.md).

Owns: the SLI rows the gateway records (``_sli``), the pure arithmetic of windows, budgets
and burn rates (``_core``), the burn and no-data alerts recorded as events (``_alerts``),
the calendar SLA report (``_report``), the outcome metrics (``_outcomes``: DORA's four
keys for models, customer trust) and OpenSLO import and export (``_openslo``).

Must never: make the gateway wait on SQLite; answer NaN for a window with no traffic; page
on fewer bad events than an objective's ``min_bad_events``.
"""

from __future__ import annotations

from bastion.slo._alerts import Alert, Evaluator, SloLoop
from bastion.slo._core import (
    PAIRS,
    BurnPair,
    BurnReading,
    Objective,
    Status,
    Window,
    burn_rate,
    evaluate,
    month_bounds,
    objectives,
)
from bastion.slo._openslo import from_openslo, to_openslo
from bastion.slo._outcomes import (
    Age,
    Dora,
    Goodput,
    Trust,
    ages,
    dora,
    goodput,
    jobs_goodput,
    services_trust,
    trust,
)
from bastion.slo._report import Incident, MonthReport, incidents, month_report
from bastion.slo._sli import (
    BOUNDS_MS,
    NO_SLI,
    SliReader,
    SliRecorder,
    SliRow,
    SliWriter,
    SqliteSli,
    Tally,
)

__all__ = [
    "BOUNDS_MS",
    "NO_SLI",
    "PAIRS",
    "Age",
    "Alert",
    "BurnPair",
    "BurnReading",
    "Dora",
    "Evaluator",
    "Goodput",
    "Incident",
    "MonthReport",
    "Objective",
    "SliReader",
    "SliRecorder",
    "SliRow",
    "SliWriter",
    "SloLoop",
    "SqliteSli",
    "Status",
    "Tally",
    "Trust",
    "Window",
    "ages",
    "burn_rate",
    "dora",
    "evaluate",
    "from_openslo",
    "goodput",
    "incidents",
    "jobs_goodput",
    "month_bounds",
    "month_report",
    "objectives",
    "services_trust",
    "to_openslo",
    "trust",
]
