"""Loss curves as PNG with Pillow only (no plotting stack in the image)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]


def plot_curves(path: str | Path, curves: dict[str, list[tuple[float, float]]], title: str,
                size: tuple[int, int] = (640, 400)) -> Path:
    """Draw (x, y) series on shared axes; y range from the data, x from 0 to the last step."""
    width, height = size
    margin_l, margin_r, margin_t, margin_b = 60, 20, 30, 40
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    points = [p for series in curves.values() for p in series]
    if not points:
        raise ValueError("nothing to plot")
    x_max = max(x for x, _ in points) or 1.0
    y_min, y_max = min(y for _, y in points), max(y for _, y in points)
    if y_max == y_min:
        y_max = y_min + 1.0
    to_px = lambda x, y: (margin_l + (width - margin_l - margin_r) * x / x_max,  # noqa: E731
                          height - margin_b - (height - margin_t - margin_b) * (y - y_min) / (y_max - y_min))
    draw.rectangle([margin_l, margin_t, width - margin_r, height - margin_b], outline="black")
    for frac in (0.0, 0.5, 1.0):
        y = y_min + frac * (y_max - y_min)
        _, py = to_px(0, y)
        draw.text((4, py - 6), f"{y:.3g}", fill="black")
    draw.text((width - margin_r - 60, height - margin_b + 8), f"step {int(x_max)}", fill="black")
    draw.text((margin_l, 8), title, fill="black")
    for i, (name, series) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        if len(series) > 1:
            draw.line([to_px(x, y) for x, y in series], fill=colour, width=2)
        draw.text((margin_l + 8 + 150 * i, margin_t + 6), name, fill=colour)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
