"""Accuracy-vs-eps figures as PNG files: the pieces eval's plot and the experiment's plot
share (host side: matplotlib, imported only when a figure is drawn)."""
from __future__ import annotations


def new_figure(figsize: tuple[float, float]):
    """(figure, axes) on the file-only Agg backend (no display on a server)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, dpi=110)
    return fig, ax


def finish_eps_axes(ax, ylabel: str) -> None:
    """The axes every accuracy-vs-eps plot shares; called after the lines are drawn, so that
    the right end of the eps axis still follows the data."""
    ax.set_xlim(left=0)
    ax.set_xlabel("eps (L-inf); eps 0 = clean accuracy")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)


def save_png(fig, path) -> None:
    """Write the figure as PNG atomically (a reader never sees half a file) and free it."""
    import io

    import matplotlib.pyplot as plt

    from edgempir.fsutil import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
