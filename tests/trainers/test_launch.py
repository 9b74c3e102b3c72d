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
from medharness.trainers import launch
from medharness.trainers.launch import (
    LaunchSpec,
    add_launch_options,
    deepspeed_config,
    launch_argv,
    launch_from_args,
    spec_from_args,
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


# -- across machines --------------------------------------------------------------------------------------

def multi(*extra: str) -> argparse.Namespace:
    return parse("--output", "/o", "--launcher", "accelerate", "--num-processes", "16", "--num-machines", "2",
                 *extra)


def accelerate_reads(config: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """The arguments accelerate's own `launch_command` hands torchrun for `config` (torchrun not started)."""
    pytest.importorskip("accelerate")
    import accelerate.commands.launch as accelerate_launch

    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(accelerate_launch, "_run_torchrun", seen.append)
    for other in ("simple_launcher", "deepspeed_launcher", "_run_subprocess"):  # never start a process
        monkeypatch.setattr(accelerate_launch, other, lambda *a, **k: pytest.fail("not torchrun"))
    args = accelerate_launch.launch_command_parser().parse_args(argv[3:])
    assert argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert args.config_file == str(config)
    accelerate_launch.launch_command(args)
    (out,) = seen
    return out


@pytest.mark.parametrize("rank", [0, 1])
def test_each_machine_writes_its_own_config_and_accelerate_reads_it(tmp_path: Path, rank: int,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "_gpu_visible", lambda: True)  # the machines have GPUs; this one need not
    args = multi("--machine-rank", str(rank), "--main-process-ip", "10.0.0.1", "--main-process-port", "29533")
    spec = spec_from_args(args, use_cpu=False)
    assert spec.num_machines == 2 and spec.machine_rank == rank and spec.per_machine == 8
    train = ["train", "--recipe", "grpo", "--output", str(tmp_path)]
    options = ["--num-machines", "2", f"--machine-rank={rank}", "--main-process-ip", "10.0.0.1"]
    argv = launch_from_args(args, [*train, *options], tmp_path)
    name = "accelerate_config.yaml" if rank == 0 else "accelerate_config.machine-1.yaml"
    path = tmp_path / "launch" / name
    assert sorted(p.name for p in (tmp_path / "launch").iterdir()) == [name]
    assert argv is not None and argv[argv.index("--config_file") + 1] == str(path)
    assert argv[argv.index("medharness.cli") + 1:] == train  # the launch options stay with the launcher
    data = yaml.safe_load(path.read_text())
    assert (data["num_machines"], data["machine_rank"], data["num_processes"]) == (2, rank, 16)
    assert data["main_process_ip"] == "10.0.0.1" and data["main_process_port"] == 29533
    config = cluster_config(path)  # accelerate's loader: unknown keys are an error
    assert (config.num_machines, config.machine_rank, config.main_process_ip) == (2, rank, "10.0.0.1")
    torchrun = accelerate_reads(path, argv, monkeypatch)  # what accelerate hands torchrun on this machine
    assert (torchrun.nnodes, torchrun.node_rank, torchrun.nproc_per_node) == ("2", rank, "8")
    endpoint = getattr(torchrun, "rdzv_endpoint", None) or f"{torchrun.master_addr}:{torchrun.master_port}"
    assert endpoint == "10.0.0.1:29533" and torchrun.module and torchrun.training_script == "medharness.cli"


def test_deepspeed_across_machines(tmp_path: Path) -> None:
    """One command per machine (accelerate's `standard` launcher: torchrun), or DeepSpeed's own launcher
    from the first machine with a hostfile (the form accelerate turns into `deepspeed --hostfile F`)."""
    standard = spec_from_args(multi("--deepspeed", "zero3", "--machine-rank", "1", "--main-process-ip", "h0"),
                              use_cpu=False)
    data = yaml.safe_load(write_launch_config(standard, tmp_path / "a").read_text())
    assert data["deepspeed_config"]["deepspeed_multinode_launcher"] == "standard"
    assert "deepspeed_hostfile" not in data["deepspeed_config"] and data["machine_rank"] == 1
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# the nodes\nnode-a slots=8\n\nnode-b slots=8  # second\n")
    args = parse("--output", "/o", "--launcher", "accelerate", "--num-processes", "16", "--deepspeed",
                 "zero2", "--deepspeed-hostfile", str(hostfile))
    spec = spec_from_args(args, use_cpu=False)
    assert spec.num_machines == 2 and spec.deepspeed_hostfile == hostfile.resolve()  # the host count
    path = write_launch_config(spec, tmp_path / "b")
    data = yaml.safe_load(path.read_text())
    assert data["deepspeed_config"]["deepspeed_hostfile"] == str(hostfile.resolve())
    assert data["deepspeed_config"]["deepspeed_multinode_launcher"] == "pdsh"
    assert (data["num_machines"], data["machine_rank"], data["distributed_type"]) == (2, 0, "DEEPSPEED")
    config = cluster_config(path)
    assert config.deepspeed_config["deepspeed_hostfile"] == str(hostfile.resolve())
    pytest.importorskip("accelerate")
    import accelerate.commands.launch as accelerate_launch
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    launched = accelerate_launch.launch_command_parser().parse_args(launch_argv(["train"], path, 16)[3:])
    launched, defaults, _ = accelerate_launch._validate_launch_command(launched)
    launched.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    cmd, env = prepare_deepspeed_cmd_env(launched)  # as accelerate's deepspeed_launcher builds it
    assert cmd[:3] == ["deepspeed", "--hostfile", str(hostfile.resolve())]
    assert cmd[cmd.index("--launcher") + 1] == "pdsh" and cmd[cmd.index("--num_gpus") + 1] == "8"
    assert cmd[-3:] == ["--module", "medharness.cli", "train"]
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"  # the launched train sees that it runs under a launcher


def test_bad_multi_machine_options_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "_gpu_visible", lambda: True)
    cases = [
        (multi("--machine-rank", "0"), "--main-process-ip"),
        (multi("--machine-rank", "2", "--main-process-ip", "h"), r"0\.\.1"),
        (parse("--launcher", "accelerate", "--num-processes", "3", "--num-machines", "2", "--main-process-ip",
               "h"), "not a multiple"),
        (parse("--launcher", "accelerate", "--machine-rank", "1"), "--num-machines M"),
        (multi("--main-process-ip", "h"), "needs GPUs", True),
        (parse("--num-machines", "2", "--main-process-ip", "h", "--num-processes", "2"),
         "--launcher accelerate"),
        (multi("--deepspeed", "zero2", "--deepspeed-hostfile", str(tmp_path / "none")), "does not exist"),
    ]
    good, short = tmp_path / "hosts", tmp_path / "short"
    good.write_text("a slots=8\nb slots=8\n")
    short.write_text("a slots=8\nb slots=4\n")
    cases += [(multi("--deepspeed-hostfile", str(good)), "give --deepspeed"),
              (multi("--deepspeed", "zero2", "--deepspeed-hostfile", str(short)), r"b \(slots=4\)"),
              (multi("--deepspeed", "zero2", "--deepspeed-hostfile", str(good), "--machine-rank", "1"),
               "leave --machine-rank at 0")]
    three = tmp_path / "three"
    three.write_text("a slots=8\nb slots=8\nc slots=8\n")
    cases.append((multi("--deepspeed", "zero2", "--deepspeed-hostfile", str(three)), "lists 3 machine"))
    bad = tmp_path / "bad"
    bad.write_text("a slots=8\nb 8\n")
    cases.append((multi("--deepspeed", "zero2", "--deepspeed-hostfile", str(bad)), "bad:2"))
    for args, message, *cpu in cases:
        with pytest.raises(ConfigError, match=message):
            spec_from_args(args, use_cpu=bool(cpu))
    args = parse("--launcher", "accelerate", "--num-processes", "16", "--num-machines", "2",
                 "--main-process-ip", "h")
    with pytest.raises(ConfigError, match="needs --output"):  # each machine's default folder would differ
        launch_from_args(args, ["train"], tmp_path)
    assert not (tmp_path / "launch").exists()


def test_launch_argv_strips_the_multi_machine_options() -> None:
    train = ["train", "--num-machines", "2", "--machine-rank=1", "--main-process-ip", "h",
             "--deepspeed-hostfile", "f", "--recipe", "grpo"]
    assert strip_launch_options(train) == ["train", "--recipe", "grpo"]


PROBE = """\
import json, os, sys
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
total = torch.tensor([dist.get_rank() + 1.0])
dist.all_reduce(total)
seen = {"rank": dist.get_rank(), "world": dist.get_world_size(), "sum": total.item(), "argv": sys.argv[1:],
        "node": os.environ.get("GROUP_RANK"), "under_launcher": "ACCELERATE_MIXED_PRECISION" in os.environ}
open(f"{sys.argv[1]}.{dist.get_rank()}", "w").write(json.dumps(seen))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_machines_rendezvous_through_the_written_configs(tmp_path: Path) -> None:
    """Two `accelerate launch` commands, as machines 0 and 1 would run them (here both on this host, over
    loopback, a gloo process group on CPU): accelerate's torchrun joins them into one world of 2."""
    pytest.importorskip("accelerate")
    import socket

    (tmp_path / "probe_two.py").write_text(PROBE)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    result, running = tmp_path / "seen", []
    for rank in (0, 1):  # a GPU config (torchrun); the probe itself needs no GPU
        spec = LaunchSpec("accelerate", 2, mixed_precision="no", num_machines=2, machine_rank=rank,
                          main_process_ip="127.0.0.1", main_process_port=port)
        argv = launch_argv([str(result), "--num-machines", "2"], write_launch_config(spec, tmp_path / "out"),
                           2, module="probe_two")
        running.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True))
    for process in running:
        output = process.communicate(timeout=300)[0]
        assert process.returncode == 0, output[-3000:]
    seen = [json.loads(Path(f"{result}.{rank}").read_text()) for rank in (0, 1)]
    assert [(s["rank"], s["world"], s["sum"], s["node"]) for s in seen] == [(0, 2, 3.0, "0"),
                                                                           (1, 2, 3.0, "1")]
    assert all(s["under_launcher"] and s["argv"] == [str(result)] for s in seen)
    assert sorted(p.name for p in (tmp_path / "out" / "launch").iterdir()) == [
        "accelerate_config.machine-1.yaml", "accelerate_config.yaml"]
