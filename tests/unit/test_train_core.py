"""The checkpoint core without processes: state trees, staging, cadence, sampler, and the
Checkpointer over a real vault of two replicas in a temporary directory."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load
from torch import nn

from bastion.errors import IntegrityError, UsageError
from bastion.events import EventLog
from bastion.train import (
    Cadence,
    Checkpointer,
    ResumableLoader,
    ResumableSampler,
    SlotPicker,
    VaultStore,
)
from bastion.train._staging import StagingBuffer
from bastion.train._tree import flatten, unflatten
from bastion.vault import Vault, make_key

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
)
trees = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
        st.dictionaries(st.integers(0, 9), inner, max_size=3),
    ),
    max_leaves=20,
)


@given(trees)
@settings(max_examples=200, deadline=None)
def test_tree_roundtrips_through_json(tree: Any) -> None:
    skeleton, tensors = flatten(tree)
    assert not tensors
    assert unflatten(json.loads(json.dumps(skeleton)), {}) == tree


def test_tree_refuses_what_needs_pickle() -> None:
    with pytest.raises(UsageError, match=r"model/x.*object"):
        flatten({"model": {"x": object()}})


def test_staging_is_a_valid_safetensors_file_and_reuses_its_buffer() -> None:
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    tensors = {
        **{f"m/{k}": v for k, v in model.state_dict().items()},
        "i64": torch.arange(3),
        "b": torch.tensor([True, False]),
        "u8": torch.tensor([7], dtype=torch.uint8),
        "scalar": torch.tensor(1.5),
        "bf16": torch.ones(3, dtype=torch.bfloat16),
    }
    buf = StagingBuffer(tensors)
    buf.stage(tensors)
    before = buf.buffer.data_ptr()
    loaded = load(bytes(buf.memoryview()))
    assert set(loaded) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(loaded[k], v), k
    with torch.no_grad():
        model[0].weight.add_(1.0)
    tensors["m/0.weight"] = model.state_dict()["0.weight"]
    assert buf.fits(tensors)
    buf.stage(tensors)
    assert buf.buffer.data_ptr() == before
    assert torch.equal(load(bytes(buf.memoryview()))["m/0.weight"], model[0].weight)


def test_cadence_by_steps_seconds_and_adaptive() -> None:
    t = [0.0]
    c = Cadence(every_steps=10, clock=lambda: t[0])
    assert not c.due(9)
    assert c.due(10)
    c.saved(10, 0.0)
    assert not c.due(19)
    assert c.due(20)

    s = Cadence(every_seconds=5.0, clock=lambda: t[0])
    assert not s.due(1)
    t[0] = 5.1
    assert s.due(2)

    # adaptive: step 10 ms, stall 35 ms, cap 3.5 % -> one checkpoint per 100 steps
    t[0] = 0.0
    a = Cadence(max_overhead=0.035, every_steps=1, clock=lambda: t[0], alpha=1.0)
    for step in range(1, 5):
        t[0] += 0.01
        a.observe_step(step)
    a.saved(4, 0.035)
    assert a.interval_steps() == 100
    assert a.statistics().overhead == pytest.approx(0.035)


def test_adaptive_cadence_counts_step_inflation_while_a_persist_is_in_flight() -> None:
    # CheckFreq: the cost of a checkpoint is the stall plus what the background persist
    # takes from the steps it overlaps; a cadence blind to the latter overshoots the cap.
    t = [0.0]
    a = Cadence(max_overhead=0.035, clock=lambda: t[0], alpha=1.0)
    assert a.interval_steps() == 10  # nothing measured yet: bootstrap interval
    step = 0
    for _ in range(4):  # undisturbed steps of 10 ms
        step += 1
        t[0] += 0.01
        a.observe_step(step)
    assert not a.due(step)
    t[0] += 0.007  # the stall, which saved() keeps out of the step times
    a.saved(step, 0.007)
    for _ in range(5):  # the persist is in flight: each step 4 ms slower (20 ms in all)
        step += 1
        t[0] += 0.014
        a.observe_step(step, in_flight=True)
    assert a.inflation_s is None  # not folded in while the persist still runs
    step += 1
    t[0] += 0.01
    a.observe_step(step)  # persist done
    assert a.inflation_s == pytest.approx(0.02)
    assert a.step_s == pytest.approx(0.01)
    # (7 ms stall + 20 ms inflation) / (3.5 % of 10 ms) -> one checkpoint per 78 steps
    assert a.interval_steps() == 78
    assert a.statistics().overhead == pytest.approx(0.027 / 78 / 0.01)
    # a step that ran faster while a write was in flight is noise, never negative cost
    t[0] += 0.007
    a.saved(step, 0.007)
    step += 1
    t[0] += 0.005
    a.observe_step(step, in_flight=True)
    t[0] += 0.007
    a.saved(step, 0.007)
    assert a.inflation_s == 0.0


def test_sampler_resumes_mid_epoch_at_exactly_the_next_batch() -> None:
    full = ResumableSampler(100, 16, seed=3)
    expected = [full.next_batch().tolist() for _ in range(20)]
    first = ResumableSampler(100, 16, seed=3)
    got = [first.next_batch().tolist() for _ in range(7)]
    state = first.state_dict()
    second = ResumableSampler(100, 16, seed=3)
    second.load_state_dict(state)
    got += [second.next_batch().tolist() for _ in range(13)]
    assert got == expected
    with pytest.raises(UsageError, match="same dataset"):
        ResumableSampler(99, 16, seed=3).load_state_dict(state)


def test_loader_counts_consumed_batches_not_prefetched_ones() -> None:
    data = torch.arange(64).float().unsqueeze(1)
    loader = ResumableLoader(data, ResumableSampler(64, 8, seed=1))
    it = iter(loader)
    seen = [next(it) for _ in range(3)]
    state = loader.state_dict()
    assert state["position"] == 3
    rest = ResumableLoader(data, ResumableSampler(64, 8, seed=1))
    rest.load_state_dict(state)
    whole = list(ResumableLoader(data, ResumableSampler(64, 8, seed=1)))
    assert [b.tolist() for b in seen + list(rest)] == [b.tolist() for b in whole]


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "arr": np.arange(self.n)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.n = int(state["n"])


def _vault(root: Path, events: EventLog | None = None) -> Vault:
    make_key(root / "keys" / "signing.key")
    return Vault(
        [root / "a", root / "b"],
        key_path=root / "keys" / "signing.key",
        state_dir=root / "state",
        events=events,
    )


def _setup(
    store: VaultStore, *, hidden: int = 8, **kw: Any
) -> tuple[Checkpointer, nn.Module, torch.optim.Optimizer, Counter]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    counter = Counter()
    ckpt = Checkpointer("job", store, handle_signals=False, **kw)
    ckpt.track(model=model, optimizer=opt, counter=counter)
    return ckpt, model, opt, counter


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        x = torch.randn(5, 4)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _digest(model: nn.Module, opt: torch.optim.Optimizer) -> list[float]:
    out = [float(v.sum()) for v in model.state_dict().values()]
    for st_ in opt.state_dict()["state"].values():
        out += [float(v.sum()) for v in st_.values()]
    return out


def test_restore_continues_bit_exact_including_rng(tmp_path: Path) -> None:
    store = VaultStore(_vault(tmp_path))
    ckpt, model, opt, counter = _setup(store, cadence=Cadence(every_steps=5))
    for step in range(1, 11):
        _train(model, opt, 1)
        counter.n += 1
        ckpt.step(step)
        ckpt.wait()
    _train(model, opt, 5)
    expected = _digest(model, opt)
    next_draw = torch.rand(1)
    ckpt.close()

    random.seed(99)
    torch.manual_seed(99)
    again, model2, opt2, counter2 = _setup(store)
    assert again.restore() == 10
    assert counter2.n == 10
    _train(model2, opt2, 5)
    assert _digest(model2, opt2) == expected
    assert torch.equal(torch.rand(1), next_draw)
    assert store.checkpoints("job") == ["ckpt/job/step-000010", "ckpt/job/step-000005"]
    again.close()


def test_busy_save_is_skipped_and_reported(tmp_path: Path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def emit(self, kind: str, subject: str = "", segment: str = "", **data: Any) -> None:
            events.append((kind, data))

    class SlowStore(VaultStore):
        gate_open = False

        def commit(self, *a: Any, **k: Any) -> str:
            import threading

            ev = threading.Event()
            while not SlowStore.gate_open:
                ev.wait(0.005)
            return super().commit(*a, **k)

    store = SlowStore(_vault(tmp_path))
    ckpt, _model, _opt, _ = _setup(store, events=Log(), on_busy="skip")
    assert ckpt.save(1)
    assert not ckpt.save(2)
    SlowStore.gate_open = True
    ckpt.wait()
    assert ("train.checkpoint.skipped", {"step": 2, "reason": "busy"}) in events
    assert ckpt.statistics().skipped == 1
    ckpt.close()


def test_shape_mismatch_is_a_clear_usage_error(tmp_path: Path) -> None:
    store = VaultStore(_vault(tmp_path))
    ckpt, *_ = _setup(store, hidden=8)
    ckpt.save(3, block=True)
    ckpt.close()
    other, *_ = _setup(store, hidden=16)
    with pytest.raises(UsageError, match=r"step-000003.*0\.weight.*\[8, 4\].*\[16, 4\]"):
        other.restore()
    other.close()


def _objects(root: Path, replica: str, digests: set[str]) -> list[Path]:
    # where docs/vault.md says a replica keeps an object
    return [root / replica / "objects" / d[:2] / d for d in sorted(digests)]


def _damage(path: Path) -> None:
    path.chmod(0o644)  # objects are written read-only
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_latest_repaired_on_one_replica_skipped_on_all(tmp_path: Path) -> None:
    log = EventLog.in_state_dir(tmp_path / "state")
    vault = _vault(tmp_path, events=log)
    store = VaultStore(vault)
    ckpt, model, opt, _ = _setup(store)
    ckpt.save(1, block=True)
    _train(model, opt, 1)
    ckpt.save(2, block=True)
    ckpt.close()
    newer = vault.snapshot("ckpt/job/step-000002")
    only_new = {c.id for c in newer.files["state.safetensors"].chunks} - (
        vault.snapshot("ckpt/job/step-000001").chunk_ids()
    )
    assert only_new
    for path in _objects(tmp_path, "a", only_new):
        _damage(path)
    mark = log.count()
    again, *_ = _setup(store)
    assert again.restore() == 2
    assert any(e.kind == "vault.repaired" for e in log.query(after_id=mark))
    for a, b in zip(
        _objects(tmp_path, "a", only_new), _objects(tmp_path, "b", only_new), strict=True
    ):
        assert a.read_bytes() == b.read_bytes()
    for replica in ("a", "b"):
        for path in _objects(tmp_path, replica, only_new):
            _damage(path)
    with pytest.raises(IntegrityError):
        store.read("ckpt/job/step-000002", "state.safetensors")
    third, *_ = _setup(store)
    assert third.restore() == 1
    again.close()
    third.close()
    log.close()


def test_checkpoint_chunks_are_written_from_the_staging_buffer_in_the_aligned_form(
    tmp_path: Path,
) -> None:
    # 1024 x 1024 float32 weights and two Adam moments: the state file is one 16 MiB
    # chunk and a tail, each starting page-aligned in the staging buffer, so the vault
    # stores them behind a 4 KiB header (form 03) and writes them with O_DIRECT from
    # where they are (docs/vault.md), with no copy on the writer's path.
    vault = _vault(tmp_path)
    torch.manual_seed(0)
    model = nn.Linear(1024, 1024)
    opt = torch.optim.Adam(model.parameters())
    _train_wide(model, opt)
    ckpt = Checkpointer("wide", VaultStore(vault), handle_signals=False, track_rng=False)
    ckpt.track(model=model, optimizer=opt)
    ckpt.save(1, block=True)
    ckpt.close()
    entry = vault.snapshot("ckpt/wide/step-000001").files["state.safetensors"]
    big = [c for c in entry.chunks if c.size >= 1 << 20]
    assert big, entry.chunks
    for replica in ("a", "b"):
        for chunk in big:
            path = tmp_path / replica / "objects" / chunk.id[:2] / chunk.id
            with path.open("rb") as f:
                assert f.read(4096) == b"\x03" + bytes(4095), (replica, chunk)
            assert path.stat().st_size == 4096 + chunk.size


def _train_wide(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    loss = model(torch.randn(2, 1024)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_a_vault_without_its_signing_key_is_refused_with_the_fix(tmp_path: Path) -> None:
    from bastion.manifest import load
    from bastion.train import open_store

    path = tmp_path / "bastion.yaml"
    path.write_text(
        "version: 1\nsystem: t\nvault:\n  replicas: [.bastion/vault/a]\n"
        "  key: .bastion/keys/signing.key\n"
    )
    manifest = load(path)
    with pytest.raises(UsageError) as got:
        open_store(manifest, job="job-a")
    assert str(got.value) == (
        "job-a: the vault's signing key .bastion/keys/signing.key is missing; run "
        f"`bastion init {tmp_path}` to create the missing keys and replica directories"
    )
    assert not (tmp_path / ".bastion").exists(), "a refused job changes nothing"
    # a verify-only host (the public half alone) is told so, not sent to `bastion init`
    make_key(tmp_path / "elsewhere.key")
    (tmp_path / ".bastion/keys").mkdir(parents=True)
    (tmp_path / "elsewhere.key.pub").rename(tmp_path / ".bastion/keys/signing.key.pub")
    with pytest.raises(UsageError, match=r"only its public half signing\.key\.pub"):
        open_store(manifest, job="job-a")
    # a vault that holds snapshots needs its own key back: a new one could not verify them
    (tmp_path / ".bastion/keys/signing.key.pub").unlink()
    (tmp_path / "elsewhere.key").rename(tmp_path / ".bastion/keys/signing.key")
    Vault.from_manifest(manifest).commit("dataset/x", {"x": b"x"})
    (tmp_path / ".bastion/keys/signing.key").unlink()
    with pytest.raises(UsageError, match=r"already holds snapshots.*from your backup"):
        open_store(manifest, job="job-a")


def test_without_a_vault_section_checkpoints_go_to_the_default_vault(tmp_path: Path) -> None:
    from bastion.manifest import load
    from bastion.train import checkpoint_vault, open_store

    path = tmp_path / "bastion.yaml"
    path.write_text("version: 1\nsystem: t\njobs:\n  j: {command: [python, x.py]}\n")
    manifest = load(path)
    with pytest.raises(UsageError, match=r"default vault's signing key .*bastion init"):
        open_store(manifest, job="j")
    make_key(tmp_path / ".bastion/keys/signing.key")
    store = open_store(manifest, job="j")
    ckpt, *_ = _setup(store)
    ckpt.save(7, block=True)
    ckpt.close()
    vault = checkpoint_vault(manifest)
    assert [s.url for s in vault.stores] == [
        str(tmp_path / ".bastion/vault/a"),
        str(tmp_path / ".bastion/vault/b"),
    ]
    assert vault.snapshot("ckpt/job/step-000007").key_id


def test_slot_picker_fails_over_and_reports_why(tmp_path: Path) -> None:
    from bastion.errors import UnavailableError
    from bastion.train import LocalSlot

    bad = tmp_path / "bad"
    bad.write_text("a file where a directory should be")
    picker = SlotPicker([LocalSlot("one", bad), LocalSlot("two", tmp_path / "ok")])
    slot, failed = picker.pick()
    assert slot.name == "two"
    assert failed[0][0] == "one"
    assert "not writable" in failed[0][1]
    with pytest.raises(UnavailableError, match="no worker slot"):
        SlotPicker([LocalSlot("one", bad)]).pick()


def test_manifest_job_sets_warm_standby_and_startup_timeout(tmp_path: Path) -> None:
    from bastion.errors import ManifestError
    from bastion.manifest import load
    from bastion.train import JobSupervisor

    path = tmp_path / "bastion.yaml"
    path.write_text(
        "version: 1\nsystem: t\nstate_dir: .bastion\njobs:\n"
        "  a: {command: [python, train.py]}\n"
        "  b: {command: [python, train.py], warm_standby: false, startup_timeout_s: 7.5}\n"
    )
    manifest = load(path)
    a = JobSupervisor.from_manifest(manifest, "a")
    assert (a.warm_standby, a.startup_timeout_s) == (True, 120.0)  # the defaults
    b = JobSupervisor.from_manifest(manifest, "b")
    assert (b.warm_standby, b.startup_timeout_s) == (False, 7.5)
    path.write_text(
        "version: 1\nsystem: t\nstate_dir: .bastion\njobs:\n"
        "  a: {command: [python, train.py], startup_timeout_s: 0}\n"
    )
    with pytest.raises(ManifestError, match="startup_timeout_s"):
        load(path)


def test_recovery_follows_when_events_happened_not_when_they_were_written(
    tmp_path: Path,
) -> None:
    # One restart's events come from two processes; on a busy machine the supervisor's
    # writes waited for the log's lock and landed after the new worker's own events.
    from bastion import event_kinds as ek
    from bastion.train import job_status, recovery_timeline

    log = EventLog.in_state_dir(tmp_path)
    t = 10**12
    log.emit(ek.TRAIN_RESTORED, "j", at_ns=t + 300, step=250, restore_s=0.2)
    log.emit(ek.TRAIN_STEP_FIRST, "j", at_ns=t + 400, step=251)
    log.emit(ek.TRAIN_EXITED, "j", at_ns=t, code=None, reason="signal:SIGKILL", last_step=301)
    log.emit(ek.TRAIN_STARTED, "j", at_ns=t + 100, warm=True)
    [rec] = recovery_timeline(log, "j")
    assert (rec.exited_ns, rec.started_ns, rec.restored_ns, rec.first_step_ns) == (
        t,
        t + 100,
        t + 300,
        t + 400,
    )
    assert (rec.step, rec.warm, rec.reason) == (250, True, "signal:SIGKILL")
    assert job_status(tmp_path, log, "j").steps_lost == 301 - 250
