"""Lecture mode: the Story one step per screen, for a teacher at a projector.

Switched on by the sidebar's toggle or a link with ``?mode=lecture``; the step shown is in the
link too (``&slide=3``), so a reload or a saved link resumes the lecture where it stopped. A
slide is the step's title, its chart at one height that fits 1024x768 with everything else
(:data:`explorer.figures.story.LECTURE`), its two sentences in large type and the buttons,
which the arrow keys press. Its look (no header, tabs or sidebar; large type) is in
``explorer/style.css``, under the ``st-key-lecture`` container this view draws.
"""

from __future__ import annotations

import streamlit as st

from explorer import state as keys
from explorer.figures.common import md
from explorer.figures.story import LECTURE, label
from explorer.views import story
from explorer.views.common import Context, link_warning, read_help, url_choice

SLIDES = [str(k) for k in range(1, len(story.STEPS) + 1)]
"""The values ``slide`` may take in a link: the steps, 1-based as the Story numbers them."""


def wanted() -> bool:
    """Whether this run of the script is a lecture: the toggle's value once drawn, else the
    link's (``set_page_config`` asks before the sidebar is drawn, to collapse it)."""
    if keys.LECTURE in st.session_state:
        return bool(st.session_state[keys.LECTURE])
    return st.query_params.get(keys.MODE) == keys.LECTURE_MODE


def switch() -> bool:
    """The sidebar's toggle, started from the link and written back to it; True in lecture mode.
    A link's ``mode`` other than "lecture" is reported and ignored."""
    mode = st.query_params.get(keys.MODE)
    if keys.LECTURE not in st.session_state:
        if mode not in (None, keys.LECTURE_MODE):
            link_warning(mode, what="the mode", whose="PRM Explorer", options=[keys.LECTURE_MODE],
                         default="the usual page")
        st.session_state[keys.LECTURE] = mode == keys.LECTURE_MODE
    on = st.sidebar.toggle("Lecture mode", key=keys.LECTURE, help=read_help("lecture"))
    if on:
        st.query_params[keys.MODE] = keys.LECTURE_MODE
    else:
        for key in (keys.MODE, keys.SLIDE):
            st.query_params.pop(key, None)
    return on


def _go(slide: int) -> None:
    st.session_state[keys.SLIDE] = SLIDES[slide - 1]


def _end() -> None:
    st.session_state[keys.LECTURE] = False


def _buttons(slide: int, ctx: Context) -> None:
    """Previous and Next (the arrow keys), where the lecture is, and the way out (Esc)."""
    back, where, on, out = st.columns([2, 4, 2, 3], vertical_alignment="center")
    back.button("Previous", key="lecture-previous", on_click=_go, args=(slide - 1,), disabled=slide == 1,
                icon=":material/arrow_back:", shortcut="Left", width="stretch")
    where.markdown(f"step {slide} of {len(SLIDES)} · {md(label(ctx.run.meta['config']['method']))} on "
                   f"{md(ctx.entry.sequence)}, seed {ctx.entry.seed}")
    on.button("Next", key="lecture-next", on_click=_go, args=(slide + 1,), disabled=slide == len(SLIDES),
              icon=":material/arrow_forward:", shortcut="Right", width="stretch", type="primary")
    out.button("End lecture", key="lecture-end", on_click=_end, shortcut="Esc",
               icon=":material/close_fullscreen:", width="stretch")


def render(ctx: Context) -> None:
    """One step of the Story, as large as the screen allows."""
    url_choice(keys.SLIDE, SLIDES, SLIDES[0], what="the step", whose="the Story")
    slide = int(st.session_state[keys.SLIDE])
    st.query_params[keys.SLIDE] = SLIDES[slide - 1]
    with st.container(key="lecture"):
        st.markdown(f"## {md(story.STEPS[slide - 1])}")
        story.steps(ctx)[slide - 1](size=LECTURE)
        _buttons(slide, ctx)
