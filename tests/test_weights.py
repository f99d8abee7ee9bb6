"""Pretrained weight files: lookup order, sha256 verification, atomic fetch, and the
`gantune weights list|verify|fetch` command's one-line errors. No network: downloads are
simulated by copying a local file."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from backbones import pretrained
from gantune.errors import GantuneError
from ray_jobs.cli import main


def fake_weights(path: Path) -> str:
    """A small real state-dict file; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"w": torch.arange(6.0)}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def vgg19_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An official-named vgg19 file in a folder, registered with its own checksum."""
    path = tmp_path / "weights" / pretrained.WEIGHT_FILES["vgg19"].filename
    digest = fake_weights(path)
    monkeypatch.setitem(pretrained.WEIGHT_FILES, "vgg19",
                        dataclasses.replace(pretrained.WEIGHT_FILES["vgg19"], sha256=digest))
    return path


def test_lookup_order_folder_env_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vgg19_file: Path) -> None:
    name = vgg19_file.name
    hub = pretrained.hub_checkpoint_dir()
    assert hub == Path(torch.hub.get_dir()) / "checkpoints"
    with pytest.raises(GantuneError, match=f"missing vgg19 weights .*put {name} in {hub}"):
        pretrained.locate("vgg19")
    hub.mkdir(parents=True)
    shutil.copy(vgg19_file, hub / name)
    assert pretrained.locate("vgg19") == hub / name
    monkeypatch.setenv(pretrained.WEIGHTS_DIR_ENV, str(vgg19_file.parent))
    assert pretrained.locate("vgg19") == vgg19_file
    other = tmp_path / "other"
    fake_weights(other / name)
    assert pretrained.locate("vgg19", other) == other / name  # an explicit folder wins


def test_load_verifies_checksum(tmp_path: Path, vgg19_file: Path) -> None:
    state = pretrained.load_state_dict("vgg19", vgg19_file.parent)
    assert torch.equal(state["w"], torch.arange(6.0))
    corrupt = tmp_path / "corrupt"
    fake_weights(corrupt / vgg19_file.name)
    with (corrupt / vgg19_file.name).open("ab") as f:
        f.write(b"x")
    with pytest.raises(GantuneError, match="sha256 does not match the official vgg19 weights"):
        pretrained.load_state_dict("vgg19", corrupt)


def test_official_checksums_are_full_sha256() -> None:
    for wf in pretrained.WEIGHT_FILES.values():
        assert len(wf.sha256) == 64 and int(wf.sha256, 16) >= 0
        # torchvision and pytorch-fid put the hash's first 8 hex digits in the file name.
        assert wf.filename.rsplit("-", 1)[1].startswith(wf.sha256[:8])


def test_cli_list_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str], vgg19_file: Path) -> None:
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert out.count("missing") == 3 and "pt_inception-2015-12-05-6726825d.pth" in out

    assert main(["weights", "verify", "vgg19", "--weights-dir", str(vgg19_file.parent)]) == 0
    assert "vgg19      ok" in capsys.readouterr().out

    assert main(["weights", "verify"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().count("\n") == 0 and "missing or corrupt" in captured.err

    assert main(["weights", "list", "resnet"]) == 2
    assert "unknown weights 'resnet'" in capsys.readouterr().err


def test_fetch_is_verified_and_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str], vgg19_file: Path) -> None:
    def download(url: str, dst: str, hash_prefix: object = None, progress: bool = True) -> None:
        shutil.copy(vgg19_file, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    dest = tmp_path / "fetched"
    assert main(["weights", "fetch", "vgg19", "--weights-dir", str(dest)]) == 0
    assert (dest / vgg19_file.name).read_bytes() == vgg19_file.read_bytes()
    assert [p.name for p in dest.iterdir()] == [vgg19_file.name]  # no temp file left

    # A download with the wrong content never lands under the official name.
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda url, dst, hash_prefix=None, progress=True: Path(dst).write_bytes(b"junk"))
    bad = tmp_path / "bad"
    assert main(["weights", "fetch", "vgg19", "--weights-dir", str(bad)]) == 2
    assert "downloaded file has sha256" in capsys.readouterr().err
    assert list(bad.iterdir()) == []

    def offline(url: str, dst: str, hash_prefix: object = None, progress: bool = True) -> None:
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert main(["weights", "fetch", "inception", "--weights-dir", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gantune: error: cannot download") and err.count("\n") == 1
