"""Prices and budgets in the manifest: a good one loads into a ledger; bad ones (negative,
unknown currency, window 0, soft over hard, a vendor or scope that names nothing) are
located errors, and ``bastion check`` exits 2 on them (issue 20)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bastion.errors import ManifestError
from bastion.manifest import loads
from bastion.serve._cost import PICO, Ledger
from tests.helpers import run_bastion

PRICED = """\
version: 1
system: chat
services:
  chat:
    backends:
      - name: big
        url: http://127.0.0.1:8801
        provider: vendor-a
        price: {input_per_1k: 0.01, output_per_1k: 0.03, currency: USD}
      - name: small
        url: http://127.0.0.1:8802
        tier: fallback
        price: {per_request: 0.0001}
    budgets:
      - {scope: service, window: 1d, soft: 8, hard: 10}
      - {scope: vendor, vendor: vendor-a, window: 1h, hard: 2}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        loads(textwrap.dedent(text), filename="bastion.yaml")
    return [str(p) for p in info.value.problems]


def test_prices_and_budgets_load_into_a_ledger() -> None:
    manifest = loads(PRICED)
    service = manifest.services["chat"]
    assert service.backends[0].price is not None
    assert service.budgets[1].window_s == 3600.0
    ledger = Ledger.for_service("chat", service)
    assert ledger is not None
    assert ledger.rates["big"].input_per_token == round(0.01 * PICO / 1000)
    assert ledger.rates["small"].per_request == round(0.0001 * PICO)
    assert ledger.vendor == {"big": "vendor-a", "small": "small"}
    assert [a.name for a in ledger._all_accounts()] == ["service/1d", "vendor:vendor-a/1h"]
    unpriced = [
        line
        for line in PRICED.split("    budgets:", maxsplit=1)[0].splitlines()
        if "price" not in line
    ]
    free = loads("\n".join(unpriced))
    assert Ledger.for_service("chat", free.services["chat"]) is None  # no accounting at all


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "input_per_1k: 0.01",
            "input_per_1k: -0.01",
            "bastion.yaml:9:31: services.chat.backends[0].price.input_per_1k: -0.01: "
            "input should be greater than or equal to 0",
        ),
        (
            "currency: USD",
            "currency: DOLLARS",
            "bastion.yaml:9:68: services.chat.backends[0].price.currency: 'DOLLARS' is not a "
            "currency Bastion knows",
        ),
        (
            "window: 1d",
            "window: 0d",
            "bastion.yaml:15:34: services.chat.budgets[0].window: window '0d' is empty; give "
            "a window longer than 0",
        ),
        (
            "window: 1h",
            "window: 0",
            "bastion.yaml:16:51: services.chat.budgets[1].window: 0: input should be a valid",
        ),
        ("hard: 10", "hard: -10", "15:53: services.chat.budgets[0].hard: -10: input should be"),
        ("soft: 8", "soft: 12", "15:9: services.chat.budgets[0]: soft = 12 > hard = 10"),
        (
            "vendor: vendor-a",
            "vendor: vendor-z",
            "bastion.yaml:16:33: services.chat.budgets[1].vendor: 'vendor-z' is no backend's",
        ),
        (
            "{scope: service,",
            "{scope: key,",
            "bastion.yaml:15:17: services.chat.budgets[0].scope: scope key needs client keys",
        ),
        (
            "{per_request: 0.0001}",
            "{per_request: 1, currency: EUR}",
            "bastion.yaml:13:9: services.chat.backends[1].price: this price is in EUR",
        ),
        (
            "hard: 2}",
            "hard: 2, currency: EUR}",
            "bastion.yaml:16:74: services.chat.budgets[1].currency: budget in EUR, the",
        ),
    ],
)
def test_a_bad_price_or_budget_is_a_located_error(old: str, new: str, expected: str) -> None:
    assert old in PRICED
    found = problems(PRICED.replace(old, new))
    assert any(expected in p for p in found), found


def test_check_exits_2_on_a_bad_price(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text(PRICED.replace("currency: USD", "currency: usd").replace("1h", "0h"))
    proc = run_bastion("check", "-f", str(path))
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:9:68: services.chat.backends[0].price.currency: 'usd'" in proc.stderr
    assert "did you mean USD?" in proc.stderr
    assert "services.chat.budgets[1].window: window '0h' is empty" in proc.stderr
    assert "Traceback" not in proc.stderr
    path.write_text(PRICED)
    assert run_bastion("check", "-f", str(path)).returncode == 0
