"""The option table (pd_core.cli.options): every reproduce-command the app prints parses, with the
real parser, back to the settings it was written from.

No model is needed: the commands are written from plain records and parsed by ``build_parser``.
"""
from __future__ import annotations

import shlex
from types import SimpleNamespace

import pytest

from pd_core.cli import build_parser
from pd_core.cli.common import parse_param
from pd_core.cli.options import (DEMO_OPTIONS, PROGRAM, ShellWord, attack_options, command, evaluate_options,
                                 defence_config_of, demo_command, demo_values, evaluate_command)
from pd_core.defence import DefenceConfig


def _parse(line: str):
    words = shlex.split(line)
    assert words[:len(PROGRAM)] == list(PROGRAM)
    rest = words[len(PROGRAM):]
    return build_parser(rest[0]).parse_args(rest)


def _story(**changes):
    from pd_core.attacks import ATTACKS

    base = dict(attack="fgsm", preset="paper", attack_params=ATTACKS["fgsm"].preset("paper"), label=949, label_source="dataset",
                seed=0, defence="pixel_deflection", config=DefenceConfig(), n_ensemble=10,
                model="efficientnet_lite0", image_path="imagenet_04_949")
    return SimpleNamespace(**{**base, **changes})


STORIES = {
    "default": _story(),
    "upload, other seed": _story(label=3, label_source="clean prediction", seed=7, image_path="my photo (1).jpg"),
    "overridden budget": _story(attack_params={"eps": 7 / 255}, preset="interactive"),
    "igsm steps": _story(attack="igsm", attack_params={"eps": 4 / 255, "steps": 3, "stepsize": 1 / 255}),
    "every defence setting": _story(config=DefenceConfig(deflections=250, window=7, sigma=0.0625, wavelet="db2",
                                                         method="visu", mode="hard", ycbcr=False, use_map=False,
                                                         top_k=3), n_ensemble=4),
    "another defence": _story(defence="jpeg"),
    "a plugin": _story(defence="my defences/blur.py:defend"),
}


@pytest.mark.parametrize("name", list(STORIES))
def test_demo_command_parses_back_to_the_story(name):
    story = STORIES[name]
    line = demo_command(story)
    args = _parse(line)
    for dest, value in demo_values(story).items():
        assert getattr(args, dest) == value, dest
    # ... and to the settings the story was computed with.
    assert defence_config_of(args) == story.config
    assert args.image == story.image_path and args.seed == story.seed and args.ensemble == story.n_ensemble
    assert args.label == (story.label if story.label_source == "dataset" else None)
    assert args.defence == (None if story.defence == "pixel_deflection" else story.defence)
    from pd_core.attacks import ATTACKS

    preset = ATTACKS[story.attack].preset(story.preset)
    given = dict(parse_param(p) for p in args.param)
    assert {**preset, **given} == {**preset, **story.attack_params}  # floats come back bit for bit
    assert args.json


def test_demo_command_leaves_defaults_out_and_names_the_photo():
    line = demo_command(STORIES["default"])
    assert line.startswith("python -m pd_core demo imagenet_04_949 --attack fgsm --preset paper ")
    assert "--deflections" not in line and "--param" not in line and "--seed 0" in line


def test_demo_parser_is_the_table():
    parser = build_parser("demo")
    sub = parser.parse_args(["demo", "x.png"])
    for option in DEMO_OPTIONS:
        if option.action == "positional":
            continue
        expected = [] if option.action == "append" else (False if option.action == "store_true" else option.default)
        assert getattr(sub, option.dest) == expected, option.flag


@pytest.mark.parametrize("images", [ShellWord('"$PD_IMAGE_ROOT"/imagenet-dev'), "../shared/imagenet dev"])
def test_evaluate_command_parses_back(images, monkeypatch):
    monkeypatch.setenv("PD_IMAGE_ROOT", "/data")
    settings = dict(model="efficientnet_lite0", attacks=["fgsm", "deepfool"], preset="large", table=3, ensemble=4,
                    limit=12, seed=5, tuning_fraction=0.15)
    line = evaluate_command(images=images, **settings)
    assert "$PD_IMAGE_ROOT" in line if isinstance(images, ShellWord) else shlex.quote(images) in line
    args = _parse(line.replace('"$PD_IMAGE_ROOT"', "/data"))
    assert args.images == (images.replace('"$PD_IMAGE_ROOT"', "/data"))
    assert args.attacks.split(",") == settings["attacks"]
    for key in ("model", "preset", "table", "ensemble", "limit", "seed", "tuning_fraction"):
        assert getattr(args, key) == settings[key], key
    assert args.out == "results.csv"


def test_every_evaluate_option_is_the_real_parsers():
    args = _parse("python -m pd_core evaluate --images d --out o.csv")
    for option in evaluate_options():
        if not option.required and option.action == "store":
            assert getattr(args, option.dest) == option.default, option.flag


def test_attack_command_parses_back():
    values = {"image": "a b.png", "attack": "pgd", "preset": "paper", "eps": 8.0, "param": ["steps=7"],
              "label": 12, "model": "efficientnet_lite0", "seed": 3, "out": "adv.png", "json": True}
    args = _parse(command("attack", attack_options(), values))
    for dest, value in values.items():
        assert getattr(args, dest) == value, dest


def test_a_value_outside_the_table_is_refused():
    with pytest.raises(KeyError):
        command("demo", DEMO_OPTIONS, {"no_such_option": 1})


@pytest.mark.parametrize("config", [DefenceConfig(), DefenceConfig(deflections=40, window=6, sigma=0.05, use_map=False),
                                    DefenceConfig(method="visu")])
def test_ladder_commands_parse_back(config):
    from pd_core.cli.options import ladder_commands

    defences = ("pixel_deflection", "jpeg", "none")
    commands, missing = ladder_commands(images="../shared/imagenet-dev", photos=3, eps=(2, 4.5), steps=5, eot=2,
                                        ensemble=4, seed=9, model="efficientnet_lite0", config=config,
                                        defences=defences)
    assert missing == (["method"] if config.method != "bayes" else [])
    for line, name in zip(commands, defences):
        args = _parse(line)
        assert args.ladder and args.images == "../shared/imagenet-dev"
        assert (args.limit, args.eps, args.steps, args.eot, args.ensemble, args.seed) == (3, "2,4.5", 5, 2, 4, 9)
        paper = name == "pixel_deflection"
        assert args.defence == (None if paper else name)
        assert (args.report, args.out) == (("report.json", "ladder.csv") if paper else
                                           (f"report_{name}.json", f"ladder_{name}.csv"))
        if paper:  # the sidebar's K, r, σ and map reach the paper's defence
            shown = defence_config_of(args)
            assert (shown.deflections, shown.window, shown.sigma, shown.use_map) == \
                (config.deflections, config.window, config.sigma, config.use_map)


def test_adaptive_command_parses_back():
    from pd_core.cli.options import adaptive_command

    args = _parse(adaptive_command(images=ShellWord("FOLDER"), eps=(1, 2, 4, 8), eot=10, steps=40, seed=0,
                                   out="adaptive.csv"))
    assert (args.images, args.eps, args.eot, args.steps, args.seed, args.out) == \
        ("FOLDER", "1,2,4,8", 10, 40, 0, "adaptive.csv")
    assert not args.ladder and args.defence is None
