"""Figures logged with a run: learning curves and the confusion matrix."""

from __future__ import annotations

from typing import Any

import numpy as np


def _pyplot():
    # A non-interactive backend: runs happen on servers and in workers.
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def learning_curves(history: list[dict[str, Any]], *, title: str, target: float | None = None):
    """Train/val loss and accuracy per epoch, side by side."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], marker="o", label="val")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.plot(epochs, [r["train_accuracy"] for r in history], marker="o", label="train")
    ax_acc.plot(epochs, [r["val_accuracy"] for r in history], marker="o", label="val")
    if target is not None:
        ax_acc.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix_figure(matrix: np.ndarray, labels: list[str], *, title: str):
    """A confusion matrix with counts in the cells."""
    plt = _pyplot()
    size = max(4.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels=labels, rotation=45 if len(labels) > 10 else 0)
    ax.set_yticks(range(len(labels)), labels=labels)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > threshold else "black")
    fig.tight_layout()
    return fig


def close(fig) -> None:
    """Release a figure's memory."""
    _pyplot().close(fig)
