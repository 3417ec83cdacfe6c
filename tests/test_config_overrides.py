"""Override semantics of several ``--config`` files (README, "Configs"): a later config merges into a net's
settings; a net set to null first is replaced whole; ``--print_config`` shows the result."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from repro.cli import main

BASE = "configs/mnist/sngan.yaml"  # D: StandardCNNDiscriminator(image_size 28, channels 1, width 16, norm spectral)


def printed(capsys: pytest.CaptureFixture, *args: str) -> dict:
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", BASE, *args, "--print_config"])
    assert exc.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["discriminator"]


def net_file(folder: Path, name: str, class_path: str, init_args: dict) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"model": {"init_args": {"discriminator": {"class_path": class_path,
                                                                              "init_args": init_args}}}}))
    return str(path)


def test_second_config_merges_into_the_net(tmp_path, capsys):
    narrow = net_file(tmp_path, "narrow", "repro.nets.StandardCNNDiscriminator", {"width": 8})
    d = printed(capsys, "--config", narrow)
    assert d["init_args"]["width"] == 8  # restated
    assert d["init_args"]["norm"] == "spectral" and d["init_args"]["image_size"] == 28  # kept from the first config


def test_other_class_keeps_the_keys_it_accepts(tmp_path, capsys):
    mlp = net_file(tmp_path, "mlp", "repro.nets.MLPDiscriminator", {"in_dim": 784})
    d = printed(capsys, "--config", mlp)
    assert d["class_path"] == "repro.nets.MLPDiscriminator"
    assert d["init_args"]["norm"] == "spectral" and d["init_args"]["width"] == 16  # carried over: the trap


def test_null_first_replaces_the_whole_net(tmp_path, capsys):
    narrow = net_file(tmp_path, "narrow", "repro.nets.StandardCNNDiscriminator", {"width": 8})
    d = printed(capsys, "--model.init_args.discriminator", "null", "--config", narrow)
    assert d["init_args"]["width"] == 8
    assert d["init_args"]["norm"] == "none" and d["init_args"]["image_size"] == 32  # the class defaults
