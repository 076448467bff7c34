"""Pin the foundation's public API, so it never changes by accident (as httpx does)."""

from __future__ import annotations

import bastion
import bastion.errors
import bastion.events
import bastion.manifest
import bastion.names


def test_top_level_exports() -> None:
    assert sorted(bastion.__all__) == sorted(
        [
            "BastionError",
            "CheckFailed",
            "Event",
            "EventLog",
            "IntegrityError",
            "InternalError",
            "InvalidNameError",
            "Manifest",
            "ManifestError",
            "ManifestProblem",
            "NotFoundError",
            "Ref",
            "ScopeError",
            "UnavailableError",
            "UsageError",
            "__version__",
            "load",
            "parse_name",
            "parse_ref",
        ]
    )
    for name in bastion.__all__:
        assert hasattr(bastion, name), name


def test_module_exports() -> None:
    assert sorted(bastion.events.__all__) == [
        "Emit",
        "Event",
        "EventLog",
        "EventWriter",
        "NO_EVENTS",
        "Relay",
        "add_secret",
        "parse_since",
        "redact",
        "url_of",
        "use_postgres",
    ]
    assert sorted(bastion.names.__all__) == ["KINDS", "Ref", "parse_name", "parse_ref"]
    assert "load" in bastion.manifest.__all__
    assert "schema" in bastion.manifest.__all__
    for module in (bastion.errors, bastion.events, bastion.manifest, bastion.names):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)


def test_error_tree_and_exit_codes() -> None:
    e = bastion.errors
    assert issubclass(e.ManifestError, e.UsageError)
    assert issubclass(e.InvalidNameError, e.UsageError)
    assert issubclass(e.ScopeError, e.UsageError)
    assert not issubclass(e.IntegrityError, e.UnavailableError)
    assert not issubclass(e.UnavailableError, e.IntegrityError)
    codes = {
        cls.__name__: cls.exit_code
        for cls in (
            e.UsageError,
            e.ManifestError,
            e.NotFoundError,
            e.IntegrityError,
            e.UnavailableError,
            e.CheckFailed,
            e.InternalError,
        )
    }
    assert codes == {
        "UsageError": 2,
        "ManifestError": 2,
        "NotFoundError": 2,
        "IntegrityError": 1,
        "UnavailableError": 1,
        "CheckFailed": 1,
        "InternalError": 3,
    }
    # The module docstring draws every class of the tree.
    for name in e.__all__:
        if name != "ManifestProblem":
            assert name in (e.__doc__ or ""), name
