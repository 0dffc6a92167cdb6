"""PNG plots of training runs (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from lmgym.agents.callbacks import RewardHistory  # noqa: E402


def plot_learning_curve(
    history: RewardHistory, path: str | Path, *, title: str, window: int = 50
) -> Path:
    """Plot episode reward (and, for LM envs, its reward-model and KL parts) against env steps.

    Example:
        >>> h = RewardHistory(timesteps=[1, 2, 3], reward=[0.0, 0.5, 1.0],
        ...                   reward_model=[0.1, 0.6, 1.1], kl=[2.0, 2.0, 2.0],
        ...                   kl_coef=[0.05] * 3)
        >>> import tempfile, os
        >>> p = plot_learning_curve(h, os.path.join(tempfile.mkdtemp(), "c.png"), title="t")
        >>> p.exists()
        True
    """
    path = Path(path)
    has_parts = any(k == k for k in history.kl)  # NaN != NaN: parts exist for LM envs
    n_panels = 2 if has_parts else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(5.5 * n_panels, 4), squeeze=False)
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
