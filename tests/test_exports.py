"""The public surface: every export imports, is documented, and is what PRODUCT.md names."""

from __future__ import annotations

import inspect
import pickle
import traceback

import bindpool
from bindpool._errors import combined

CONTRACT = {
    "Pool",
    "PooledSocket",
    "Lease",
    "PoolStatistics",
    "SourceStatistics",
    "BindPoolError",
    "ConfigurationError",
    "PoolClosed",
    "PortsExhausted",
    "SourceUnavailable",
}


def test_every_export_imports_and_is_documented() -> None:
    assert set(bindpool.__all__) == CONTRACT
    for name in bindpool.__all__:
        obj = getattr(bindpool, name)
        assert inspect.getdoc(obj), f"bindpool.{name} has no docstring"


def test_public_classes_report_the_public_module() -> None:
    """Tracebacks, reprs and pickles say `bindpool.PortsExhausted`, where users import it
    from, not the private module that defines it."""
    for name in bindpool.__all__:
        obj = getattr(bindpool, name)
        assert obj.__module__ == "bindpool", f"bindpool.{name} reports {obj.__module__}"
    error = bindpool.PortsExhausted(("192.0.2.1", 80), ["127.0.0.2"], 3)
    last_line = traceback.format_exception(error)[-1]
    assert last_line.startswith("bindpool.PortsExhausted: [Errno 99] ")
    assert repr(bindpool.PoolClosed) == "<class 'bindpool.PoolClosed'>"
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.errno, str(copy)) == (bindpool.PortsExhausted, 99, str(error))
    stats = bindpool.Pool(["127.0.0.2"], ports=range(20000, 20010)).statistics()
    assert type(stats).__module__ == "bindpool"
    source = stats.sources["127.0.0.2"]
    assert pickle.loads(pickle.dumps(source)) == source
    lease = bindpool.Lease("127.0.0.2", 20000, ("127.0.0.1", 80))
    assert pickle.loads(pickle.dumps(lease)) == lease


def test_public_methods_are_documented() -> None:
    for name, member in inspect.getmembers(bindpool.Pool):
        if not name.startswith("_"):
            assert inspect.getdoc(member), f"Pool.{name} has no docstring"


def test_error_family() -> None:
    assert issubclass(bindpool.PortsExhausted, bindpool.BindPoolError)
    assert issubclass(bindpool.PortsExhausted, OSError)
    assert issubclass(bindpool.PoolClosed, RuntimeError)
    assert issubclass(bindpool.ConfigurationError, ValueError)
    error = bindpool.PortsExhausted(("192.0.2.1", 80), ["127.0.0.2"], 3)
    assert error.errno == 99
    assert error.strerror is not None
    assert "192.0.2.1:80" in error.strerror
    assert "127.0.0.2" in error.strerror
    assert "3 attempts" in error.strerror
    assert "[2001:db8::1]:443" in str(bindpool.PortsExhausted(("2001:db8::1", 443), ["::1"], 0))


def test_pool_signature_matches_the_contract() -> None:
    parameters = inspect.signature(bindpool.Pool).parameters
    assert list(parameters) == [
        "sources",
        "ports",
        "cooldown",
        "max_attempts",
        "on_release",
        "shard",
        "strategy",
        "select",
        "wait",
    ]
    defaults = {name: p.default for name, p in parameters.items() if name != "sources"}
    assert defaults == {
        "ports": None,
        "cooldown": 60.0,
        "max_attempts": 32,
        "on_release": None,
        "shard": None,
        "strategy": "table",
        "select": "room",
        "wait": 0.0,
    }
    assert all(p.kind is p.KEYWORD_ONLY for name, p in parameters.items() if name != "sources")


def test_failures_of_several_addresses_combine_into_one() -> None:
    """As asyncio and aiohappyeyeballs report them, but an exhausted pool stays visible."""
    first = bindpool.PortsExhausted(("192.0.2.1", 80), ["127.0.0.2"], 0)
    second = bindpool.PortsExhausted(("192.0.2.2", 80), ["127.0.0.2"], 0)
    assert combined([first, second]) is first  # out of ports everywhere: that is the error
    refused = ConnectionRefusedError(111, "Connect call failed")
    assert combined([refused, ConnectionRefusedError(111, "Connect call failed")]) is refused
    same_errno = combined([first, OSError(99, "Cannot assign requested address")])
    assert same_errno.errno == 99
    assert "Multiple exceptions: [Errno 99] no free source port" in str(same_errno)
    mixed = combined([first, refused])
    assert mixed.errno is None
    assert "Connect call failed" in str(mixed)
