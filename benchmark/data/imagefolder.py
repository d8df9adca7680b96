"""ImageFolder trees (ImageNet layout): scanning and validation, shared by `npas data prepare imagenet`
and the torchvision pipeline.

Layout: ``<root>/train/<class>/<image>`` and ``<root>/val/<class>/<image>`` (the usual ImageNet
extraction; "val" is the official validation set, which this suite calls the *test* split). Classes
are the sorted folder names of ``train/``, images are taken in ``sorted(os.walk(...))`` order, so the
sample order (and each sample's index) is exactly torchvision's ``datasets.ImageFolder`` order -- a
beton written from the tree and the tree read by the torchvision pipeline index the same images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import DataError

# torchvision.datasets.folder.IMG_EXTENSIONS
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# The two splits of a tree: suite split name -> folder name.
SPLIT_FOLDERS = {"train": "train", "test": "val"}
LAYOUT_HINT = ("expected an ImageFolder tree: <root>/train/<class>/<image>.JPEG and <root>/val/<class>/<image>.JPEG "
               "(one folder per class, the same class folders in both)")


@dataclass(frozen=True)
class ImageFolderSource:
    """One split of an ImageFolder tree: ``samples[i] = (path, label)`` in torchvision's order."""

    folder: str
    classes: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def find_classes(folder: Path, field: str) -> list[str]:
    if not folder.is_dir():
        raise DataError(f"{field}: {folder} is not a folder; {LAYOUT_HINT}")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise DataError(f"{field}: {folder} has no class folders; {LAYOUT_HINT}")
    return classes


def scan_split(folder: Path, classes: list[str], field: str) -> ImageFolderSource:
    """All images under ``folder/<class>/`` for the given class list (torchvision's make_dataset order)."""
    class_to_idx = {c: i for i, c in enumerate(classes)}
    present = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    unknown = [c for c in present if c not in class_to_idx]
    if unknown:
        raise DataError(
            f"{field}: {folder} has class folders that train/ lacks: {', '.join(unknown[:5])}"
            f"{' ...' if len(unknown) > 5 else ''}; {LAYOUT_HINT}"
        )
    samples: list[tuple[str, int]] = []
    empty: list[str] = []
    for cls in present:
        found = 0
        for dirpath, _, files in sorted(os.walk(folder / cls, followlinks=True)):
            for name in sorted(files):
                if _is_image(name):
                    samples.append((os.path.join(dirpath, name), class_to_idx[cls]))
                    found += 1
        if found == 0:
            empty.append(cls)
    if empty:
        raise DataError(
            f"{field}: class folder(s) without images ({', '.join(IMG_EXTENSIONS)}) in {folder}: "
            f"{', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}"
        )
    return ImageFolderSource(str(folder), tuple(classes), tuple(samples))


def scan_tree(root: str | os.PathLike | None, field: str = "data.root",
              splits: Iterable[str] = ("train", "test")) -> dict[str, ImageFolderSource]:
    """{split: source} for ``root`` (holding train/ and val/); DataError naming ``field`` otherwise."""
    if root is None or str(root).strip() == "":
        raise DataError(f"{field} is not set; {LAYOUT_HINT}")
    base = Path(root).expanduser()
    if not base.exists():
        raise DataError(f"{field}={str(root)!r} does not exist; {LAYOUT_HINT}")
    if not base.is_dir():
        raise DataError(f"{field}={str(root)!r} is not a folder; {LAYOUT_HINT}")
    splits = list(splits)
    for split in splits:
        if split not in SPLIT_FOLDERS:
            raise DataError(f"unknown split {split!r}; splits are {', '.join(SPLIT_FOLDERS)}")
        sub = base / SPLIT_FOLDERS[split]
        if not sub.is_dir():
            raise DataError(f"{field}={str(root)!r} has no {SPLIT_FOLDERS[split]}/ folder; {LAYOUT_HINT}")
    classes = find_classes(base / "train", field)
    return {split: scan_split(base / SPLIT_FOLDERS[split], classes, field) for split in splits}


def verify_images(source: ImageFolderSource, field: str, progress: bool = False) -> None:
    """Open every image's header with PIL (cheap: no decode); DataError listing unreadable files.

    Run before writing a beton, so that a bad file is reported up front instead of failing a writer
    worker (a truncated file that still has a valid header is caught by the writer's own guard).
    """
    from PIL import Image
    from tqdm.auto import tqdm

    bad: list[str] = []
    for path, _ in tqdm(source.samples, desc=f"checking {Path(source.folder).name}/", unit="img",
                        disable=not progress, leave=False):
        try:
            with Image.open(path) as im:
                w, h = im.size
                if w < 1 or h < 1:
                    raise ValueError(f"empty image {w}x{h}")
        except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError...)
            bad.append(f"{path} ({type(exc).__name__}: {exc})")
            if len(bad) >= 5:
                break
    if bad:
        raise DataError(f"{field}: unreadable image file(s): {'; '.join(bad)}; remove or replace them")


def load_rgb(path: str):
    """The image at ``path`` as an RGB PIL image (grey/CMYK/palette/alpha converted)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")
