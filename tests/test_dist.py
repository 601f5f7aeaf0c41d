"""The release: what `make dist` builds carries the license, and the wheel alone, installed in a
fresh venv, runs `bindpool --version` and opens a real connection on loopback.

The build is `make dist`'s (`python -m build`: the sdist, then the wheel from the unpacked
sdist), offline (`--no-isolation`, with build and hatchling from the test extra). The venv is
made without pip and filled by this interpreter's pip (`--python`), from the wheel file only
(`--no-index`): a dependency the wheel wrongly required would fail the install.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from collections.abc import Callable
from email.parser import Parser
from pathlib import Path

import pytest

import bindpool

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300  # seconds for any one step; a build takes a few

pytestmark = pytest.mark.timeout(2 * TIMEOUT)


def run(
    *command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for module in ("build", "hatchling"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (the test extra has it): cannot build offline")
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    assert built.returncode == 0, f"python -m build failed:\n{built.stdout}\n{built.stderr}"
    return out


def only(directory: Path, pattern: str) -> Path:
    (found,) = directory.glob(pattern)
    return found


def test_sdist_and_wheel_carry_the_license(dist: Path) -> None:
    version = bindpool.__version__
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License")

    sdist = only(dist, f"bindpool-{version}.tar.gz")
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())
        packed = archive.extractfile(f"bindpool-{version}/LICENSE")
        assert packed is not None
        assert packed.read().decode() == license_text
    for name in ("LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "bindpool/py.typed"):
        assert f"bindpool-{version}/{name}" in names, name
    assert not any("/benchmarks/results/" in name and name.endswith(".json") for name in names)

    wheel = only(dist, f"bindpool-{version}-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        info = f"bindpool-{version}.dist-info"
        assert archive.read(f"{info}/licenses/LICENSE").decode() == license_text
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        assert "bindpool/py.typed" in archive.namelist()
    assert metadata["Version"] == version
    assert metadata["License-Expression"] == "MIT"
    requirements = metadata.get_all("Requires-Dist", [])
    assert all("extra ==" in requirement for requirement in requirements), (
        "the package itself must need nothing but Python"
    )
    assert {"aiohttp", "httpx", "uvloop", "cli", "prometheus"} <= set(
        metadata.get_all("Provides-Extra", [])
    )


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed and nothing else."""
    home = tmp_path_factory.mktemp("venv") / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", home)
    if made.returncode != 0:
        pytest.skip(f"cannot make a venv here: {made.stderr.strip()}")
    if run(sys.executable, "-m", "pip", "--version").returncode != 0:
        pytest.skip("this interpreter has no pip to install the wheel with")
    wheel = only(dist, f"bindpool-{bindpool.__version__}-py3-none-any.whl")
    installed = run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        home / "bin" / "python",
        "install",
        "--no-index",
        "--disable-pip-version-check",
        wheel,
    )
    assert installed.returncode == 0, f"pip install failed:\n{installed.stderr}"
    return home


def clean_env() -> dict[str, str]:
    """The environment without anything that would point Python at this checkout."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}


def test_installed_console_script_prints_the_version(venv: Path, tmp_path: Path) -> None:
    done = run(venv / "bin" / "bindpool", "--version", cwd=tmp_path, env=clean_env())
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"bindpool {bindpool.__version__}\n",
        "",
    )


CONNECT = textwrap.dedent(
    """
    import asyncio, sys
    import bindpool

    async def main(port: int, low: int, high: int) -> None:
        async with bindpool.Pool(["127.0.0.2"], ports=range(low, high)) as pool:
            reader, writer = await pool.open_connection("127.0.0.1", port, timeout=30)
            writer.write(b"ping")
            print(bindpool.__file__, await reader.readexactly(4), pool.statistics().in_use)
            writer.close()
            await writer.wait_closed()
        print(pool.statistics().in_use)

    asyncio.run(main(*map(int, sys.argv[1:])))
    """
)


def test_installed_wheel_opens_a_connection(
    venv: Path, tmp_path: Path, port_block: Callable[[int], range]
) -> None:
    ports = port_block(4)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(TIMEOUT)
        client = subprocess.Popen(
            # -I: isolated, so neither the working directory nor PYTHON* reach this checkout
            [str(venv / "bin" / "python"), "-I", "-c", CONNECT]
            + [str(n) for n in (listener.getsockname()[1], ports.start, ports.stop)],
            cwd=tmp_path,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            conn, peer = listener.accept()
            with conn:
                assert conn.recv(4) == b"ping"
                conn.sendall(b"pong")
            out, err = client.communicate(timeout=TIMEOUT)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
    assert client.returncode == 0, err
    assert err == ""
    assert peer[0] == "127.0.0.2"
    assert peer[1] in ports
    first, second = out.splitlines()
    module_file, reply, in_use = first.split(" ")
    assert Path(module_file).is_relative_to(venv), f"imported {module_file}, not the wheel"
    assert (reply, in_use, second) == ("b'pong'", "1", "0")
