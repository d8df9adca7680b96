"""Every command the README and docs/ show (their ```bash blocks) is exercised here, or by the test named for it.

- ``npas ...``: parsed by the real command line (an unknown option or a missing argument fails), every file it
  names must exist, and the read-only ones (``methods``, ``archs``, ``config``, ``params``) are run for real;
- ``python -m npasbench.<module> ...``: the module's own argparse parser reads the documented arguments;
- ``pip install``: the extras exist in pyproject.toml, the paths exist; ``apt-get install``: the packages are the
  ones CI installs; ``python -m pytest``: the command CI runs;
- anything else must be listed in ``RUN_ELSEWHERE`` with the test that runs it (and that test must name it).

Also: docs/config.md is exactly ``npas config``'s output, so the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# programs whose commands another test runs: program -> that test file (which must name the program)
RUN_ELSEWHERE = {"tensorboard": "tests/test_tensorboard.py", "torchrun": "tests/test_ddp.py",
                 "time": "tests/test_cli.py", "bash": "tests/test_record_migration.py"}
RUN_FOR_REAL = {"methods", "archs", "config", "params"}
# commands a page shows *failing* on purpose, with the text of the one-line refusal it describes
REFUSED = {"npas params --method ssn --arch densenet-bc-100-12 --dataset cifar100 --budget 25% --opt param_groups=-1":
           "needs more than the 392,328 weights of its singleton layers"}


def shown_commands() -> list[tuple[str, str]]:
    """(page, command) of every command in a ```bash block: continuation lines joined, comments dropped, ``a; b``
    split."""
    out = []
    for page in PAGES:
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                command: list[str] = []
                for w in words + [";"]:
                    if w.endswith(";"):
                        if w[:-1]:
                            command.append(w[:-1])
                        if command:
                            out.append((page.name, shlex.join(command)))
                        command = []
                    else:
                        command.append(w)
    return out


COMMANDS = shown_commands()


def test_the_pages_show_commands():
    pages = {p for p, _ in COMMANDS}
    assert "README.md" in pages and {"grids.md", "leaderboards.md", "writing-a-method.md"} <= pages
    assert len(COMMANDS) >= 30


class _Parsed(Exception):
    pass


def _parse_only(module, argv: list[str]) -> argparse.Namespace:
    """Run ``module.main(argv)`` until its parser has read ``argv`` (then stop: nothing runs)."""
    seen: dict[str, argparse.Namespace] = {}
    real = argparse.ArgumentParser.parse_args

    def parse(self, args=None, namespace=None):
        seen["ns"] = real(self, args, namespace)
        raise _Parsed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_args", parse)
        with contextlib.suppress(_Parsed):
            module.main(argv)
    assert "ns" in seen, f"{module.__name__}.main did not parse its arguments with argparse"
    return seen["ns"]


def _check_paths(words: list[str]) -> None:
    for w in words:
        value = w.split("=", 1)[1] if w.startswith("--") and "=" in w else w
        if re.search(r"\.(toml|json|md)$", value) and "/" in value and not value.startswith(("results/", "runs/")):
            assert (ROOT / value).is_file(), f"{value} does not exist"


def _npas(argv: list[str]) -> None:
    from npasbench import cli

    try:
        args = cli.parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"npas {shlex.join(argv)}: the command line refuses it (exit {exc.code})") from None
    _check_paths(argv)
    if getattr(args, "spec", None):
        assert (ROOT / args.spec).is_file(), f"{args.spec} does not exist"
    if getattr(args, "config", None):
        assert (ROOT / args.config).is_file(), f"{args.config} does not exist"
    if argv[0] in RUN_FOR_REAL:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
        refusal = REFUSED.get(shlex.join(["npas", *argv]))
        if refusal is not None:
            assert code == 2 and refusal in err.getvalue(), err.getvalue()
        else:
            assert code == 0 and out.getvalue().strip(), err.getvalue()


def _pyproject_extras() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


@pytest.mark.parametrize("page,command", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_a_shown_command_works(page, command):
    words = shlex.split(command)
    ci = (ROOT / ".ci" / "run").read_text()
    if words[0] == "npas":
        _npas(words[1:])
    elif words[:3] == ["python", "-m", "pytest"]:
        assert "python -m pytest" in ci and (len(words) == 3 or " ".join(words) in ci), command
    elif words[:2] == ["python", "-m"]:
        module = importlib.import_module(words[2])
        _parse_only(module, words[3:])
        _check_paths(words[3:])
    elif words[:2] == ["pip", "install"]:
        target = words[-1]
        if target.startswith(".["):
            assert set(target[2:-1].split(",")) <= _pyproject_extras(), command
        else:
            assert (ROOT / target).exists(), command
    elif words[:2] == ["apt-get", "install"]:
        ci_packages = set(re.search(r"apt-get install -y ([^\n#]*)", ci).group(1).split())
        assert {w for w in words[2:] if not w.startswith("-")} <= ci_packages, command
    elif words[0] in RUN_ELSEWHERE:
        test = (ROOT / RUN_ELSEWHERE[words[0]]).read_text()
        assert words[0] in test, f"{RUN_ELSEWHERE[words[0]]} does not run {words[0]}"
    else:
        pytest.fail(f"{page} shows `{command}`, which no test exercises: add it to this test")


def test_the_config_reference_is_npas_config():
    from npasbench import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["config"]) == 0
    page = (ROOT / "docs" / "config.md").read_text()
    block = re.search(r"```text\n(.*?)```", page, re.S).group(1)
    assert block == out.getvalue(), "docs/config.md differs from `npas config`: regenerate its block"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_of_a_page_points_to_a_file(page):
    """The README is a guide that links the reference: a link to a moved or renamed page fails here."""
    links = [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()) if "://" not in t]
    missing = [t for t in links if not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to {missing}"
