"""Export scikit-learn's bundled 8x8 digits into keepbest's package data (run once).

keepbest ships the array so that the quickstart needs no download and no scikit-learn.
Re-run only to regenerate ``src/keepbest/datasets/digits.npz``:

    pip install scikit-learn && python scripts/export_digits.py
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parents[1] / "src" / "keepbest" / "datasets" / "digits.npz"


def main() -> None:
    digits = load_digits()
    images = digits.images.astype(np.uint8)  # (1797, 8, 8), values 0..16
    labels = digits.target.astype(np.uint8)
    np.savez_compressed(OUT, x=images, y=labels)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(labels)} samples)")


if __name__ == "__main__":
    main()
