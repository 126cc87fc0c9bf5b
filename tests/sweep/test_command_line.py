"""The command line before Hydra reads it: `epoch=all` becomes the epochs the checkpoint folder holds."""

from __future__ import annotations

import pytest

from bespoke_exp.config import ConfigError
from bespoke_exp.sweep.command_line import prepare_command_line
from tests.helpers import my_lora_folder


def test_epoch_all_sweeps_every_epoch_in_the_folder(tmp_path) -> None:
    names = ["My_Lora-000002.safetensors", "My_Lora-000005.safetensors", "My_Lora.safetensors"]
    folder = my_lora_folder(tmp_path, [*names, "Other-000003.safetensors", "My_Lora-000004.ckpt"])
    argv = ["-m", "epoch=all", "guidance=5,7.5", *folder]
    assert prepare_command_line(argv) == ["-m", "epoch=2,5,8", "guidance=5,7.5", *folder]  # bare file = final
    assert prepare_command_line(["-m", "epoch=1,2"]) == ["-m", "epoch=1,2"]


def test_epoch_all_with_no_epochs_names_the_folder_and_stem(tmp_path) -> None:
    folder = my_lora_folder(tmp_path, ["Other-000001.safetensors"])
    with pytest.raises(
        ConfigError, match=rf"checkpoint.dir={tmp_path} holds no epoch files for checkpoint.stem=My_Lora"
    ):
        prepare_command_line(["-m", "epoch=all", *folder])
    missing = [*folder[:1], f"checkpoint.dir={tmp_path / 'nope'}", *folder[2:]]
    with pytest.raises(ConfigError, match="nope is not a folder for checkpoint.stem=My_Lora"):
        prepare_command_line(["-m", "epoch=all", *missing])


@pytest.mark.parametrize("how", ["--config-dir", "-cd", "hydra.searchpath"])
def test_epoch_all_reads_a_checkpoint_config_from_the_users_own_config_folder(tmp_path, how: str) -> None:
    checkpoints = tmp_path / "run"
    checkpoints.mkdir()
    my_lora_folder(checkpoints, ["My_Lora-000003.safetensors", "My_Lora.safetensors"])
    conf = tmp_path / "my_conf" / "checkpoint"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text(
        f"dir: {checkpoints}\nstem: My_Lora\nepochs: 6\nlora_scale: ${{lora_scale}}\ntrain_dir: null\n"
    )
    where = (
        [f"hydra.searchpath=[file://{conf.parent}]"] if how == "hydra.searchpath" else [how, str(conf.parent)]
    )
    argv = [*where, "-m", "epoch=all", "checkpoint=mine"]
    assert prepare_command_line(argv) == [*where, "-m", "epoch=3,6", "checkpoint=mine"]
