"""The command line: `demo` at tiny sizes, `probe`'s report and advice."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys

import pytest

from bindpool import _demo, _host, _probe
from bindpool.__main__ import main

# A source nothing else in the test run binds: the demo's block lies in the ephemeral range.
SOURCE = "127.0.0.9"


def test_demo_shows_the_wall_and_its_removal(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--ports", "30", "--destinations", "3", "--source", SOURCE])
    out = capsys.readouterr().out
    assert code == 0
    assert "local_addr: 30 connections · bindpool: 90 connections (3.0×)" in out
    assert "EADDRINUSE" in out  # what stopped local_addr


def test_demo_result_counts() -> None:
    result = _demo.run(SOURCE, _demo.block(12, SOURCE), 2, _demo_quiet())
    assert result.local_addr is not None
    assert (result.local_addr.opened, result.bindpool.opened, result.target) == (12, 24, 24)
    assert result.ok


def test_demo_explains_a_kernel_without_the_narrowing_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unsupported(sock: socket.socket, low: int, high: int) -> None:
        raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    monkeypatch.setattr(_host, "set_local_port_range", unsupported)
    code = main(["demo", "--ports", "10", "--destinations", "2", "--source", SOURCE])
    out = capsys.readouterr().out
    assert code == 0
    assert "no IP_LOCAL_PORT_RANGE" in out
    assert "bindpool: 20 connections" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ports", "0"], "at least 1"),
        (["--ports", "30000"], "exceeds the ephemeral range"),
        (["--ports", "1000", "--destinations", "30"], "file descriptors"),
    ],
)
def test_demo_refuses_sizes_this_host_cannot_run(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", *args]) == 2
    assert message in capsys.readouterr().err


def test_demo_steps_around_ports_held_on_its_source() -> None:
    """A port held on the source (here: a listener) would cost both phases; the demo picks
    a block clear of it."""
    top = _demo.block(20, SOURCE)
    with socket.socket() as holder:
        holder.bind((SOURCE, top[-1]))
        holder.listen(1)
        chosen = _demo.block(20, SOURCE)
        assert top[-1] not in chosen
        result = _demo.run(SOURCE, chosen, 2, _demo_quiet())
    assert result.ok


def test_demo_refuses_a_source_that_is_not_local(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--ports", "5", "--source", "192.0.2.1"]) == 2
    assert "source '192.0.2.1' is not an address of this host" in capsys.readouterr().err


def test_probe_reports_this_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe"]) == 0
    out = capsys.readouterr().out
    ephemeral = _host.ephemeral_range()
    assert f"{ephemeral.start}-{ephemeral.stop - 1}" in out
    for name in ("kernel", "IP_BIND_ADDRESS_NO_PORT", "tcp_timestamps", "open files", "Advice"):
        assert name in out


def report(**changes: object) -> _probe.HostReport:
    base = {
        "kernel": "6.18",
        "bind_address_no_port": True,
        "local_port_range_option": True,
        "ephemeral": range(32768, 61000),
        "reserved": [],
        "tcp_timestamps": "1",
        "tcp_tw_reuse": "2",
        "tcp_fin_timeout": "60",
        "somaxconn": "4096",
        "open_files": (1024, 4096),
    }
    base.update(changes)
    return _probe.HostReport(**base)  # type: ignore[arg-type]


def test_advice_suggests_reserving_a_block_when_none_is() -> None:
    tips = " ".join(_probe.advice(report()))
    assert "sysctl -w net.ipv4.ip_local_reserved_ports=" in tips
    assert "may open 1024" in tips


def test_advice_names_the_reserved_block_when_there_is_one() -> None:
    tips = " ".join(_probe.advice(report(reserved=list(range(40000, 40100)))))
    assert "100 reserved ports (40000-40099)" in tips
    assert "sysctl -w net.ipv4.ip_local_reserved_ports" not in tips


def test_advice_warns_about_timestamps_and_missing_options() -> None:
    tips = " ".join(
        _probe.advice(
            report(tcp_timestamps="0", local_port_range_option=False, bind_address_no_port=False)
        )
    )
    assert "TCP timestamps are off" in tips
    assert "IP_LOCAL_PORT_RANGE" in tips
    assert "IP_BIND_ADDRESS_NO_PORT is missing" in tips


def test_console_script_and_module_agree() -> None:
    """`python -m bindpool` runs the same main(); the console script is declared for it."""
    done = subprocess.run(
        [sys.executable, "-m", "bindpool", "probe"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "This host" in done.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "bindpool"], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2
    assert "demo" in missing.stderr


class _demo_quiet:
    def start(self, label: str, total: int) -> None:
        pass

    def advance(self) -> None:
        pass

    def stop(self) -> None:
        pass
