"""Bad input: a typed error with a message that says what to fix, and nothing leaked.

Construction errors are `ConfigurationError` (a `BindPoolError` and a `ValueError`). Per-call
errors are raised before any port is taken or socket opened: no lease, no file descriptor.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import bindpool
from bindpool import _config, _host, _resolve
from tests import badinput_inside
from tests.conftest import DEST, SOURCE
from tests.netns import inside

ROOT = Path(__file__).parent.parent
HUGE = 10**400  # past float range: float() raises OverflowError
VAST = 10**5000  # past str()'s 4300 digits: repr() raises ValueError


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    before = set(os.listdir("/proc/self/fd"))
    yield
    assert set(os.listdir("/proc/self/fd")) <= before, "file descriptors left open"


CONSTRUCTION: list[tuple[dict[str, Any], str]] = [
    ({"sources": []}, "sources is empty"),
    ({"sources": "127.0.0.2"}, "not one string"),
    ({"sources": 42}, "iterable of IP strings"),
    ({"sources": [b"127.0.0.2"]}, "must be a str"),
    ({"sources": ["localhost"]}, "not a numeric IP address"),
    ({"sources": ["192.0.2.77"]}, "not an address of this host"),
    ({"sources": ["0.0.0.0"]}, "not a unicast address"),
    ({"sources": ["::"]}, "not a unicast address"),
    ({"sources": ["224.0.0.1"]}, "not a unicast address"),
    ({"sources": ["::ffff:127.0.0.2"]}, "IPv4-mapped"),
    # Linux binds a TCP socket to a broadcast address, then sends from another one.
    ({"sources": ["255.255.255.255"]}, "not a unicast address.*bind to the interface's own IP"),
    ({"sources": ["127.255.255.255"]}, "not a unicast address.*bind to the interface's own IP"),
    ({"sources": [SOURCE, "127.255.255.255"]}, "'127.255.255.255' is not a unicast address"),
    ({"sources": itertools.repeat(SOURCE)}, "more than 65,536 items.*as a list"),
    ({"sources": [VAST]}, "an int of about 5000 digits must be a str"),
    ({"sources": ["127.0.0.2", None]}, "must be a str"),
    ({"sources": ["127.0.0.2", 2130706434]}, "must be a str"),
    ({"ports": []}, "ports is empty"),
    ({"ports": range(0)}, "ports is empty"),
    ({"ports": [0]}, "outside 1-65535"),
    ({"ports": range(65530, 65540)}, "outside 1-65535"),
    # Ranges are checked by their bounds, before a port is made: len() of these overflows,
    # and a list of range(1, 10**8) would take 20 s and gigabytes.
    ({"ports": range(10**30)}, r"reach 0, outside 1-65535: give a range inside it"),
    ({"ports": range(1, 10**8)}, r"reach 99999999, outside 1-65535: give a range inside it"),
    ({"ports": range(10**30, 0, -1)}, r"outside 1-65535: give a range inside it"),
    ({"ports": range(40000, 70000, 5)}, r"reach 69995, outside 1-65535"),
    ({"ports": range(VAST)}, r"ports a range reach 0, outside 1-65535"),
    # Other iterables are read item by item, at most one past the number of ports.
    ({"ports": itertools.count()}, "port 0 is outside 1-65535"),
    ({"ports": itertools.count(40000)}, "port 65536 is outside 1-65535"),
    ({"ports": itertools.repeat(40000)}, "more than 65,536 items.*give a range"),
    ({"ports": itertools.cycle(range(40000, 40010))}, "more than 65,536 items.*give a range"),
    ({"ports": [HUGE]}, "port an int of about 400 digits is outside 1-65535"),
    ({"ports": [VAST]}, "port an int of about 5000 digits is outside 1-65535"),
    ({"ports": [-1]}, "outside 1-65535"),
    ({"ports": [40000, 70000]}, "outside 1-65535"),
    ({"ports": [40000.0]}, "must hold ints"),
    ({"ports": ["80"]}, "must hold ints"),
    ({"ports": [True]}, "must hold ints"),
    ({"ports": "8080"}, "range or iterable of ints"),
    ({"ports": 8080}, "range or iterable of ints"),
    ({"max_attempts": 0}, "max_attempts must be an int >= 1"),
    ({"max_attempts": -3}, "max_attempts must be an int >= 1"),
    ({"max_attempts": 2.5}, "max_attempts must be an int >= 1"),
    ({"max_attempts": True}, "max_attempts must be an int >= 1"),
    ({"cooldown": -1}, "cooldown must be a finite number >= 0"),
    ({"cooldown": math.nan}, "cooldown must be a finite number >= 0"),
    ({"cooldown": math.inf}, "cooldown must be a finite number >= 0"),
    ({"cooldown": "60"}, "cooldown must be a number"),
    ({"cooldown": HUGE}, "cooldown must be a finite number >= 0.*0 turns it off"),
    ({"cooldown": -HUGE}, "cooldown must be a finite number >= 0.*0 turns it off"),
    ({"cooldown": VAST}, "cooldown must be a finite number >= 0, not an int of about 5000"),
    ({"on_release": "print"}, "on_release must be callable"),
    ({"cooldown": None}, "cooldown must be a number"),
    ({"max_attempts": None}, "max_attempts must be an int >= 1"),
    ({"shard": (0, 0)}, "count >= 1"),
    ({"shard": (2, 2)}, "0 <= index < count"),
    ({"shard": (-1, 2)}, "0 <= index < count"),
    ({"shard": [0, 2]}, r"tuple \(index, count\)"),
    ({"shard": (0, 11)}, "a shard would be empty"),
    ({"shard": (0, VAST)}, "shard count an int of about 5000 digits exceeds the 10 ports"),
    ({"strategy": "fast"}, "strategy must be 'table' or 'kernel'"),
]


def _label(value: object) -> str:
    """A short, stable test id: no memory address, no repr() of an int str() refuses."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__}>"
    if " at 0x" in text:
        text = f"<{type(value).__name__}>"
    return text if len(text) < 40 else f"{text[:30]}...<{len(text)} chars>"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    CONSTRUCTION,
    ids=[",".join(f"{k}={_label(v)}" for k, v in kwargs.items()) for kwargs, _ in CONSTRUCTION],
)
def test_construction_rejects(kwargs: dict[str, Any], message: str, no_fd_leak: None) -> None:
    arguments: dict[str, Any] = {"sources": [SOURCE], "ports": range(40000, 40010)}
    arguments.update(kwargs)
    sources = arguments.pop("sources")
    with pytest.raises(bindpool.ConfigurationError, match=message) as info:
        bindpool.Pool(sources, **arguments)
    assert isinstance(info.value, bindpool.BindPoolError)
    assert isinstance(info.value, ValueError)


def test_ports_read_no_further_than_one_past_the_number_of_ports(no_fd_leak: None) -> None:
    """An endless iterable of valid ports is refused after 65,537 items, not read forever;
    65,536 items, duplicates and all, are still a valid (if odd) way to give 10 ports."""
    read = 0

    def counted(ports: Iterable[int]) -> Iterator[int]:
        nonlocal read
        for port in ports:
            read += 1
            yield port

    with pytest.raises(bindpool.ConfigurationError, match="more than 65,536 items"):
        bindpool.Pool([SOURCE], ports=counted(itertools.cycle(range(40000, 40010))))
    assert read == _config.MOST_PORTS + 1
    read = 0
    enough = itertools.islice(itertools.cycle(range(40000, 40010)), _config.MOST_PORTS)
    pool = bindpool.Pool([SOURCE], ports=counted(enough))
    assert read == _config.MOST_PORTS
    assert pool._config.ports == tuple(range(40000, 40010))


def test_ranges_are_never_materialised_beyond_their_ports() -> None:
    """A valid range with a step, or backwards, gives its own ports, sorted."""
    assert bindpool.Pool([SOURCE], ports=range(40009, 39999, -3))._config.ports == (
        40000,
        40003,
        40006,
        40009,
    )
    assert bindpool.Pool([SOURCE], ports=range(40000, 10**30, 10**30))._config.ports == (40000,)


def test_sources_are_canonical_and_deduplicated() -> None:
    pool = bindpool.Pool(["127.0.0.2", "0:0:0:0:0:0:0:1", "127.0.0.2"], ports=[40000])
    assert list(pool.statistics().sources) == ["127.0.0.2", "::1"]


def test_default_ports_follow_the_host() -> None:
    from bindpool import _host

    pool = bindpool.Pool([SOURCE])
    expected = _host.reserved_ports() or _host.ephemeral_range()
    assert pool.statistics().sources[SOURCE].ports == len(set(expected))


def test_shards_split_the_ports_into_disjoint_covering_slices() -> None:
    ports = range(40000, 40010)
    slices = [bindpool.Pool([SOURCE], ports=ports, shard=(i, 3))._config.ports for i in range(3)]
    assert [len(s) for s in slices] == [4, 3, 3]
    assert sorted(p for s in slices for p in s) == list(ports)


EPHEMERAL = _host.ephemeral_range()


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        ([EPHEMERAL.start, EPHEMERAL.start + 2], "one contiguous block"),
        (range(1000, 1100), "can only narrow it"),
        (range(EPHEMERAL.stop - 10, EPHEMERAL.stop + 10), "can only narrow it"),
    ],
    ids=["gap", "below", "across the top"],
)
def test_kernel_strategy_needs_one_block_inside_the_ephemeral_range(
    ports: list[int] | range, message: str
) -> None:
    with pytest.raises(bindpool.ConfigurationError, match=message):
        bindpool.Pool([SOURCE], ports=ports, strategy="kernel")


def test_kernel_strategy_refuses_reserved_ports_and_leaves_them_out_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kernel's pick never lands on a reserved port: a block of them could never
    connect, and by default they are not counted as room. (The host's reserved ports are
    faked here: a test may not change the host's sysctls.)"""
    top = EPHEMERAL.stop - 1
    monkeypatch.setattr(_host, "reserved_ports", lambda: [top - 2, top - 1])
    with pytest.raises(bindpool.ConfigurationError, match=f"{top - 2}-{top - 1} are in net.ipv4"):
        bindpool.Pool([SOURCE], ports=range(top - 9, top + 1), strategy="kernel")
    default = bindpool.Pool([SOURCE], strategy="kernel")._config
    assert len(default.ports) == len(EPHEMERAL) - 2
    assert default.span == (EPHEMERAL.start, top)
    last_shard = bindpool.Pool([SOURCE], strategy="kernel", shard=(7, 8))._config
    assert last_shard.span == (last_shard.ports[0], top)  # across the reserved gap
    assert top - 1 not in last_shard.ports


def test_kernel_strategy_defaults_to_the_ephemeral_range_and_shards_stay_blocks() -> None:
    pool = bindpool.Pool([SOURCE], strategy="kernel")
    reserved = set(_host.reserved_ports())
    assert pool._config.ports == tuple(port for port in EPHEMERAL if port not in reserved)
    # Narrowed even to the whole range: the kernel then searches it port by port.
    assert pool._config.span == (EPHEMERAL.start, EPHEMERAL.stop - 1)
    shard = bindpool.Pool([SOURCE], strategy="kernel", shard=(1, 4))._config
    assert shard.span == (shard.ports[0], shard.ports[-1])
    assert len(shard.ports) == shard.ports[-1] - shard.ports[0] + 1


# -- per call -----------------------------------------------------------------------------------

Call = Callable[[Any], Any]  # Any: these calls break the types on purpose
PER_CALL: list[tuple[str, Call, type[BaseException], str]] = [
    ("port 0", lambda p: p.connect(DEST, 0), bindpool.ConfigurationError, "1-65535"),
    ("port -1", lambda p: p.connect(DEST, -1), bindpool.ConfigurationError, "1-65535"),
    ("port float", lambda p: p.connect(DEST, 80.0), bindpool.ConfigurationError, "1-65535"),
    ("port bool", lambda p: p.connect(DEST, True), bindpool.ConfigurationError, "1-65535"),
    ("port None", lambda p: p.connect(DEST, None), bindpool.ConfigurationError, "1-65535"),
    ("host int", lambda p: p.connect(2130706433, 80), bindpool.ConfigurationError, "str"),
    ("host bytes", lambda p: p.connect(b"127.0.0.1", 80), bindpool.ConfigurationError, "str"),
    ("port 70000", lambda p: p.connect(DEST, 70000), bindpool.ConfigurationError, "1-65535"),
    ("port str", lambda p: p.connect(DEST, "80"), bindpool.ConfigurationError, "1-65535"),
    ("host None", lambda p: p.connect(None, 80), bindpool.ConfigurationError, "non-empty str"),
    ("host empty", lambda p: p.connect("", 80), bindpool.ConfigurationError, "non-empty str"),
    (
        "negative timeout",
        lambda p: p.connect(DEST, 80, timeout=-1),
        bindpool.ConfigurationError,
        ">= 0 seconds",
    ),
    (
        "nan timeout",
        lambda p: p.connect(DEST, 80, timeout=math.nan),
        bindpool.ConfigurationError,
        ">= 0 seconds",
    ),
    (
        "timeout str",
        lambda p: p.connect(DEST, 80, timeout="1"),
        bindpool.ConfigurationError,
        "number of seconds",
    ),
    (
        "timeout bool",
        lambda p: p.connect(DEST, 80, timeout=True),
        bindpool.ConfigurationError,
        "number of seconds",
    ),
    (
        "stream limit 0",
        lambda p: p.open_connection(DEST, 80, limit=0),
        bindpool.ConfigurationError,
        "limit must be an int >= 1",
    ),
    (
        "stream limit str",
        lambda p: p.open_connection(DEST, 80, limit="64k"),
        bindpool.ConfigurationError,
        "limit must be an int >= 1",
    ),
    (
        "stream bad port",
        lambda p: p.open_connection(DEST, 0),
        bindpool.ConfigurationError,
        "1-65535",
    ),
    (
        "stream negative timeout",
        lambda p: p.open_connection(DEST, 80, timeout=-0.5),
        bindpool.ConfigurationError,
        ">= 0 seconds",
    ),
    (
        "server_hostname not a str",
        lambda p: p.open_connection(DEST, 80, ssl=True, server_hostname=7),
        bindpool.ConfigurationError,
        "server_hostname must be a str",
    ),
    (
        "negative handshake timeout",
        lambda p: p.open_connection(DEST, 80, ssl=True, ssl_handshake_timeout=-1),
        bindpool.ConfigurationError,
        "ssl_handshake_timeout must be >= 0",
    ),
    (
        "handshake timeout str",
        lambda p: p.open_connection(DEST, 80, ssl=True, ssl_handshake_timeout="5"),
        bindpool.ConfigurationError,
        "ssl_handshake_timeout must be a number",
    ),
    (
        "protocol factory a str",
        lambda p: p.create_connection("Protocol", DEST, 80),
        bindpool.ConfigurationError,
        "protocol_factory must be callable",
    ),
    (
        "protocol: bad host",
        lambda p: p.create_connection(asyncio.Protocol, "", 80),
        bindpool.ConfigurationError,
        "non-empty str",
    ),
    (
        "protocol: negative timeout",
        lambda p: p.create_connection(asyncio.Protocol, DEST, 80, timeout=-1),
        bindpool.ConfigurationError,
        ">= 0 seconds",
    ),
    (
        "protocol: ssl without name",
        lambda p: p.create_connection(
            asyncio.Protocol, DEST, 80, ssl=ssl.create_default_context(), server_hostname=""
        ),
        bindpool.ConfigurationError,
        "server_hostname is empty",
    ),
    (
        "family mismatch",
        lambda p: p.connect("::1", 80),
        bindpool.ConfigurationError,
        r"IPv6 addresses only.*127\.0\.0\.2",
    ),
    (
        "unresolvable name",
        lambda p: p.connect("no-such-host.invalid", 80),
        socket.gaierror,
        r"\[Errno -\d+\]",  # EAI_NONAME, or EAI_AGAIN where no resolver answers
    ),
    (
        "server_hostname without ssl",
        lambda p: p.open_connection(DEST, 80, server_hostname="x"),
        bindpool.ConfigurationError,
        "only meaningful with ssl",
    ),
    (
        "handshake timeout without ssl",
        lambda p: p.open_connection(DEST, 80, ssl_handshake_timeout=1),
        bindpool.ConfigurationError,
        "only meaningful with ssl",
    ),
    (
        "ssl with no name to verify",
        lambda p: p.open_connection(DEST, 80, ssl=ssl.create_default_context(), server_hostname=""),
        bindpool.ConfigurationError,
        "server_hostname is empty",
    ),
    (
        "ssl not a context",
        lambda p: p.open_connection(DEST, 80, ssl="yes"),
        bindpool.ConfigurationError,
        "ssl must be",
    ),
    (
        "protocol factory not callable",
        lambda p: p.create_connection(None, DEST, 80),
        bindpool.ConfigurationError,
        "protocol_factory must be callable",
    ),
    # Numbers asyncio cannot schedule: float() of them raises OverflowError.
    (
        "timeout past float range",
        lambda p: p.connect(DEST, 80, timeout=HUGE),
        bindpool.ConfigurationError,
        r"timeout an int of about 400 digits is too large.*pass None \(or math.inf\)",
    ),
    (
        "name with a timeout past float range",
        lambda p: p.connect("localhost", 80, timeout=HUGE),
        bindpool.ConfigurationError,
        r"too large for the event loop to schedule: pass None",
    ),
    (
        "stream timeout past float range",
        lambda p: p.open_connection(DEST, 80, timeout=VAST),
        bindpool.ConfigurationError,
        r"timeout an int of about 5000 digits is too large.*pass None",
    ),
    (
        "handshake timeout past float range",
        lambda p: p.open_connection(DEST, 80, ssl=True, ssl_handshake_timeout=HUGE),
        bindpool.ConfigurationError,
        r"ssl_handshake_timeout an int of about 400 digits is too large.*pass None",
    ),
    (
        "protocol: handshake timeout past float range",
        lambda p: p.create_connection(
            asyncio.Protocol, DEST, 80, ssl=True, ssl_handshake_timeout=-HUGE
        ),
        bindpool.ConfigurationError,
        r"ssl_handshake_timeout must be >= 0 seconds or None",
    ),
    # Names: NUL would cut the name short in C, IDNA failures are a bare UnicodeError; and
    # what asyncio's TLS would only refuse once connected.
    (
        "host with NUL",
        lambda p: p.connect("localhost\x00.evil.example", 80),
        bindpool.ConfigurationError,
        r"'localhost\\x00.evil.example' contains a NUL character.*pass the name alone",
    ),
    (
        "literal with NUL",
        lambda p: p.connect(DEST + "\x00", 80),
        bindpool.ConfigurationError,
        "contains a NUL character",
    ),
    (
        "host with a label over 63 characters",
        lambda p: p.connect("a" * 64 + ".example", 80),
        bindpool.ConfigurationError,
        r"is not a valid host name \(label empty or too long\): each dot-separated label",
    ),
    (
        "host with an empty label",
        lambda p: p.connect("www..example", 80),
        bindpool.ConfigurationError,
        r"'www..example' is not a valid host name.*1 to 63 characters",
    ),
    (
        "host with a lone surrogate",
        lambda p: p.connect("\udcff.example", 80),
        bindpool.ConfigurationError,
        r"not a valid host name \(Invalid character.*must be valid IDNA",
    ),
    (
        "host of a million characters",
        lambda p: p.connect("a" * 10**6, 80),
        bindpool.ConfigurationError,
        r"host 'aaaa[a.]{60,80}' is not a valid host name",  # shown short
    ),
    (
        "stream: host with NUL",
        lambda p: p.open_connection("localhost\x00", 80, timeout=5),
        bindpool.ConfigurationError,
        "contains a NUL character",
    ),
    (
        "protocol: host IDNA cannot encode",
        lambda p: p.create_connection(asyncio.Protocol, "a" * 64 + ".example", 80),
        bindpool.ConfigurationError,
        "is not a valid host name",
    ),
    (
        "server_hostname with NUL",  # asyncio: a bare TypeError once connected
        lambda p: p.open_connection(DEST, 80, ssl=True, server_hostname="a.example\x00b"),
        bindpool.ConfigurationError,
        r"server_hostname 'a.example\\x00b' contains a NUL character",
    ),
    (
        "server_hostname IDNA cannot encode",  # asyncio: a bare UnicodeError once connected
        lambda p: p.create_connection(
            asyncio.Protocol, DEST, 80, ssl=True, server_hostname="x" * 64
        ),
        bindpool.ConfigurationError,
        "server_hostname 'x+' is not a valid host name",
    ),
    (
        "handshake timeout 0",  # asyncio raises a bare ValueError for it, once connected
        lambda p: p.open_connection(DEST, 80, ssl=True, ssl_handshake_timeout=0),
        bindpool.ConfigurationError,
        r"ssl_handshake_timeout must be > 0 seconds or None \(asyncio's default",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [row[1:] for row in PER_CALL],
    ids=[row[0] for row in PER_CALL],
)
async def test_call_rejects_before_taking_anything(
    call: Call,
    error: type[BaseException],
    message: str,
    released: list[bindpool.Lease],
    no_fd_leak: None,
) -> None:
    pool = bindpool.Pool([SOURCE], ports=range(40000, 40010), on_release=released.append)
    with pytest.raises(error, match=message):
        await call(pool)
    stats = pool.statistics()
    assert (stats.in_use, stats.connects, stats.retries, stats.exhausted) == (0, 0, 0, 0)
    assert released == []


@pytest.mark.parametrize(
    "timeout",
    [1e300, math.inf, sys.float_info.max, 2**1000],
    ids=["1e300", "inf", "max", "2**1000"],
)
async def test_any_timeout_the_loop_can_schedule_is_taken(
    timeout: float, no_fd_leak: None, listeners: Callable[[int], list[tuple[str, int]]]
) -> None:
    """The documented choice: past float range is refused (above); anything asyncio can
    schedule, up to inf, is a limit that never comes, as in asyncio."""
    [(host, port)] = listeners(1)
    pool = bindpool.Pool([SOURCE], ports=range(40000, 40010))
    sock = await pool.connect(host, port, timeout=timeout)
    sock.close()
    assert pool.statistics().connects == 1


async def test_literals_skip_the_name_check_and_names_pay_it_once(
    monkeypatch: pytest.MonkeyPatch,
    no_fd_leak: None,  # first: checked after the listeners have closed
    listeners: Callable[[int], list[tuple[str, int]]],
) -> None:
    """IP literals, the common case, never pay for the name check; a name pays it once,
    beside its getaddrinfo."""
    checked: list[str] = []
    check = _config.check_name

    def recording(name: str, what: str = "host") -> None:
        checked.append(name)
        check(name, what)

    monkeypatch.setattr(_resolve, "check_name", recording)
    [(host, port)] = listeners(1)
    pool = bindpool.Pool([SOURCE], ports=range(40000, 40010))
    for target in (host, host, "localhost"):
        try:
            sock = await pool.connect(target, port, timeout=5)
        except OSError:  # localhost may resolve to ::1 first, with no IPv6 source here
            continue
        sock.close()
    assert checked == ["localhost"]
    assert pool.statistics().connects >= 2


async def test_family_mismatch_names_family_and_sources(no_fd_leak: None) -> None:
    pool = bindpool.Pool(["::1"], ports=range(40000, 40010))
    with pytest.raises(bindpool.ConfigurationError, match=r"IPv4 addresses only.*::1"):
        await pool.connect(DEST, 80)
    assert pool.statistics().in_use == 0


async def test_closed_pool(released: list[bindpool.Lease], no_fd_leak: None) -> None:
    pool = bindpool.Pool([SOURCE], ports=range(40000, 40010), on_release=released.append)
    await pool.aclose()
    await pool.aclose()  # idempotent
    for call in (
        pool.connect(DEST, 80),
        pool.open_connection(DEST, 80),
        pool.create_connection(asyncio.Protocol, DEST, 80),
    ):
        with pytest.raises(bindpool.PoolClosed) as info:
            await call
        assert isinstance(info.value, RuntimeError)
    assert released == []
    assert "closed" in repr(pool)


# -- what only the host can tell --------------------------------------------------------------


def test_broadcast_sources_are_refused_however_the_kernel_made_them(no_fd_leak: None) -> None:
    """Subnet broadcasts the kernel adds, an explicit `brd`, and not a mere ".255": in a
    private network namespace, where a test may add addresses. bind() takes every one."""
    report = inside("tests.badinput_inside", "broadcast", why="addresses are added", timeout=60)
    sources = report["sources"]
    assert set(sources) == set(badinput_inside.BROADCAST_CASES)
    for address, what in badinput_inside.BROADCAST_CASES.items():
        assert sources[address]["bind"] == "ok", (address, what)  # the kernel takes them all
        if what.startswith("unicast"):
            assert sources[address]["pool"] == "ok", (address, what)
        else:
            assert "is not a unicast address" in sources[address]["pool"], (address, what)
            assert "bind to the interface's own IP" in sources[address]["pool"]
    assert report["fds_left"] == 0


def _as_nobody() -> dict[str, Any]:
    """`badinput_inside.unprivileged()` in a forked child that became `nobody`.

    A fork, not a new interpreter: this one lives where `nobody` may not read it (/root).
    setuid() from root to another user clears the effective capabilities.
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, json.dumps(badinput_inside.unprivileged()).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()  # EOF when the child exits, whatever happens to it
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged child failed"
    report: dict[str, Any] = json.loads(output)
    return report


def _without_the_capability() -> dict[str, Any]:
    """The same checks as root with CAP_NET_BIND_SERVICE dropped: the capability decides."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop a capability")
    done = subprocess.run(
        [
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-net_bind_service",
            sys.executable,
            "-m",
            "tests.badinput_inside",
            "unprivileged",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    if done.returncode and "setpriv" in done.stderr:
        pytest.skip(f"cannot drop the capability here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.parametrize("who", ["nobody", "root without CAP_NET_BIND_SERVICE"])
def test_ports_the_process_may_not_bind_are_refused_at_construction(
    who: str, no_fd_leak: None
) -> None:
    """Without the capability, ports below ip_unprivileged_port_start would fail every
    connect with a PermissionError: refused up front, naming the ports and the way out."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to drop to an unprivileged user or capability set")
    report = _as_nobody() if who == "nobody" else _without_the_capability()
    assert (report["euid"] != 0) == (who == "nobody")
    start = report["start"]
    if start <= 80:
        pytest.skip(f"this host lets anyone bind from port {start} (ip_unprivileged_port_start)")
    assert report["bind 80"] == "EACCES"  # what every connect would have met
    assert report["lowest_bindable_port"] == start
    assert report["ports 80-89"].startswith(
        f"ports 80-89 are below net.ipv4.ip_unprivileged_port_start ({start}) and this "
        "process lacks CAP_NET_BIND_SERVICE"
    )
    assert f"use ports from {start} up, or grant the capability" in report["ports 80-89"]
    if start == 1024:  # only the ports below it are named
        assert report["ports 1020-1029"].startswith("ports 1020-1023 are below")
    assert report["ports 40000-40009"] == "ok"
    assert report["kernel strategy"] == "ok"  # the kernel's pick needs no capability
    assert report["fds_left"] == 0


def test_with_the_capability_low_ports_are_taken() -> None:
    if _host.lowest_bindable_port() != 1:
        pytest.skip("this process lacks CAP_NET_BIND_SERVICE")
    pool = bindpool.Pool([SOURCE], ports=range(80, 90))
    assert pool._config.ports == tuple(range(80, 90))


def test_only_the_table_strategy_binds_ports_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """strategy "kernel" binds port 0 and lets connect() pick, which needs no capability even
    below ip_unprivileged_port_start; only "table" is refused. (The host's limit is faked
    here: a test may not change the host's sysctls.)"""
    low = EPHEMERAL.start + 100
    monkeypatch.setattr(_host, "lowest_bindable_port", lambda: low)
    with pytest.raises(bindpool.ConfigurationError, match=f"ports {EPHEMERAL.start}-{low - 1} "):
        bindpool.Pool([SOURCE], ports=range(EPHEMERAL.start, EPHEMERAL.start + 200))
    kernel = bindpool.Pool([SOURCE], ports=range(EPHEMERAL.start, low + 100), strategy="kernel")
    assert kernel._config.ports[0] < low
    with pytest.raises(bindpool.ConfigurationError, match="below"):  # the slice it binds
        bindpool.Pool([SOURCE], ports=range(low - 10, low + 10), shard=(0, 2))
    assert bindpool.Pool([SOURCE], ports=range(low - 10, low + 10), shard=(1, 2))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Name:\tpython\nCapEff:\t000001ffffffffff\n", 0x1FFFFFFFFFF),
        ("CapPrm:\t0000000000000400\nCapEff:\t0000000000000000\n", 0),
        ("CapEff:\t0000000000000400\n", 1 << _host.CAP_NET_BIND_SERVICE),
        ("Name:\tpython\n", None),
    ],
    ids=["root", "permitted but not effective", "only the one", "no CapEff line"],
)
def test_effective_capabilities_come_from_capeff(status: str, expected: int | None) -> None:
    assert _host.effective_capabilities(status) == expected
