"""Bastion's fault library: real faults, each scoped, each revertible where possible.

The API, in one screen::

    from bastion.drill.faults import Scope, FlipBytes, Ransomware, HangProcess, FaultyUpstream

    scope = Scope.of(pids=[proc.pid], paths=[workdir], ports=[8801])   # the blast radius
    with FlipBytes(workdir / "ckpt.bin", scope=scope, count=4, seed=seed):
        ...                                   # injected here; reverted on exit
    fault = HangProcess(proc.pid, scope=scope); fault.inject(); ...; fault.revert()

Every fault is a ``Fault``: ``inject()`` / ``revert()`` (or a ``with`` block), ``kind``
(``storage.flip_bytes`` ...), ``statistics()``, and, given ``events=EventLog``, the
events ``drill.fault.injected`` / ``drill.fault.reverted`` (subject = ``subject=``).
Each checks its targets against the ``Scope`` in its constructor and raises
``bastion.errors.ScopeError`` (naming the target and the scope) before changing
anything; each has a blast-radius limit (``max_files``, ``max_bytes``, ``workers``...).

Families:

- storage: ``FlipBytes``, ``TruncateFile``, ``DeleteFiles``, ``FillDisk``,
  ``MakeReadOnly``, ``SlowReads``.
- ransomware: ``Ransomware`` (AES-CTR in place, ``.locked``, a note; ``files_per_s``,
  ``max_files``; journal/key at ``keyfile`` outside the target), ``restore_from_journal``.
  ``RansomwareProcess``: the same attack in a child process (a guard may kill or freeze
  it; revert kills it and restores). By hand: ``python -m bastion.drill.faults.ransomware --root DIR
  --keyfile K [--rate R --max-files N]``; revert with ``--revert --keyfile K``.
- process: ``KillProcess`` (SIGKILL, or ``sig=SIGTERM``), ``HangProcess`` (SIGSTOP,
  revert SIGCONT), ``RestartProcess``, ``CpuHog``, ``MemoryHog``; ``wait_exit``.
- http: ``FaultyUpstream`` (OpenAI-compatible server on 127.0.0.1; ``set_fault`` /
  ``clear_fault`` or ``POST /_bastion/fault`` at runtime), ``HttpFault`` (status,
  retry_after, first_byte_delay_s, cut_stream_after, chunk_delay_s, malformed_body,
  probability,
  times), ``HttpFaultInjection``. Separate process: ``python -m bastion.drill.faults.http``.
- network: ``TcpFaultProxy`` (127.0.0.1 -> an upstream port in scope), ``Toxic`` (type
  latency | bandwidth | timeout | reset_peer | slicer | limit_data, Toxiproxy's names and
  attributes), ``ToxicFault`` (and ``ToxicFault.down(proxy)``); ``add_toxic`` /
  ``remove_toxic`` / ``set_down`` take effect on open connections. ``ToxiproxyApi``
  serves Toxiproxy's REST API over running proxies (for existing Toxiproxy clients);
  ``python -m bastion.drill.faults.network --upstream-port P`` runs one as a process.
- data (CSV shards; ``copy_to=`` damages a copy, else in place with revert):
  ``LabelFlip``, ``SchemaBreak`` (drop/rename/extra column, reorder, bad_type),
  ``DistributionShift`` (``x*scale+offset``), ``NanInjection``; ``fraction``, ``seed``,
  ``max_rows``.
- model (safetensors): ``CorruptWeights`` (``mode`` nan | zero, ``fraction``,
  ``tensors``), ``SwapModel`` (a degraded version in place of the good one),
  ``degrade(src, dst, noise=)`` to make that version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion._lazy import lazy
from bastion.drill.faults._base import Fault, FaultStatistics
from bastion.drill.faults.data import (
    DataFault,
    DistributionShift,
    LabelFlip,
    NanInjection,
    SchemaBreak,
)
from bastion.drill.faults.model import CorruptWeights, SwapModel, degrade
from bastion.drill.faults.process import (
    CpuHog,
    HangProcess,
    KillProcess,
    MemoryHog,
    RestartProcess,
    wait_exit,
)
from bastion.drill.faults.scope import Scope
from bastion.drill.faults.storage import (
    DeleteFiles,
    FillDisk,
    FlipBytes,
    MakeReadOnly,
    SlowReads,
    TruncateFile,
)

# The three modules that also run as programs (``python -m bastion.drill.faults.http``,
# ``.network``, ``.ransomware``) are imported when one of their names is first used, not
# here: a module the package imported before ``-m`` runs it makes runpy warn that it is
# found in sys.modules and may behave unpredictably.
_LAZY = {
    "FaultyUpstream": ".http",
    "HttpFault": ".http",
    "HttpFaultInjection": ".http",
    "UpstreamStatistics": ".http",
    "ProxyStatistics": ".network",
    "TcpFaultProxy": ".network",
    "Toxic": ".network",
    "ToxicFault": ".network",
    "ToxiproxyApi": ".network",
    "Ransomware": ".ransomware",
    "RansomwareProcess": ".ransomware",
    "restore_from_journal": ".ransomware",
}

if TYPE_CHECKING:
    from bastion.drill.faults.http import (
        FaultyUpstream,
        HttpFault,
        HttpFaultInjection,
        UpstreamStatistics,
    )
    from bastion.drill.faults.network import (
        ProxyStatistics,
        TcpFaultProxy,
        Toxic,
        ToxicFault,
        ToxiproxyApi,
    )
    from bastion.drill.faults.ransomware import Ransomware, RansomwareProcess, restore_from_journal


__getattr__, __dir__ = lazy(__name__, _LAZY)


__all__ = [
    "CorruptWeights",
    "CpuHog",
    "DataFault",
    "DeleteFiles",
    "DistributionShift",
    "Fault",
    "FaultStatistics",
    "FaultyUpstream",
    "FillDisk",
    "FlipBytes",
    "HangProcess",
    "HttpFault",
    "HttpFaultInjection",
    "KillProcess",
    "LabelFlip",
    "MakeReadOnly",
    "MemoryHog",
    "NanInjection",
    "ProxyStatistics",
    "Ransomware",
    "RansomwareProcess",
    "RestartProcess",
    "SchemaBreak",
    "Scope",
    "SlowReads",
    "SwapModel",
    "TcpFaultProxy",
    "Toxic",
    "ToxicFault",
    "ToxiproxyApi",
    "TruncateFile",
    "UpstreamStatistics",
    "degrade",
    "restore_from_journal",
    "wait_exit",
]
