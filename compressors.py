"""General-purpose compressors on the same 8-bit images the bits-back codes send.

A leaf module: it knows no model.  Each compressor (gzip, bz2 and lzma at their strongest
settings, PNG optimised) gets the set of images in three natural byte orders and keeps the
shortest, so that a learned code is held against each compressor's best.
"""

import numpy as np

COMPRESSORS = ("gzip", "bz2", "lzma", "png")


def image_layouts(V, height, width):
    """The 8-bit images V (N, height * width) as 2-D byte arrays in three natural orders of
    the whole set: "rows" (image after image, each row by row), "columns" (each column by
    column) and "pixels" (pixel by pixel across the images: the set transposed)."""
    images = V.reshape(-1, height, width)
    return {"rows": images.reshape(-1, width),
            "columns": np.ascontiguousarray(images.transpose(0, 2, 1)).reshape(-1, height),
            "pixels": np.ascontiguousarray(V.T)}


def baseline_bits(V, height, width, names=COMPRESSORS):
    """Bits per image of general-purpose compressors (`names`) on the 8-bit images V (N,
    height * width), each given the layout (image_layouts) it codes shortest; "layout" names
    the one each got."""
    import bz2
    import gzip
    import io
    import lzma
    from PIL import Image

    def png(a):
        out = io.BytesIO()
        Image.fromarray(a).save(out, format="PNG", optimize=True)
        return out.getvalue()
    code = {"gzip": lambda a: gzip.compress(a.tobytes(), 9, mtime=0),
            "bz2": lambda a: bz2.compress(a.tobytes(), 9),
            "lzma": lambda a: lzma.compress(a.tobytes(), preset=9 | lzma.PRESET_EXTREME),
            "png": png}
    layouts = image_layouts(V, height, width)
    out, best = {}, {}
    for name in names:
        sizes = {layout: len(code[name](a)) for layout, a in layouts.items()}
        best[name] = min(sizes, key=sizes.get)
        out[name] = 8.0 * sizes[best[name]] / len(V)
    return {**out, "layout": best}
