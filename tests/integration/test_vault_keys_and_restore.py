"""The admin key can be made off the writing host, and a restore never overwrites a
directory it was not told to (issue 12 item 21). Real CLI processes, real files."""

from __future__ import annotations

import stat
from pathlib import Path

from bastion.vault._keys import Verifier
from tests.helpers import run_bastion


def _out(result: object) -> str:
    return f"{getattr(result, 'stdout', '')}{getattr(result, 'stderr', '')}"


def test_init_says_plainly_where_the_admin_key_is(tmp_path: Path) -> None:
    init = run_bastion("init", cwd=tmp_path)
    assert init.returncode == 0, _out(init)
    assert (tmp_path / ".bastion" / "keys" / "admin.key").exists()
    # one plain note: what the key does, where it is, and the two ways to move it off
    note = next(line for line in init.stdout.splitlines() if "admin key" in line)
    assert "deletes from the vault" in note
    assert "keep it off hosts that write" in note
    assert "--admin-key-out" in note


def test_init_admin_key_out_leaves_this_host_only_the_public_half(tmp_path: Path) -> None:
    host = tmp_path / "host"
    offline = tmp_path / "offline" / "admin.key"
    offline.parent.mkdir()
    init = run_bastion("init", str(host), "--admin-key-out", str(offline), cwd=tmp_path)
    assert init.returncode == 0, _out(init)
    keys = host / ".bastion" / "keys"
    assert not (keys / "admin.key").exists()
    assert (keys / "signing.key").exists()
    assert stat.S_IMODE(offline.stat().st_mode) == 0o600
    assert (keys / "admin.key.pub").read_bytes() == offline.with_name("admin.key.pub").read_bytes()
    assert str(offline) in init.stdout
    assert "can write but never delete" in init.stdout

    # the host writes, and the vault pins the offline key's public half
    (host / "f.txt").write_text("x")
    for _ in range(3):
        put = run_bastion("vault", "put", "dataset/d", "f.txt", cwd=host)
        assert put.returncode == 0, _out(put)
    pin = (host / ".bastion" / "vault" / "a" / "config" / "admin.pub").read_bytes()
    assert pin == Verifier.for_key_file(offline, "admin").raw
    # ... but cannot delete
    denied = run_bastion("vault", "gc", "--keep-last", "1", "--grace-s", "0", cwd=host)
    assert denied.returncode == 2, _out(denied)
    # the admin key brought back (only to run gc) deletes
    (keys / "admin.key").write_bytes(offline.read_bytes())
    done = run_bastion("vault", "gc", "--keep-last", "1", "--grace-s", "0", cwd=host)
    assert done.returncode == 0, _out(done)
    assert "snapshots deleted 2" in done.stdout


def test_init_admin_key_out_never_replaces_a_file_nor_duplicates_a_key(tmp_path: Path) -> None:
    taken = tmp_path / "taken.key"
    taken.write_text("mine")
    refused = run_bastion("init", "sys", "--admin-key-out", str(taken), cwd=tmp_path)
    assert refused.returncode == 2, _out(refused)
    assert "--admin-key-out" in _out(refused)
    assert taken.read_text() == "mine"
    assert not (tmp_path / "sys").exists()  # nothing was made
    # an admin key already beside the signing key: move it yourself, says the fix
    assert run_bastion("init", "sys", cwd=tmp_path).returncode == 0
    again = run_bastion("init", "sys", "--admin-key-out", str(tmp_path / "new.key"), cwd=tmp_path)
    assert again.returncode == 2, _out(again)
    assert "mv " in _out(again)
    assert not (tmp_path / "new.key").exists()


def test_restore_refuses_a_non_empty_destination_without_force(tmp_path: Path) -> None:
    assert run_bastion("init", cwd=tmp_path).returncode == 0
    data = tmp_path / "data"
    (data / "etc").mkdir(parents=True)
    (data / "etc" / "passwd").write_text("snapshot's passwd\n")
    (data / "a.csv").write_text("1,2\n")
    assert run_bastion("vault", "put", "dataset/d", "data", cwd=tmp_path).returncode == 0

    # a destination that holds files (as / does): refused, exit 2, nothing written
    system = tmp_path / "system"
    (system / "etc").mkdir(parents=True)
    (system / "etc" / "passwd").write_text("root:x:0:0\n")
    refused = run_bastion("vault", "restore", "dataset/d", str(system), cwd=tmp_path)
    assert refused.returncode == 2, _out(refused)
    message = _out(refused)
    assert "not empty" in message
    assert "--force" in message
    assert str(system) in message
    assert (system / "etc" / "passwd").read_text() == "root:x:0:0\n"
    assert not (system / "a.csv").exists()

    # a new directory, or an empty one: no question
    for dest in (tmp_path / "new", tmp_path / "empty"):
        if dest.name == "empty":
            dest.mkdir()
        ok = run_bastion("vault", "restore", "dataset/d", str(dest), cwd=tmp_path)
        assert ok.returncode == 0, _out(ok)
        assert (dest / "etc" / "passwd").read_text() == "snapshot's passwd\n"

    # --force: the user said so
    forced = run_bastion("vault", "restore", "dataset/d", str(system), "--force", cwd=tmp_path)
    assert forced.returncode == 0, _out(forced)
    assert (system / "etc" / "passwd").read_text() == "snapshot's passwd\n"
