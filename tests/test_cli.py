"""The command line: `demo` at tiny sizes, `probe`'s report and advice, `--version`, and
Ctrl-C (one line, exit 130) on every command."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import bindpool
from bindpool import _demo, _host, _probe
from bindpool.__main__ import main

ROOT = Path(__file__).resolve().parent.parent

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
    err = capsys.readouterr().err
    assert "source '192.0.2.1' is not an address of this host" in err
    assert "use --source 127.0.0.2" in err


def test_demo_tells_an_ipv6_source_to_use_ipv6_loopback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--ports", "5", "--source", "2001:db8::1"]) == 2
    err = capsys.readouterr().err
    assert "source '2001:db8::1' is not an address of this host" in err
    assert "use --source ::1" in err
    assert "127." not in err


def test_demo_refuses_a_host_name_at_once() -> None:
    """It used to resolve the name once per port of every block it searched, after having
    refused it: minutes without a network. A subprocess, so a regression fails on the
    timeout instead of hanging the run."""
    done = cli("demo", "--source", "example.com", timeout=30)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "bindpool demo: --source 'example.com' is not an IP address: give a numeric local IP, "
        "such as 127.0.0.2 (any 127.x.y.z) or ::1\n"
    )


@pytest.mark.parametrize("args", [["--ports", "0"], ["--destinations", "0"], ["--ports", "-3"]])
def test_a_size_below_one_gets_one_message(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Not the right message followed by range()'s complaint about a zero step."""
    assert main(["demo", *args]) == 2
    captured = capsys.readouterr()
    assert captured.err == "bindpool demo: --ports and --destinations must be at least 1\n"
    assert captured.out == ""


def test_block_refuses_what_check_refuses() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        _demo.block(0, SOURCE)
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        _demo.block(10, "example.com")


def test_one_of_each_is_singular(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--ports", "1", "--destinations", "1", "--source", SOURCE])
    out = capsys.readouterr().out
    assert code == 0
    assert f"from {SOURCE} to 1 listener on loopback, port " in out
    assert "local_addr: 1 connection · bindpool: 1 connection (1.0×)" in out
    assert "1 listeners" not in out
    assert "1 connections" not in out


def test_help_shows_the_defaults() -> None:
    done = cli("demo", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "(default: 1000)" in text
    assert "(default: 4)" in text
    assert "(default: 127.0.0.2)" in text


def test_version() -> None:
    done = cli("--version")
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"bindpool {bindpool.__version__}\n",
        "",
    )


@pytest.mark.parametrize("command", ["demo", "probe"])
def test_ctrl_c_is_one_line_and_exit_130(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Wherever the interrupt lands in a command, main() turns it into one line."""

    def interrupted(*args: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(_demo, "run", interrupted)
    monkeypatch.setattr(_probe, "probe", interrupted)
    try:
        code = main([command, "--source", SOURCE] if command == "demo" else [command])
    except KeyboardInterrupt:
        pytest.fail("the KeyboardInterrupt escaped main(): a traceback for the user")
    assert code == 130
    assert capsys.readouterr().err == f"bindpool {command}: interrupted\n"


def test_ctrl_c_during_the_demo() -> None:
    """A real SIGINT, sent as soon as the demo has started its connections."""
    size = ["--ports", "1000", "--destinations", "4"]
    if _demo.check(1000, 4):
        pytest.skip(f"this host cannot run the default demo: {_demo.check(1000, 4)}")
    demo = subprocess.Popen(
        [sys.executable, "-m", "bindpool", "demo", *size, "--source", SOURCE],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # Python leaves SIGINT ignored if it starts ignored, as in a background job.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert demo.stdout is not None
        assert demo.stdout.readline().startswith("bindpool demo: from ")
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 130
    assert err == "bindpool demo: interrupted\n"
    assert "bindpool: 4000 connections" not in out  # it stopped, rather than finished


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
        "unprivileged_port_start": 1024,
    }
    base.update(changes)
    return _probe.HostReport(**base)  # type: ignore[arg-type]


def test_advice_suggests_reserving_a_block_when_none_is() -> None:
    tips = " ".join(_probe.advice(report()))
    assert "sysctl -w net.ipv4.ip_local_reserved_ports=" in tips
    assert "may open 1024" in tips


def test_advice_says_what_needs_root_and_what_does_not() -> None:
    tips = _probe.advice(report(tcp_timestamps="0"))
    for tip in tips:
        if "sysctl -w" in tip:
            assert "(needs root)" in tip, tip
    no_root = [tip for tip in tips if tip.startswith("Without root")]
    assert len(no_root) == 1
    assert "Pool(..., ports=range(22768, 32768))" in no_root[0]
    assert "`ulimit -n 4096` raises it to the hard limit without root" in " ".join(tips)


def test_the_no_root_block_stays_clear_of_privileged_ports() -> None:
    assert _probe.below_ephemeral(report()) == range(22768, 32768)
    assert _probe.below_ephemeral(report(ephemeral=range(5000, 61000))) == range(1024, 5000)
    late_start = report(ephemeral=range(5000, 61000), unprivileged_port_start=4500)
    assert _probe.below_ephemeral(late_start) is None  # 500 ports: too few to suggest
    tips = " ".join(_probe.advice(late_start))
    assert "Without root" not in tips


def test_probe_glosses_raw_values() -> None:
    text = _probe.render(report(tcp_timestamps="0", tcp_tw_reuse="2"))
    lines = {line.split("  ")[1].strip(): line for line in text.splitlines()[1:12]}
    assert lines["tcp_tw_reuse"].endswith("2 (on loopback only)")
    assert lines["tcp_timestamps"].endswith("0 (off)")
    assert _probe.render(report(tcp_tw_reuse=None)).count("? (unreadable)") == 1
    assert "open files (soft/hard)            1024/4096" in text


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


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m bindpool ARGS` from this checkout."""
    return subprocess.run(
        [sys.executable, "-m", "bindpool", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class _demo_quiet:
    def start(self, label: str, total: int) -> None:
        pass

    def advance(self) -> None:
        pass

    def stop(self) -> None:
        pass
