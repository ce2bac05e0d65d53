"""The defence registry: the contract every entry keeps, run identity of the paper's defence, and
adding a defence (a throw-away entry, a plugin file, an installed entry point) with no other edit.

The contract tests run over every entry of ``DEFENCES``, so a zoo defence added later is checked
by them too.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from pd_core.cli import main
from paper_columns import TABLE3_DEFENCES, TABLE4_DEFENCES
from pd_core.defence import (PAPER_DEFAULTS, defend, defend_batch,
                             ensemble_predict)
from pd_core.defences import (DEFENCES, Defence, DefenceError, DefenceInfo, create_defence, defence_info,
                              register_defence, resolve_defences, unregister_defence)
from pd_core.defences.base import SeedDraws
from pd_core.defences.ensemble import ensemble_vote
from pd_core.defences.plugins import ENTRY_POINT_GROUP, load_operator_plugins
from pd_core.defences.registry import TABLE3_COLUMNS, TABLE4_COLUMNS, canonical_name
from pd_core.randomness import make_generator

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(model):
    from gallery_cases import correct_foolbox_photos

    return correct_foolbox_photos(model, 2, 6)


def _built(name, model):
    if name == "quilting":
        from pd_core.defences.quilting import DATABASE_ENV, DEFAULT_DATABASE

        if not Path(os.environ.get(DATABASE_ENV) or DEFAULT_DATABASE).is_dir():
            pytest.skip("image quilting's patch database folder (../shared/imagenet-800) is absent")
    return create_defence(name, model if defence_info(name).needs_model else None, config=PAPER_DEFAULTS)


@pytest.mark.parametrize("name", list(DEFENCES))
def test_every_entry_keeps_the_contract(name, model, photos):
    x, _ = photos
    defence = _built(name, model)
    info = defence_info(name)
    assert info.title and info.citation and info.summary and info.gradient in ("exact", "bpda")
    out = defence.apply(x, make_generator(3))
    assert out.shape == x.shape and out.device == x.device and out.dtype == x.dtype
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    again = defence.apply(x, make_generator(3))
    assert torch.equal(out, again), "same generator seed, same output"
    if defence.randomised:
        other = defence.apply(x, make_generator(4))
        assert not torch.equal(out, other), "a randomised defence draws anew for another seed"


@pytest.mark.parametrize("name", list(DEFENCES))
def test_rows_do_not_depend_on_the_batch(name, model, photos):
    x, _ = photos
    defence = _built(name, model)
    seeds = [11, 12]
    both = defence.apply_seeded(x, 3, seeds)
    alone = torch.cat([defence.apply_seeded(x[i:i + 1], 3, seeds[i:i + 1]) for i in range(2)])
    assert both.shape == (6, *x.shape[1:])
    assert torch.allclose(both, alone, atol=1e-6), "image i's copies depend on its image and seed only"


@pytest.mark.parametrize("name", list(DEFENCES))
def test_replayed_draws_equal_the_defence_and_the_gradient_path_forward_equals_apply(name, model, photos):
    x, _ = photos
    defence = _built(name, model)
    copies = defence.apply_copies(x, 2, make_generator(5))
    draws = defence.draw(x, 2, make_generator(5))
    rep = x.repeat_interleave(2, dim=0).clone().requires_grad_(True)
    replayed = defence.replay(rep, draws)
    if isinstance(draws, SeedDraws):  # drawn from a seed: replay re-runs the defence with that seed's generator
        expected = defence.apply(rep.detach(), draws.generator(x.device))
    else:  # deterministic (no draws), or draws recorded exactly (pixel deflection)
        expected = copies
    assert torch.equal(replayed.detach(), expected), "the gradient path's forward is the defence itself"
    replayed.sum().backward()
    assert rep.grad is not None and torch.isfinite(rep.grad).all() and rep.grad.abs().sum() > 0


@pytest.mark.parametrize("column, config", list({**TABLE3_DEFENCES, **TABLE4_DEFENCES}.items()))
def test_the_papers_columns_are_bit_identical_to_the_functions(column, config, model, photos):
    """Run identity: each Table 3/4 column through the registry gives exactly what the functions of
    pd_core.defence give (so results files made before the registry still resume)."""
    x, _ = photos
    name = {**TABLE3_COLUMNS, **TABLE4_COLUMNS}[column]
    defence = create_defence(name, model, config=PAPER_DEFAULTS)
    assert torch.equal(defence.apply(x, make_generator(1)), defend(model, x, config, generator=make_generator(1)))
    assert torch.equal(defence.apply_copies(x, 3, make_generator(2)),
                       defend_batch(model, x, 3, config, generator=make_generator(2)))


def test_ensemble_vote_equals_ensemble_predict(model, photos):
    x, _ = photos
    ours = ensemble_vote(model, create_defence("pixel_deflection", model), x, 4, make_generator(7, x.device))
    theirs = ensemble_predict(model, x, n=4, seed=7)
    assert torch.equal(ours.prediction, theirs.prediction) and torch.equal(ours.votes, theirs.votes)


def test_names_aliases_and_parameters_fail_in_one_sentence(model):
    assert canonical_name("jpeg75") == "jpeg" and canonical_name("wd+pd") == "pixel_deflection"
    assert canonical_name("undefended") == "none"
    with pytest.raises(DefenceError, match="Unknown defence 'nope'; known: none, pixel_deflection"):
        canonical_name("nope")
    with pytest.raises(DefenceError, match="has no parameter 'qualty'"):
        create_defence("jpeg", qualty=50)
    with pytest.raises(DefenceError, match="build it with a model"):
        create_defence("pixel_deflection")
    assert create_defence("jpeg", quality=50).params == {"quality": 50}
    # run-wide settings reach the defences that name them, and only those
    cfg = PAPER_DEFAULTS.__class__(sigma=0.08, deflections=7)
    assert create_defence("wavelet", config=cfg).params["sigma"] == 0.08
    assert create_defence("pd", model, config=cfg).config.deflections == 7
    assert create_defence("pd", model, config=cfg).config.denoise is False, "a variant keeps its fixed stages"


class _Blur(Defence):
    def apply(self, x, generator=None):
        return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


THROWAWAY = DefenceInfo(name="throwaway_blur", title="Throw-away blur", citation="this test",
                        summary="A 3×3 box blur.", build=lambda model=None, **p: _Blur(THROWAWAY, p),
                        gradient="exact")


@pytest.fixture
def throwaway():
    register_defence(THROWAWAY)
    yield THROWAWAY
    unregister_defence(THROWAWAY.name)


def test_a_defence_registered_at_run_time_reaches_the_command_line(throwaway, capsys, tmp_path):
    from gallery_cases import labelled_folder

    assert main(["defences", "--json"]) == 0
    listed = [d["name"] for d in json.loads(capsys.readouterr().out)["defences"]]
    assert "throwaway_blur" in listed
    photo = next(labelled_folder(tmp_path, 1).glob("*.jpg"))
    assert main(["classify", str(photo), "--defence", "throwaway_blur", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["defence"] == "throwaway_blur" and len(record["defended_top5"]) == 5
    out = tmp_path / "blurred.png"
    assert main(["defend", str(photo), "--defence", "throwaway_blur", "--out", str(out)]) == 0
    assert out.stat().st_size > 0


def test_a_defence_registered_at_run_time_reaches_the_evaluation_the_ladder_and_the_apps_choices(throwaway, tmp_path):
    """Issue 19 item 2: the throw-away entry, with no other edit, is a column of ``evaluate --defence``,
    a defence the ladder judges (its rungs chosen from its declared gradient) and a choice of the app's
    sidebar and of the Defence arena."""
    import csv

    from gallery_cases import labelled_folder

    from pd_core.arena import arena_defence_names
    from ui.sidebar import defence_choices

    folder = labelled_folder(tmp_path, 2)
    table = tmp_path / "t.csv"
    assert main(["evaluate", "--images", str(folder), "--attacks", "fgsm", "--defence", "throwaway_blur",
                 "--ensemble", "2", "--tuning-fraction", "0", "--no-progress", "--out", str(table)]) == 0
    rows = list(csv.DictReader(open(table)))
    assert {r["defence"] for r in rows} >= {"throwaway_blur"}
    assert {r["attack"] for r in rows if r["defence"] == "throwaway_blur"} == {"clean", "fgsm"}
    ladder = tmp_path / "ladder.csv"
    assert main(["adaptive", "--images", str(folder), "--ladder", "--defence", "throwaway_blur", "--loss", "ce",
                 "--eps", "4", "--eot", "1", "--steps", "1", "--ensemble", "2", "--tuning-fraction", "0",
                 "--no-progress", "--out", str(ladder)]) == 0
    rungs = {r["rung"] for r in csv.DictReader(open(ladder))} - {"clean"}
    assert rungs == {"transfer", "bpda", "exact_eot"}  # deterministic, exact gradient: no BPDA+EOT rung
    assert "throwaway_blur" in defence_choices() and "throwaway_blur" in arena_defence_names()


PLUGIN = textwrap.dedent('''
    import torch

    def defend(x, *, generator):
        """Additive uniform noise of ±2/255, then clipping."""
        noise = (torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1) * (2 / 255)
        return (x + noise).clamp(0, 1)

    def wrong_shape(x, *, generator):
        return x[:, :, :-1]

    def not_finite(x, *, generator):
        return x * float("nan")

    def out_of_range(x, *, generator):
        return x + 2

    def raises(x, *, generator):
        raise RuntimeError("the user's bug")

    def no_generator(x):
        return x
''')


@pytest.fixture
def plugin_file(tmp_path):
    path = tmp_path / "my_defence.py"
    path.write_text(PLUGIN)
    yield path
    for name in ("defend", "wrong_shape", "not_finite", "out_of_range", "raises"):
        if name in DEFENCES:
            unregister_defence(name)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pd_core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_a_plugin_file_is_classified_through_the_command_line(plugin_file, tmp_path, capsys):
    from gallery_cases import labelled_folder

    photo = next(labelled_folder(tmp_path, 1).glob("*.jpg"))
    done = _cli("classify", str(photo), "--defence", f"{plugin_file}:defend", "--ensemble", "3", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["defence"] == "defend" and record["ensemble"]["n"] == 3
    # the seed fixes the plugin's randomness through its generator
    assert main(["classify", str(photo), "--defence", f"{plugin_file}:defend", "--ensemble", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == record, "the same seed gives the plugin the same randomness"


@pytest.mark.parametrize("function, sentence", [
    ("wrong_shape", "returned shape (1, 3, 223, 224) for input (1, 3, 224, 224)"),
    ("not_finite", "returned NaN or infinite values"),
    ("out_of_range", "they must stay in [0, 1]"),
    ("raises", "raised RuntimeError: the user's bug"),
    ("no_generator", "must accept (x, *, generator)"),
    ("missing", "has no 'missing'"),
])
def test_a_bad_plugin_gets_one_sentence_and_exit_2(plugin_file, tmp_path, function, sentence, capsys):
    from gallery_cases import labelled_folder

    photo = next(labelled_folder(tmp_path, 1).glob("*.jpg"))
    assert main(["classify", str(photo), "--defence", f"{plugin_file}:{function}"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and sentence in lines[0] and "Traceback" not in err


def test_plugins_from_a_module_an_entry_point_and_the_operators_variable(plugin_file, tmp_path, monkeypatch, model,
                                                                         photos):
    x, _ = photos
    monkeypatch.syspath_prepend(str(plugin_file.parent))
    assert resolve_defences("my_defence:defend, jpeg75") == ["defend", "jpeg"]
    info = tmp_path / "my_defence_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-defence-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nnoisy = my_defence:defend\n")
    try:
        assert resolve_defences("noisy") == ["noisy"]
        noisy = create_defence("noisy")
        assert noisy.randomised and noisy.gradient == "bpda"
        out = noisy.apply(x, make_generator(0))
        assert 0 < float((out - x).abs().max()) <= 2 / 255 + 1e-6
        assert load_operator_plugins({"PD_DEFENCE_PLUGINS": f"{plugin_file}:defend"}) == ["defend"]
        assert load_operator_plugins({}) == []
    finally:
        unregister_defence("noisy")


def test_a_plugin_cannot_replace_a_built_in_defence(plugin_file):
    from pd_core.defences import load_plugin

    with pytest.raises(DefenceError, match="would replace the built-in defence 'jpeg'"):
        load_plugin(f"{plugin_file}:defend", name="jpeg")
