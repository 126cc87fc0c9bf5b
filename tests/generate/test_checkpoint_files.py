"""A checkpoint folder as kohya leaves it: epoch N in STEM-00000N.safetensors, the last epoch in
STEM.safetensors; a missing, corrupt, pickled or non-LoRA file is named with what is there instead."""

from pathlib import Path

import pytest

from bespoke_exp.generate.checkpoints import (
    CheckpointError,
    available_epochs,
    describe_checkpoint,
    epoch_file_name,
    resolve_checkpoint,
)
from tests.helpers import STEM, write_lora, write_not_a_lora

_RANK_4 = {"rank": 4, "alpha": 4.0, "metadata": {"ss_epoch": "1"}}  # one module of rank 4


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    for epoch in (1, 2, 3):
        write_lora(tmp_path / epoch_file_name(STEM, epoch, final_epoch=4), ["lora_unet_x"], **_RANK_4)
    write_lora(tmp_path / f"{STEM}.safetensors", ["lora_unet_x"], **_RANK_4)
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


def test_a_safetensors_file_without_lora_weights_is_named(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / f"{STEM}-000001.safetensors"
    write_not_a_lora(path)
    with pytest.raises(CheckpointError, match=f"{path} holds no LoRA weights .*it is not a LoRA file"):
        describe_checkpoint(path, 1)
    # refused from its header alone: a multi-GB base model in checkpoint.dir is not hashed first
    assert not (tmp_path / "cache").exists()


def test_a_checkpoint_path_that_is_a_folder_or_a_broken_link_says_what_it_is(tmp_path) -> None:
    from bespoke_exp.generate.checkpoints import resolve_checkpoint

    (tmp_path / f"{STEM}-000001.safetensors").mkdir()
    loop = tmp_path / f"{STEM}-000002.safetensors"
    loop.symlink_to(loop)
    write_not_a_lora(tmp_path / f"{STEM}-000003.safetensors")
    with pytest.raises(CheckpointError) as folder:
        resolve_checkpoint(tmp_path, STEM, 1, 10)
    assert str(folder.value) == (
        f"epoch=1: {tmp_path}/{STEM}-000001.safetensors is a folder; it must be the LoRA .safetensors file"
    )
    with pytest.raises(CheckpointError, match="is a symbolic link to .* which leads to no file"):
        resolve_checkpoint(tmp_path, STEM, 2, 10)
    with pytest.raises(CheckpointError, match="epochs with a file: 3$"):  # the folder and link are no files
        resolve_checkpoint(tmp_path, STEM, 4, 10)
