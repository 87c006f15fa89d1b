"""PNG grids that say what they show: a title, a label on every row and
every column, small images scaled up (nearest neighbour) to be readable."""
from typing import Optional, Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def _font(size: int):
    try:  # Pillow >= 10.1 scales its built-in font
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _to_pil(img: torch.Tensor, scale: int) -> Image.Image:
    arr = (img.detach().float().clamp(0, 1) * 255).round().byte()
    pil = Image.fromarray(arr.permute(1, 2, 0).cpu().numpy())
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale),
                         Image.NEAREST)
    return pil


def labelled_grid(rows: Sequence[torch.Tensor],
                  row_labels: Optional[Sequence[str]] = None,
                  col_labels: Optional[Sequence[str]] = None,
                  title: Optional[str] = None, min_cell: int = 64,
                  pad: int = 2) -> Image.Image:
    """A grid image: ``rows`` is a list of (N, 3, H, W) tensors in [0, 1],
    one per row, all with N images. Cells smaller than ``min_cell`` pixels
    are scaled up by an integer factor."""
    n_cols = len(rows[0])
    if any(len(r) != n_cols for r in rows):
        raise ValueError(f'every row needs {n_cols} images, got '
                         f'{[len(r) for r in rows]}')
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f'{len(row_labels)} row labels for {len(rows)} '
                         'rows')
    if col_labels is not None and len(col_labels) != n_cols:
        raise ValueError(f'{len(col_labels)} column labels for {n_cols} '
                         'columns')
    h, w = rows[0].shape[-2:]
    scale = max(1, -(-min_cell // max(h, w)))
    ch, cw = h * scale, w * scale
    font = _font(max(11, min(16, ch // 5)))
    measure = ImageDraw.Draw(Image.new('RGB', (1, 1)))

    def size(text):
        box = measure.textbbox((0, 0), text, font=font)
        return box[2] - box[0], box[3] - box[1]

    line = size('Ag')[1] + 6
    left = (max(size(t)[0] for t in row_labels) + 8) if row_labels else 0
    top = (line if title else 0) + (line if col_labels else 0)
    width = max(left + n_cols * (cw + pad) + pad,
                (size(title)[0] + 8) if title else 0)
    height = top + len(rows) * (ch + pad) + pad
    canvas = Image.new('RGB', (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = 2
    if title:
        draw.text((4, y), title, fill=INK, font=font)
        y += line
    if col_labels:
        for j, text in enumerate(col_labels):
            x = left + pad + j * (cw + pad) + (cw - size(text)[0]) // 2
            draw.text((max(left, x), y), text, fill=INK, font=font)
    for i, row in enumerate(rows):
        y0 = top + pad + i * (ch + pad)
        if row_labels:
            draw.text((4, y0 + (ch - size(row_labels[i])[1]) // 2),
                      row_labels[i], fill=INK, font=font)
        for j in range(n_cols):
            canvas.paste(_to_pil(row[j], scale),
                         (left + pad + j * (cw + pad), y0))
    return canvas


def save_labelled_grid(path: str, rows, row_labels=None, col_labels=None,
                       title=None, **kwargs) -> str:
    """Write :func:`labelled_grid` to ``path`` (PNG); returns the path."""
    labelled_grid(rows, row_labels, col_labels, title, **kwargs).save(path)
    return path
