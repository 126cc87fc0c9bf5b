from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bespoke_exp.generate.checkpoints import (
    CheckpointError,
    available_epochs,
    describe_checkpoint,
    epoch_file_name,
    resolve_checkpoint,
)

STEM = "Bespoke_Punks_24x24_Pixel_Art"


def _lora_file(path: Path, rank: int = 4) -> Path:
    save_file(
        {
            "lora_unet_x.lora_down.weight": torch.zeros(rank, 8),
            "lora_unet_x.lora_up.weight": torch.zeros(8, rank),
            "lora_unet_x.alpha": torch.tensor(float(rank)),
        },
        path,
        metadata={"ss_epoch": "1"},
    )
    return path


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    for epoch in (1, 2, 3):
        _lora_file(tmp_path / epoch_file_name(STEM, epoch, final_epoch=4))
    _lora_file(tmp_path / f"{STEM}.safetensors")
    return tmp_path


def test_kohya_names():
    assert epoch_file_name(STEM, 1, 10) == f"{STEM}-000001.safetensors"
    assert epoch_file_name(STEM, 10, 10) == f"{STEM}.safetensors"


def test_final_epoch_is_the_bare_file(run_dir):
    assert resolve_checkpoint(run_dir, STEM, 4, 4).name == f"{STEM}.safetensors"
    assert resolve_checkpoint(run_dir, STEM, 2, 4).name == f"{STEM}-000002.safetensors"
    assert list(available_epochs(run_dir, STEM, 4)) == [1, 2, 3, 4]


def test_missing_epoch_names_expected_file_and_existing_epochs(run_dir):
    (run_dir / f"{STEM}-000002.safetensors").unlink()
    with pytest.raises(CheckpointError) as error:
        resolve_checkpoint(run_dir, STEM, 2, 4)
    assert f"{STEM}-000002.safetensors" in str(error.value)
    assert "epochs with a file: 1, 3, 4" in str(error.value)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does_not_exist.*does not exist"):
        resolve_checkpoint(tmp_path / "does_not_exist", STEM, 1, 10)


def test_empty_folder_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="it is empty"):
        resolve_checkpoint(tmp_path, STEM, 1, 10)


def test_wrong_stem_shows_what_is_there(run_dir):
    with pytest.raises(CheckpointError, match="is checkpoint.stem right"):
        resolve_checkpoint(run_dir, "Other_Name", 1, 4)


def test_epoch_outside_the_run(run_dir):
    with pytest.raises(CheckpointError, match=r"epoch=11 is outside 1\.\.4"):
        resolve_checkpoint(run_dir, STEM, 11, 4)


def test_pickle_checkpoint_is_refused(tmp_path):
    (tmp_path / f"{STEM}-000001.ckpt").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="pickle.*convert them to .safetensors"):
        resolve_checkpoint(tmp_path, STEM, 1, 10)


def test_describe_reads_rank_metadata_and_hash(run_dir):
    info = describe_checkpoint(run_dir / f"{STEM}.safetensors", 4)
    assert info.rank == 4
    assert info.metadata == {"ss_epoch": "1"}
    assert len(info.sha256) == 64


@pytest.mark.parametrize("damage", ["truncate", "not_safetensors"])
def test_corrupt_file_is_named(run_dir, damage):
    path = run_dir / f"{STEM}-000001.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"hello world, not a checkpoint")
    with pytest.raises(CheckpointError, match=f"{STEM}-000001.safetensors is not a readable"):
        describe_checkpoint(path, 1)
