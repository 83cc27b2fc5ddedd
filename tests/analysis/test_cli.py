"""analysis/cli.py: one-line errors, and the argparse parser and flag types every command line uses."""

from __future__ import annotations

import argparse

import pytest

from analysis.cli import ArgumentParser, comma_list, directory, existing_file, float_in, int_in, output_file


def refused(capsys, parser: argparse.ArgumentParser, argv: list[str]) -> str:
    """Parses ``argv``; asserts exit 2 and exactly one ``error:`` line on stderr; returns it."""
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err.strip()


def test_a_bad_flag_is_one_line_naming_it(capsys, tmp_path):
    parser = ArgumentParser(prog="x")
    parser.add_argument("--epochs", type=int_in(1), default=1)
    parser.add_argument("--rate", type=float_in(0, 1, low_open=True), default=0.5)
    parser.add_argument("--ks", type=comma_list(int_in(1, 8)), default=[1])
    parser.add_argument("--modes", type=comma_list(choices=("auto", "torch_trainer")), default=["auto"])
    parser.add_argument("--mode", choices=["a", "b"], default="a")
    expected = "error: argument --epochs: expected an integer >= 1, but got"
    assert refused(capsys, parser, ["--epochs", "0"]) == f"{expected} '0'"
    assert refused(capsys, parser, ["--epochs", "x"]) == f"{expected} 'x'"
    assert refused(capsys, parser, ["--rate", "0"]) == "error: argument --rate: expected a number in (0, 1], but got '0'"
    assert "expected a number" in refused(capsys, parser, ["--rate", "nan"])
    assert "'9' in '1,9': expected an integer in [1, 8]" in refused(capsys, parser, ["--ks", "1,9"])
    assert "expected comma-separated values" in refused(capsys, parser, ["--ks", "1,,2"])
    assert "of auto, torch_trainer, but got 'fast'" in refused(capsys, parser, ["--modes", "auto,fast"])
    assert "argument --mode: invalid choice: 'c'" in refused(capsys, parser, ["--mode", "c"])
    assert "unrecognized arguments: --nope" in refused(capsys, parser, ["--nope"])
    args = parser.parse_args(["--epochs", "3", "--rate", "1", "--ks", "1, 2,8", "--modes", "torch_trainer,auto"])
    assert (args.epochs, args.rate, args.ks, args.modes) == (3, 1.0, [1, 2, 8], ["torch_trainer", "auto"])


def test_subparsers_refuse_in_one_line_too(capsys):
    parser = ArgumentParser(prog="x")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("synth").add_argument("--n", type=int_in(1), default=1)
    assert refused(capsys, parser, ["synth", "--n", "0"]).startswith("error: argument --n:")


def test_paths_expand_the_home_directory_and_are_checked(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data.npz").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    assert existing_file("~/data.npz") == tmp_path / "data.npz"
    assert directory("~/folder") == tmp_path / "folder" and directory("~/new/deeper") == tmp_path / "new" / "deeper"
    assert output_file("~/curves.json") == tmp_path / "curves.json"
    for parse, text, fragment in [
        (existing_file, "~/absent.npz", "no such file"), (existing_file, "~/folder", "a directory, not a file"),
        (directory, "~/data.npz", "is a file"), (directory, "~/data.npz/sub", "cannot be created"),
        (output_file, "~/folder", "a directory"), (output_file, "~/absent/c.json", "no such folder"),
        (existing_file, "", "expected a local path"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=fragment):
            parse(text)
