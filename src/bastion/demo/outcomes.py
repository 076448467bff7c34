"""Demo scene: outcomes measured. The reference drill suite's short version on a sandbox
twin of the example, then the signed readiness report over what it found.

The suite makes a fresh twin (its own state directory, ports and copy-on-write vault),
runs its demo scenarios there, each judged passed / failed / errored / skipped against the
manifest's ``recovery`` targets, and removes the twin; production (the demo's copy of the
example) is fingerprinted around every scenario, and a scenario that changed it is
errored. The report then reads the suite's results, the SLOs and the map from production's
state directory, writes its page, JSON and JUnit, signs them with the vault key, and the
scene checks the signature, and that one edited byte breaks it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.demo import DemoContext, Scene

TITLE = "Outcomes: the drill suite on a sandbox twin, then the signed readiness report"


def run(ctx: DemoContext) -> Scene:
    from bastion.demo import Scene
    from bastion.drill.suite import demo_suite, summary_lines
    from bastion.errors import IntegrityError
    from bastion.report import build_report, verify_report, write_report
    from bastion.starter import init
    from bastion.train._store import checkpoint_keys
    from bastion.vault._keys import Signer, Verifier

    scene = Scene(TITLE)
    init(ctx.workdir)  # the vault's keys (idempotent; the vault scene made them already)
    ctx.console.print("  running the suite's short version on a twin (about a minute)...")
    result = demo_suite(ctx.manifest_path)
    scene.findings.extend(summary_lines(result))
    counts = result.counts
    if counts["failed"] or counts["errored"] or not counts["passed"]:
        scene.ok = False
        scene.findings.append("  expected every scenario that applies to pass")

    manifest = ctx.manifest()
    key, _admin = checkpoint_keys(manifest)
    out = ctx.workdir / "report"
    doc = build_report(manifest)
    write_report(doc, out, Signer(key))
    value = doc["score"]["value"]
    parts = ", ".join(f"{p['id']} {100 * p['counted']:.0f}%" for p in doc["score"]["parts"])
    suite_drills = [d for d in doc["drills"] if d.get("suite")]
    scene.findings.append(
        f"readiness report: score {value:g}/100 ({parts}); {len(doc['drills'])} drill run(s), "
        f"{len(suite_drills)} from the suite; {len(doc['findings'])} finding(s); "
        f"{out / 'report.html'}"
    )
    if not suite_drills:
        scene.ok = False
        scene.findings.append("  expected the report to show the suite's scenarios")
    verifier = Verifier.for_key_file(key)
    found = verify_report(out, verifier)
    scene.findings.append(f"bastion report verify: signed by {found.key_id}, every file matches")
    page = out / "report.json"
    original = page.read_bytes()
    page.write_bytes(original.replace(b'"system"', b'"System"', 1))
    try:
        verify_report(out, verifier)
    except IntegrityError as exc:
        scene.findings.append(f"one edited byte in report.json: refused ({str(exc)[:90]})")
    else:
        scene.ok = False
        scene.findings.append("  an edited report.json verified: it must not")
    finally:
        page.write_bytes(original)
    return scene
