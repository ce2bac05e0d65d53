"""pd_core.story (the app's computations) against direct pd_core calls, and pd_core.visuals' figures.

The oracles: the app's single defended image must be exactly ``defend(model, adv, seed)``, its
Ens-10 exactly ``ensemble_predict(model, adv, 10, seed)``, the stages exactly the transforms
applied one by one, and ``python -m pd_core demo --json`` exactly the numbers the app shows.
"""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pd_core import visuals
from pd_core.defence import DefenceConfig, defend, ensemble_predict, predict_probs
from pd_core.cli.options import demo_command
from pd_core.story import attack_and_defend, defence_stages
from pd_core.evaluation import probability_curve  # paper Fig. 2: one implementation for the app and the evaluation
from pd_core.evaluation.figures import CurveSettings

STORY_IMAGE = "imagenet_04_949"  # the app's default photo (strawberry)


@pytest.fixture(scope="module")
def story_image(model):
    from pd_core.images import gallery_image, load_image

    entry = gallery_image(STORY_IMAGE)
    return load_image(entry.path, spec=model.spec, device=model.device), entry


@pytest.fixture(scope="module")
def story(model, story_image):
    x, entry = story_image
    return attack_and_defend(model, x, entry.label_index, attack="fgsm", preset="paper", seed=3,
                             image_name=entry.name, image_path=STORY_IMAGE)


def test_story_matches_direct_defence_and_ensemble(model, story):
    adv = story.images["adversarial"][None].to(model.device)
    config = story.config
    direct = defend(model, adv, config, seed=3)
    assert torch.equal(story.images["defended"], direct[0].cpu())
    ens = ensemble_predict(model, adv, n=10, seed=3, config=config)
    assert story.predictions["ensemble"] == int(ens.prediction[0])
    assert story.ensemble_votes == ens.votes[0].tolist()
    torch.testing.assert_close(story.probs["ensemble"], ens.mean_probs[0].cpu(), rtol=0, atol=1e-6)
    torch.testing.assert_close(story.probs["defended"], predict_probs(model, direct)[0].cpu(), rtol=0, atol=1e-6)


def test_story_values(model, story, story_image):
    x, entry = story_image
    clean_probs = predict_probs(model, x)[0].cpu()
    torch.testing.assert_close(story.probs["clean"], clean_probs, rtol=0, atol=1e-5)
    assert story.label == entry.label_index and story.label_source == "dataset"
    delta = story.images["adversarial"] - story.images["clean"]
    # FGSM at the paper preset: every value moves by at most 6/255 (quantised), and the norms agree.
    assert float(delta.abs().max()) * 255 <= 6 + 1e-3
    n = story.norms["adversarial"]
    assert n["linf_255"] == pytest.approx(float(delta.abs().max()) * 255, abs=1e-3)
    assert n["l2"] == pytest.approx(float(delta.norm()), rel=1e-4)
    assert n["norm_l2"] == pytest.approx(float(delta.norm() / story.images["clean"].norm()), rel=1e-4)
    # Where the deflections went: K of them, each source within the window of its target.
    d = story.deflections
    assert len(d["y"]) == story.config.deflections
    assert int((d["y"] - d["source_y"]).abs().max()) <= story.config.window
    assert int((d["x"] - d["source_x"]).abs().max()) <= story.config.window
    for key in ("clean_rcam", "adversarial_rcam", "clean_cam"):
        m = story.maps[key]
        # Normalised to [0, 1] on the feature grid; bilinear upsampling may shave the peak a little.
        assert m.shape == x.shape[-2:] and float(m.min()) >= 0 and 0.9 < float(m.max()) <= 1


def test_story_is_reproducible_and_seed_matters(model, story, story_image):
    x, entry = story_image
    again = attack_and_defend(model, x, entry.label_index, attack="fgsm", preset="paper", seed=3)
    assert torch.equal(again.images["defended"], story.images["defended"])
    other = attack_and_defend(model, x, entry.label_index, attack="fgsm", preset="paper", seed=4)
    assert not torch.equal(other.images["defended"], story.images["defended"])
    assert torch.equal(other.images["adversarial"], story.images["adversarial"])  # FGSM is deterministic


def test_cli_demo_prints_the_same_numbers(model, story, capsys):
    from pd_core.cli import main

    expected = story.to_dict(demo_command(story))
    assert expected["command"].startswith("python -m pd_core demo imagenet_04_949 ")
    argv = expected["command"].split()[3:]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    for key in ("stages", "norms", "ensemble", "reference_label", "attack", "defence", "seed"):
        assert printed[key] == expected[key], key


def test_upload_uses_clean_prediction_as_reference(model, story_image):
    x, _ = story_image
    result = attack_and_defend(model, x, None, attack="fgsm", preset="paper", seed=0,
                               config=DefenceConfig(deflections=20))
    assert result.label_source == "clean prediction"
    assert result.label == result.predictions["clean"]
    assert result.outcomes()["clean"] == "correct"
    assert "--label" not in demo_command(result) and "--deflections 20" in demo_command(result)


def test_verdicts():
    from ui.verdicts import verdict

    assert verdict("clean", 1, 1)[0] == "correct" and verdict("clean", 2, 1)[0] == "wrong"
    assert verdict("adversarial", 2, 1)[0] == "fooled" and verdict("adversarial", 1, 1)[0] == "resisted"
    assert verdict("ensemble", 1, 1)[0] == "recovered" and verdict("defended", 3, 1)[0] == "still fooled"
    assert verdict("defended", 1, 1)[1] == "Back to “goldfish”." and verdict("clean", 2, 1)[1].startswith("Wrong even")


def test_stages_are_the_transforms_one_by_one(model, story_image):
    from pd_core.denoising import jpeg_compress, wavelet_denoise

    x, _ = story_image
    config = DefenceConfig()
    stages = {s.name: s for s in defence_stages(model, x, config, seed=5)}
    # Paper Table 3 one stage at a time, as registry entries: none, PD, WD, WD+PD, JPEG.
    assert list(stages) == ["none", "pd", "wavelet", "pixel_deflection", "jpeg"]
    assert torch.equal(stages["none"].image, x[0].cpu())
    assert torch.equal(stages["pixel_deflection"].image, defend(model, x, config, seed=5)[0].cpu())
    assert torch.equal(stages["pd"].image,
                       defend(model, x, DefenceConfig(denoise=False), seed=5)[0].cpu())
    torch.testing.assert_close(stages["wavelet"].image, wavelet_denoise(x, sigma=0.04)[0].cpu())
    torch.testing.assert_close(stages["jpeg"].image, jpeg_compress(x, quality=75)[0].cpu())
    probs = predict_probs(model, torch.stack([s.image for s in stages.values()]).to(model.device)).cpu()
    for s, p in zip(stages.values(), probs):
        torch.testing.assert_close(s.probs, p, rtol=0, atol=1e-5)


def test_deflection_curve(model, story_image):
    x, entry = story_image
    ks = [0, 100, 3000]
    curve = probability_curve(model, x, [entry.label_index, 0], CurveSettings(tuple(ks), copies=3, seed=1))
    clean = float(predict_probs(model, x)[0, entry.label_index])
    # K = 0 changes nothing: every draw is the clean image.
    assert float(curve.mean[entry.label_index][0]) == pytest.approx(clean, abs=1e-5)
    assert float(curve.std[entry.label_index][0]) == pytest.approx(0, abs=1e-6)
    assert float(curve.top1_rate[entry.label_index][0]) == 1.0
    # Random deflections spread the probabilities; many deflections move them more than few.
    assert float(curve.std[entry.label_index][2]) > 0
    assert abs(float(curve.mean[entry.label_index][2]) - clean) >= abs(float(curve.mean[entry.label_index][1]) - clean) - 0.02
    assert all(len(v) == len(ks) for v in curve.mean.values())


# --- visuals ---------------------------------------------------------------------------------------

def _decode(source: str, kind: str = "png") -> np.ndarray:
    assert source.startswith(f"data:image/{kind};base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).convert("RGB"))


def test_amplification_factor_is_round_and_scales_the_peak():
    assert visuals.amplification_factor(torch.full((3, 4, 4), 8 / 255)) == 10  # 0.5 / 0.0314 = 15.9 -> 10
    assert visuals.amplification_factor(torch.full((3, 4, 4), 0.002)) == 200  # 250 -> 200
    assert visuals.amplification_factor(torch.full((3, 4, 4), 0.9)) == 0.5    # 0.56 -> 0.5
    assert visuals.amplification_factor(torch.zeros(3, 4, 4)) == 1.0
    for peak in (0.001, 0.01, 0.03, 0.2, 1.0):
        f = visuals.amplification_factor(torch.tensor([peak, -peak / 2]))
        assert 0.2 <= f * peak <= 0.5 + 1e-9


def test_perturbation_figure_shows_half_plus_factor_delta():
    delta = torch.zeros(3, 8, 8)
    delta[0, 2, 3] = 4 / 255
    delta[2, 5, 1] = -1.0  # saturates
    fig = visuals.perturbation_figure(delta, 10.0)
    rgb = _decode(fig.data[0].source)
    assert rgb.shape == (8, 8, 3)
    assert rgb[0, 0].tolist() == [128, 128, 128]
    assert abs(int(rgb[2, 3, 0]) - (127.5 + 40)) <= 0.5 and rgb[2, 3, 1] == 128  # 0.5 + 10 * 4/255
    assert rgb[5, 1, 2] == 0


def test_top_predictions_figure_orders_and_colours():
    probs = torch.zeros(1000)
    probs[[7, 3, 9, 1, 5, 2]] = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    fig = visuals.top_predictions_figure(probs, true_index=3, adversarial_index=7)
    bar = fig.data[0]
    assert len(bar.y) == 5
    assert bar.y[-1].endswith("(7)") and bar.y[0].endswith("(5)")  # most likely on top (last drawn)
    assert list(bar.x) == pytest.approx([6, 10, 15, 25, 40])
    colours = dict(zip(bar.y, bar.marker.color))
    assert colours[bar.y[-1]] == visuals.ADVERSARIAL_COLOUR and colours[bar.y[-2]] == visuals.TRUE_COLOUR


def test_map_overlay_keeps_the_map_values():
    amap = torch.zeros(224, 224)
    amap[:112, :112] = 1.0
    fig = visuals.map_overlay_figure(torch.rand(3, 224, 224), amap)
    heat = fig.data[1]
    z = np.asarray(heat.z)
    assert z.shape == (56, 56) and heat.dx == 4
    assert z[:28, :28].min() == 1 and z[28:, :].max() == 0
    # The photo behind the map is a JPEG backdrop at full resolution, close to the photo.
    photo = torch.rand(3, 224, 224).mul(0.2).add(torch.linspace(0, 0.8, 224))
    backdrop = _decode(visuals.map_overlay_figure(photo, amap).data[0].source, "jpeg")
    assert backdrop.shape == (224, 224, 3)
    assert np.abs(backdrop.astype(float) - visuals.to_hwc_uint8(photo).astype(float)).mean() < 12


def test_deflection_figure_marks_every_deflection():
    y, x = torch.tensor([1, 5, 7]), torch.tensor([2, 2, 0])
    fig = visuals.deflection_figure(torch.rand(3, 10, 10), y, x, y + 1, x)
    assert list(fig.data[1].y) == [1, 5, 7] and list(fig.data[1].x) == [2, 2, 0]
    assert [list(c) for c in fig.data[1].customdata] == [[2, 2], [2, 6], [0, 8]]


def test_visuals_never_import_streamlit():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "pd_core"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "streamlit" for n in names), path


def test_story_through_any_registry_defence_or_plugin(model, story_image, tmp_path, capsys):
    from pd_core.cli import main
    from pd_core.defences import unregister_defence

    x, entry = story_image
    jpeg = attack_and_defend(model, x, entry.label_index, attack="fgsm", preset="paper", seed=3, defence="jpeg")
    adv = jpeg.images["adversarial"][None]
    from pd_core.denoising import jpeg_compress

    assert torch.equal(jpeg.images["defended"], jpeg_compress(adv, quality=75)[0])  # deterministic: Ens = single
    assert jpeg.defence == "jpeg" and len(jpeg.deflections["y"]) == 0 and jpeg.ensemble_agreement == 1.0
    plugin = tmp_path / "invert.py"
    plugin.write_text("def defend(x, *, generator):\n    return 1 - x\n")
    spec = f"{plugin}:defend"
    try:
        mine = attack_and_defend(model, x, entry.label_index, attack="fgsm", preset="paper", seed=3, defence=spec,
                                 image_path=STORY_IMAGE)
        assert torch.equal(mine.images["defended"], 1 - mine.images["adversarial"])
        assert mine.defence == spec and f"--defence {spec}" in demo_command(mine)
        assert main(demo_command(mine).split()[3:]) == 0  # the printed command runs the same plugin
        printed = json.loads(capsys.readouterr().out)
        assert printed["defence"]["name"] == spec and printed["stages"] == mine.to_dict()["stages"]
    finally:
        from pd_core.defences import DEFENCES

        if "defend" in DEFENCES:
            unregister_defence("defend")
