"""PNG plots of training runs (matplotlib, headless).

Figures are drawn on their own Agg canvas (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``),
not through ``pyplot``: no global backend is chosen, so importing lmgym never changes how a
user's own plots are shown, and no display is needed on servers and CI.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lmgym.agents.callbacks import RewardHistory

__all__ = ["new_figure", "plot_learning_curve", "save_figure"]


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure of ``width`` × ``height`` inches on its own Agg (PNG) canvas.

    Example:
        >>> new_figure(4, 3).get_size_inches().tolist()
        [4.0, 3.0]
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` to ``path`` (PNG, 100 dpi), creating its directory; returns the path."""
    path = Path(path)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def plot_learning_curve(
    history: RewardHistory, path: str | Path, *, title: str, window: int = 50
) -> Path:
    """Plot episode reward (and, for LM envs, its reward-model and KL parts) against env steps.

    Example:
        >>> from lmgym.agents.callbacks import RewardHistory
        >>> h = RewardHistory(timesteps=[1, 2, 3], reward=[0.0, 0.5, 1.0],
        ...                   reward_model=[0.1, 0.6, 1.1], kl=[2.0, 2.0, 2.0],
        ...                   kl_coef=[0.05] * 3)
        >>> import tempfile, os
        >>> p = plot_learning_curve(h, os.path.join(tempfile.mkdtemp(), "c.png"), title="t")
        >>> p.exists()
        True
    """
    has_parts = any(k == k for k in history.kl)  # NaN != NaN: parts exist for LM envs
    n_panels = 2 if has_parts else 1
    fig = new_figure(5.5 * n_panels, 4)
    axes = fig.subplots(1, n_panels, squeeze=False)
    ax = axes[0, 0]
    for name, label in (("reward", "total reward"), ("reward_model", "reward model r_φ")):
        if name == "reward_model" and not has_parts:
            continue
        steps, values = history.smoothed(name, window)
        ax.plot(steps, values, label=label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"episode reward (moving mean of {window} episodes)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    if has_parts:
        ax = axes[0, 1]
        steps, values = history.smoothed("kl", window)
        ax.plot(steps, values, color="tab:red")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("KL summed over the completion (nats)")
        ax.set_title("KL penalty term")
        ax.grid(alpha=0.3)
    return save_figure(fig, path)
