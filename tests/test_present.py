"""The Present page: its pictures and sentences (against oracles), the server-wide warm-up, the page
through AppTest (every step's sentence and picture, Next/Back), an upload replaying the steps.

One run of the story photo is computed for the whole module, by the warm-up itself
(:func:`ui.present_store.warm_gallery` on a one-photo gallery), and the page tests find it in the
server-wide store: that the page draws it without recomputing is part of what they check.
"""
from __future__ import annotations

import html
import io
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

os.environ["PD_WARM_UP"] = "0"  # no background warm-up thread in the test process

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
TIMEOUT = 400


# --- pictures ------------------------------------------------------------------------------------

def test_heat_colours_are_the_anchors_and_get_brighter():
    from ui.present_run import _HEAT_ANCHORS, heat_colours

    ends = heat_colours(np.array([0.0, 1.0, -3.0, 7.0]))
    assert ends[0].tolist() == _HEAT_ANCHORS[0].tolist() and ends[1].tolist() == _HEAT_ANCHORS[-1].tolist()
    assert ends[2].tolist() == ends[0].tolist() and ends[3].tolist() == ends[1].tolist()  # clipped
    ramp = heat_colours(np.linspace(0, 1, 101)).astype(float)
    luminance = ramp @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(luminance) > -1e-9)  # dark to light: "more" always reads brighter
    mid = heat_colours(np.array([0.125]))[0]  # halfway between anchors 0 and 1
    assert np.abs(mid - (_HEAT_ANCHORS[0] + _HEAT_ANCHORS[1]) / 2).max() <= 0.5


def test_perturbation_pictures():
    from ui.present_run import amplified, perturbation_heatmap

    delta = torch.zeros(3, 8, 8)
    delta[1, 2, 5] = 6 / 255
    delta[0, 4, 4] = -3 / 255
    heat, peak = perturbation_heatmap(delta)
    assert peak == pytest.approx(2.0)  # the channel mean at (2, 5): 6/255 / 3
    assert heat[2, 5].tolist() == [178, 24, 43]  # the brightest change: the red end
    assert np.abs(heat[4, 4].astype(int) - [140, 174.5, 209.5]).max() <= 1  # darker by half the peak: halfway to blue
    assert heat[0, 0].tolist() == [247, 247, 247]  # unchanged: near-white
    shown = amplified(delta, 20.0)
    assert shown[0, 0].tolist() == [128, 128, 128]  # unchanged pixels are grey
    assert abs(int(shown[2, 5, 1]) - (127.5 + 20 * 6)) <= 0.5  # 0.5 + 20·δ, in /255
    assert abs(int(shown[4, 4, 0]) - (127.5 - 20 * 3)) <= 0.5


def test_marked_pixels_paints_exactly_the_deflected_positions():
    from ui.present_run import MARK_COLOUR, marked_pixels

    image = torch.full((3, 10, 10), 0.25)
    y, x = torch.tensor([3, 7]), torch.tensor([4, 0])
    rgb = marked_pixels(image, y, x, scale=2)
    assert rgb.shape == (20, 20, 3)
    painted = np.all(rgb == MARK_COLOUR, axis=-1)
    expected = np.zeros((20, 20), bool)
    expected[5:9, 7:11] = True   # pixel (3, 4) -> rows 6-7, cols 8-9, plus a one-pixel ring
    expected[13:17, 0:3] = True  # pixel (7, 0) at the left edge: the ring stops at column 0
    assert (painted == expected).all()
    assert (rgb[~painted] == 64).all()  # the rest is the photo (0.25 -> 64), upscaled


# --- sentences: written from the outcome, never from the hoped-for story ----------------------------

def _fake_run(clean=949, adversarial=992, defended=949, ensemble=949, adaptive_single=794, adaptive_ensemble=794,
              label=949, source="dataset"):
    probs = torch.full((1000,), 0.0)
    probs[[clean, adversarial, defended, ensemble]] = 0.2
    story = SimpleNamespace(label=label, label_source=source, n_ensemble=10, ensemble_agreement=0.7,
                            predictions={"clean": clean, "adversarial": adversarial, "defended": defended,
                                         "ensemble": ensemble},
                            probs={"clean": probs, "adversarial": probs, "defended": probs},
                            norms={"adversarial": {"linf_255": 8.0}}, config=SimpleNamespace(deflections=100))
    adaptive = SimpleNamespace(label=label, ensemble=10,
                               predictions={"adversarial_single": adaptive_single,
                                            "adversarial_ensemble": adaptive_ensemble})
    return SimpleNamespace(story=story, adaptive=adaptive, factor=20.0, peak_255=8.0)


def test_sentences_follow_the_outcome():
    from ui import present_steps as steps

    story_run = _fake_run()
    assert "which is right" in steps.step_clean(story_run)
    from pd_core.labels import label_name

    assert f"now the model says “{label_name(992)}”" in steps.step_attacked(story_run)
    assert "the answer is back" in steps.step_recovered(story_run)
    assert "even through the defence" in steps.step_adaptive(story_run)
    assert "not an attacker who knows it" in steps.step_closing(story_run)

    lost = _fake_run(defended=992, ensemble=992)
    assert "does not win" in steps.step_recovered(lost) and "neither undid" in steps.step_closing(lost)
    failed = _fake_run(adversarial=949)
    assert "the attack failed" in steps.step_attacked(failed)
    wrong = _fake_run(clean=948)
    assert "already wrong" in steps.step_clean(wrong)
    held = _fake_run(adaptive_single=949, adaptive_ensemble=949)
    assert "the defence holds" in steps.step_adaptive(held) and "the defence held" in steps.step_closing(held)
    upload = _fake_run(source="clean prediction")
    assert "right" not in steps.step_clean(upload)  # nothing to be right about without a true class


def test_leaderboard_step_reads_the_arena_file_or_says_it_is_missing(tmp_path, monkeypatch):
    from pd_core.leaderboard import Accuracy, Entry, Leaderboard
    from ui import present_steps as steps

    path = tmp_path / "board.json"
    monkeypatch.setenv("PD_LEADERBOARD_FILE", str(path))
    assert steps.load_board() == (None, None)
    assert "has not been computed" in steps.step_leaderboard(None)
    entries = [Entry(defence=name, title=name, source="", n=20, judge="single", randomised=False,
                     clean=Accuracy(15, 20), looks_robust={4.0: Accuracy(12, 20)}, is_robust={4.0: Accuracy(c, 20)})
               for name, c in (("jpeg", 1), ("pixel_deflection", 2))]
    Leaderboard(entries=entries, eps_255=(4.0,), model="efficientnet_lite0").write_json(path)
    board, problem = steps.load_board()
    assert problem is None and {e.defence for e in board.entries} == {"jpeg", "pixel_deflection"}
    assert steps.step_leaderboard(None).startswith("2 defences")
    path.write_text("{broken")
    assert "cannot be read" in steps.step_leaderboard(None)


# --- the run, made by the warm-up ----------------------------------------------------------------

@pytest.fixture(scope="module")
def story_run():
    """The story photo's run, computed by the warm-up into the server-wide store."""
    import pd_core.images
    from pd_core.defence import DefenceConfig
    from pd_core.models import DEFAULT_MODEL
    from ui import present_store
    from ui.state import DEFAULT_GALLERY_STEM, ENSEMBLE_SIZE

    entry = pd_core.images.gallery_image(DEFAULT_GALLERY_STEM)
    mp = pytest.MonkeyPatch()
    mp.setattr(pd_core.images, "gallery", lambda: [entry])
    try:
        assert present_store.warm_gallery("cpu", idle_poll=0.05, quiet_s=0.1) == 1
    finally:
        mp.undo()
    assert present_store.warm_up_status() == {"done": 1, "total": 1, "running": None}
    run = present_store.get(present_store.run_key(f"gallery:{entry.path}", DEFAULT_MODEL, "cpu", 0, DefenceConfig(),
                                                  ENSEMBLE_SIZE))
    assert run is not None
    return run


def _decode(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_the_run_holds_the_story_and_its_pictures(story_run):
    from pd_core.visuals import to_hwc_uint8
    from ui.present_run import ADAPTIVE_EOT, ADAPTIVE_EPS_255, ADAPTIVE_STEPS

    s, a = story_run.story, story_run.adaptive
    assert (s.attack, s.preset, s.seed, s.label_source) == ("fgsm", "paper", 0, "dataset")
    assert s.label == a.label == 949
    assert a.attack.params["eps_255"] == pytest.approx(ADAPTIVE_EPS_255)
    assert a.attack.params["eot"] == ADAPTIVE_EOT and a.attack.steps_done <= ADAPTIVE_STEPS
    # The adaptive photo stays within its budget of the clean one.
    assert float((a.adversarial - s.images["clean"]).abs().max()) <= ADAPTIVE_EPS_255 / 255 + 1e-6
    for name, tensor in (("clean", s.images["clean"]), ("adversarial", s.images["adversarial"]),
                         ("defended", s.images["defended"]), ("adaptive", a.adversarial)):
        assert (_decode(story_run.pictures[name]) == to_hwc_uint8(tensor)).all(), name
    delta = s.images["adversarial"] - s.images["clean"]
    assert story_run.peak_255 == pytest.approx(float(delta.mean(0).abs().max()) * 255, rel=1e-5)
    deflected = _decode(story_run.pictures["deflected"])
    assert deflected.shape[:2] == (2 * 224, 2 * 224)
    marks = np.all(deflected == (255, 0, 255), axis=-1)
    ys, xs = s.deflections["y"].numpy(), s.deflections["x"].numpy()
    assert marks[ys * 2, xs * 2].all() and len(ys) == s.config.deflections


def test_the_warm_up_gives_way_to_a_visitor(monkeypatch):
    """While a visitor holds the device or waits for it, and for the quiet period after, the
    warm-up starts nothing."""
    import threading
    import time

    import pd_core.images
    from pd_core.scheduler import queue_for
    from ui import present_store

    monkeypatch.setattr(pd_core.images, "gallery", lambda: [pd_core.images.gallery_image("coffee")])
    started = []
    monkeypatch.setattr("ui.present_run.compute_presentation", lambda *a, **k: started.append(1))
    stop = threading.Event()
    queue = queue_for("cpu")
    with queue.slot():  # a visitor's attack is running
        worker = threading.Thread(target=present_store.warm_gallery, args=("cpu",),
                                  kwargs={"stop": stop, "idle_poll": 0.01, "quiet_s": 30.0})
        worker.start()
        worker.join(timeout=1.0)
        assert not started and worker.is_alive()  # it waited
    time.sleep(0.5)
    assert not started and worker.is_alive()  # the device is free, but not yet for 30 s
    stop.set()
    worker.join(timeout=10)
    assert not worker.is_alive() and not started


def test_visitor_activity_counts_runs_and_the_quiet_after_them():
    import time

    from ui import activity

    assert activity.active() == 0
    with activity.visitor_run():
        with activity.visitor_run():  # two visitors' pages at once
            assert activity.active() == 2 and activity.idle_for() == 0.0
        assert activity.active() == 1 and activity.idle_for() == 0.0
    assert activity.active() == 0
    assert 0.0 <= activity.idle_for() < 5.0
    with pytest.raises(RuntimeError):
        with activity.visitor_run():  # a page that fails (or is rerun) still ends its run
            raise RuntimeError("the page raised")
    assert activity.active() == 0
    time.sleep(0.2)
    assert activity.idle_for() >= 0.2


def test_the_warm_up_waits_while_a_visitors_page_runs_and_gives_way_to_one(monkeypatch):
    """A visitor's page (not only their device work) keeps the warm-up from starting, for the
    quiet period after it too; and a page starting while a photo is computed stops that photo at
    its next check, which is tried again later."""
    import threading
    import time

    import pd_core.images
    from pd_core.attacks import AttackCancelled
    from ui import activity, present_store

    monkeypatch.setattr(pd_core.images, "gallery", lambda: [pd_core.images.gallery_image("coffee")])
    monkeypatch.setattr(present_store, "_runs", {})
    calls, gave_way, page_running = [], [], threading.Event()

    def compute(*args, should_stop, **kwargs):
        calls.append(should_stop())
        if len(calls) == 1:  # the first try: a visitor's page starts while it computes
            page_running.set()
            deadline = time.monotonic() + 5
            while not should_stop() and time.monotonic() < deadline:
                time.sleep(0.01)
            gave_way.append(should_stop())
            raise AttackCancelled("stopped after the story")
        return "the run"

    monkeypatch.setattr("ui.present_run.compute_presentation", compute)
    stop = threading.Event()
    with activity.visitor_run():  # a visitor's page is being drawn: nothing starts
        worker = threading.Thread(target=present_store.warm_gallery, args=("cpu",),
                                  kwargs={"stop": stop, "idle_poll": 0.01, "quiet_s": 0.3})
        worker.start()
        time.sleep(0.5)
        assert not calls
    started = time.monotonic()
    assert page_running.wait(timeout=10)  # it started only after the quiet period...
    assert time.monotonic() - started >= 0.25
    with activity.visitor_run():  # ...and a new page makes it give way
        time.sleep(0.3)
        assert len(calls) == 1
    worker.join(timeout=20)
    stop.set()
    assert not worker.is_alive()
    assert gave_way == [True]  # the visitor's page, not the deadline, stopped the first try
    assert calls == [False, False]  # the photo was tried again when the server was quiet, and kept
    entry = pd_core.images.gallery_image("coffee")
    assert any(key[0] == f"gallery:{entry.path}" and run == "the run" for key, run in present_store._runs.items())


def test_the_presentation_stops_between_its_stages(monkeypatch):
    """``should_stop`` turning true during the story stops the run before the adaptive attack."""
    import pd_core.adaptive
    import pd_core.story
    from pd_core.attacks import AttackCancelled
    from ui.present_run import compute_presentation

    asked = {"stop": False}

    def story(*args, **kwargs):
        asked["stop"] = True  # a visitor arrives while the story is computed
        return SimpleNamespace(label=1)

    adaptive_runs = []
    monkeypatch.setattr(pd_core.story, "attack_and_defend", story)
    monkeypatch.setattr(pd_core.adaptive, "adaptive_demo", lambda *a, **k: adaptive_runs.append(1))
    monkeypatch.setattr("pd_core.defences.create_defence", lambda *a, **k: None)
    with pytest.raises(AttackCancelled, match="after the story"):
        compute_presentation(None, torch.zeros(1, 3, 8, 8), 1, should_stop=lambda: asked["stop"])
    assert not adaptive_runs


def test_the_story_stops_after_its_attack_when_asked(model, monkeypatch):
    """The stop is checked between the attack and the defence: the defence never runs."""
    import pd_core.story.pipeline as pipeline
    from pd_core.attacks import AttackCancelled
    from pd_core.images import gallery_image, load_image

    entry = gallery_image("coffee")
    x = load_image(entry.path, spec=model.spec, device=model.device)
    defended = []
    monkeypatch.setattr(pipeline, "_defend_story", lambda *a, **k: defended.append(1))
    progress = []
    with pytest.raises(AttackCancelled, match="after the attack"):
        pipeline.attack_and_defend(model, x, entry.label_index, attack="fgsm", preset="paper",
                                   progress=lambda f, m: progress.append(f),
                                   should_stop=lambda: bool(progress) and progress[-1] >= 0.8)
    assert not defended and progress[-1] == pytest.approx(0.8)


# --- the page ------------------------------------------------------------------------------------

def _present_app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/present.py").run()
    return at


def _assert_clean(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _step_block(at, number: int):
    blocks = [b for b in at.main.children.values() if getattr(b, "key", None) == f"present_step_{number}"]
    assert len(blocks) == 1, f"step {number} is not the one shown"
    return blocks[0]


def _texts(block) -> str:
    return " ".join(m.value for m in block.get("markdown"))


def test_every_step_has_its_sentence_and_picture_and_next_back_move(story_run):
    from ui.present_steps import STEPS

    at = _present_app()
    _assert_clean(at)
    assert not at.get("progress") or all("Preparing" not in p.proto.text for p in at.get("progress"))
    back = at.button(key="present_back")
    assert back.disabled  # nothing before step 1
    expected_images = {"clean": 1, "attacked": 1, "perturbation": 2, "slider": 0, "deflection": 3, "recovered": 1,
                       "adaptive": 1, "leaderboard": 0, "closing": 4}
    for number, step in enumerate(STEPS, start=1):
        block = _step_block(at, number)
        text = _texts(block)
        assert html.escape(step.title) in text
        assert html.escape(step.sentence(story_run)) in text
        assert len(block.get("image")) == expected_images[step.key], step.key
        if step.key == "slider":
            frames = [f for f in block.get("iframe")]
            assert len(frames) == 1
            source = frames[0].proto.srcdoc if hasattr(frames[0], "proto") else ""
            import base64

            for name in ("clean", "adversarial"):
                assert base64.b64encode(story_run.pictures[name]).decode() in source
        if number < len(STEPS):
            at.button(key="present_next").click().run()
            _assert_clean(at)
    assert at.button(key="present_next").disabled  # nothing after the last step
    at.button(key="present_back").click().run()
    _step_block(at, len(STEPS) - 1)
    at.button(key="present_back").click().run()
    _step_block(at, len(STEPS) - 2)
    handout = at.get("download_button")
    assert len(handout) == 1


def test_handout_sums_up_the_run(story_run):
    from ui.present_handout import handout_html
    from ui.present_steps import STEPS

    page = handout_html(story_run)
    for step in STEPS:
        assert html.escape(step.sentence(story_run)) in page
    assert page.count("<img ") == 4
    from pd_core.cli.options import demo_command

    assert html.escape(demo_command(story_run.story)) in page


def test_an_upload_replays_the_steps(story_run):
    from PIL import Image

    from pd_core.images import gallery_image
    from ui.present_steps import step_clean

    at = _present_app()
    at.button(key="present_next").click().run()
    _step_block(at, 2)
    photo = Image.open(gallery_image("coffee").path).convert("RGB")
    buf = io.BytesIO()
    photo.save(buf, format="PNG")
    at.radio(key="image_source").set_value("Upload your own").run()
    at.file_uploader(key="uploader").set_value(("volunteer.png", buf.getvalue(), "image/png")).run()
    _assert_clean(at)
    block = _step_block(at, 1)  # the story starts again on the new photo
    run = at.session_state["present_upload_runs"]
    (upload_run,) = run.values()
    assert upload_run.story.label_source == "clean prediction" and upload_run.image_name == "volunteer.png"
    assert html.escape(step_clean(upload_run)) in _texts(block)
    assert len(block.get("image")) == 1
