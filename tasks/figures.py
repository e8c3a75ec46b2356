"""The paper's two figures and the benchmark's written results.

- ``bitrates.png``: bars of bits per voxel per codec per volume, raw 8 bits as the reference line.
- ``prediction-<volume>.png``: one slice of a block four ways: original, the model's prediction
  (mean of each voxel's distribution), its confidence (entropy per voxel, dark = confident), and
  the bits actually spent per voxel.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from tasks.store.atomic import atomic_write_bytes


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, imported when a figure is drawn (0.5-1 s), never at import."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


__all__ = ["bitrate_figure", "block_bitrate_png", "markdown_table", "prediction_figure", "write_results"]


def _png_bytes(figure: Any, dpi: int = 80) -> bytes:
    """Render and close a figure."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def _save(figure: Any, path: Path) -> None:
    atomic_write_bytes(path, _png_bytes(figure))


def bitrate_figure(rows: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars: bits per voxel of every codec on every volume."""
    volumes = list(dict.fromkeys(r["volume"] for r in rows))
    codecs = list(dict.fromkeys(r["codec"] for r in rows))
    width = 0.8 / max(len(volumes), 1)
    figure, axes = _pyplot().subplots(figsize=(1.1 * len(codecs) + 2, 4))
    for i, volume in enumerate(volumes):
        values = [
            next((r["bits_per_voxel"] for r in rows if r["volume"] == volume and r["codec"] == c), 0) for c in codecs
        ]
        positions = np.arange(len(codecs)) + (i - (len(volumes) - 1) / 2) * width
        bars = axes.bar(positions, values, width, label=volume)
        axes.bar_label(bars, fmt="%.2f", fontsize=7)
    axes.axhline(8.0, color="black", linestyle="--", linewidth=1, label="raw (8 bits)")
    axes.set_xticks(np.arange(len(codecs)), codecs, rotation=20)
    axes.set_ylabel("bits per voxel (lower is better)")
    axes.set_title("Lossless bit rates")
    axes.legend(fontsize=8)
    _save(figure, path)


def block_bitrate_png(blocks: list[tuple[str, str, float]], title: str) -> bytes:
    """PNG bytes: bits per voxel of each (block id, codec, bits) of a run, raw 8 bits as reference."""
    figure, axes = _pyplot().subplots(figsize=(max(4.0, 0.35 * len(blocks) + 2), 3.2))
    colours = {"learned": "tab:blue", "jpegxl": "tab:orange", "lzma": "tab:gray"}
    labels = [b[0].rsplit("/", 1)[-1] for b in blocks]
    axes.bar(range(len(blocks)), [b[2] for b in blocks], color=[colours.get(b[1], "tab:red") for b in blocks])
    axes.axhline(8.0, color="black", linestyle="--", linewidth=1)
    axes.set_xticks(range(len(blocks)), labels, rotation=60, fontsize=6)
    axes.set_ylabel("bits per voxel")
    axes.set_title(f"{title} (blue learned, orange JPEG-XL fallback; dashed: raw)", fontsize=9)
    return _png_bytes(figure)


def prediction_figure(block: np.ndarray, data: bytes, path: Path, title: str, z: int | None = None) -> None:
    """Original, prediction, confidence and bits spent for one slice of a learned block."""
    from codec.legacy.analysis import analyse_learned  # torch: the bench's figure, not the pipeline's

    analysis = analyse_learned(data, block)
    z = block.shape[0] // 2 if z is None else z
    entropy = analysis.entropy(z)
    low, high = (float(v) for v in np.percentile(entropy, [1, 99]))
    panels = [
        (block[z], "original", "gray", (0.0, 255.0)),
        (analysis.prediction[z], "prediction (mean)", "gray", (0.0, 255.0)),
        (entropy, "confidence: entropy in bits (dark = confident)", "magma", (low, high)),
        (analysis.bits[z], "bits spent per voxel", "magma", (0.0, 10.0)),
    ]
    figure, axes = _pyplot().subplots(1, 4, figsize=(16, 4.4))
    for ax, (image, label, cmap, limits) in zip(axes, panels, strict=True):
        shown = ax.imshow(image, cmap=cmap, vmin=limits[0], vmax=limits[1])
        ax.set_title(label, fontsize=9)
        ax.axis("off")
        if cmap != "gray":
            figure.colorbar(shown, ax=ax, fraction=0.046)
    figure.suptitle(f"{title}: slice {z}, {analysis.bits[z].mean():.2f} bits per voxel")
    _save(figure, path)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results table in Markdown."""
    lines = [
        "| volume | codec | bits/voxel | x raw | x JPEG-XL | encode MB/s | decode MB/s | threads |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['volume']} | {r['codec']} | {r['bits_per_voxel']:.3f} | {r['ratio_to_raw']:.2f} | "
            f"{r['ratio_to_jpegxl']:.3f} | {r['encode_MBps']:.3f} | {r['decode_MBps']:.2f} | {r['threads']} |"
        )
    return "\n".join(lines)


def write_results(
    out: Path, command: str, rows: list[dict[str, Any]], details: dict[str, Any], notes: str = ""
) -> None:
    """``results.md`` and ``results.json`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    document = {"command": command, "rows": rows, **details}
    atomic_write_bytes(out / "results.json", (json.dumps(document, indent=2) + "\n").encode())
    figures = sorted(p.name for p in out.glob("*.png"))
    text = "\n".join(
        [
            "# emzip bench results",
            "",
            f"Command: `{command}`",
            "",
            markdown_table(rows),
            "",
            notes,
            "",
            *[f"![{name}]({name})" for name in figures],
            "",
        ]
    )
    atomic_write_bytes(out / "results.md", text.encode())
