"""Streamlit helpers shared by the pages of the app (``pd_core`` does the work; this package draws).

- :mod:`ui.state`: session-state keys, defaults, the current image and the last results.
- :mod:`ui.sidebar`: the sidebar every page shares (model, device, seed, defence parameters).
- :mod:`ui.cache`: ``st.cache_resource`` model loading and the gallery.
- :mod:`ui.compute`: heavy work through the device queue, with errors in plain words.
- :mod:`ui.images`: gallery or upload.
- :mod:`ui.story`: the attack controls and the Attack & Defend run.
- :mod:`ui.components`: result cards, maps, perturbations, norms, downloads, command line.

A new page (``pages/<name>.py``) starts with ``settings = ui.sidebar.settings()`` and is
registered in ``app.py``'s ``PAGES`` list.
"""
