"""Choosing the current image: a gallery photo or an upload, with plain-language errors.

:func:`accept_upload` is the whole upload logic on plain bytes (tested directly and through the
page): a good file becomes the current image; a bad one leaves the previous image in place and
returns the one-sentence :class:`pd_core.images.ImageError` message.
"""
from __future__ import annotations

import io

import streamlit as st

from . import state
from .cache import gallery_images, gallery_pil

UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif"]
LAST_UPLOAD = "last_good_upload"
SOURCE = "image_source"
GALLERY_CHOICE = "gallery_choice"


def gallery_current(path: str | None = None):
    """The gallery photo at ``path`` (default: the story's photo) as a CurrentImage."""
    images = gallery_images()
    if not images:
        return None
    chosen = next((g for g in images if str(g.path) == path), None) if path else None
    if chosen is None:
        chosen = next((g for g in images if g.path.stem == state.DEFAULT_GALLERY_STEM), images[0])
    return state.CurrentImage(name=chosen.name, source="gallery", pil=gallery_pil(str(chosen.path)),
                              label_index=chosen.label_index, path=str(chosen.path),
                              uid=f"gallery:{chosen.path}")


def ensure_image():
    """The current image, set to the default gallery photo when there is none yet."""
    image = state.current_image()
    if image is None:
        image = gallery_current()
        if image is not None:
            state.set_current_image(image)
    return image


def accept_upload(data: bytes, name: str, file_id: str) -> str | None:
    """Make an uploaded file the current image. Returns None on success, else the message to show.

    A refused file changes nothing: the previous image (and its results) stay.
    """
    from pd_core.images import ImageError, open_image

    stream = io.BytesIO(data)
    stream.name = name  # used (file name only) in the error message
    try:
        pil = open_image(stream)
    except ImageError as exc:
        return str(exc)
    image = state.CurrentImage(name=name, source="upload", pil=pil, label_index=None, path=name,
                               uid=f"upload:{file_id}")
    st.session_state[LAST_UPLOAD] = image
    state.set_current_image(image)
    return None


def image_picker() -> None:
    """Gallery or upload, drawn on the page; updates the current image in the session state."""
    ss = st.session_state
    images = gallery_images()
    default = gallery_current()
    choice = st.radio("Image", ["Gallery", "Upload your own"], horizontal=True,
                      **state.sticky(SOURCE, "Gallery"),
                      help="A labelled sample photo, or a photo of yours (PNG, JPEG, WebP, BMP, TIFF; "
                           "up to 20 MB).")
    if choice == "Gallery":
        paths = [str(g.path) for g in images]
        names = {str(g.path): f"{g.name} — true class: {g.label}" for g in images}
        st.selectbox("Gallery photo", paths, format_func=names.get,
                     **state.sticky(GALLERY_CHOICE, default.path if default else None),
                     help="Sample ImageNet photos that ship with Foolbox and scikit-image; each has a "
                          "known true class.")
        picked = ss.get(GALLERY_CHOICE)
        current = state.current_image()
        if picked and (current is None or current.uid != f"gallery:{picked}"):
            state.set_current_image(gallery_current(picked))
        return
    upload = st.file_uploader("Your photo", type=UPLOAD_TYPES, key="uploader",
                              help="Your image is only kept in this browser tab's session. A photo at the model's "
                                   "input size (224 × 224 for EfficientNet-Lite0, like the attacked "
                                   "photo you can download) is used as it is; any other is resized "
                                   "and centre-cropped.")
    if upload is not None and ss.get(state.UPLOAD_SEEN) != upload.file_id:
        ss[state.UPLOAD_SEEN] = upload.file_id
        message = accept_upload(upload.getvalue(), upload.name, upload.file_id)
        ss[state.UPLOAD_ERROR] = (upload.file_id, message) if message else None
    error = ss.get(state.UPLOAD_ERROR)
    if upload is not None and error and error[0] == upload.file_id:
        st.error(error[1] + " The previous image is still in use.", icon=":material/image_not_supported:")
    last = ss.get(LAST_UPLOAD)
    current = state.current_image()
    if last is not None and (current is None or current.source != "upload"):
        state.set_current_image(last)
    elif last is None:
        st.caption("No photo uploaded yet: the image below is still the gallery photo.")


def image_panel(upload_note: str = "") -> None:
    """The picker plus a thumbnail of the current image with its true class (shared by the pages).

    ``upload_note`` is appended to the caption shown for an upload (which has no true class)."""
    from pd_core.labels import label_name

    ensure_image()
    image_picker()
    image = state.current_image()
    if image is None:
        return
    thumb, info = st.columns([1, 2])
    with thumb:
        st.image(image.pil, width="stretch")
    with info:
        st.markdown(f"**{image.name}**")
        if image.label_index is not None:
            st.markdown(f"True class: **{label_name(image.label_index)}** ({image.label_index})")
        else:
            st.caption("No true class is known for your photo: the model's answer on the clean photo is "
                       "used as the reference" + upload_note + ".")
        st.caption(f"{image.pil.width} × {image.pil.height} pixels; for the model: {preprocessing_path(image)}.")


def preprocessing_path(image) -> str:
    """Which path ``image`` takes to the chosen model's input, in words ("used as it is (already
    224 × 224 pixels, ...)" or "resized to ... and centre-cropped to 224 × 224")."""
    from pd_core.images import plan_preprocessing
    from pd_core.models import DEFAULT_MODEL, MODELS

    spec = MODELS.get(st.session_state.get(state.MODEL, DEFAULT_MODEL)) or MODELS[DEFAULT_MODEL]
    return plan_preprocessing(image.pil.size, spec.input_size, spec.resize).describe()
