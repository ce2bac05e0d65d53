"""Pixel Deflection Lab: the web app. Run with ``streamlit run app.py``.

The pages live in ``pages/``; each is a thin script that draws with :mod:`ui` and computes with
:mod:`pd_core`. To add a page, add one line to ``PAGES`` below (in the order of the menu) and
start the page with ``settings = ui.sidebar.settings()`` (the shared sidebar: model, device,
seed, defence parameters). The page draws the sidebar itself rather than this file: Streamlit's
AppTest (1.67) does not re-run an st.navigation entrypoint after the first run, so a sidebar drawn
here would vanish from its element tree (a real server runs this file every time).

The menu. Streamlit treats a ``pages/`` folder beside the entry script as an old-style
multipage app: the first run of a fresh server goes through ``_mpa_v1``, which sends a menu of
the folder's *file names* ("app", "about", "adaptive", ...) before this file even starts, and
that menu stayed on screen until ``st.navigation`` below replaced it. ``.streamlit/config.toml``
therefore sets ``client.showSidebarNavigation = false`` (the file-name menu is never shown), and
this file draws the real menu itself: ``st.navigation(..., position="hidden")`` plus one
``st.page_link`` per page in the sidebar, first thing in every run.

First impression. Nothing heavy is imported here or before a page's first lines of text: torch,
the models, Foolbox, Plotly and scikit-image are imported inside the functions that need them,
and the background warm-up (:func:`ui.cache.start_warm_up`: load the default model, import the
attack stack) starts only after the first page has been drawn.
"""
from pathlib import Path

from pd_core.runtime import wait_passively

wait_passively()  # before anything imports torch: idle OpenMP threads sleep (pd_core.runtime says why)

import streamlit as st  # noqa: E402

from ui.activity import visitor_run  # light; the background warm-ups wait while a visitor's page runs

st.set_page_config(page_title="Pixel Deflection Lab", page_icon=":material/shield:", layout="wide",
                   initial_sidebar_state="expanded")

HERE = Path(__file__).parent

# (file, menu title, icon, URL path). Pages whose file does not exist yet are left out of the menu.
PAGES = [
    ("pages/home.py", "Home", ":material/home:", "home"),
    ("pages/attack_defend.py", "Attack & Defend", ":material/swords:", "attack-defend"),
    ("pages/explorer.py", "Defence Explorer", ":material/tune:", "explorer"),
    ("pages/benchmark.py", "Benchmark", ":material/table_chart:", "benchmark"),
    ("pages/adaptive.py", "Adaptive attack", ":material/gpp_bad:", "adaptive"),
    ("pages/arena.py", "Defence arena", ":material/leaderboard:", "arena"),
    ("pages/present.py", "Present", ":material/slideshow:", "present"),
    ("pages/about.py", "About the method", ":material/menu_book:", "about"),
]

pages = [st.Page(file, title=title, icon=icon, url_path=url, default=(url == "home"))
         for file, title, icon, url in PAGES if (HERE / file).is_file()]
page = st.navigation(pages, position="hidden")
with st.sidebar.container(key="pd_menu"):
    for entry in pages:
        st.page_link(entry)
    st.divider()
try:
    with visitor_run():
        page.run()
finally:
    from ui.cache import start_warm_up

    start_warm_up()  # once per server, in the background, after the first page is drawn
