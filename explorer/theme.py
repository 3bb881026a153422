"""The page's look that Streamlit's theme settings cannot express: an icon drawn here (a
Material icon name would make the browser fetch it from a font host, and the app makes no
request outside its own server) and the layout rules of ``style.css``."""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import Image, ImageDraw

STYLE = Path(__file__).with_name("style.css")
PRIMARY = "#4C78A8"  # .streamlit/config.toml's primaryColor
MASK = ((1, 0, 1, 1), (0, 1, 1, 0), (1, 1, 0, 1), (1, 0, 0, 1))
"""The icon's picture: a 4x4 binary mask, the thing PRM learns per layer."""


@functools.cache
def icon(size: int = 64) -> Image.Image:
    """A small mask grid in the theme's colour, drawn in memory (no file, no download)."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    cell = size // len(MASK)
    for r, row in enumerate(MASK):
        for c, on in enumerate(row):
            box = (c * cell + 2, r * cell + 2, (c + 1) * cell - 3, (r + 1) * cell - 3)
            draw.rounded_rectangle(box, radius=cell // 5, fill=PRIMARY if on else None, outline=PRIMARY, width=2)
    return image


@functools.cache
def style() -> str:
    """The ``<style>`` block ``st.html`` injects (a style-only block takes no space on the page)."""
    return f"<style>\n{STYLE.read_text()}</style>"
