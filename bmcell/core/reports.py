"""Human-readable outputs: training curves, confusion matrices, Markdown evaluation reports."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy / macro-F1 per epoch, train and validation, as one PNG."""
    epochs = [row["epoch"] for row in history]
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    loss_ax.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    score_ax.plot(epochs, [r["train_accuracy"] for r in history], "o-", label="train accuracy")
    score_ax.plot(epochs, [r["val_accuracy"] for r in history], "o-", label="validation accuracy")
    score_ax.plot(epochs, [r["val_macro_f1"] for r in history], "o-", label="validation macro-F1")
    score_ax.set(xlabel="epoch", ylim=(0, 1.01), title="Accuracy")
    for ax in (loss_ax, score_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """Confusion matrix as a PNG: counts, shaded by row-normalised recall."""
    matrix = np.asarray(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    size = max(5.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_confusion_csv(matrix: np.ndarray, classes: list[str], path: Path) -> None:
    """Confusion matrix as CSV: true classes as rows, predicted as columns."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, np.asarray(matrix).tolist()):
            writer.writerow([name, *row])


def markdown_cell(row: dict, key: str, fmt: str) -> str:
    """row[key] formatted for a Markdown table, or '-' when it is absent."""
    return format(row[key], fmt) if row.get(key) is not None else "-"


def markdown_report(report: dict, title: str) -> str:
    """An evaluation report as Markdown: headline metrics, a per-class table and the confusion matrix."""
    lines = [f"# {title}", "", "| metric | value |", "|---|---:|",
             f"| images | {report['images']} |", f"| accuracy | {report['accuracy']:.4f} |",
             f"| balanced accuracy | {report['balanced_accuracy']:.4f} |", f"| macro-F1 | {report['macro_f1']:.4f} |",
             "", "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for name, row in report["per_class"].items():
        lines.append(f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |")
    classes = report["classes"]
    lines += ["", "Confusion matrix (rows: true, columns: predicted)", "",
              "| | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for name, row in zip(classes, report["confusion_matrix"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
