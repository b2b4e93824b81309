"""Collect the photographs that train and score the default upscaler, from package registries only.

Training photos come from three Debian packages, downloaded with `apt-get download` (no install)
and unpacked with `dpkg-deb -x`; held-out photos are scikit-image's sample photographs, from its
PyPI wheel. Licenses are in each package's copyright file (copied beside the photos).

Run: python -m genart_cli.training.photos build/sr-data
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

PACKAGES = {
    # package: (folder inside the package, which files). Licenses, per each package's copyright
    # file in Debian 12: CC-BY 4.0, CC-BY-SA 4.0 or CC0 per photo (lomiri), GPL-2+ (the others).
    "lomiri-wallpapers-16.04": ("usr/share/backgrounds", "*.jpg"),
    "mate-backgrounds": ("usr/share/backgrounds/mate/nature", "*.jpg"),
    "plasma-workspace-wallpapers": ("usr/share/wallpapers", "*/contents/images/*"),
}
# scikit-image sample photographs, all public domain or CC0 (see skimage.data's docstrings).
HELDOUT = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png")


def fetch_packages(work: Path) -> Path:
    """Download and unpack the packages into work/root; return that folder."""
    debs, root = work / "debs", work / "root"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [name for name in PACKAGES if not list(debs.glob(f"{name}_*.deb"))]
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def largest_per_folder(paths: list[Path]) -> list[Path]:
    """Keep the largest image of each folder: plasma ships one wallpaper at several sizes."""
    best: dict[Path, tuple[int, Path]] = {}
    for path in paths:
        with Image.open(path) as image:
            area = image.size[0] * image.size[1]
        if path.parent not in best or area > best[path.parent][0]:
            best[path.parent] = (area, path)
    return sorted(path for _, path in best.values())


def collect(work: Path) -> tuple[Path, Path]:
    """Fill work/train and work/heldout; return both folders."""
    root = fetch_packages(work)
    train, heldout = work / "train", work / "heldout"
    train.mkdir(parents=True, exist_ok=True)
    heldout.mkdir(parents=True, exist_ok=True)
    for package, (folder, pattern) in PACKAGES.items():
        paths = sorted((root / folder).glob(pattern))
        if package == "plasma-workspace-wallpapers":
            paths = largest_per_folder(paths)
        for path in paths:
            name = f"{package}--{path.relative_to(root / folder).as_posix().replace('/', '--')}"
            shutil.copyfile(path, train / name)
        shutil.copyfile(root / "usr/share/doc" / package / "copyright", train / f"COPYRIGHT-{package}.txt")

    import skimage

    data = Path(skimage.__file__).parent / "data"
    for name in HELDOUT:
        shutil.copyfile(data / name, heldout / f"skimage--{name}")
    return train, heldout


if __name__ == "__main__":
    train_dir, heldout_dir = collect(Path(sys.argv[1] if len(sys.argv) > 1 else "build/sr-data"))
    print(f"{len(list(train_dir.glob('*--*')))} training photos in {train_dir}, "
          f"{len(list(heldout_dir.iterdir()))} held-out photos in {heldout_dir}")
