"""The sandbox twin: an isolated copy of a manifest's system (issue 15, part 4).

``Twin(manifest, name).up()`` makes it under ``<state_dir>/twin/<name>/``: its own state
directory, ports and keys, and its vault a copy-on-write view of production's (objects
shared by reflink or hard link, documents re-signed with the twin's key); ``scope()`` is
the fault ``Scope`` a drill against it runs in; ``down()`` removes it. See docs/twin.md.
"""

from __future__ import annotations

from bastion.twin._load import LoadStatistics, replay_synthetic
from bastion.twin._ports import OwnedPort, allocate, owned_ports
from bastion.twin._record import Recorder, Recording, read_recording, replay_recorded
from bastion.twin._twin import Twin, TwinRecord, TwinStatus
from bastion.twin._view import ViewStatistics, make_view

__all__ = [
    "LoadStatistics",
    "OwnedPort",
    "Recorder",
    "Recording",
    "Twin",
    "TwinRecord",
    "TwinStatus",
    "ViewStatistics",
    "allocate",
    "make_view",
    "owned_ports",
    "read_recording",
    "replay_recorded",
    "replay_synthetic",
]
