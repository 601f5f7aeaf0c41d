"""The lease-holding protocol wrapper, with a fake owner: forwarding and exactly-once."""

from __future__ import annotations

import asyncio
import gc
from typing import Any, cast

import pytest

from bindpool._claim import Claim
from bindpool._protocol import LeasedProtocol, leased


class FakeOwner:
    def __init__(self) -> None:
        self.returned: list[object] = []

    def _give_back(self, claim: object) -> None:
        self.returned.append(claim)


CLAIM = cast("Claim", object())  # the wrapper only passes it back


class FakeTransport(asyncio.BaseTransport):
    """Something to watch: the wrapper holds it by weak reference only."""


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.calls.append(("made", transport))

    def data_received(self, data: bytes) -> None:
        self.calls.append(("data", data))

    def eof_received(self) -> bool:
        self.calls.append(("eof", None))
        return True

    def pause_writing(self) -> None:
        self.calls.append(("pause", None))

    def resume_writing(self) -> None:
        self.calls.append(("resume", None))

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append(("lost", exc))


def test_forwards_every_callback_and_releases_at_connection_lost() -> None:
    inner, owner, transport = Recorder(), FakeOwner(), FakeTransport()
    wrapper = leased(inner)
    wrapper._adopt(CLAIM, owner, transport)
    wrapper.connection_made(transport)
    wrapper.data_received(b"x")
    wrapper.pause_writing()
    wrapper.resume_writing()
    assert wrapper.eof_received() is True
    assert owner.returned == []
    error = ConnectionResetError()
    wrapper.connection_lost(error)
    assert inner.calls == [
        ("made", transport),
        ("data", b"x"),
        ("pause", None),
        ("resume", None),
        ("eof", None),
        ("lost", error),
    ]
    assert owner.returned == [CLAIM]
    wrapper.connection_lost(None)
    del wrapper
    gc.collect()
    assert owner.returned == [CLAIM]


def test_lost_before_adoption_releases_at_adoption() -> None:
    owner, transport = FakeOwner(), FakeTransport()
    wrapper = leased(Recorder())
    wrapper.connection_lost(None)
    assert owner.returned == []
    wrapper._adopt(CLAIM, owner, transport)
    assert owner.returned == [CLAIM]


def test_dropping_the_wrapper_keeps_the_lease_dropping_the_transport_returns_it() -> None:
    """A protocol swap drops the wrapper while the connection lives on: the lease must stay
    out until the transport itself is gone."""
    owner, transport = FakeOwner(), FakeTransport()
    wrapper = leased(Recorder())
    wrapper._adopt(CLAIM, owner, transport)
    del wrapper
    gc.collect()
    assert owner.returned == []
    del transport
    gc.collect()
    assert owner.returned == [CLAIM]


def test_inner_error_in_connection_lost_still_releases() -> None:
    class Broken(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            raise RuntimeError("protocol bug")

    owner, transport = FakeOwner(), FakeTransport()
    wrapper = leased(Broken())
    wrapper._adopt(CLAIM, owner, transport)
    with pytest.raises(RuntimeError, match="protocol bug"):
        wrapper.connection_lost(None)
    assert owner.returned == [CLAIM]


def test_buffered_protocols_stay_buffered() -> None:
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buffer = bytearray(8)
            self.updated: list[int] = []

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buffer

        def buffer_updated(self, nbytes: int) -> None:
            self.updated.append(nbytes)

    inner = Buffered()
    wrapper = leased(inner)
    assert isinstance(wrapper, asyncio.BufferedProtocol)
    assert not isinstance(leased(Recorder()), asyncio.BufferedProtocol)
    assert isinstance(wrapper, LeasedProtocol)
    assert wrapper.get_buffer(8) is inner.buffer
    wrapper.buffer_updated(3)
    assert inner.updated == [3]
