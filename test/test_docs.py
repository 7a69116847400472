"""Every command in the docs is checked, so none goes stale: each line of every fenced `sh` block in README.md and
docs/*.md is parsed by the program it names (the project's own argument parsers, the Makefile's targets, the launch
file's arguments, a script's --help). The important commands also run for real in their own tests."""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from privacy_vision.cli import build_parser as cli_parser
from privacy_vision.cloud.ingest import build_parser as ingest_parser
from testkit.core import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Programs from elsewhere that the docs name (a workspace's tools, the shell's, a browser's): not the project's.
EXTERNAL = {"cd", "git", "pip", "rosdep", "colcon", "source", "export", "curl", "kill", "sudo", "apt-get", "T", "ls"}
LAUNCH_FILE = REPO / "launch" / "privacy_vision.launch.py"


def sh_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(where, words) of each command in the file's ```sh blocks: continuations joined, comments and `&` dropped."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", path.read_text(), flags=re.DOTALL):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            for part in re.split(r"\s(?:&&|;|\|)\s|\s&\s*$", line):
                if re.match(r"\s*[A-Z_]+=\$\(", part):  # a shell variable set from a command: the shell's own
                    continue
                words = shlex.split(part, comments=True)
                if words and words[-1] == "&":
                    words = words[:-1]
                if words:
                    commands.append((f"{path.name}: {line.strip()}", words))
    return commands


ALL = [command for path in DOCS for command in sh_commands(path)]


def parses(parser: argparse.ArgumentParser, args: list[str]) -> None:
    """The parser takes these arguments (argparse exits 2 with its message otherwise)."""
    error = io.StringIO()
    with contextlib.redirect_stderr(error):
        try:
            parser.parse_args(args)
        except SystemExit as exit_:
            if exit_.code:
                raise AssertionError(error.getvalue().strip()) from None


def launch_arguments() -> set[str]:
    text = LAUNCH_FILE.read_text()
    return set(re.findall(r'DeclareLaunchArgument\(\s*"([a-z_]+)"', text))


@functools.cache
def ros2_verb_answers(verb: str) -> bool:
    """`ros2 VERB --help` works where the ros2 command line is installed (from ../shared/ros2cli); True elsewhere."""
    ros2 = shutil.which("ros2", path=str(REPO / ".venv" / "bin"))
    if ros2 is None:
        return True
    env = {**os.environ, "AMENT_PREFIX_PATH": str(REPO / ".venv")}
    return subprocess.run([ros2, verb, "--help"], capture_output=True, timeout=120, env=env).returncode == 0


def check(words: list[str]) -> None:
    words = [word for word in words if not re.fullmatch(r"[A-Z_]+=\S*", word)]  # VAR=value prefixes
    words = ["1" if re.fullmatch(r"[A-Z][A-Z_0-9]*", word) else word for word in words]  # placeholders: N, PORT
    program, args = words[0], words[1:]
    if program in (".venv/bin/python", "python", "python3"):
        if args[:2] == ["-m", "privacy_vision.cli"]:
            return parses(cli_parser(), args[2:])
        if args[:2] == ["-m", "privacy_vision.cloud.ingest"]:
            return parses(ingest_parser(), args[2:])
        if args[:2] == ["-m", "pytest"]:
            for name in args[2:]:
                assert name.startswith("-") or (REPO / name.split("::")[0]).exists(), name
            return None
        script = REPO / args[0]
        assert script.is_file(), f"{args[0]} does not exist"
        if "--help" in args:
            result = subprocess.run([sys.executable, str(script), "--help"], cwd=REPO, capture_output=True, timeout=120)
            assert result.returncode == 0, result.stderr.decode()[-500:]
        return None
    if program in ("privacy-vision", ".venv/bin/privacy-vision"):
        return parses(cli_parser(), args)
    if program in ("privacy-vision-ingest", ".venv/bin/privacy-vision-ingest"):
        return parses(ingest_parser(), args)
    if program == "make":
        targets = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), flags=re.MULTILINE))
        for target in (word for word in args if "=" not in word and not word.startswith("-")):
            assert target in targets, f"make target {target!r} is not in the Makefile ({sorted(targets)})"
        return None
    if program == "bash":
        assert (REPO / args[0]).is_file(), f"{args[0]} does not exist"
        return None
    if program == "ros2":
        if args[:2] == ["run", "privacy_vision"]:
            if args[2] == "privacy-vision":
                return parses(cli_parser(), args[3:])
            if args[2] == "privacy-vision-ingest":
                return parses(ingest_parser(), args[3:])
            raise AssertionError(f"ros2 run privacy_vision {args[2]}: no such executable")
        if args[0] == "launch":
            assert args[1:3] == ["privacy_vision", "privacy_vision.launch.py"] or args[1] == "...", args
            unknown = {arg.split(":=")[0] for arg in args if ":=" in arg} - launch_arguments()
            assert not unknown, f"launch arguments not declared in {LAUNCH_FILE.name}: {sorted(unknown)}"
        assert ros2_verb_answers(args[0]), f"ros2 {args[0]} --help failed"
        return None
    if program == ".venv/bin/rqt":  # installed from ../shared/rqt with the test layer; its plugins by module path
        plugins = [arg for arg in args if "." in arg and not arg.startswith("-")]
        for plugin in plugins:
            assert (REPO / ".venv/bin/rqt").exists() is False or importlib.util.find_spec(plugin.split(".")[0]), plugin
        return None
    assert program in EXTERNAL, f"{program!r}: not a program this check knows (add it to test_docs.py)"
    return None


@pytest.mark.parametrize(("where", "words"), ALL, ids=[where[:90] for where, _ in ALL])
def test_every_command_in_the_docs_is_real(where, words):
    check(words)


def test_the_check_finds_a_stale_command():
    """The check can fail: a renamed option, a missing target, an unknown launch argument, a missing script."""
    for stale in (
        "privacy-vision run --video video.mp4",
        "privacy-vision dashbord",
        "make demo-all",
        "ros2 launch privacy_vision privacy_vision.launch.py sauce:=x",
        ".venv/bin/python bench/no_such_benchmark.py",
        "privacy-vision-ingest --cert a --key b --max-conections 5",
        "mystery-tool --now",
    ):
        with pytest.raises(AssertionError):
            check(shlex.split(stale))


def test_the_readme_fits_one_screen_of_headings():
    """README: what the product does, the two commands, what the demo prints, the docs by reader. The sections
    that issues 20 and 23 move to docs/faults.md and docs/perception.md are not counted."""
    text = (REPO / "README.md").read_text()
    own = text.split("\n## Perception: measured on real data", 1)[0].split("\n**Fault table**", 1)[0]
    prose = re.sub(r"```.*?```", "", own, flags=re.DOTALL)
    headings = [line for line in prose.splitlines() if line.startswith("#")]
    assert len(headings) <= 5, headings
    for linked in ("ros.md", "ros-tools.md", "privacy.md", "faults.md", "analysts.md", "operators.md"):
        assert f"docs/{linked}" in own, linked
    for linked in ("contributors.md", "perception.md", "img/dashboard.png"):
        assert f"docs/{linked}" in own, linked
