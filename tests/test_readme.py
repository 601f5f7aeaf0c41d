"""The README, the front door: its examples run as written, and its install lines name what
exists.

- Every ```python block compiles (fragments may `await` at the top level).
- A complete program runs on loopback on both loops and prints what the README shows in the
  ```console block right after it.
- A fragment marked `<!-- readme-test: fragment, ... -->` (the aiohttp and httpx snippets,
  written for real source IPs and a real URL) runs inside a coroutine with the documentation
  addresses swapped for 127.0.0.2 and a local HTTP server, and must print `200 hello`.
- The extras in the install lines are the ones pyproject.toml declares, and the wheel's name
  carries this version.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

import bindpool
from tests.test_docs import ON_UVLOOP

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RUN_TIMEOUT = 60  # seconds per example; each takes one or two

FENCE = re.compile(r"^(`{3,})[ \t]*(\w*)[ \t]*$")
FRAGMENT_MARK = "<!-- readme-test: fragment"
# What the fragments are written with, and what they run with here.
DOC_SOURCES = '["192.0.2.7", "192.0.2.8"]'
DOC_URL = '"https://example.com/"'


@dataclass(frozen=True)
class Block:
    line: int
    language: str
    code: str
    marked: bool  # the line before the fence is a FRAGMENT_MARK comment

    def __str__(self) -> str:
        return f"README.md:{self.line}"


def blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        start = index
        while lines[index].strip() != opening[1]:
            index += 1
        marked = start >= 2 and lines[start - 2].startswith(FRAGMENT_MARK)
        found.append(Block(start, opening[2], "\n".join(lines[start:index]) + "\n", marked))
        index += 1
    return found


BLOCKS = blocks()
PYTHON = [block for block in BLOCKS if block.language == "python"]
PROGRAMS = [block for block in PYTHON if "asyncio.run(" in block.code]
FRAGMENTS = [block for block in PYTHON if block.marked]


def test_the_readme_has_its_examples() -> None:
    assert len(PROGRAMS) == 1

    def adapter(block: Block) -> str:
        if "bindpool.aiohttp.TCPConnector(pool" in block.code:
            return "aiohttp"
        return "httpx" if "bindpool.httpx.AsyncHTTPTransport(pool" in block.code else "?"

    assert sorted(map(adapter, FRAGMENTS)) == ["aiohttp", "httpx"]


@pytest.mark.parametrize("block", PYTHON, ids=str)
def test_example_compiles(block: Block) -> None:
    compile(block.code, str(block), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def run(code: str, loop: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "example.py"
    script.write_text(code)
    launcher = ["-c", ON_UVLOOP] if loop == "uvloop" else []
    return subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", *launcher, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def shown_after(block: Block) -> str:
    """The ```console block that follows `block`: what the README says it prints."""
    following = BLOCKS[BLOCKS.index(block) + 1]
    assert following.language == "console", f"{block} is not followed by its output"
    return following.code


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("block", PROGRAMS, ids=str)
def test_program_runs_and_prints_what_the_readme_shows(
    block: Block, loop: str, tmp_path: Path
) -> None:
    result = run(block.code, loop, tmp_path)
    assert result.returncode == 0, f"{block} failed:\n{result.stdout}\n{result.stderr}"
    assert not result.stderr, f"{block} wrote to stderr:\n{result.stderr}"
    assert result.stdout == shown_after(block)


# The fragment goes in fragment(); a local HTTP/1.1 server answers `hello` on keep-alive
# connections until the client closes them.
HARNESS = """
import asyncio


async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    handlers.append(asyncio.current_task())
    while True:
        try:
            await reader.readuntil(b"\\r\\n\\r\\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            break
        writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 6\\r\\n\\r\\nhello\\n")
        await writer.drain()
    writer.close()


async def fragment(URL: str) -> None:
{fragment}


async def main() -> None:
    server = await asyncio.start_server(hello, "127.0.0.1", 0)
    await fragment("http://127.0.0.1:{{}}/".format(server.sockets[0].getsockname()[1]))
    server.close()
    await asyncio.wait(handlers)


handlers: list[asyncio.Task[None]] = []
asyncio.run(main())
"""


@pytest.mark.parametrize("block", FRAGMENTS, ids=str)
def test_adapter_snippet_runs(block: Block, tmp_path: Path) -> None:
    assert block.code.count(DOC_SOURCES) == 1, f"{block}: its sources are not {DOC_SOURCES}"
    assert block.code.count(DOC_URL) == 1, f"{block}: its URL is not {DOC_URL}"
    local = block.code.replace(DOC_SOURCES, '["127.0.0.2"]').replace(DOC_URL, "URL")
    code = HARNESS.format(fragment=textwrap.indent(local, "    "))
    result = run(code, "asyncio", tmp_path)
    assert result.returncode == 0, f"{block} failed:\n{result.stdout}\n{result.stderr}"
    assert not result.stderr, f"{block} wrote to stderr:\n{result.stderr}"
    assert result.stdout == "200 hello\n\n"


def test_install_lines_name_declared_extras_and_this_version() -> None:
    text = README.read_text()
    declared = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    named = {
        extra
        for group in re.findall(r"pip install '[^'\[]*\[([\w,]+)\]'", text)
        for extra in group.split(",")
    }
    assert {"aiohttp", "httpx", "uvloop", "cli", "prometheus"} <= named
    assert named <= declared, f"the README names extras pyproject.toml lacks: {named - declared}"
    wheels = set(re.findall(r"dist/bindpool-([\w.]+)-py3-none-any\.whl", text))
    assert wheels == {bindpool.__version__}
    assert "pip install bindpool" not in text  # not published on an index
