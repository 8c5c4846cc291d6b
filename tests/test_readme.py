"""Every command in README.md, run.

Commands are the README's two set-up commands (right after its title) and
every command in a
```` ```console ```` block (lines starting with ``$ ``) or a ```` ```sh ````
block, with ``\\`` continuations. An HTML comment just before a block says
how to run it, for commands that cannot just run to completion here:

* ``<!-- test: background ready="REGEX" -->``: the command runs until the end
  of its section (it serves, or shows a live view); the next blocks run
  once its output matches REGEX; then Ctrl-C, and it must exit 0.
* ``<!-- test: background-shows="REGEX" -->``: after this block, the
  background command's output must show REGEX (within 30 s).
* ``<!-- test: static -->``: Docker does not run here; ``docker compose``
  commands are checked against the compose file statically (the checks of
  tests/test_compose.py), ``curl localhost:PORT`` against its published ports.
* ``<!-- test: benchmark -->``: the harness runs for minutes at the sizes the
  README quotes; its commands are checked against the harness's own flags.

Commands run in a scratch directory laid out like a clone (``examples/``
there is the repository's), with the test environment's ``bin`` first on
PATH, and HOME and XDG_STATE_HOME in the scratch directory (the CA goes there).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sailplane.cli import build_parser
from tests import test_compose, test_compose_replicas
from tests.support.procs import wait_for

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
MARK = re.compile(r"<!--\s*test:(.*?)-->")
OPTION = re.compile(r'([\w-]+)(?:="((?:[^"\\]|\\.)*)")?')


@dataclass
class Block:
    line: int
    section: str
    language: str
    commands: list[str]
    marks: dict[str, str] = field(default_factory=dict)


def commands_of(language: str, lines: list[str]) -> list[str]:
    joined: list[str] = []
    pending = ""
    for raw in lines:
        if language == "console":
            if raw.startswith("$ "):
                pending, raw = "", raw[2:]
            elif not pending:
                continue  # output shown after a command
        if not raw.strip() or (not pending and raw.lstrip().startswith("#")):
            continue
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        joined.append((pending + raw).strip())
        pending = ""
    return joined


def parse(text: str) -> list[Block]:
    blocks: list[Block] = []
    section = ""
    marks: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:]
        found = MARK.search(line)
        if found:
            marks = {k: v for k, v in OPTION.findall(found.group(1))}
        elif line.startswith("```"):
            language = line[3:].strip()
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            if language in ("console", "sh"):
                body = lines[i + 1 : end]
                blocks.append(Block(i + 1, section, language, commands_of(language, body), marks))
            elif marks:
                raise AssertionError(f"README.md:{i + 1}: a test mark before a {language} block")
            marks = {}
            i = end
        elif line.strip():
            marks = {} if not found else marks
        i += 1
    return blocks


def blocks() -> list[Block]:
    return parse(README.read_text())


def first_lines() -> list[str]:
    """The two set-up commands, which must come right after the title."""
    return setup_commands(README.read_text())


def setup_commands(text: str) -> list[str]:
    """The README's shape: the title, then exactly two set-up commands (an
    indented block), then a blank line; the two commands, stripped."""
    lines = text.splitlines()
    assert lines[0].startswith("# "), "README.md: the first line is the title"
    rest = lines[1:]
    while rest and not rest[0].strip():
        rest = rest[1:]
    block = []
    for line in rest:
        if not line.startswith("    "):
            break
        block.append(line.strip())
    assert len(block) == 2, f"README.md: the title, then exactly two set-up commands: {block}"
    after = rest[len(block) :]
    assert not after or not after[0].strip(), "README.md: a blank line after the two commands"
    return block


# -- running -------------------------------------------------------------------


@dataclass
class Background:
    command: str
    popen: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.output.append(line)

    def text(self, since: int = 0) -> str:
        return "".join(self.output[since:])

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; its exit status."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGINT)
        try:
            return self.popen.wait(30)
        finally:
            with_group_killed(self.popen)


def with_group_killed(popen: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)
    popen.wait(10)
    if popen.stdout is not None:
        popen.stdout.close()


@dataclass
class Shell:
    cwd: Path
    env: dict[str, str]
    background: list[Background] = field(default_factory=list)

    def run(self, command: str, timeout: float = 120) -> str:
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{command!r} exited {result.returncode}:\n{output}"
        return output

    def start(self, command: str, ready: str) -> Background:
        popen = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        process = Background(command, popen)
        self.background.append(process)
        threading.Thread(target=process.read, daemon=True).start()
        wait_for(
            lambda: re.search(ready, process.text(), re.M) or popen.poll() is not None,
            timeout=90,
            what=f"{command!r} to be ready",
        )
        assert popen.poll() is None, f"{command!r} exited:\n{process.text()}"
        return process

    def stop_background(self) -> None:
        while self.background:
            process = self.background.pop()
            status = process.stop()
            assert status == 0, f"{process.command!r} exited {status}:\n{process.text()[-3000:]}"


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    (tmp_path / "examples").symlink_to(ROOT / "sailplane" / "examples")
    (tmp_path / "envoy-configs").symlink_to(ROOT / "envoy-configs")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path / "home"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    env.pop("PYTHONPATH", None)
    session = Shell(tmp_path, env)
    try:
        yield session
    finally:
        for process in session.background:
            with_group_killed(process.popen)


def check_static(command: str) -> None:
    """What a Docker command needs from the compose file, without Docker."""
    argv = shlex.split(command)
    services = test_compose.services()
    if argv[:2] == ["docker", "compose"]:
        test_compose.test_compose_file_is_valid_against_the_compose_spec_schema()
        test_compose.test_every_mounted_file_and_build_input_exists()
        test_compose.test_proxies_are_exactly_the_workload_entries()
        rest = argv[2:]
        files = []
        while rest[:1] == ["-f"]:  # compose's own -f, before the subcommand
            files.append(rest[1])
            rest = rest[2:]
        if files:  # an override over docker-compose.yml: checked as compose merges it
            assert files[0] == test_compose.COMPOSE_FILE.name, files
            assert files[1:] == [test_compose_replicas.OVERRIDE_FILE.name], files
            test_compose_replicas.test_valid_against_the_compose_spec_schema("merged")
            services = test_compose_replicas.services()
        if rest and rest[0] in ("exec", "kill"):
            assert rest[1] in services, f"no service {rest[1]!r}"
        if "--profile" in rest:
            profile = rest[rest.index("--profile") + 1]
            assert any(profile in s.get("profiles", []) for s in services.values()), profile
        if rest and rest[0] == "logs":
            assert rest[-1] in services, f"no service {rest[-1]!r}"
        if "--build" in rest:
            assert any("build" in s for s in services.values())
        return
    if argv[0] == "curl":
        port = re.search(r"localhost:(\d+)", command)
        assert port, command
        # "HOST_PORT:CONTAINER_PORT" or "IP:HOST_PORT:CONTAINER_PORT"
        published = {p.split(":")[-2] for s in services.values() for p in s.get("ports", [])}
        assert port.group(1) in published, f"nothing publishes port {port.group(1)}"
        return
    raise AssertionError(f"no static check for {command!r}")


def check_benchmark(command: str) -> None:
    """A harness command the README quotes figures for: its flags are real
    (running it at that size takes minutes; CI runs ``--quick``)."""
    from benchmarks.cli import parse_args

    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "benchmarks"], command
    parse_args(argv[3:])  # exits (SystemExit) on an unknown flag


# -- the tests -----------------------------------------------------------------


def test_the_title_comes_first_then_exactly_two_set_up_commands() -> None:
    assert first_lines() == [
        "python3 -m venv .venv && .venv/bin/pip install -q . && "
        ".venv/bin/sailplane demo --duration 30",
        "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/pytest",
    ]
    good = "# t\n\n    one\n    two\n\ntext\n"
    assert setup_commands(good) == ["one", "two"]
    for bad in (
        "    one\n    two\n\n# t\n",
        "# t\n\n    one\n\ntext\n",
        "# t\n    a\n    b\n    c\n",
    ):
        with pytest.raises(AssertionError):
            setup_commands(bad)


def test_the_readme_has_commands_and_marks_that_parse() -> None:
    found = blocks()
    assert len(found) >= 6
    for block in found:
        assert block.commands, f"README.md:{block.line}: a block without commands"
        known = {"static", "background", "ready", "background-shows", "benchmark"}
        unknown = set(block.marks) - known
        assert not unknown, f"README.md:{block.line}: unknown test marks {unknown}"
        if "background" in block.marks:
            assert block.marks.get("ready"), f"README.md:{block.line}: background needs ready="
            assert len(block.commands) == 1


def test_the_second_line_is_what_ci_runs() -> None:
    """README line 2 is the CI command itself (running pytest from pytest
    would recurse): .ci/run must run exactly it, and then, as root, the real
    compose test (which skips itself with a line when not root)."""
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert first_lines()[1] in ci
    after = ci[ci.index(first_lines()[1]) + 1 :]
    assert [line for line in after if line and not line.startswith("#")] == [
        "timeout 900 .venv/bin/python -m tests.realcompose"
    ]


def test_the_first_line_installs_like_the_second_and_runs_the_demo(shell: Shell) -> None:
    install, test = first_lines()
    steps = install.split(" && ")
    assert steps[0] == "python3 -m venv .venv" == test.split(" && ")[0]
    # The same install as the second line (which CI runs), without the test
    # extras and not editable; tests have no network to run pip themselves.
    assert steps[1] == ".venv/bin/pip install -q ." and test.split(" && ")[1] == (
        ".venv/bin/pip install -q -e '.[test]'"
    )
    assert len(steps) == 3 and steps[2].startswith(".venv/bin/sailplane ")
    output = shell.run(steps[2].replace(".venv/bin/", f"{BIN}/", 1), timeout=120)
    print(output)
    ingress = re.search(r"^ingress -> weather-backend: \d+ requests.*$", output, re.M)
    assert ingress, output
    shares = {m[1]: float(m[2]) for m in re.finditer(r"(\w+) ([\d.]+)%", ingress.group())}
    assert shares["single"] == pytest.approx(90, abs=4), ingress.group()
    assert shares["multiple"] == pytest.approx(10, abs=4), ingress.group()


def test_every_command_in_the_readme_runs(shell: Shell) -> None:
    section = None
    for block in blocks():
        if block.section != section:
            shell.stop_background()  # background commands last until their section ends
            section = block.section
        if "static" in block.marks:
            for command in block.commands:
                check_static(command)
            continue
        if "benchmark" in block.marks:
            for command in block.commands:
                check_benchmark(command)
            continue
        if "background" in block.marks:
            shell.start(block.commands[0], block.marks["ready"])
            continue
        marks = [len(p.output) for p in shell.background]
        for command in block.commands:
            shell.run(command)
        shows = block.marks.get("background-shows")
        if shows:
            assert shell.background, f"README.md:{block.line}: no background command to watch"
            process, since = shell.background[-1], marks[-1]
            wait_for(
                lambda p=process, s=since, r=shows: re.search(r, p.text(s), re.M),
                timeout=30,
                what=f"README.md:{block.line}: {shows!r} in the output of {process.command!r}",
            )
    shell.stop_background()


def command_reference(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """The command reference: each command's synopsis, and the flags shared
    by several commands, keyed by the commands they are for (``*``: all).
    A line ``sailplane NAME ...`` starts a synopsis; a line ``NAME, NAME: ...``
    or ``every command...:`` starts shared flags; indented lines continue."""
    reference = text.split("## Command reference", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    shared: dict[str, str] = {}
    target: tuple[dict[str, str], str] | None = None
    for line in reference.splitlines():
        if line.startswith("sailplane "):
            target = entries, line.split()[1]
            entries[target[1]] = entries.get(target[1], "") + line
        elif line.startswith(" ") and target is not None:
            target[0][target[1]] += line
        elif ":" in line:
            names = line.split(":", 1)[0]
            key = "*" if names.startswith("every command") else names
            target = shared, key
            shared[key] = ""
    return entries, shared


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, ...]]:
    """Each option's spellings, --help aside; a subcommand's (``ca show``)
    count as its command's."""
    found = [
        tuple(a.option_strings)
        for a in parser._actions
        if a.option_strings and not isinstance(a, argparse._HelpAction)
    ]
    if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
        for sub in _subcommands(parser).values():
            found += _options(sub)
    return found


def test_the_command_reference_lists_every_command_and_every_real_flag() -> None:
    entries, shared = command_reference(README.read_text())
    subcommands = _subcommands(build_parser())
    assert set(entries) == set(subcommands), "every command, and nothing else"
    for name, synopsis in entries.items():
        for names, flags in shared.items():
            if names == "*" or name in [n.strip() for n in names.split(",")]:
                synopsis += flags
        written = set(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", synopsis))
        options = _options(subcommands[name])
        real = {flag for spellings in options for flag in spellings}
        for flag in written:
            assert flag in real, f"sailplane {name} has no {flag}"
        for spellings in options:
            assert written & set(spellings), (
                f"the command reference does not list {' / '.join(spellings)} of sailplane {name}"
            )


def test_the_reference_check_catches_missing_and_made_up_flags() -> None:
    text = README.read_text()
    for wrong in (
        text.replace(" [--access-log-file PATH]", ""),
        text.replace("[--delta]", "[--delta] [--made-up]"),
    ):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Path, "read_text", lambda self, *a, w=wrong, **k: w)
            with pytest.raises(AssertionError):
                test_the_command_reference_lists_every_command_and_every_real_flag()


def test_a_background_command_is_stopped_within_its_section(shell: Shell) -> None:
    """The harness itself: a background command ends with its section and
    leaves nothing running."""
    started = time.monotonic()
    process = shell.start(
        "python3 -c 'import time; print(\"up\", flush=True); time.sleep(60)'", "up"
    )
    shell.background.remove(process)
    assert process.stop() != 0  # KeyboardInterrupt: Python's exit status for it
    assert process.popen.poll() is not None
    assert time.monotonic() - started < 30
