"""Lossless round trips (issue 15, item 3): an image already at the model's input size reaches the
model as it is, so the attack's own PNG keeps its adversarial label when it is read back, through
the command line (``attack --out`` then ``classify``) and through the app (download, upload again).

The photo and budget are chosen so that the old path (resize 224 -> 256, crop back to 224) loses
the attack: FGSM at 2/255 turns the espresso photo into class 925 (consommé), and after the old
resampling the model said espresso again.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from pd_core.images import (open_image, pil_to_tensor, plan_preprocessing, tensor_to_pil, to_model_tensor,
                            to_png_bytes)

os.environ["PD_WARM_UP"] = "0"
ROOT = Path(__file__).resolve().parents[1]


def _ramp(width: int, height: int) -> Image.Image:
    x = torch.arange(width * height * 3, dtype=torch.int64).reshape(height, width, 3) * 7 % 256
    return Image.fromarray(x.to(torch.uint8).numpy(), "RGB")


# ----------------------------------------------------------------------------- the library
def test_model_size_image_is_used_as_it_is():
    img = _ramp(224, 224)
    x = to_model_tensor(img, 224, 256, "bicubic")
    assert torch.equal(x, pil_to_tensor(img))  # every pixel unchanged
    plan = plan_preprocessing(img.size, 224, 256)
    assert plan.as_is and plan.describe() == "used as it is (already 224 × 224 pixels, the model's input size)"
    # Inception-v3 at 299: the same rule with its own size.
    assert plan_preprocessing((299, 299), 299, 342).as_is
    assert not plan_preprocessing((224, 224), 299, 342).as_is


@pytest.mark.parametrize("size, resized, crop", [
    ((451, 300), (384, 256), (80, 16, 304, 240)),   # the cat: landscape
    ((224, 300), (256, 342), (16, 59, 240, 283)),   # short side already 224, but not square
    ((256, 256), None, (16, 16, 240, 240)),         # already 256: cropped only
    ((225, 225), (256, 256), (16, 16, 240, 240)),   # one pixel off: the usual path
])
def test_other_sizes_are_resized_and_centre_cropped(size, resized, crop):
    plan = plan_preprocessing(size, 224, 256)
    assert (plan.resized_to, plan.crop) == (resized, crop) and not plan.as_is
    img = _ramp(*size)
    expected = img.resize(resized, Image.Resampling.BICUBIC) if resized else img
    assert torch.equal(to_model_tensor(img, 224, 256, "bicubic"), pil_to_tensor(expected.crop(crop)))
    text = plan.describe()
    assert "centre-cropped to 224 × 224" in text
    assert (f"resized to {resized[0]} × {resized[1]}" in text) if resized else "not resized" in text


def test_png_of_an_adversarial_image_reads_back_bit_exact(model):
    from pd_core.attacks import attack
    from pd_core.images import gallery_image, load_image

    x = load_image(gallery_image("coffee").path, spec=model.spec)
    label = torch.tensor([967])
    adv = attack(model, x, label, "fgsm", eps=2 / 255).adversarial
    back = to_model_tensor(open_image(to_png_bytes(adv)), 224, 256, "bicubic")
    assert torch.equal(back, adv)
    with torch.no_grad():
        assert int(model(back).argmax()) == int(model(adv).argmax()) != 967
        # What the old path (resize to 256, crop to 224) did to the same file: the attack is gone.
        old = tensor_to_pil(adv).resize((256, 256), Image.Resampling.BICUBIC).crop((16, 16, 240, 240))
        assert int(model(pil_to_tensor(old)).argmax()) == 967


# ----------------------------------------------------------------------------- the command line
def _cli(*args: str) -> dict:
    env = {**os.environ, "PD_THREADS": os.environ.get("PD_THREADS", "1")}
    done = subprocess.run([sys.executable, "-m", "pd_core", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_attack_out_then_classify_gives_the_adversarial_top1(tmp_path):
    from pd_core.images import gallery_image

    photo = str(gallery_image("coffee").path)
    adv = tmp_path / "adv.png"
    report = _cli("attack", photo, "--attack", "fgsm", "--eps", "2", "--out", str(adv), "--json")
    assert report["success"] and report["clean_top5"][0]["index"] == 967
    adversarial = report["adversarial_top5"][0]
    assert adversarial["index"] != 967
    assert Image.open(adv).size == (224, 224)
    classified = _cli("classify", str(adv), "--json")
    assert classified["top5"][0]["index"] == adversarial["index"]
    assert classified["top5"][0]["prob"] == pytest.approx(adversarial["prob"], abs=1e-4)


def test_defend_out_then_classify_sees_the_defended_pixels(tmp_path, model):
    from pd_core.images import gallery_image

    photo = str(gallery_image("chelsea").path)
    out = tmp_path / "defended.png"
    done = subprocess.run([sys.executable, "-m", "pd_core", "defend", photo, "--out", str(out), "--seed", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    classified = _cli("classify", str(out), "--json")
    pixels = pil_to_tensor(open_image(out))
    with torch.no_grad():
        probs = model(pixels).softmax(-1)[0]
    assert classified["top5"][0]["index"] == int(probs.argmax())
    assert classified["top5"][0]["prob"] == pytest.approx(float(probs.max()), abs=1e-4)


# ----------------------------------------------------------------------------- the app
def test_app_download_of_the_attacked_photo_uploaded_again_keeps_the_attack(monkeypatch):
    """Attack & Defend with FGSM at 2/255 on the default photo (strawberry, 949 -> 992); the bytes
    the page offers as "Attacked photo (PNG)" go back through the page's own upload widget, and the
    model's answer on that upload is the attacked answer (the old path said strawberry again)."""
    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.testing.v1 import AppTest

    offered: dict[str, bytes] = {}
    add = MediaFileManager.add

    def recording_add(self, path_or_data, mimetype, coordinates, file_name=None, *args, **kwargs):
        if file_name and isinstance(path_or_data, bytes):
            offered[file_name] = path_or_data
        return add(self, path_or_data, mimetype, coordinates, file_name, *args, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add", recording_add)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.run()
    at.switch_page("pages/attack_defend.py").run()
    assert any("for the model: resized to" in c.value for c in at.caption)  # the gallery photo is not 224 x 224
    at.slider(key="attack_param_fgsm_eps").set_value(2.0).run()
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    first = at.session_state["attack_result"].result
    assert first.attack_params["eps"] == pytest.approx(2 / 255)
    assert first.predictions["clean"] == 949 and first.predictions["adversarial"] != 949
    (name,) = [n for n in offered if n.endswith("_adversarial.png")]
    data = offered[name]
    assert Image.open(io.BytesIO(data)).size == (224, 224)

    at.radio(key="image_source").set_value("Upload your own").run()
    at.file_uploader(key="uploader").set_value((name, data, "image/png")).run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    current = at.session_state["current_image"]
    assert current.source == "upload" and current.name == name
    assert any("for the model: used as it is (already 224 × 224 pixels" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    again = at.session_state["attack_result"].result
    assert again.image_name == name
    assert again.predictions["clean"] == first.predictions["adversarial"]
    assert torch.equal(again.images["clean"], first.images["adversarial"])
