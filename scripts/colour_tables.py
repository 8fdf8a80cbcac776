"""Write cnnreport/figures/colour_tables.py: the page's three colour maps as 255 RGB entries each,
sampled from matplotlib's, so that a report never imports matplotlib (0.2-0.6 s of every
process's start) for three small tables.

    python scripts/colour_tables.py        # rewrites the module; tests/test_figures.py checks it
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps

MAPS = ("viridis", "RdBu_r", "inferno")
TARGET = Path(__file__).resolve().parent.parent / "cnnreport" / "figures" / "colour_tables.py"


def table(name: str) -> str:
    rgb = (colormaps[name](np.linspace(0.0, 1.0, 255))[:, :3] * 255).round().astype(np.uint8)
    text = rgb.tobytes().hex()
    rows = [text[i : i + 96] for i in range(0, len(text), 96)]
    return "\n".join(f'        "{row}"' for row in rows)


def main() -> None:
    body = "\n".join(f'    "{name}": bytes.fromhex(\n{table(name)}\n    ),' for name in MAPS)
    TARGET.write_text(
        '"""The colour maps of the figures: 255 RGB entries each, matplotlib\'s own maps sampled at\n'
        "255 even steps from 0 to 1 (written by scripts/colour_tables.py; tests/test_figures.py\n"
        'checks them against matplotlib). Shipped as data so that no report imports matplotlib."""\n\n'
        "COLOUR_TABLES: dict[str, bytes] = {\n" + body + "\n}\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
