"""The documentation site: it builds in strict mode, documents every public name, and its
examples work.

- The site builds with `mkdocs build --strict` from the real `mkdocs.yml` (broken links,
  missing anchors, pages left out of the nav and docstring problems all fail it). While a
  page the nav lists does not exist yet, the build is skipped, naming the page.
- The API reference shows every name in `__all__` of `bindpool`, `bindpool.aiohttp`,
  `bindpool.httpx` and `bindpool.prometheus`, each with its docstring.
- Every ```python block in docs/ compiles (top-level `await` allowed: fragments are written
  as if inside a coroutine). Every complete program among them (one that starts an event
  loop at the top level: `asyncio.run(...)`, `uvloop.run(...)`, `runner.run(...)`, or has an
  `if __name__ == "__main__":` block) runs on loopback in a subprocess and must exit 0 with
  nothing on stderr (an unclosed socket's ResourceWarning included). Those that call
  `asyncio.run()` at the top level run a second time on uvloop. A program that cannot run
  here (it needs public source IPs, say) is marked by an HTML comment on the line before its
  fence: `<!-- docs-test: no-run: why -->`.
"""

from __future__ import annotations

import ast
import html
import importlib
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONFIG = ROOT / "mkdocs.yml"

BUILD_TIMEOUT = 300  # seconds; the build takes a few
RUN_TIMEOUT = 60  # seconds per example; each takes one or two


# -- the build -------------------------------------------------------------------------------


def missing_nav_pages() -> list[str]:
    """Pages the nav of mkdocs.yml lists that are not in docs/ (yet)."""
    text = CONFIG.read_text()
    nav = text[text.index("\nnav:") :]
    return [page for page in re.findall(r"[\w./-]+\.md\b", nav) if not (DOCS / page).is_file()]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built in strict mode into a temporary directory."""
    missing = missing_nav_pages()
    if missing:
        pytest.skip(
            f"mkdocs.yml lists {', '.join(missing)}, not written yet: the strict build "
            "would fail on the missing page"
        )
    out = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(CONFIG)]
    build = subprocess.run(
        [*command, "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stderr}"
    return out


def test_site_builds_strictly(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "reference" / "bindpool" / "index.html").is_file()


def visible_text(page: Path) -> str:
    """The text of a built page's article, tags and all whitespace dropped."""
    text = page.read_text()
    text = text[text.index("<article") : text.index("</article>")]
    return "".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def first_line(docstring: str | None) -> str:
    """A docstring's first line as `visible_text` sees it: no backticks, no whitespace."""
    assert docstring, "no docstring"
    return "".join(docstring.strip().splitlines()[0].replace("`", "").split())


@pytest.mark.parametrize(
    ("module", "page"),
    [
        ("bindpool", "reference/bindpool/index.html"),
        ("bindpool.aiohttp", "reference/aiohttp/index.html"),
        ("bindpool.httpx", "reference/httpx/index.html"),
        ("bindpool.prometheus", "reference/prometheus/index.html"),
    ],
)
def test_reference_documents_every_public_name(site: Path, module: str, page: str) -> None:
    imported = importlib.import_module(module)
    built = site / page
    source = built.read_text()
    words = visible_text(built)
    for name in imported.__all__:
        assert f'id="{module}.{name}"' in source, f"{module}.{name} is not in {page}"
        summary = first_line(getattr(imported, name).__doc__)
        assert summary in words, f"{module}.{name}: its docstring is not in {page}"


def test_reference_covers_the_adapters_entry_points() -> None:
    """The names the guides tell people to use are public, so the reference has them."""
    assert "TCPConnector" in importlib.import_module("bindpool.aiohttp").__all__
    assert "AsyncHTTPTransport" in importlib.import_module("bindpool.httpx").__all__
    assert "Collector" in importlib.import_module("bindpool.prometheus").__all__


# -- the examples ------------------------------------------------------------------------------

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n]*)$")
NO_RUN = re.compile(r"<!--\s*docs-test:\s*no-run\b")


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    code: str
    runs: bool

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def python_blocks(path: Path) -> list[Example]:
    """The ```python (or ```py) blocks of a Markdown page, dedented, with their first line."""
    lines = path.read_text().splitlines()
    page = str(path.relative_to(DOCS))
    found: list[Example] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].split(" ", 1)[0].strip("{.").lower()
        start = index
        while index < len(lines) and not (
            lines[index].startswith(indent)
            and lines[index].strip().startswith(fence)
            and not lines[index].strip().strip(fence[0])
        ):
            index += 1
        body = [
            line[len(indent) :] if line.startswith(indent) else line for line in lines[start:index]
        ]
        index += 1  # the closing fence
        if language not in ("python", "py"):
            continue
        code = textwrap.dedent("\n".join(body)) + "\n"
        marked = start >= 2 and NO_RUN.search(lines[start - 2]) is not None
        runs = is_program(code) and not marked
        found.append(Example(page, start, code, runs))
    return found


def top_level(code: str) -> list[ast.stmt]:
    try:
        return ast.parse(code).body
    except SyntaxError:
        return []  # a fragment with top-level await: test_example_compiles checks it


def is_program(code: str) -> bool:
    """Whether a block is a whole program: it starts an event loop at its top level, or has
    an `if __name__ == "__main__":` block."""

    def runs_a_loop(statement: ast.stmt) -> bool:
        return (
            isinstance(statement, ast.Expr)
            and isinstance(statement.value, ast.Call)
            and isinstance(statement.value.func, ast.Attribute)
            and statement.value.func.attr == "run"
        )

    for statement in top_level(code):
        if runs_a_loop(statement):
            return True
        if isinstance(statement, ast.With) and any(map(runs_a_loop, statement.body)):
            return True
        if isinstance(statement, ast.If) and "__main__" in ast.unparse(statement.test):
            return True
    return False


EXAMPLES = [example for page in sorted(DOCS.rglob("*.md")) for example in python_blocks(page)]


def test_the_docs_have_examples() -> None:
    assert len(EXAMPLES) >= 10
    assert sum(example.runs for example in EXAMPLES) >= 8


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_example_compiles(example: Example) -> None:
    try:
        compile(example.code, str(example), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError as exc:
        pytest.fail(f"{example} does not compile: {exc}")


def asyncio_run_at_top(code: str) -> bool:
    return any(
        isinstance(statement, ast.Expr) and ast.unparse(statement).startswith("asyncio.run(")
        for statement in top_level(code)
    )


# Runs the script with uvloop's policy, so that its asyncio.run() makes a uvloop loop.
ON_UVLOOP = """
import asyncio, runpy, sys, warnings
import uvloop
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # the policy, not the example
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
runpy.run_path(sys.argv[1], run_name="__main__")
"""

RUNS = [
    pytest.param(example, loop, id=f"{example}-{loop}")
    for example in EXAMPLES
    if example.runs
    for loop in ("asyncio", "uvloop")
    if loop == "asyncio" or asyncio_run_at_top(example.code)
]


@pytest.mark.parametrize(("example", "loop"), RUNS)
def test_example_runs(example: Example, loop: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(example.code)
    launcher = ["-c", ON_UVLOOP] if loop == "uvloop" else []
    result = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", *launcher, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{example} failed:\n{result.stdout}\n{result.stderr}"
    assert not result.stderr, f"{example} wrote to stderr:\n{result.stderr}"
