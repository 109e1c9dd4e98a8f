"""Defaults and choices live in pipeline/config.py only: every flag of every sub-command defaults to None (so a
flag not given leaves the run config's value), choices are the config's, and the help texts quote the config."""

from __future__ import annotations

import argparse

import pytest

from pipeline import config
from pipeline.cli import COMMANDS, build_parser


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_command_is_built():
    assert set(_subparsers()) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_defaults_to_none(command):
    sub = _subparsers()[command]
    offenders = []
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.default is not None:
            offenders.append(f"{'/'.join(action.option_strings) or action.dest} defaults to {action.default!r}")
    assert not offenders, f"tomopick {command}: " + "; ".join(offenders)


def test_choices_are_the_configs():
    subs = _subparsers()

    def choices_of(command, dest):
        return tuple(next(a for a in subs[command]._actions if a.dest == dest).choices)

    assert choices_of("segment", "mode") == config.choices("segment", "mode")
    assert choices_of("segment", "precision") == config.choices("segment", "precision")
    assert choices_of("localize", "method") == config.choices("localize", "method")
    assert choices_of("evaluate", "metric") == config.choices("evaluate", "metric")


def test_help_quotes_the_config_defaults(capsys):
    for argv, field_default in [
        (["segment", "--help"], f"(default {config.default(config.SegmentConfig, 'ntta')})"),
        (["localize", "--help"], f"(default {config.default(config.LocalizeConfig, 'filter_size')})"),
        (["evaluate", "--help"], f"(default {config.default(config.EvaluateConfig, 'ground_truth_user_id')})"),
        (["synth", "--help"], f"(default {config.default(config.SyntheticConfig, 'runs')})"),
    ]:
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        assert field_default.replace(" ", "") in "".join(capsys.readouterr().out.split()), argv  # wrapped


def test_flags_not_given_leave_the_config_values():
    doc = config.overlay({"copick_config": "c.json", "segment": {"ntta": 2}},
                         segment={"ntta": None, "mode": "compat"}, device=None, evaluate={"beta": None})
    assert doc == {"copick_config": "c.json", "segment": {"ntta": 2, "mode": "compat"}}
    assert "evaluate" not in doc  # an empty block would switch evaluation on
