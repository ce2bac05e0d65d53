"""The server's story cache (ui.cache.ResultCache) and the warm-up's default story.

The warm-up computes the one-click story before anyone asks; it only helps if it files it under
the very key a fresh session's Run asks for, with the same numbers. The cache computes a key once
even when two threads ask together.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

os.environ["PD_WARM_UP"] = "0"

ROOT = Path(__file__).resolve().parent.parent


def test_cache_computes_each_key_once_and_forgets_the_oldest():
    from ui.cache import ResultCache

    cache = ResultCache(size=2)
    calls: list[str] = []

    def slow(name: str):
        def compute():
            calls.append(name)
            time.sleep(0.2)
            return name.upper()
        return compute

    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute(("a",), slow("a"))))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["A", "A", "A"] and calls == ["a"]  # three askers, one computation
    cache.get_or_compute(("b",), slow("b"))
    cache.get_or_compute(("c",), slow("c"))  # size 2: "a" (least recently used) goes
    assert cache.get(("a",)) is None and cache.get(("b",)) == "B" and cache.get(("c",)) == "C"


def test_a_failed_computation_is_not_cached():
    from ui.cache import ResultCache

    cache = ResultCache()

    def fails():
        raise RuntimeError("no")

    for _ in range(2):
        try:
            cache.get_or_compute(("x",), fails)
        except RuntimeError:
            pass
    assert cache.get(("x",)) is None
    assert cache.get_or_compute(("x",), lambda: 1) == 1


def test_warm_up_files_the_story_a_fresh_session_asks_for(model):
    from streamlit.testing.v1 import AppTest

    from ui.cache import ResultCache
    from ui.story import warm_default_story

    warmed = ResultCache()
    warm_default_story(model, str(model.device), warmed)
    (key,) = list(warmed.snapshot())

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.run()
    at.switch_page("pages/attack_defend.py").run()
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception and not at.error
    asked = at.session_state["attack_result"]
    assert asked.settings_key == key
    ready = warmed.get(key).result
    assert ready.predictions == asked.result.predictions
    assert ready.probs["ensemble"].equal(asked.result.probs["ensemble"])
