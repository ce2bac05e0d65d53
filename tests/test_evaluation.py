"""The batch evaluation of paper §9–10 (issue 5): protocol, statistics, resumability, CSV layout.

Kept fast: four gallery photos, FGSM only, an ensemble of 3 copies, chunks of 2 images; one
uninterrupted run is shared by the tests that read its results.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from gallery_cases import correct_gallery_items
from pd_core import evaluation as ev
from pd_core.defences.pixel_deflection import defended_copies
from pd_core.evaluation import figures, units
from pd_core.evaluation.data import load_labelled_images
from pd_core.evaluation.settings import RunSettings
from pd_core.evaluation.sidecar import sidecar_path
from pd_core.defence import PAPER_DEFAULTS
from pd_core.randomness import derive_seed

# Gallery photos the embedded model classifies correctly (checked in the fixture), and one more that
# is given a wrong label so that the protocol must drop it.
CORRECT = ("imagenet_05_853.jpg", "imagenet_16_251.jpg", "imagenet_17_22.jpg")
MISLABELLED = "imagenet_04_949.jpg"  # a strawberry, labelled here as class 0 (tench)
SETTINGS = ev.ProtocolSettings(attacks=("fgsm",), preset="paper", table=1, ensemble=3, batch_size=2, seed=7,
                               tuning_fraction=0.0)


@pytest.fixture(scope="module")
def items(model):
    from pd_core.images import gallery

    mislabelled = next(g for g in gallery() if g.path.name == MISLABELLED)
    return correct_gallery_items(model, CORRECT) + [(mislabelled.path, 0)]


@pytest.fixture(scope="module")
def full_run(model, items, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "results.csv"
    result = ev.evaluate(model, items, SETTINGS, out_csv=out)
    return result, out


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["image", "attack", "preset", "defence"]).reset_index(drop=True)


# --- statistics -------------------------------------------------------------------------------

def test_wilson_interval_matches_hand_computation():
    # 8 of 10 at 95% (z = 1.959964, z² = 3.84146): centre = (0.8 + z²/20) / (1 + z²/10) = 0.71673,
    # half = z·sqrt(0.016 + z²/400) / (1 + z²/10) = 0.22658 -> [0.49016, 0.94331].
    lo, hi = ev.wilson_interval(8, 10)
    assert lo == pytest.approx(0.49016, abs=2e-4) and hi == pytest.approx(0.94330, abs=2e-4)
    # p = 0 and p = 1 stay inside [0, 1]: upper bound z²/(n + z²) for 0 of 10 = 0.27753.
    assert ev.wilson_interval(0, 10) == (0.0, pytest.approx(0.27753, abs=1e-4))
    assert ev.wilson_interval(10, 10) == (pytest.approx(0.72247, abs=1e-4), 1.0)
    assert all(math.isnan(v) for v in ev.wilson_interval(0, 0))
    with pytest.raises(ValueError):
        ev.wilson_interval(3, 2)


def test_accuracy_of_a_hand_made_case():
    """Three images, one misclassified when clean (dropped); FGSM fools both kept ones, the single
    defended run recovers one of two."""
    def row(image, attack, defence, correct, norm=0.0):
        return {"image": image, "label": 1, "attack": attack, "preset": "none" if attack == "clean" else "paper",
                "defence": defence, "prediction": 1 if correct else 2, "correct": correct, "norm_l2": norm,
                "linf_255": 6.0 if norm else 0.0, "psnr": 40.0}

    rows = pd.DataFrame([
        row("a", "clean", "none", 1), row("a", "clean", "single", 1),
        row("b", "clean", "none", 1), row("b", "clean", "single", 0),
        row("c", "clean", "none", 0),
        row("a", "fgsm", "none", 0, 0.04), row("a", "fgsm", "single", 1, 0.04),
        row("b", "fgsm", "none", 0, 0.06), row("b", "fgsm", "single", 0, 0.06),
        row("c", "fgsm", "none", 1, 0.05),  # a dropped image never counts, whatever it says
    ])
    s = ev.summarize(rows).set_index(["attack", "defence"])
    assert s.loc[("clean", "none"), "n"] == 2 and s.loc[("clean", "none"), "accuracy"] == 1.0
    assert s.loc[("clean", "single"), "accuracy"] == 0.5
    assert s.loc[("fgsm", "none"), "correct"] == 0 and s.loc[("fgsm", "none"), "n"] == 2
    assert s.loc[("fgsm", "single"), "accuracy"] == 0.5
    assert s.loc[("fgsm", "single"), "mean_norm_l2"] == pytest.approx(0.05)
    lo, hi = ev.wilson_interval(1, 2)
    assert (s.loc[("fgsm", "single"), "ci_low"], s.loc[("fgsm", "single"), "ci_high"]) == (lo, hi)
    text = ev.format_table(rows, table=1, preset="paper")
    assert "2 images counted, 1 dropped" in text
    assert f" 50.0 [{100 * lo:.1f}, {100 * hi:.1f}]" in text
    assert "79.9" in text  # the paper's single-run FGSM accuracy alongside


def test_rank_of_the_adversarial_class():
    top5 = torch.tensor([[3, 1, 4, 5, 9], [2, 7, 1, 8, 0]])
    assert units._ranks(top5, torch.tensor([4, 6])).tolist() == [3, 0]


# --- the protocol on real images --------------------------------------------------------------

def test_protocol_drops_misclassified_images(full_run):
    result, _ = full_run
    assert result.images == 4 and result.kept == 3
    assert result.dropped == [MISLABELLED]
    rows = result.rows
    dropped_rows = rows[rows["image"] == MISLABELLED]
    assert dropped_rows[["attack", "defence", "correct"]].values.tolist() == [["clean", "none", 0]]
    s = result.summary.set_index(["attack", "defence"])
    assert s.loc[("clean", "none"), "n"] == 3 and s.loc[("clean", "none"), "accuracy"] == 1.0
    assert s.loc[("fgsm", "none"), "n"] == 3


def test_csv_has_one_row_per_image_attack_defence_with_norms(full_run):
    result, path = full_run
    rows = ev.read_results(path)
    assert set(ev.CSV_COLUMNS) <= set(rows.columns)
    assert not rows.duplicated(["image", "attack", "preset", "defence"]).any()
    kept = rows[rows["image"] != MISLABELLED]
    for (image, attack), g in kept.groupby(["image", "attack"]):
        assert sorted(g["defence"]) == ["ens3", "none", "single"], (image, attack)
    fgsm = kept[kept["attack"] == "fgsm"]
    assert len(fgsm) == 9 and (fgsm["preset"] == "paper").all()
    # Paper preset FGSM: eps = 6/255, so L-inf is exactly 6 after quantisation; |L2| 0.05 ± a factor 2.
    assert fgsm["linf_255"].between(5.99, 6.01).all()
    assert fgsm["norm_l2"].between(0.02, 0.12).all()
    clean = kept[kept["attack"] == "clean"]
    assert (clean["norm_l2"] == 0).all() and (clean["linf_255"] == 0).all()
    # The per-image seed is derive_seed(seed, image, attack), whatever the batch.
    for r in kept.itertuples():
        assert r.seed == derive_seed(7, r.image, r.attack)
    # Accuracy in the summary is what the rows say.
    s = result.summary.set_index(["attack", "defence"])
    assert s.loc[("fgsm", "ens3"), "correct"] == int(fgsm.loc[fgsm["defence"] == "ens3", "correct"].sum())
    meta = result.meta
    assert meta["settings"]["seed"] == 7 and meta["versions"]["torch"] == torch.__version__
    assert meta["attack_params"]["fgsm/paper"]["eps"] == pytest.approx(6 / 255, abs=1e-6)


def test_interrupted_and_resumed_run_gives_the_same_rows(model, items, full_run, tmp_path):
    result, full_path = full_run
    out = tmp_path / "results.csv"

    class Stop(Exception):
        pass

    def stop_after_first_unit(fraction, message):
        if "chunk 1/2 done" in message:
            raise Stop

    with pytest.raises(Stop):
        ev.evaluate(model, items, SETTINGS, out_csv=out, progress=stop_after_first_unit)
    partial = ev.read_results(out)
    assert 0 < len(partial) < len(ev.read_results(full_path))
    # A kill in the middle of a write leaves a torn last line: it must be ignored and cut.
    with out.open("a") as fh:
        fh.write("imagenet_16_251.jpg,251,fgsm,paper,no")
    calls = []
    resumed = ev.evaluate(model, items, SETTINGS, out_csv=out, progress=lambda f, m: calls.append(m))
    assert any("already done" in m for m in calls) or len(partial) > 0
    pd.testing.assert_frame_equal(_sorted(ev.read_results(out)), _sorted(ev.read_results(full_path)))
    pd.testing.assert_frame_equal(resumed.summary.sort_values(["attack", "defence"]).reset_index(drop=True),
                                  result.summary.sort_values(["attack", "defence"]).reset_index(drop=True))
    assert resumed.format_table() == result.format_table()
    # Running once more finds everything done and adds nothing.
    before = out.read_text()
    ev.evaluate(model, items, SETTINGS, out_csv=out)
    assert out.read_text() == before


def test_resume_refuses_other_settings(model, items, full_run, tmp_path):
    _, full_path = full_run
    out = tmp_path / "results.csv"
    out.write_text(full_path.read_text())
    sidecar_path(out).write_text(sidecar_path(full_path).read_text())
    with pytest.raises(ev.EvaluationError, match="other settings"):
        ev.evaluate(model, items, replace(SETTINGS, seed=8), out_csv=out)
    # An attack preset edited since the file was started must not mix two attacks in one row.
    with pytest.raises(ev.EvaluationError, match="fgsm 'paper' rows made with other parameters"):
        ev.evaluate(model, items, replace(SETTINGS, attack_params={"fgsm": {"eps": 8 / 255}}), out_csv=out)
    assert out.read_text() == full_path.read_text()  # nothing was added by the refused runs


def test_defended_copies_do_not_depend_on_the_batch(model, items):
    """Each image's deflections come from its own seed: defending it alone or inside a batch gives
    the same copies (what makes resumed and re-batched runs identical)."""
    from pd_core.images import load_batch

    x = load_batch([p for p, _ in items[:2]], spec=model.spec, device=model.device)
    rmap = torch.rand(2, x.shape[-2], x.shape[-1], generator=torch.Generator().manual_seed(0)) * 0.5
    seeds = [derive_seed(0, "a", "fgsm"), derive_seed(0, "b", "fgsm")]
    both = defended_copies(model, x, rmap, PAPER_DEFAULTS, 3, seeds)
    second = defended_copies(model, x[1:], rmap[1:], PAPER_DEFAULTS, 3, seeds[1:])
    assert both.shape == (6, 3, 224, 224)
    torch.testing.assert_close(both[3:], second, atol=1e-6, rtol=0)
    assert not torch.equal(both[3], both[4])  # the copies differ from each other


# --- split, inputs, command line -------------------------------------------------------------

def test_tuning_split_is_deterministic_disjoint_and_stable():
    items = [ev.Item(f"img_{i:03d}.jpg", Path(f"/x/img_{i:03d}.jpg"), i % 1000) for i in range(400)]
    evaluation, tuning = ev.split_tuning(items, 0.2)
    names_e, names_t = {i.name for i in evaluation}, {i.name for i in tuning}
    assert not names_e & names_t and len(names_e | names_t) == 400
    assert 50 <= len(tuning) <= 110  # Binomial(400, 0.2): mean 80, sd 8
    # Adding images never moves an existing one between the parts; the order is the same.
    more = items + [ev.Item(f"new_{i}.jpg", Path(f"/x/new_{i}.jpg"), 1) for i in range(50)]
    e2, t2 = ev.split_tuning(more, 0.2)
    assert names_t <= {i.name for i in t2} and names_e <= {i.name for i in e2}
    assert [i.name for i in e2 if i.name in names_e] == [i.name for i in evaluation]
    assert ev.split_tuning(items, 0.0)[1] == []


def test_held_apart_everywhere_is_tuning_under_both_names_of_a_file():
    # An ImageFolder names a file "<wnid>/<file>", a flat folder "<file>": the two hash apart.
    items = [ev.Item(f"n{i % 7:08d}/img_{i:04d}.jpg", Path(f"/x/img_{i:04d}.jpg"), i % 7) for i in range(2000)]
    _, tuning = ev.split_tuning(items, 0.2)
    flat = {it.name for it in ev.split_tuning(
        [ev.Item(it.name.split("/")[1], it.path, it.label) for it in items], 0.2)[1]}
    kept = ev.held_apart_everywhere(items, 0.2)
    expected = [it for it in tuning if it.name.split("/")[1] in flat]
    assert kept == expected  # every image tuning by both names, in the folder's hash order
    assert 40 <= len(kept) <= 120  # about 0.2 * 0.2 * 2000 = 80: the two hashes are independent
    assert len(kept) < len(tuning) - 200  # the rule removes most nested-name tuning images


def test_cli_bad_folder_is_one_line_and_exit_2(tmp_path, capsys):
    from pd_core.cli import main

    code = main(["evaluate", "--images", str(tmp_path / "missing"), "--out", str(tmp_path / "r.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:")
    code = main(["evaluate", "--images", str(tmp_path), "--attacks", "nope", "--out", str(tmp_path / "r.csv")])
    assert code == 2
    capsys.readouterr()
    code = main(["evaluate", "--images", str(tmp_path), "--attacks", "fgsm", "--preset", "budget",
                 "--out", str(tmp_path / "r.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "fgsm has no preset 'budget'" in err[0]
    assert not (tmp_path / "r.csv").exists()


# --- figures ------------------------------------------------------------------------------------

def test_figure5_search_uses_only_the_tuning_subset(model, monkeypatch):
    from pd_core.images import gallery

    items = [(g.path, g.label_index) for g in gallery() if g.source == "Foolbox"][:10]
    evaluation, tuning = ev.split_tuning(ev.load_items(items), 0.5)
    assert tuning and evaluation
    seen = []
    real_load = load_labelled_images

    def recording_load(chunk, model):
        seen.extend(it.name for it in chunk)
        return real_load(chunk, model)

    monkeypatch.setattr(figures, "load_labelled_images", recording_load)  # where tuning_grid looks it up
    grid = ev.tuning_grid(model, items, figures.TuningGrid(attacks=(), sigmas=(0.04,), windows=(10,),
                                                           deflections=(100, 50)),
                          RunSettings(ensemble=1, tuning_fraction=0.5, batch_size=8))
    assert sorted(seen) == sorted(it.name for it in tuning)
    assert not set(seen) & {it.name for it in evaluation}
    assert list(grid["varied"]) == ["default", "deflections"] and (grid["attack"] == "clean").all()
    assert (grid["n"] <= len(tuning)).all() and (grid["correct"] <= grid["n"]).all()


def test_figure2_at_zero_deflections_is_the_plain_model(model, items):
    """With K = 0 the curve is the model's own mean probability: swap two photos to make a
    'successful attack' whose adversarial class is known."""
    from pd_core.images import load_batch

    x = load_batch([p for p, _ in items[:2]], spec=model.spec, device=model.device)
    y = torch.tensor([lbl for _, lbl in items[:2]])
    adversarial = x.flip(0)
    curve = ev.deflection_curve(model, x, y, replace(figures.FIGURE2, deflections=(0, 100), copies=2),
                                adversarial=adversarial)
    with torch.no_grad():
        p_adv, p_clean = model(adversarial).softmax(1), model(x).softmax(1)
    at0 = curve[curve["deflections"] == 0].set_index(["image", "class"])["mean_prob"]
    swapped = y.flip(0)  # the adversarial class of image i is the other image's label
    expect = {("adversarial", "true"): p_adv[[0, 1], y].mean(), ("adversarial", "adversarial"): p_adv[[0, 1], swapped].mean(),
              ("clean", "true"): p_clean[[0, 1], y].mean(), ("clean", "adversarial"): p_clean[[0, 1], swapped].mean()}
    for key, value in expect.items():
        assert at0[key] == pytest.approx(float(value), abs=1e-5), key
    assert set(curve["n"]) == {2} and len(curve) == 8


def test_rank_histogram_counts_successful_attacks_only():
    base = {"label": 1, "preset": "paper", "defence": "none", "prediction": 0, "norm_l2": 0.1, "linf_255": 1,
            "psnr": 30}
    rows = pd.DataFrame([
        {**base, "image": "a", "attack": "clean", "preset": "none", "correct": 1},
        {**base, "image": "b", "attack": "clean", "preset": "none", "correct": 1},
        {**base, "image": "a", "attack": "fgsm", "correct": 0, "attack_success": 1,
         "adv_rank_in_clean_top5": 2, "true_rank_in_adv_top5": 2},
        {**base, "image": "b", "attack": "fgsm", "correct": 1, "attack_success": 0,
         "adv_rank_in_clean_top5": 1, "true_rank_in_adv_top5": 1},
    ])
    h = ev.rank_histogram(rows)
    left = h[(h["attack"] == "fgsm") & (h["direction"] == "adversarial class in clean top-5")].set_index("rank")
    assert left["count"].tolist() == [0, 0, 1, 0, 0, 0] and left.loc[2, "fraction"] == 1.0
