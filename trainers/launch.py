"""Many GPUs through existing engines, never a home-made one: accelerate (DDP), DeepSpeed ZeRO-2/3 and FSDP
configs written into the training output folder, and the `accelerate launch` command that runs `train`.

    medharness train ... --launcher accelerate --num-processes 8 --deepspeed zero2 --output OUT
      -> OUT/launch/accelerate_config.yaml + OUT/launch/deepspeed_zero2.json, then
         accelerate launch --config_file OUT/launch/accelerate_config.yaml --num_processes 8 \\
             -m medharness.cli train ... --output OUT

Across machines (docs/scaling.md), the same command on every machine, R = 0 .. M-1, `--num-processes` the
total over all machines (accelerate's `num_processes`):

    medharness train ... --launcher accelerate --num-processes 16 --num-machines 2 --machine-rank R \\
        --main-process-ip IP_OF_RANK_0 --output OUT
      -> OUT/launch/accelerate_config.yaml (machine 0; machine R > 0: accelerate_config.machine-R.yaml, so
         machines sharing OUT never read each other's rank)

or, with DeepSpeed's own multi-node launcher (pdsh over ssh), one command on the first machine:
`--deepspeed zero3 --deepspeed-hostfile FILE` (`host slots=N` lines; the machine count is the host count).
The keys are those `accelerate config` writes (num_machines, machine_rank, main_process_ip,
deepspeed_config.deepspeed_hostfile / deepspeed_multinode_launcher). `check_world_size` refuses, before
launch, TRL settings that cannot work at the world size (GRPO's generation batch, vLLM's layout).

The train command calls `add_launch_options(parser)`, and, when `--launcher accelerate` is set and it is not
already running under accelerate (`under_launcher()`), `launch_from_args(args, train_argv, output)`:
that writes the configs and returns the argv to run instead (the same train argv minus the launch options).
GRPO generation through vLLM is a config switch: `vllm_settings("colocate" | "server")` gives the TRL
`GRPOConfig` keys, `vllm_serve_command` the `trl vllm-serve` server for server mode.
No heavy imports here: accelerate itself only runs in the launched process.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from medharness.core.atomic import write_text_atomic
from medharness.core.errors import ConfigError
from medharness.core.schemadocs import field_help

LAUNCH_DIR = "launch"
ACCELERATE_CONFIG = "accelerate_config.yaml"
ZERO_STAGES = {"zero2": 2, "zero3": 3}
# argv options that belong to the launcher, removed from the train argv handed to the launched processes
_LAUNCH_FLAGS = {"--launcher": 1, "--num-processes": 1, "--deepspeed": 1, "--fsdp": 0, "--mixed-precision": 1,
                 "--main-process-port": 1, "--num-machines": 1, "--machine-rank": 1, "--main-process-ip": 1,
                 "--deepspeed-hostfile": 1}


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
    num_machines: int = 1  # num_processes is the total over all machines
    machine_rank: int = 0
    main_process_ip: str | None = None
    deepspeed_hostfile: Path | None = None  # DeepSpeed's launcher (pdsh) starts every machine from rank 0

    def __post_init__(self) -> None:
        if self.num_processes < 1:
            raise ConfigError(f"--num-processes must be >= 1, got {self.num_processes}")
        self._check_machines()
        if self.deepspeed and self.fsdp:
            raise ConfigError("choose one of --deepspeed and --fsdp, not both")
        if self.deepspeed is not None and self.deepspeed not in ZERO_STAGES:
            raise ConfigError(f"--deepspeed {self.deepspeed!r}: use one of {', '.join(ZERO_STAGES)}")
        if self.launcher == "none" and (self.num_processes > 1 or self.deepspeed or self.fsdp):
            raise ConfigError("--num-processes > 1, --deepspeed and --fsdp need --launcher accelerate")
        if self.use_cpu and (self.deepspeed or self.fsdp):
            raise ConfigError("DeepSpeed and FSDP need GPUs; on a CPU use plain --launcher accelerate")

    @property
    def per_machine(self) -> int:
        """Processes on each machine."""
        return self.num_processes // self.num_machines

    def _check_machines(self) -> None:
        m, rank = self.num_machines, self.machine_rank
        if m < 1:
            raise ConfigError(f"--num-machines must be >= 1, got {m}")
        if m == 1:
            if rank or self.main_process_ip or self.deepspeed_hostfile:
                raise ConfigError("--machine-rank, --main-process-ip and --deepspeed-hostfile are for a run "
                                  "across machines: give --num-machines M (M > 1)")
            return
        if self.launcher != "accelerate":
            raise ConfigError("--num-machines > 1 needs --launcher accelerate")
        if self.use_cpu:
            raise ConfigError("a run across machines needs GPUs (none is visible here)")
        if not 0 <= rank < m:
            raise ConfigError(f"--machine-rank must be in 0..{m - 1} for --num-machines {m}, got {rank}")
        if self.num_processes % m:
            raise ConfigError(f"--num-processes is the total over all machines (accelerate's num_processes): "
                              f"{self.num_processes} is not a multiple of --num-machines {m}")
        if self.deepspeed_hostfile is not None:
            if not self.deepspeed:
                raise ConfigError("--deepspeed-hostfile is DeepSpeed's multi-node launcher: give --deepspeed "
                                  "zero2|zero3 (without DeepSpeed: one command per machine with "
                                  "--machine-rank)")
            if rank:
                raise ConfigError("with --deepspeed-hostfile one command on the first machine starts every "
                                  "machine (pdsh over ssh): leave --machine-rank at 0")
        elif not self.main_process_ip:
            raise ConfigError(f"--num-machines {m}: give --main-process-ip, the address of machine rank 0 "
                              "(the same on every machine)")


# -- argparse ---------------------------------------------------------------------------------------------

def add_launch_options(parser: argparse.ArgumentParser) -> None:
    """`--launcher/--num-processes/--deepspeed/--fsdp/--mixed-precision/--main-process-port` and, across
    machines, `--num-machines/--machine-rank/--main-process-ip/--deepspeed-hostfile`, for `train`."""
    section = "medharness.trainers.sweeps.schema:LaunchSection"  # a sweep's `launch:` (the same settings)
    group = parser.add_argument_group("launch (many GPUs through accelerate; docs/training-eval.md, across "
                                      "machines: docs/scaling.md)")
    group.add_argument("--launcher", choices=["none", "accelerate"], default="none",
                       help=field_help(section, "launcher") + " (default %(default)s)")
    group.add_argument("--num-processes", type=int, default=1,
                       help=field_help(section, "num_processes") + " (default %(default)s)")
    group.add_argument("--deepspeed", choices=sorted(ZERO_STAGES), help=field_help(section, "deepspeed"))
    group.add_argument("--fsdp", action="store_true", help=field_help(section, "fsdp"))
    group.add_argument("--mixed-precision", choices=["bf16", "fp16", "no"], default="bf16",
                       help="accelerate mixed precision (default bf16; no on a CPU)")
    group.add_argument("--main-process-port", type=int, help="rendezvous port (default accelerate's 29500)")
    group.add_argument("--num-machines", type=int, default=1, metavar="M",
                       help="machines of a multi-node run (docs/scaling.md): run the same command on each "
                            "with its --machine-rank; --num-processes is then the total over all machines "
                            "(default %(default)s; with --deepspeed-hostfile: the hostfile's host count)")
    group.add_argument("--machine-rank", type=int, default=0, metavar="R",
                       help="this machine's rank, 0 .. M-1 (rank 0 hosts the main process; "
                            "default %(default)s)")
    group.add_argument("--main-process-ip", metavar="IP",
                       help="address of machine rank 0, the same on every machine (needed with "
                            "--num-machines)")
    group.add_argument("--deepspeed-hostfile", type=Path, metavar="FILE",
                       help="with --deepspeed: DeepSpeed's hostfile (`host slots=N` per line); one command "
                            "on the first machine starts every machine through pdsh (ssh), instead of one "
                            "command per machine")


def spec_from_args(args: argparse.Namespace, use_cpu: bool | None = None) -> LaunchSpec:
    """The LaunchSpec the parsed options ask for (`use_cpu` None: a CPU run when no GPU is visible)."""
    if use_cpu is None:
        use_cpu = not _gpu_visible()
    hostfile, machines = args.deepspeed_hostfile, args.num_machines
    if hostfile is not None:
        hosts = read_hostfile(hostfile)
        if machines not in (1, len(hosts)):
            raise ConfigError(f"--num-machines {machines} but the hostfile {hostfile} lists {len(hosts)} "
                              "machine(s): give one or the other")
        machines = len(hosts)
        if machines < 2:
            raise ConfigError(f"the hostfile {hostfile} lists one machine: on one machine leave "
                              "--deepspeed-hostfile out")
        per_machine = args.num_processes // machines
        short = [f"{host} (slots={slots})" for host, slots in hosts.items() if slots < per_machine]
        if short:
            raise ConfigError(f"--num-processes {args.num_processes} over {machines} machines is "
                              f"{per_machine} per machine, more than the hostfile gives: {', '.join(short)}")
        hostfile = hostfile.resolve()
    return LaunchSpec(launcher=args.launcher, num_processes=args.num_processes, deepspeed=args.deepspeed,
                      fsdp=args.fsdp, mixed_precision="no" if use_cpu else args.mixed_precision,
                      use_cpu=use_cpu, main_process_port=args.main_process_port, num_machines=machines,
                      machine_rank=args.machine_rank, main_process_ip=args.main_process_ip,
                      deepspeed_hostfile=hostfile)


def read_hostfile(path: Path) -> dict[str, int]:
    """DeepSpeed's hostfile: `hostname slots=N` per line (blank lines and # comments skipped)."""
    if not path.is_file():
        raise ConfigError(f"--deepspeed-hostfile {path} does not exist")
    hosts: dict[str, int] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        slots = parts[1].removeprefix("slots=") if len(parts) == 2 and parts[1].startswith("slots=") else ""
        if not slots.isdigit() or int(slots) < 1:
            raise ConfigError(f"{path}:{number}: expected `hostname slots=N` (N >= 1), got {raw.strip()!r}")
        if parts[0] in hosts:
            raise ConfigError(f"{path}:{number}: host {parts[0]} is listed twice")
        hosts[parts[0]] = int(slots)
    return hosts


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
        "downcast_bf16": "no", "machine_rank": spec.machine_rank, "main_training_function": "main",
        "num_machines": spec.num_machines, "num_processes": spec.num_processes, "rdzv_backend": "static",
        "same_network": True, "tpu_env": [], "tpu_use_cluster": False, "tpu_use_sudo": False,
        "use_cpu": spec.use_cpu,
    }
    if spec.main_process_ip:
        config["main_process_ip"] = spec.main_process_ip
    if not spec.use_cpu:
        config["gpu_ids"] = "all"
    if spec.deepspeed:  # precision comes from the DeepSpeed JSON ("auto"): accelerate refuses it twice
        if deepspeed_file is None:
            raise ConfigError("a DeepSpeed launch needs its JSON file")
        config["deepspeed_config"] = {"deepspeed_config_file": str(deepspeed_file),
                                      "deepspeed_multinode_launcher": "standard",
                                      "zero3_init_flag": spec.deepspeed == "zero3"}
        if spec.deepspeed_hostfile is not None:  # accelerate runs `deepspeed --hostfile F` (pdsh: ssh)
            config["deepspeed_config"].update(deepspeed_hostfile=str(spec.deepspeed_hostfile),
                                              deepspeed_multinode_launcher="pdsh")
    else:
        config["mixed_precision"] = spec.mixed_precision
    if spec.fsdp:
        config["fsdp_config"] = fsdp_config()
    if spec.main_process_port is not None:
        config["main_process_port"] = spec.main_process_port
    return config


def config_name(machine_rank: int) -> str:
    """The accelerate config's file name: accelerate_config.yaml on machine 0 (and on one machine),
    accelerate_config.machine-R.yaml on machine R (machines sharing the output folder keep their own)."""
    return ACCELERATE_CONFIG if machine_rank == 0 else f"accelerate_config.machine-{machine_rank}.yaml"


def write_launch_config(spec: LaunchSpec, output: Path) -> Path:
    """Write OUTPUT/launch/accelerate_config.yaml (+ deepspeed_zero2.json / deepspeed_zero3.json); return
    the accelerate config's path. Written atomically: every machine of a run may write them at once."""
    folder = output / LAUNCH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    ds_file = None
    if spec.deepspeed:
        ds_file = (folder / f"deepspeed_{spec.deepspeed}.json").resolve()
        write_text_atomic(ds_file, json.dumps(deepspeed_config(ZERO_STAGES[spec.deepspeed]), indent=2) + "\n")
    path = folder / config_name(spec.machine_rank)
    write_text_atomic(path, yaml.safe_dump(accelerate_config(spec, ds_file), sort_keys=True))
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
    if spec.num_machines > 1 and getattr(args, "output", None) is None:
        raise ConfigError("a run across machines needs --output: every machine names the same folder (a "
                          "default folder's timestamp would differ between machines)")
    return launch_argv(train_argv, write_launch_config(spec, output), spec.num_processes)


# -- TRL settings that depend on the world size -----------------------------------------------------------

LOOPBACK_HOSTS = {"localhost", "0.0.0.0", "::"}


def _loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def world_size_problems(settings: Mapping[str, Any], config_class: type, spec: LaunchSpec) -> list[str]:
    """What in a recipe's `trl:` settings (over `config_class`'s defaults) cannot work with `spec`'s world
    size; TRL itself checks them only inside the launched processes. GRPO (any config with
    `num_generations`): the generation batch (per_device_train_batch_size x num_processes x
    steps_per_generation, which defaults to gradient_accumulation_steps) holds whole groups of
    num_generations; vLLM colocate: its tensor-parallel groups stay on one machine; vLLM server mode across
    machines: only the main process (machine rank 0) talks to the server, so it needs a reachable address."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    if "num_generations" not in fields:
        return []

    def value(key: str) -> Any:
        if key in settings:
            return settings[key]
        field = fields.get(key)
        return None if field is None or field.default is dataclasses.MISSING else field.default

    world, out = spec.num_processes, []
    per_device, generations = value("per_device_train_batch_size"), value("num_generations")
    per_step = per_device * world
    gen_batch, steps = value("generation_batch_size"), value("steps_per_generation")
    if gen_batch is not None and steps is None:
        if gen_batch % per_step:
            out.append(f"trl.generation_batch_size ({gen_batch}) must be a multiple of trl."
                       f"per_device_train_batch_size x num_processes ({per_device} x {world} = {per_step})")
    elif gen_batch is None:
        steps_key = "steps_per_generation" if steps is not None else "gradient_accumulation_steps"
        steps = steps if steps is not None else value("gradient_accumulation_steps")
        if (per_step * steps) % generations:
            out.append(f"the generation batch trl.per_device_train_batch_size x num_processes x "
                       f"trl.{steps_key} ({per_device} x {world} x {steps} = {per_step * steps}) must hold "
                       f"whole groups of trl.num_generations ({generations}): change one of these settings")
    if value("eval_strategy") not in (None, "no"):
        eval_generations = value("num_generations_eval") or generations
        eval_batch = value("per_device_eval_batch_size") * world
        if eval_batch % eval_generations:
            out.append(f"the eval batch trl.per_device_eval_batch_size x num_processes "
                       f"({eval_batch}) must be a multiple of {eval_generations} generations")
    if value("use_vllm"):
        mode, parallel = value("vllm_mode"), value("vllm_tensor_parallel_size") or 1
        if mode == "colocate" and spec.per_machine % parallel:
            out.append(f"trl.vllm_tensor_parallel_size ({parallel}) must divide the processes per machine "
                       f"({spec.per_machine}): a colocated vLLM engine spans that many consecutive training "
                       "processes, which must be on one machine (TRL needs it to divide the world size)")
        host = str(value("vllm_server_host"))
        remote = spec.num_machines > 1 and not value("vllm_server_base_url")
        if mode == "server" and remote and _loopback(host):
            out.append(f"trl.vllm_server_host is {host!r}: across machines give the address of the machine "
                       "running `trl vllm-serve` (or trl.vllm_server_base_url); only the main process on "
                       "machine rank 0 connects to it")
    return out


def check_trl_at_world_size(config: Any, layers: Any, output: Path, spec: LaunchSpec) -> Any:
    """The launching process's check of a recipe's TRL settings (a TrainConfig and its Layers) at the
    launch's world size: `world_size_problems` first, then TRL's own config class, given the generation batch
    the launched processes will compute (built here, TRL would take this process's world size, 1, and refuse
    a batch that only the full world size fills with whole groups). Returns the TRL config object."""
    from medharness.trainers.config import trl_args
    from medharness.trainers.recipes.base import recipe_class

    cls = recipe_class(config.recipe).config_class()
    check_world_size(config.trl, cls, spec)
    settings = dict(config.trl)
    names = {f.name: f.default for f in dataclasses.fields(cls)}
    grpo = "num_generations" in names
    if spec.num_processes > 1 and grpo and settings.get("generation_batch_size") is None:
        steps = settings.pop("steps_per_generation", None) or settings.get(
            "gradient_accumulation_steps", names["gradient_accumulation_steps"])
        per_device = settings.get("per_device_train_batch_size", names["per_device_train_batch_size"])
        settings["generation_batch_size"] = per_device * spec.num_processes * steps
    return trl_args(config.model_copy(update={"trl": settings}), layers, output, use_gpu=False)


def check_world_size(settings: Mapping[str, Any], config_class: type, spec: LaunchSpec) -> None:
    """Raise a ConfigError naming every setting `world_size_problems` finds."""
    problems = world_size_problems(settings, config_class, spec)
    if problems:
        where = (f"{spec.num_machines} machines x {spec.per_machine}" if spec.num_machines > 1
                 else str(spec.num_processes))
        raise ConfigError(f"{config_class.__name__} at {where} processes: " + "; ".join(problems))


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
