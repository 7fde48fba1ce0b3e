"""One CLI grammar: the same flag for the same thing on every command, old spellings as
warned aliases, an example ending every ``--help``, ``train --no-resume``, and help
texts that agree with the README and the Makefile."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

from automl_deft.cli import cli
from automl_deft.cli.deft import deft_cmd
from automl_deft.cli.model import train_cmd
from automl_deft.model import train as train_module
from automl_deft.model.train import PREVIOUS_RUNS, RUN_FILES, set_previous_run_aside

ROOT = Path(__file__).resolve().parents[1]


def run(*args: object, ok: bool = True) -> click.testing.Result:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every registered command's path, groups' subcommands included (the root too)."""
    yield path
    ctx = click.Context(group, info_name="automl-deft")
    for name in group.list_commands(ctx):
        sub = group.get_command(ctx, name)
        assert sub is not None
        if isinstance(sub, click.Group):
            yield from commands(sub, (*path, name))
        else:
            yield (*path, name)


def command_at(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = cli
    for name in path:
        assert isinstance(cmd, click.Group)
        found = cmd.get_command(click.Context(cmd), name)
        assert found is not None, name
        cmd = found
    return cmd


def example_lines(help_text: str) -> tuple[list[str], bool]:
    """The example command lines of one ``--help`` and whether they end it."""
    lines = help_text.rstrip("\n").splitlines()
    for i, line in enumerate(lines):
        if line.strip() in ("Example:", "Examples:"):
            block = []
            for rest in lines[i + 1 :]:
                if not rest.strip():
                    break
                block.append(rest.strip())
            return block, i + 1 + len(block) == len(lines)
    return [], False


def parse_example(words: list[str]) -> None:
    """Parse one example with the command's own click parser: every flag exists, takes
    the values given, required arguments are there and choices/numbers convert (paths
    are not checked: the demo workspace need not exist here)."""
    assert words[0] == "automl-deft", words
    cmd: click.Command = cli
    ctx = click.Context(cli, info_name="automl-deft")
    args = words[1:]
    while isinstance(cmd, click.Group):
        opts, args, _ = cmd.make_parser(ctx).parse_args(args)
        name, *args = args
        sub = cmd.get_command(ctx, name)
        assert sub is not None, f"no command {name!r}"
        cmd, ctx = sub, click.Context(sub, info_name=name, parent=ctx)
    opts, extra, _ = cmd.make_parser(ctx).parse_args(args)
    assert not extra, f"unexpected arguments {extra}"
    for param in cmd.params:
        value = opts.get(param.name)  # a given value is a string; a missing one, not
        if param.required:
            assert isinstance(value, str | list | tuple), f"{param.name} missing"
        numeric = isinstance(
            param.type, click.Choice | click.types.IntParamType | click.types.FloatParamType
        )
        if isinstance(value, str) and numeric:
            param.type.convert(value, param, ctx)


@pytest.mark.parametrize("path", list(commands()), ids=lambda p: " ".join(p) or "automl-deft")
def test_every_help_ends_with_examples_that_parse(path: tuple[str, ...]) -> None:
    text = run(*path, "--help").output
    lines, at_end = example_lines(text)
    name = " ".join(path)
    assert lines, f"`automl-deft {name} --help` shows no example"
    assert 1 <= len(lines) <= 3, lines
    assert at_end, f"the examples do not end {name}'s help"
    runs_it = False  # an example may show the step before (split-holdout's import)
    for line in lines:
        words = shlex.split(line, comments=True)
        runs_it |= words[: 1 + len(path)] == ["automl-deft", *path]
        parse_example(words)
    assert runs_it, f"no example runs `automl-deft {name}`"


def test_example_parser_can_fail() -> None:
    with pytest.raises(click.NoSuchOption):
        parse_example(["automl-deft", "train", "ws", "--out-dir", "x"])
    with pytest.raises(AssertionError, match="checkpoint missing"):
        parse_example(["automl-deft", "infer"])
    with pytest.raises(click.BadParameter):
        parse_example(["automl-deft", "quickstart", "d", "--scale", "huge"])


GRAMMAR = {
    # flag: the commands that take it, with the same meaning on each
    "-o, --results DIR": ("train", "automl", "deft", "run", "preflight"),
    "-o, --out PATH": ("infer", "evaluate", "zero-shot", "predict", "export", "compile"),
    "-c, --config": ("automl", "deft", "run", "preflight", "submit", "schedule"),
    "-s, --spec FILE": ("train", "automl", "deft", "zero-shot"),
    "--num-epochs N": ("train", "automl", "deft"),
    "--max-trials N": ("automl",),
    "--seed": (
        "train",
        "automl",
        "deft",
        "quickstart",
        "demo-workspace",
        "split-holdout",
        "import-deeppcb",
    ),
}


@pytest.mark.parametrize("flag", list(GRAMMAR))
def test_one_spelling_per_thing(flag: str) -> None:
    for name in GRAMMAR[flag]:
        assert flag in run(name, "--help").output, f"{name} lacks {flag}"


@pytest.mark.parametrize(("name", "old"), [("train", "--out"), ("deft", "--resume")])
def test_old_spellings_are_hidden(name: str, old: str) -> None:
    options = run(name, "--help").output.split("Options:")[1].split("Example")[0]
    assert not re.search(rf"{old}\b", options), options


def _params(cmd: click.Command, args: list[str]) -> dict[str, object]:
    root = click.Context(cli, info_name="automl-deft")
    return cmd.make_context(cmd.name, args, parent=root).params


@pytest.mark.parametrize(
    ("cmd", "old"),
    [(train_cmd, "--out"), (deft_cmd, "--resume")],
    ids=["train --out", "deft --resume"],
)
def test_old_spelling_still_works_and_warns(
    cmd: click.Command, old: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "r"
    results.mkdir()
    params = _params(cmd, [str(tmp_path), old, str(results)])
    assert params["results_dir"] == results
    err = capsys.readouterr().err
    assert err == (
        f"warning: {old} is an old spelling, going in the next release: use -o/--results\n"
    )
    # Given with the new spelling too: the same value is fine, another one is refused.
    assert _params(cmd, [str(tmp_path), "-o", str(results), old, str(results)])["results_dir"]
    with pytest.raises(click.UsageError, match="disagree: pass -o/--results once"):
        _params(cmd, [str(tmp_path), old, str(results), "--results", str(tmp_path)])
    with pytest.raises(click.UsageError, match=f"and {old} {results} \\(its old spelling\\)"):
        _params(cmd, [str(tmp_path), "--results", str(tmp_path), old, str(results)])
    # Without the old spelling: no warning.
    capsys.readouterr()
    assert _params(cmd, [str(tmp_path), "-o", str(results)])["results_dir"] == results
    assert capsys.readouterr().err == ""


def test_deft_resume_keeps_its_existing_directory_check(tmp_path: Path) -> None:
    result = run("deft", tmp_path, "--resume", tmp_path / "missing", ok=False)
    assert result.exit_code == 2 and "does not exist" in result.output


def test_help_texts_agree_with_the_readme() -> None:
    top = run("--help").output
    assert top.index("make run") < top.index("quickstart DIR")
    assert "automl-deft run DIR" in top
    quick = run("quickstart", "--help").output
    assert "This is what `make run` runs" not in quick
    assert "`make quickstart` runs it" in quick and "`make run`" in quick
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.index("make run") < readme.index("make quickstart")


def _phony_targets() -> list[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return [t for line in re.findall(r"^\.PHONY:(.*)$", text, flags=re.M) for t in line.split()]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_help_lists_every_target() -> None:
    targets = _phony_targets()
    assert {"help", "run", "test", "quickstart"} <= set(targets)
    out = subprocess.run(
        ["make", "-s", "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = set(re.findall(r"^\s*make ([a-z][a-z0-9-]*)", out, flags=re.M))
    assert sorted(set(targets) - listed) == []


# ---- train --no-resume ----------------------------------------------------------------


def _summary(out: Path) -> dict[str, object]:
    return json.loads((out / "train_summary.json").read_text())


def test_no_resume_retrains_from_scratch_in_the_same_directory(
    tiny_ws: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "train"
    first = run("train", tiny_ws, "--num-epochs", "1", "-o", out)
    assert "nothing to train" not in first.output and _summary(out)["epochs_run"] == 1

    again = run("train", tiny_ws, "--num-epochs", "1", "-o", out)  # resumes: already done
    assert "already holds this run, trained for 1 epochs: nothing to train" in again.output
    assert _summary(out)["epochs_run"] == 0

    # A changed spec: refused without --no-resume, retrained from scratch with it.
    lr = ["--set", "train.optim.lr=0.0007"]
    refused = run("train", tiny_ws, "--num-epochs", "1", *lr, "-o", out, ok=False)
    assert refused.exit_code == 2 and "--no-resume to start over" in refused.output
    old = {name: (out / name).read_bytes() for name in RUN_FILES}
    fresh = run("train", tiny_ws, "--num-epochs", "1", *lr, "-o", out, "--no-resume")
    assert "nothing to train" not in fresh.output
    assert f"the previous run in {out} is now in {out / PREVIOUS_RUNS}" in caplog.text
    summary = _summary(out)
    assert summary["epochs_run"] == 1 and [h["epoch"] for h in summary["history"]] == [1]
    latest = torch.load(out / "latest.pt", map_location="cpu", weights_only=False)
    assert latest["spec"]["train"]["optim"]["lr"] == pytest.approx(0.0007)
    assert latest["epoch"] == 1
    # The run it replaced is kept whole, byte for byte, beside it.
    (aside,) = (out / PREVIOUS_RUNS).iterdir()
    assert {name: (aside / name).read_bytes() for name in RUN_FILES} == old
    assert (out / "best_val.pt").read_bytes() != old["best_val.pt"]


def test_setting_a_run_aside_moves_latest_first_and_never_deletes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set_previous_run_aside(tmp_path) is None  # nothing to move
    for name in RUN_FILES:
        (tmp_path / name).write_text(name)
    real_replace = train_module.os.replace
    moved: list[str] = []

    def replace_then_die(src: Path, dest: Path) -> None:
        if moved:
            raise KeyboardInterrupt  # killed between two renames
        real_replace(src, dest)
        moved.append(Path(src).name)

    monkeypatch.setattr(train_module.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        set_previous_run_aside(tmp_path)
    assert moved == ["latest.pt"]  # nothing left to resume the old run from
    assert not (tmp_path / "latest.pt").exists()
    everything = {p.name: p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    assert everything == {name: name for name in RUN_FILES}  # every file whole, none lost
    monkeypatch.setattr(train_module.os, "replace", real_replace)
    second = set_previous_run_aside(tmp_path)
    assert second is not None and second.parent == tmp_path / PREVIOUS_RUNS
    assert sorted(p.name for p in second.iterdir()) == sorted(RUN_FILES[1:])
