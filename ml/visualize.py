"""Drawing boxes onto photos: predictions in red, ground truth in green."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

Box = Sequence[float]
PREDICTION = (230, 40, 40)
GROUND_TRUTH = (40, 200, 60)


def draw_boxes(
    image: Image.Image,
    boxes: Sequence[Box],
    captions: Sequence[str] | None = None,
    colour: tuple[int, int, int] = PREDICTION,
) -> Image.Image:
    """A copy of `image` with each xyxy box outlined and captioned."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    # Line width and text size follow the photo, so boxes stay visible on 12 MP images.
    width = max(2, round(max(out.size) / 400))
    font_size = max(10, round(max(out.size) / 60))
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        if captions:
            text = captions[i]
            left, top, right, bottom = draw.textbbox((x1, y1), text, font_size=font_size)
            y = max(0.0, y1 - (bottom - top) - 2)
            draw.rectangle([x1, y, x1 + (right - left) + 4, y + (bottom - top) + 2], fill=colour)
            draw.text((x1 + 2, y), text, fill=(255, 255, 255), font_size=font_size)
    return out


def shrink(image: Image.Image, longest: int = 1024) -> Image.Image:
    """The image scaled down so its longer side is at most `longest` pixels."""
    if max(image.size) <= longest:
        return image
    scale = longest / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)))
