"""`train --launcher accelerate`: the accelerate / DeepSpeed / FSDP configs land in the output folder and the
command re-executes itself through `accelerate launch` without the launch options (a real single-process
launch on CPU), and GRPO's vLLM generation is reachable from a recipe config."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl", reason="the train command needs the `train` extra")
import yaml

from medharness.cli import main
from medharness.trainers import cli as train_cli
from medharness.trainers import launch


@pytest.fixture()
def launched(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Capture the argv `train` would re-execute, as if GPUs were visible (DeepSpeed and FSDP need them)."""
    calls: list[list[str]] = []
    for var in ("ACCELERATE_MIXED_PRECISION", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(launch, "_gpu_visible", lambda: True)
    monkeypatch.setattr(train_cli.subprocess, "call", lambda argv: calls.append(argv) or 0)
    return calls


@pytest.mark.parametrize(("options", "files", "kind"), [
    (["--deepspeed", "zero2"], ["accelerate_config.yaml", "deepspeed_zero2.json"], "DEEPSPEED"),
    (["--deepspeed", "zero3"], ["accelerate_config.yaml", "deepspeed_zero3.json"], "DEEPSPEED"),
    (["--fsdp"], ["accelerate_config.yaml"], "FSDP"),
    ([], ["accelerate_config.yaml"], "MULTI_GPU"),
])
def test_launch_configs_are_written_into_the_output_folder(tmp_path: Path, launched: list[list[str]],
                                                           options: list[str], files: list[str],
                                                           kind: str) -> None:
    out = tmp_path / "out"
    train = ["train", "--recipe", "grpo", "--task", "phantom_presence", "--model", "/m", "--eval-every", "5"]
    assert main([*train, "--output", str(out), "--launcher", "accelerate", "--num-processes", "8",
                 *options]) == 0
    assert sorted(p.name for p in (out / "launch").iterdir()) == files
    config = yaml.safe_load((out / "launch" / "accelerate_config.yaml").read_text())
    assert config["distributed_type"] == kind and config["num_processes"] == 8
    if "--deepspeed" in options:
        ds = json.loads(Path(config["deepspeed_config"]["deepspeed_config_file"]).read_text())
        assert ds["zero_optimization"]["stage"] == int(options[1][-1])
    (argv,) = launched
    assert argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert argv[argv.index("--num_processes") + 1] == "8"
    child = argv[argv.index("medharness.cli") + 1:]  # the plain training, every launch option removed
    assert child == ["train", "--output", str(out), "--recipe", "grpo", "--task", "phantom_presence",
                     "--model", "/m", "--eval-every", "5"]


def test_launch_refuses_before_writing(tmp_path: Path, launched: list[list[str]],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    base = ["train", "--recipe", "sft", "--task", "phantom_presence", "--model", "/m", "--output", str(out)]
    assert main([*base, "--launcher", "accelerate", "--deepspeed", "zero2", "--fsdp"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main([*base, "--num-processes", "2"]) == 2  # many processes need the launcher
    assert main([*base, "--launcher", "accelerate", "-C", "trl.num_generation=2"]) == 2  # a bad config
    assert not out.exists() and not launched
    (out / "checkpoint-1").mkdir(parents=True)
    assert main([*base, "--launcher", "accelerate"]) == 2  # a used folder needs --resume
    assert "exists and is not empty" in capsys.readouterr().err
    assert not (out / "launch").exists()


def vllm(mode: str, **settings: Any) -> list[str]:
    return [x for item in launch.vllm_overrides(mode, **settings) for x in ("-C", item)]  # type: ignore[arg-type]


def test_trl_settings_are_checked_at_the_world_size(tmp_path: Path, launched: list[list[str]],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The grpo preset: 8 generations, gradient accumulation 2. One prompt (8 completions) per step fills
    the generation batch with whole groups only with 4 processes or more: TRL, built in the launching process
    (world size 1), refused that before; the launch's own world size decides it now."""
    out = tmp_path / "out"
    base = ["train", "--recipe", "grpo", "--task", "phantom_presence", "--model", "/m", "--output", str(out),
            "--launcher", "accelerate", "-C", "trl.per_device_train_batch_size=1"]
    assert main([*base, "--num-processes", "4"]) == 0  # 1 x 4 x 2 = 8: one whole group
    (argv,) = launched
    assert argv[argv.index("--num_processes") + 1] == "4"
    assert main([*base, "--num-processes", "3", "--resume"]) == 2  # 1 x 3 x 2 = 6
    err = capsys.readouterr().err
    assert "(1 x 3 x 2 = 6)" in err and "trl.num_generations (8)" in err
    assert "gradient_accumulation_steps" in err
    refused = [  # each passes at world size 1 and fails at the launch's
        (["--num-processes", "3", "-C", "trl.generation_batch_size=16"], "trl.generation_batch_size (16)"),
        (["--num-processes", "3", *vllm("colocate", tensor_parallel_size=2)],
         "trl.vllm_tensor_parallel_size (2) must divide the processes per machine (3)"),
        (["--num-processes", "16", "--num-machines", "2", "--main-process-ip", "10.0.0.1",
          *vllm("server")], "trl.vllm_server_host is '127.0.0.1'"),
    ]
    for options, message in refused:
        assert main([*base[:-2], *options, "--resume"]) == 2
        assert message in capsys.readouterr().err
    assert len(launched) == 1
    # the same settings on one machine, and with the server's address across machines, are launched
    colocated = vllm("colocate", tensor_parallel_size=2)
    assert main([*base[:-2], "--num-processes", "4", *colocated, "--resume"]) == 0
    assert main([*base[:-2], "--num-processes", "16", "--num-machines", "2", "--main-process-ip", "10.0.0.1",
                 *vllm("server", host="10.0.0.9"), "--resume"]) == 0
    assert len(launched) == 3


def test_the_dry_run_checks_trl_at_the_launch_world_size(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`train --dry-run` with the launch options checks and prints TRL's settings as the launch would: a
    generation batch that only 4 processes fill is ready there, and refused at 3 processes."""
    base = ["train", "--recipe", "grpo", "--task", "phantom_presence", "--model", "/m", "--output",
            str(tmp_path / "out"), "--launcher", "accelerate", "-C", "trl.per_device_train_batch_size=1",
            "--dry-run", "--json"]
    assert main([*base, "--num-processes", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["trl"]["generation_batch_size"] == 8
    assert main([*base, "--num-processes", "3"]) == 2
    assert "(1 x 3 x 2 = 6)" in capsys.readouterr().err
    assert main(base) == 2  # one process: TRL's own refusal, as a run without the launcher
    assert not (tmp_path / "out").exists()


def test_each_machine_runs_the_same_train_command(tmp_path: Path, launched: list[list[str]]) -> None:
    """Machine 1 of a shared output folder starts after machine 0 has written into it: not refused as a used
    folder, and its own accelerate config beside machine 0's."""
    out = tmp_path / "out"
    train = ["train", "--recipe", "sft", "--task", "phantom_presence", "--model", "/m", "--output", str(out),
             "--launcher", "accelerate", "--num-processes", "4", "--num-machines", "2", "--main-process-ip",
             "10.0.0.1"]
    assert main([*train, "--machine-rank", "0"]) == 0
    (out / "train.json").write_text("{}")  # machine 0's training has started
    assert main([*train, "--machine-rank", "1"]) == 0
    assert sorted(p.name for p in (out / "launch").iterdir()) == ["accelerate_config.machine-1.yaml",
                                                                  "accelerate_config.yaml"]
    for rank, argv in enumerate(launched):
        config = yaml.safe_load(Path(argv[argv.index("--config_file") + 1]).read_text())
        assert (config["machine_rank"], config["num_machines"], config["num_processes"]) == (rank, 2, 4)
        assert argv[argv.index("medharness.cli") + 1:] == [  # the same plain training on both
            "train", "--output", str(out), "--recipe", "sft", "--task", "phantom_presence", "--model", "/m"]


def test_vllm_generation_is_a_recipe_config_switch(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from medharness.trainers.config import trl_args
    from medharness.trainers.run import TrainRequest, resolve

    for mode in ("colocate", "server"):
        overrides = launch.vllm_overrides(mode)
        assert overrides[:2] == ["trl.use_vllm=true", f'trl.vllm_mode="{mode}"']
        config, layers = resolve(TrainRequest(recipe="grpo", task="phantom_presence", model="/m",
                                              overrides=overrides))
        args: Any = trl_args(config, layers, tmp_path, use_gpu=False)
        assert args.use_vllm is True and args.vllm_mode == mode
    config, layers = resolve(TrainRequest(recipe="grpo", task="phantom_presence", model="/m",
                                          overrides=["trl.use_vllm=true", "trl.vllm_mode=colocate"]))
    assert trl_args(config, layers, tmp_path, use_gpu=False).vllm_mode == "colocate"


@pytest.mark.slow
def test_a_real_single_process_accelerate_launch_trains_on_cpu(tmp_path: Path, tiny_models: dict[str, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("accelerate")
    pytest.importorskip("trl")
    for var in ("ACCELERATE_MIXED_PRECISION", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("MEDHARNESS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    code = main(["train", "--preset", "sft", "--preset", "tiny_cpu", "--task", "phantom_presence", "--model",
                 str(tiny_models["qwen2_vl"]), "--output", str(out), "--eval-every", "2", "--eval-limit", "4",
                 "--launcher", "accelerate", "--num-processes", "1"])
    assert code == 0
    info = json.loads((out / "train.json").read_text())
    assert info["status"] == "finished" and info["steps"] == 2
    assert info["launch"] == {"launcher": "accelerate", "world_size": 1,
                              "config": str(out / "launch" / "accelerate_config.yaml")}
    manifest = json.loads((out / "checkpoint-2" / "medharness.json").read_text())
    assert manifest["step"] == 2 and manifest["recipe"] == "sft"
    assert (out / "final" / "medharness.json").is_file()
    assert yaml.safe_load((out / "launch" / "accelerate_config.yaml").read_text())["use_cpu"] is True
    # scored in the child
    assert [p[0] for p in info["evals"]["curve"]["phantom_presence"]["points"]] == [0, 2]


SWEEP = """\
model: {model}
tasks: [phantom_presence]
recipes: [sft]
common_presets: [tiny_cpu]
overrides: [samples.limit=4]
max_steps: 2
eval: {{limit: 4, batch_size: 4, backend: hf, backend_options: {{device: cpu}}}}
baselines: []
base_row: false
launch: {{launcher: accelerate, num_processes: 1}}
"""


@pytest.mark.slow
def test_a_sweep_cell_trains_under_accelerate_launch(tmp_path: Path, tiny_models: dict[str, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep's `launch:` becomes the cell's `train --launcher accelerate`: train writes the launch config
    into the cell's train folder and the launched train accepts it."""
    pytest.importorskip("trl")
    for var in ("ACCELERATE_MIXED_PRECISION", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("MEDHARNESS_CACHE", str(tmp_path / "cache"))
    file = tmp_path / "s.yaml"
    file.write_text(SWEEP.format(model=tiny_models["qwen2_vl"]))
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(tmp_path / "out")]) == 0
    train = tmp_path / "out" / "cells" / "sft-phantom_presence-kall-s0" / "train"
    info = json.loads((train / "train.json").read_text())
    assert info["status"] == "finished" and info["launch"]["launcher"] == "accelerate"
    config = yaml.safe_load((train / "launch" / "accelerate_config.yaml").read_text())
    assert config["use_cpu"] is True and config["mixed_precision"] == "no"
