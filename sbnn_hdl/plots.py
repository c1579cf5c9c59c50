"""Small helpers for the report figures (matplotlib, drawn off-screen)."""

import io

__all__ = ["new_axes", "png_bytes"]


def new_axes(size=(6.4, 4.2)):
    """``(figure, axes)`` of a new off-screen figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(figsize=size)


def png_bytes(figure, axes, dpi=120):
    """The figure with its legend as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()
