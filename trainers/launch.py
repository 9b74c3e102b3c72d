"""Many GPUs through existing engines, never a home-made one: accelerate (DDP), DeepSpeed ZeRO-2/3 and FSDP
configs written into the training output folder, and the `accelerate launch` command that runs `train`.

    medharness train ... --launcher accelerate --num-processes 8 --deepspeed zero2 --output OUT
      -> OUT/launch/accelerate_config.yaml + OUT/launch/deepspeed_zero2.json, then
         accelerate launch --config_file OUT/launch/accelerate_config.yaml --num_processes 8 \\
             -m medharness.cli train ... --output OUT

The train command calls `add_launch_options(parser)`, and, when `--launcher accelerate` is set and it is not
already running under accelerate (`under_launcher()`), `launch_from_args(args, train_argv, output)`:
that writes the configs and returns the argv to run instead (the same train argv minus the launch options).
GRPO generation through vLLM is a config switch: `vllm_settings("colocate" | "server")` gives the TRL
`GRPOConfig` keys, `vllm_serve_command` the `trl vllm-serve` server for server mode.
No heavy imports here: accelerate itself only runs in the launched process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from medharness.core.errors import ConfigError
from medharness.core.schemadocs import field_help

LAUNCH_DIR = "launch"
ACCELERATE_CONFIG = "accelerate_config.yaml"
ZERO_STAGES = {"zero2": 2, "zero3": 3}
# argv options that belong to the launcher, removed from the train argv handed to the launched processes
_LAUNCH_FLAGS = {"--launcher": 1, "--num-processes": 1, "--deepspeed": 1, "--fsdp": 0, "--mixed-precision": 1,
                 "--main-process-port": 1}


@dataclass(frozen=True)
class LaunchSpec:
    """How to start training: in this process (`launcher="none"`) or with `accelerate launch`."""

    launcher: Literal["none", "accelerate"] = "none"
    num_processes: int = 1
    deepspeed: Literal["zero2", "zero3"] | None = None
    fsdp: bool = False
    mixed_precision: Literal["bf16", "fp16", "no"] = "bf16"
    use_cpu: bool = False
    main_process_port: int | None = None

    def __post_init__(self) -> None:
        if self.num_processes < 1:
            raise ConfigError(f"--num-processes must be >= 1, got {self.num_processes}")
        if self.deepspeed and self.fsdp:
            raise ConfigError("choose one of --deepspeed and --fsdp, not both")
        if self.deepspeed is not None and self.deepspeed not in ZERO_STAGES:
            raise ConfigError(f"--deepspeed {self.deepspeed!r}: use one of {', '.join(ZERO_STAGES)}")
        if self.launcher == "none" and (self.num_processes > 1 or self.deepspeed or self.fsdp):
            raise ConfigError("--num-processes > 1, --deepspeed and --fsdp need --launcher accelerate")
        if self.use_cpu and (self.deepspeed or self.fsdp):
            raise ConfigError("DeepSpeed and FSDP need GPUs; on a CPU use plain --launcher accelerate")


# -- argparse ---------------------------------------------------------------------------------------------

def add_launch_options(parser: argparse.ArgumentParser) -> None:
    """`--launcher/--num-processes/--deepspeed/--fsdp/--mixed-precision/--main-process-port` for `train`."""
    section = "medharness.trainers.sweeps.schema:LaunchSection"  # a sweep's `launch:` (the same settings)
    group = parser.add_argument_group("launch (many GPUs through accelerate; docs/training-eval.md)")
    group.add_argument("--launcher", choices=["none", "accelerate"], default="none",
                       help=field_help(section, "launcher") + " (default %(default)s)")
    group.add_argument("--num-processes", type=int, default=1,
                       help=field_help(section, "num_processes") + " (default %(default)s)")
    group.add_argument("--deepspeed", choices=sorted(ZERO_STAGES), help=field_help(section, "deepspeed"))
    group.add_argument("--fsdp", action="store_true", help=field_help(section, "fsdp"))
    group.add_argument("--mixed-precision", choices=["bf16", "fp16", "no"], default="bf16",
                       help="accelerate mixed precision (default bf16; no on a CPU)")
    group.add_argument("--main-process-port", type=int, help="rendezvous port (default accelerate's 29500)")


def spec_from_args(args: argparse.Namespace, use_cpu: bool | None = None) -> LaunchSpec:
    """The LaunchSpec the parsed options ask for (`use_cpu` None: a CPU run when no GPU is visible)."""
    if use_cpu is None:
        use_cpu = not _gpu_visible()
    return LaunchSpec(launcher=args.launcher, num_processes=args.num_processes, deepspeed=args.deepspeed,
                      fsdp=args.fsdp, mixed_precision="no" if use_cpu else args.mixed_precision,
                      use_cpu=use_cpu, main_process_port=args.main_process_port)


def strip_launch_options(argv: Sequence[str]) -> list[str]:
    """The argv without the launch options (`--num-processes 4` and `--num-processes=4` forms)."""
    out: list[str] = []
    skip = 0
    for item in argv:
        if skip:
            skip -= 1
            continue
        flag, eq, _ = item.partition("=")
        if flag in _LAUNCH_FLAGS:
            skip = 0 if eq else _LAUNCH_FLAGS[flag]
            continue
        out.append(item)
    return out


def under_launcher() -> bool:
    """True inside a process that `accelerate launch` (or torchrun) started."""
    return "ACCELERATE_MIXED_PRECISION" in os.environ or "LOCAL_RANK" in os.environ


def launch_record(output: Path) -> dict[str, Any]:
    """How this training process was started, for train.json."""
    launched = under_launcher()
    config = output / LAUNCH_DIR / ACCELERATE_CONFIG
    return {"launcher": "accelerate" if launched else "none",
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "config": str(config) if launched and config.is_file() else None}


def _gpu_visible() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


# -- configs ----------------------------------------------------------------------------------------------

def deepspeed_config(stage: int) -> dict[str, Any]:
    """A DeepSpeed JSON for the HF Trainer integration ("auto" = taken from the TRL/Trainer arguments).
    ZeRO-3 gathers the 16-bit weights on save (`stage3_gather_16bit_weights_on_model_save`, accelerate's
    `zero3_save_16bit_model`), so every checkpoint is a plain HF folder that `run` loads."""
    if stage not in (2, 3):
        raise ConfigError(f"DeepSpeed ZeRO stage must be 2 or 3, got {stage}")
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True,
                            "reduce_bucket_size": "auto", "offload_optimizer": {"device": "none"}}
    if stage == 2:
        zero.update(allgather_partitions=True, allgather_bucket_size=200_000_000, reduce_scatter=True)
    else:
        zero.update(offload_param={"device": "none"}, stage3_prefetch_bucket_size="auto",
                    stage3_param_persistence_threshold="auto", sub_group_size=1_000_000_000,
                    stage3_max_live_parameters=1_000_000_000, stage3_max_reuse_distance=1_000_000_000,
                    stage3_gather_16bit_weights_on_model_save=True)
    return {"bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}, "zero_optimization": zero,
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "train_batch_size": "auto",
            "train_micro_batch_size_per_gpu": "auto", "steps_per_print": 1_000_000,
            "wall_clock_breakdown": False}


def fsdp_config() -> dict[str, Any]:
    """FSDP2, wrapping each decoder layer (the model's `_no_split_modules`), full state dict on save."""
    return {"fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_cpu_ram_efficient_loading": True, "fsdp_offload_params": False,
            "fsdp_reshard_after_forward": True, "fsdp_state_dict_type": "FULL_STATE_DICT",
            "fsdp_activation_checkpointing": False}


def accelerate_config(spec: LaunchSpec, deepspeed_file: Path | None = None) -> dict[str, Any]:
    """The accelerate config (the keys `accelerate config` writes; accelerate refuses unknown ones)."""
    if spec.deepspeed:
        kind = "DEEPSPEED"
    elif spec.fsdp:
        kind = "FSDP"
    elif spec.num_processes > 1:
        kind = "MULTI_CPU" if spec.use_cpu else "MULTI_GPU"
    else:
        kind = "NO"
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE", "debug": False, "distributed_type": kind,
        "downcast_bf16": "no", "machine_rank": 0, "main_training_function": "main", "num_machines": 1,
        "num_processes": spec.num_processes, "rdzv_backend": "static", "same_network": True, "tpu_env": [],
        "tpu_use_cluster": False, "tpu_use_sudo": False, "use_cpu": spec.use_cpu,
    }
    if not spec.use_cpu:
        config["gpu_ids"] = "all"
    if spec.deepspeed:  # precision comes from the DeepSpeed JSON ("auto"): accelerate refuses it twice
        if deepspeed_file is None:
            raise ConfigError("a DeepSpeed launch needs its JSON file")
        config["deepspeed_config"] = {"deepspeed_config_file": str(deepspeed_file),
                                      "deepspeed_multinode_launcher": "standard",
                                      "zero3_init_flag": spec.deepspeed == "zero3"}
    else:
        config["mixed_precision"] = spec.mixed_precision
    if spec.fsdp:
        config["fsdp_config"] = fsdp_config()
    if spec.main_process_port is not None:
        config["main_process_port"] = spec.main_process_port
    return config


def write_launch_config(spec: LaunchSpec, output: Path) -> Path:
    """Write OUTPUT/launch/accelerate_config.yaml (+ deepspeed_zero2.json / deepspeed_zero3.json); return
    the accelerate config's path."""
    folder = output / LAUNCH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    ds_file = None
    if spec.deepspeed:
        ds_file = (folder / f"deepspeed_{spec.deepspeed}.json").resolve()
        ds_file.write_text(json.dumps(deepspeed_config(ZERO_STAGES[spec.deepspeed]), indent=2) + "\n",
                           encoding="utf-8")
    path = folder / ACCELERATE_CONFIG
    path.write_text(yaml.safe_dump(accelerate_config(spec, ds_file), sort_keys=True), encoding="utf-8")
    return path


def launch_argv(train_argv: Sequence[str], config_file: Path, num_processes: int,
                module: str = "medharness.cli") -> list[str]:
    """`accelerate launch --config_file F --num_processes N -m MODULE *train_argv` (this interpreter's
    accelerate, so the launched processes use the same environment)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
            "--num_processes", str(num_processes), "-m", module, *strip_launch_options(train_argv)]


def launch_from_args(args: argparse.Namespace, train_argv: Sequence[str], output: Path) -> list[str] | None:
    """For the train command: None when it should train in this process; else write the configs into
    `output` and return the accelerate argv to run instead."""
    if args.launcher == "none" or under_launcher():
        spec_from_args(args, use_cpu=False)  # still refuse contradictory options
        return None
    spec = spec_from_args(args)
    return launch_argv(train_argv, write_launch_config(spec, output), spec.num_processes)


# -- vLLM generation for GRPO -----------------------------------------------------------------------------

def vllm_settings(mode: Literal["colocate", "server"], gpu_memory_utilization: float = 0.3,
                  tensor_parallel_size: int = 1, host: str = "127.0.0.1", port: int = 8000,
                  max_model_length: int | None = None) -> dict[str, Any]:
    """TRL `GRPOConfig` keys that generate GRPO rollouts with vLLM. colocate: an engine inside each training
    process (`vllm_gpu_memory_utilization` of its GPU, `vllm_tensor_parallel_size` across ranks); server: a
    separate `trl vllm-serve` (see `vllm_serve_command`) on GPUs the trainer does not use."""
    if mode not in ("colocate", "server"):
        raise ConfigError(f"vLLM mode must be colocate or server, got {mode!r}")
    if not 0 < gpu_memory_utilization <= 1 or tensor_parallel_size < 1:
        raise ConfigError("vllm: gpu_memory_utilization must be in (0, 1], tensor_parallel_size >= 1")
    out: dict[str, Any] = {"use_vllm": True, "vllm_mode": mode}
    if mode == "colocate":
        out.update(vllm_gpu_memory_utilization=gpu_memory_utilization,
                   vllm_tensor_parallel_size=tensor_parallel_size)
    else:
        out.update(vllm_server_host=host, vllm_server_port=port)
    if max_model_length is not None:
        out["vllm_max_model_length"] = max_model_length
    return out


def vllm_overrides(mode: Literal["colocate", "server"], **settings: Any) -> list[str]:
    """`vllm_settings` as `-C trl.KEY=VALUE` overrides for `train` or a sweep's `overrides:`."""
    return [f"trl.{key}={json.dumps(value)}" for key, value in vllm_settings(mode, **settings).items()]


def vllm_serve_command(model: str, tensor_parallel_size: int = 1, data_parallel_size: int = 1,
                       host: str = "127.0.0.1", port: int = 8000, gpu_memory_utilization: float = 0.9,
                       max_model_len: int | None = None) -> list[str]:
    """The `trl vllm-serve` command for server mode. Run it on its own GPUs
    (`CUDA_VISIBLE_DEVICES=0 trl vllm-serve ...`) and train on the others
    (`CUDA_VISIBLE_DEVICES=1,2,3 ... --num-processes 3`)."""
    argv = ["trl", "vllm-serve", "--model", model, "--tensor-parallel-size", str(tensor_parallel_size),
            "--data-parallel-size", str(data_parallel_size), "--host", host, "--port", str(port),
            "--gpu-memory-utilization", str(gpu_memory_utilization)]
    if max_model_len is not None:
        argv += ["--max-model-len", str(max_model_len)]
    return argv
