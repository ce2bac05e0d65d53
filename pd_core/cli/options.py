"""One table of command-line options: it builds the argparse parsers *and* writes the commands
that reproduce a result, so the two cannot drift.

An :class:`Option` says how argparse reads a flag (type, default, choices, action) and how a
value is written back (:attr:`Option.write`). :func:`add_options` adds a table's options to a
parser; :func:`command` writes ``python -m pd_core <subcommand> ...`` from a mapping ``dest ->
value`` (the values the parser would give), leaving out options at their default. Parsing a
written command with the real parser gives those values back (``tests/test_options.py`` checks it
for every command the app prints).

The app prints commands for the story (:func:`demo_command`), the benchmark (:func:`evaluate_command`)
and the adaptive pages (:func:`adaptive_demo_command`, :func:`ladder_command`).
"""
from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

__all__ = ["Option", "ShellWord", "PROGRAM", "attack_options", "evaluate_options", "evaluate_command",
           "ADAPTIVE_OPTIONS", "adaptive_values", "adaptive_command", "ladder_commands", "add_options", "command", "DEFENCE_OPTIONS", "DEMO_OPTIONS", "demo_values",
           "demo_command", "defence_config_of"]

#: How a reproduce-command starts.
PROGRAM = ("python", "-m", "pd_core")

_MISSING = object()


class ShellWord(str):
    """A value that is already one shell word (quoted by its maker, e.g. ``"$PD_IMAGE_ROOT"/dev``):
    written as it is, never quoted again."""


def _quote(text: str) -> str:
    return text if isinstance(text, ShellWord) else shlex.quote(text)


@dataclass(frozen=True)
class Option:
    """One option: ``flag`` ("--deflections"; empty for a positional argument), ``dest`` (its name
    in the parsed namespace), and argparse's ``type``, ``default``, ``choices``, ``metavar``, ``help``.

    action : "store" (a value), "store_true" (a switch), "append" (repeatable, a list of values)
        or "positional".
    write : the value as the text the command line takes (``str`` by default; ``repr``-exact for
        floats, so a written value parses back to the same float).
    always : write it even at its default (``--json`` on a reproduce-command, required options).
    """

    flag: str
    dest: str
    help: str = ""
    type: Callable | None = None
    default: Any = None
    choices: Sequence | None = None
    metavar: str | None = None
    action: str = "store"
    required: bool = False
    write: Callable[[Any], str] = str
    always: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        kwargs: dict[str, Any] = {"help": self.help, **self.extra}
        if self.action == "positional":
            parser.add_argument(self.dest, metavar=self.metavar or self.dest.upper(), **kwargs)
            return
        if self.action == "store_true":
            parser.add_argument(self.flag, dest=self.dest, action="store_true", **kwargs)
            return
        kwargs.update(default=[] if self.action == "append" else self.default, dest=self.dest)
        if self.action == "append":
            kwargs["action"] = "append"
        if self.type is not None:
            kwargs["type"] = self.type
        if self.choices is not None:
            kwargs["choices"] = list(self.choices)
        if self.metavar is not None:
            kwargs["metavar"] = self.metavar
        if self.required:
            kwargs["required"] = True
        parser.add_argument(self.flag, **kwargs)

    def words(self, value) -> list[str]:
        """The command-line words for ``value`` (none at the default, unless ``always``)."""
        if self.action == "positional":
            return [_quote(self.text(value))]
        if self.action == "store_true":
            return [self.flag] if value else []
        if self.action == "append":
            return [w for item in value for w in (self.flag, _quote(self.text(item)))]
        if value == self.default and not (self.always or self.required):
            return []
        if value is None:
            return []
        return [self.flag, _quote(self.text(value))]

    def text(self, value) -> str:
        return value if isinstance(value, ShellWord) else self.write(value)


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> argparse.ArgumentParser:
    """Add every option of the table to ``parser`` (in order); returns the parser."""
    for option in options:
        option.add_to(parser)
    return parser


def command(subcommand: str, options: Sequence[Option], values: Mapping[str, Any]) -> str:
    """``python -m pd_core SUBCOMMAND ...`` for ``values`` (``dest -> value``; options missing from
    ``values`` or at their default are left out), in the table's order."""
    unknown = set(values) - {o.dest for o in options}
    if unknown:
        raise KeyError(f"no option for {sorted(unknown)} in the {subcommand} table")
    parts = [*PROGRAM, subcommand]
    for option in options:
        value = values.get(option.dest, _MISSING)
        if value is not _MISSING:
            parts += option.words(value)
    return " ".join(parts)


# --- the defence settings (pd_core.defence.DefenceConfig) ----------------------------------------

def _float(value) -> str:
    return repr(float(value))


#: The defence's parameters, paper §8 defaults (``DefenceConfig``'s fields).
DEFENCE_OPTIONS: tuple[Option, ...] = (
    Option("--deflections", "deflections", "K, pixels deflected (paper: 100)", int, 100),
    Option("--window", "window", "r, deflection window apothem in pixels (paper: 10)", int, 10),
    Option("--sigma", "sigma", "wavelet threshold noise level (paper: 0.04)", float, 0.04, write=_float),
    Option("--no-map", "no_map", "deflect uniformly instead of guided by R-CAM", action="store_true"),
)

#: The rest of the story's defence settings (``pdlab demo`` exposes every DefenceConfig field).
DENOISER_OPTIONS: tuple[Option, ...] = (
    Option("--wavelet", "wavelet", "wavelet family (paper: db1)", None, "db1", choices=("db1", "db2", "haar")),
    Option("--method", "method", "threshold rule (paper: bayes)", None, "bayes", choices=("bayes", "visu", "sure")),
    Option("--mode", "mode", "thresholding (paper: soft)", None, "soft", choices=("soft", "hard")),
    Option("--top-k", "top_k", "classes combined in the R-CAM (paper: 5)", int, 5),
    Option("--rgb", "rgb", "denoise in RGB instead of YCbCr", action="store_true"),
)


def defence_config_of(args):
    """The :class:`~pd_core.defence.DefenceConfig` of the defence options in ``args`` (fields whose
    option the parser does not have keep the paper's value)."""
    from ..defence import DefenceConfig

    given = {"deflections": args.deflections, "window": args.window, "sigma": args.sigma,
             "use_map": not args.no_map}
    for name in ("wavelet", "method", "mode", "top_k"):
        if hasattr(args, name):
            given[name] = getattr(args, name)
    if hasattr(args, "rgb"):
        given["ycbcr"] = not args.rgb
    return DefenceConfig(**given)


def defence_values(config) -> dict:
    """``dest -> value`` of the defence options for a :class:`~pd_core.defence.DefenceConfig`."""
    return {"deflections": config.deflections, "window": config.window, "sigma": config.sigma,
            "no_map": not config.use_map, "wavelet": config.wavelet, "method": config.method,
            "mode": config.mode, "top_k": config.top_k, "rgb": not config.ycbcr}


# --- pdlab demo --------------------------------------------------------------------------------

DEFENCE_CHOICE = Option("--defence", "defence", "the defence (default: pixel_deflection, the paper's); "
                        "'pdlab defences' lists them; your own: FILE.py:FUNCTION", None, None, metavar="NAME")
MODEL = Option("--model", "model", "the classifier ('pdlab models' lists them)", None, "efficientnet_lite0")
SEED = Option("--seed", "seed", "seed of every random step", int, 0, always=True)
PARAM = Option("--param", "param", "override one attack parameter (repeatable), e.g. eps=0.0157",
               metavar="NAME=VALUE", action="append")

DEMO_OPTIONS: tuple[Option, ...] = (
    Option("", "image", "an image file, or a gallery photo's short name (e.g. imagenet_04_949, chelsea)",
           action="positional", metavar="IMAGE"),
    MODEL,
    Option("--attack", "attack", "the attack ('pdlab attack --help' lists them)", None, "fgsm", always=True),
    Option("--preset", "preset", "attack strength: interactive, paper or large", None, "interactive", always=True),
    PARAM,
    Option("--label", "label", "true class index (default: the clean prediction is the reference)", int, None),
    SEED,
    DEFENCE_CHOICE,
    *DEFENCE_OPTIONS,
    *DENOISER_OPTIONS,
    Option("--ensemble", "ensemble", "copies in the majority vote (paper: 10)", int, 10, metavar="N"),
    Option("--json", "json", "print the JSON the app downloads", action="store_true"),
)


def demo_values(result, image: str | None = None) -> dict:
    """``dest -> value`` of ``pdlab demo`` for a :class:`~pd_core.story.DemoResult`: the attack
    parameters that differ from the preset's as ``--param``, the label only for a dataset photo."""
    from ..attacks import ATTACKS

    preset = ATTACKS[result.attack].preset(result.preset) if result.attack in ATTACKS else {}
    params = [f"{k}={_param_text(v)}" for k, v in result.attack_params.items() if preset.get(k) != v]
    return {"image": image or result.image_path or "IMAGE", "model": result.model, "attack": result.attack,
            "preset": result.preset, "param": params,
            "label": result.label if result.label_source == "dataset" else None, "seed": result.seed,
            "defence": None if result.defence == "pixel_deflection" else result.defence,
            **defence_values(result.config), "ensemble": result.n_ensemble, "json": True}


def _param_text(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def demo_command(result, image: str | None = None) -> str:
    """The ``python -m pd_core demo ...`` line that reproduces a :class:`~pd_core.story.DemoResult`."""
    return command("demo", DEMO_OPTIONS, demo_values(result, image))


# --- pdlab attack ------------------------------------------------------------------------------

def attack_options() -> tuple[Option, ...]:
    """``pdlab attack``'s options (the attack and preset choices come from the attack registry)."""
    from ..attacks.registry import ALL_PRESETS, ATTACKS

    return (
        Option("", "image", "the image file", action="positional", metavar="IMAGE"),
        Option("--attack", "attack", "which attack", None, None, choices=tuple(ATTACKS), required=True),
        Option("--preset", "preset", "strength: interactive (fast), paper (the paper's Table 1 setting), large; "
               "igsm also has budget (all 10 steps), fgsm minimal (smallest fooling eps)", None, "interactive",
               choices=tuple(ALL_PRESETS)),
        Option("--eps", "eps", "L-inf budget in 1/255 units (8 means 8/255); fgsm, igsm and pgd only", float, None,
               metavar="E", write=_float),
        Option("--param", "param", "override one attack parameter (repeatable), e.g. steps=20", metavar="KEY=VALUE",
               action="append"),
        Option("--label", "label", "true ImageNet class (0-999); default: the model's clean prediction", int, None,
               metavar="INDEX"),
        MODEL,
        Option("--seed", "seed", "seed (PGD's random start)", int, 0),
        Option("--out", "out", "where to write the adversarial PNG", None, None, metavar="ADV.png", required=True),
        Option("--json", "json", "print one JSON object", action="store_true"),
    )


# --- pdlab evaluate (the Benchmark page's command; the parser is pd_core.cli.evaluate's) ----------

def evaluate_options() -> tuple[Option, ...]:
    """The options of ``pdlab evaluate`` that a Benchmark run sets (the default attacks: the paper's)."""
    from ..evaluation import PAPER_ATTACKS

    return (
        Option("--images", "images", "folder of images", required=True, metavar="DIR"),
        MODEL,
        Option("--attacks", "attacks", "comma-separated attacks", None, ",".join(PAPER_ATTACKS), always=True),
        Option("--preset", "preset", "attack strength", None, "paper", always=True),
        Option("--table", "table", "the paper's table: 1, 3 or 4", int, 1, always=True),
        Option("--ensemble", "ensemble", "copies in the majority vote (paper: 10)", int, 10, always=True),
        Option("--limit", "limit", "use only the first N evaluation images", int, None, metavar="N"),
        SEED,
        Option("--tuning-fraction", "tuning_fraction", "share held apart for tuning", float, 0.2, write=_float,
               always=True),
        Option("--out", "out", "the results file", required=True, metavar="results.csv"),
    )


def evaluate_command(*, images: str, model: str, attacks: Sequence[str], preset: str, table: int, ensemble: int,
                     limit: int | None, seed: int, tuning_fraction: float, out: str = "results.csv") -> str:
    """The ``python -m pd_core evaluate ...`` line of a Benchmark run. ``images``: a
    :class:`ShellWord` (already quoted, e.g. by ``ui.components.data_folder_argument``) or a path.
    The evaluation runs the paper's defence parameters: ``evaluate`` has no option for others."""
    values = {"images": images, "model": model, "attacks": ",".join(attacks), "preset": preset, "table": int(table),
              "ensemble": int(ensemble), "limit": limit, "seed": int(seed), "tuning_fraction": float(tuning_fraction),
              "out": out}
    return command("evaluate", evaluate_options(), values)


# --- pdlab adaptive (the Adaptive page's commands; the parser is pd_core.cli.adaptive's) ---------

def _eps_text(values) -> str:
    return ",".join(f"{float(e):g}" for e in values)


ADAPTIVE_OPTIONS: tuple[Option, ...] = (
    Option("--images", "images", "folder of labelled images", required=True, metavar="DIR"),
    Option("--limit", "limit", "use only the first N images", int, None, metavar="N"),
    Option("--eps", "eps", "budgets in /255, comma separated", None, None, always=True),
    Option("--steps", "steps", "PGD steps", int, 40, always=True),
    Option("--eot", "eot", "defence samples averaged per step", int, 10, always=True),
    Option("--ensemble", "ensemble", "copies in the ensemble vote", int, 10),
    SEED,
    MODEL,
    DEFENCE_CHOICE,
    *DEFENCE_OPTIONS,
    Option("--ladder", "ladder", "run the whole ladder", action="store_true"),
    Option("--report", "report", "the ladder's JSON report", None, None, metavar="JSON"),
    Option("--out", "out", "result table", required=True, metavar="CSV"),
)


def adaptive_values(*, images: str, eps, steps: int, eot: int, seed: int, out: str, limit: int | None = None,
                    ensemble: int = 10, model: str = "efficientnet_lite0", defence: str | None = None,
                    config=None, ladder: bool = False, report: str | None = None) -> dict:
    """``dest -> value`` of ``pdlab adaptive`` (``config``: the pixel-deflection settings K, r, σ and
    the map, written only for the paper's defence; ``eps`` in /255)."""
    values = {"images": images, "limit": limit, "eps": _eps_text(eps), "steps": int(steps), "eot": int(eot),
              "ensemble": int(ensemble), "seed": int(seed), "model": model,
              "defence": None if defence in (None, "pixel_deflection") else defence, "ladder": ladder,
              "report": report, "out": out}
    if config is not None and values["defence"] is None:
        values.update({"deflections": config.deflections, "window": config.window, "sigma": config.sigma,
                       "no_map": not config.use_map})
    return values


def adaptive_command(**settings) -> str:
    """The ``python -m pd_core adaptive ...`` line for :func:`adaptive_values`' settings."""
    return command("adaptive", ADAPTIVE_OPTIONS, adaptive_values(**settings))


def ladder_commands(*, images: str, photos: int, eps, steps: int, eot: int, ensemble: int, seed: int, model: str,
                    config, defences: Sequence[str]) -> tuple[list[str], list[str]]:
    """The ``python -m pd_core adaptive ... --ladder`` line of each defence (its report and CSV named
    after it), and the names of the pixel-deflection settings the command line has no option for
    (they keep the paper's values there)."""
    from ..defence import PAPER_DEFAULTS

    commands = []
    for name in defences:
        paper = name == "pixel_deflection"
        commands.append(adaptive_command(images=images, limit=photos, eps=eps, steps=steps, eot=eot,
                                         ensemble=ensemble, seed=seed, model=model, defence=name, config=config,
                                         ladder=True, report="report.json" if paper else f"report_{name}.json",
                                         out="ladder.csv" if paper else f"ladder_{name}.csv"))
    missing = [name for name in ("method", "mode", "wavelet", "ycbcr", "top_k")
               if getattr(config, name) != getattr(PAPER_DEFAULTS, name)]
    return commands, missing
