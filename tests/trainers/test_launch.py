"""Launch configs for many GPUs (trainers/launch.py): each config is generated and parses back (through
accelerate's own loader, which refuses unknown keys), and a real single-process `accelerate launch` runs on
CPU."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medharness.core.errors import ConfigError
from medharness.trainers.launch import (
    LaunchSpec,
    add_launch_options,
    deepspeed_config,
    launch_argv,
    launch_from_args,
    strip_launch_options,
    vllm_serve_command,
    vllm_settings,
    write_launch_config,
)

SUPPORT = Path(__file__).resolve().parents[1] / "support"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe")
    parser.add_argument("--output", type=Path)
    add_launch_options(parser)
    return parser.parse_args(list(argv))


def cluster_config(path: Path):
    pytest.importorskip("accelerate")
    from accelerate.commands.config.config_args import ClusterConfig

    return ClusterConfig.from_yaml_file(str(path))


@pytest.mark.parametrize(("spec", "kind"), [
    (LaunchSpec("accelerate", 1, use_cpu=True, mixed_precision="no"), "NO"),
    (LaunchSpec("accelerate", 8), "MULTI_GPU"),
    (LaunchSpec("accelerate", 8, deepspeed="zero2"), "DEEPSPEED"),
    (LaunchSpec("accelerate", 8, deepspeed="zero3"), "DEEPSPEED"),
    (LaunchSpec("accelerate", 4, fsdp=True), "FSDP"),
])
def test_each_config_is_written_and_parses_back(tmp_path: Path, spec: LaunchSpec, kind: str) -> None:
    path = write_launch_config(spec, tmp_path)
    assert path == tmp_path / "launch" / "accelerate_config.yaml"
    data = yaml.safe_load(path.read_text())
    assert data["distributed_type"] == kind and data["num_processes"] == spec.num_processes
    config = cluster_config(path)  # accelerate's loader: unknown keys are an error
    assert str(config.distributed_type).endswith(kind) and config.num_processes == spec.num_processes
    files = sorted(p.name for p in (tmp_path / "launch").iterdir())
    if spec.deepspeed:
        stage = int(spec.deepspeed[-1])
        assert files == ["accelerate_config.yaml", f"deepspeed_{spec.deepspeed}.json"]
        ds_file = Path(data["deepspeed_config"]["deepspeed_config_file"])
        assert ds_file.is_absolute() and ds_file.parent == (tmp_path / "launch").resolve()
        ds = json.loads(ds_file.read_text())
        assert ds["zero_optimization"]["stage"] == stage
        assert ds["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save", False) == (stage == 3)
        assert data["deepspeed_config"]["zero3_init_flag"] == (stage == 3)
        assert "mixed_precision" not in data  # accelerate refuses precision in both places
    else:
        assert files == ["accelerate_config.yaml"]
        assert data["mixed_precision"] == spec.mixed_precision
    if spec.fsdp:
        assert data["fsdp_config"]["fsdp_version"] == 2
        assert data["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_deepspeed_json_round_trips() -> None:
    for stage in (2, 3):
        assert json.loads(json.dumps(deepspeed_config(stage)))["zero_optimization"]["stage"] == stage
    with pytest.raises(ConfigError):
        deepspeed_config(1)


def test_bad_combinations_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not both"):
        LaunchSpec("accelerate", 2, deepspeed="zero2", fsdp=True)
    with pytest.raises(ConfigError, match="--launcher accelerate"):
        LaunchSpec("none", 4)
    with pytest.raises(ConfigError, match=">= 1"):
        LaunchSpec("accelerate", 0)
    with pytest.raises(ConfigError, match="GPUs"):
        LaunchSpec("accelerate", 1, deepspeed="zero3", use_cpu=True)


def test_launch_argv_wraps_the_train_argv(tmp_path: Path) -> None:
    train = ["train", "--recipe", "grpo", "--launcher", "accelerate", "--num-processes=8", "--deepspeed",
             "zero3", "--fsdp", "--output", str(tmp_path)]
    assert strip_launch_options(train) == ["train", "--recipe", "grpo", "--output", str(tmp_path)]
    argv = launch_argv(train, tmp_path / "c.yaml", 8)
    assert argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert argv[3:] == ["--config_file", str(tmp_path / "c.yaml"), "--num_processes", "8", "-m",
                        "medharness.cli", "train", "--recipe", "grpo", "--output", str(tmp_path)]


def test_launch_from_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ACCELERATE_MIXED_PRECISION", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    argv = ["train", "--recipe", "sft", "--output", str(tmp_path)]
    assert launch_from_args(parse("--recipe", "sft"), argv, tmp_path) is None  # in-process by default
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU: a CPU config
    args = parse("--recipe", "sft", "--launcher", "accelerate", "--num-processes", "1")
    out = launch_from_args(args, [*argv, "--launcher", "accelerate", "--num-processes", "1"], tmp_path)
    assert out is not None and out[-7:] == ["-m", "medharness.cli", *argv]
    data = yaml.safe_load((tmp_path / "launch" / "accelerate_config.yaml").read_text())
    assert data["use_cpu"] is True and data["mixed_precision"] == "no" and data["distributed_type"] == "NO"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # inside the launched process: no second launch
    assert launch_from_args(args, argv, tmp_path) is None


def test_vllm_settings_are_grpo_config_keys() -> None:
    colocate = vllm_settings("colocate", gpu_memory_utilization=0.4, tensor_parallel_size=2)
    assert colocate == {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.4,
                        "vllm_tensor_parallel_size": 2}
    server = vllm_settings("server", host="10.0.0.2", port=8001)
    assert server == {"use_vllm": True, "vllm_mode": "server", "vllm_server_host": "10.0.0.2",
                      "vllm_server_port": 8001}
    with pytest.raises(ConfigError):
        vllm_settings("remote")  # type: ignore[arg-type]
    assert vllm_serve_command("M", tensor_parallel_size=2, port=8001)[:6] == [
        "trl", "vllm-serve", "--model", "M", "--tensor-parallel-size", "2"]
    try:  # the keys exist on this TRL's GRPOConfig
        from medharness.core.torchvision_shim import ensure_torchvision_importable

        ensure_torchvision_importable()
        import dataclasses

        from trl import GRPOConfig
    except Exception:  # noqa: BLE001 - trl missing or broken: the key check is optional
        return
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    assert set(colocate) <= fields and set(server) <= fields


@pytest.mark.slow
def test_real_single_process_accelerate_launch_on_cpu(tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    config = write_launch_config(LaunchSpec("accelerate", 1, use_cpu=True, mixed_precision="no"), tmp_path)
    result_file = tmp_path / "probe.json"
    argv = launch_argv([str(result_file), "--recipe", "sft", "--num-processes", "1"], config, 1,
                       module="accelerate_probe")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
           "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(result_file.read_text())
    assert seen["under_launcher"] is True and seen["num_processes"] == 1 and seen["device"] == "cpu"
    # launch options stripped, the rest passed on
    assert seen["argv"] == [str(result_file), "--recipe", "sft"]
    assert seen["env"]["ACCELERATE_USE_CPU"].lower() == "true"
