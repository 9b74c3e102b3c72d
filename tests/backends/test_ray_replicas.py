"""Ray replicas without a Ray instance: the missing extra, the refusals that come before any work, how
replicas are fitted to a cluster's resources, and `--help` never importing Ray. Real Ray runs:
tests/runs/test_ray_replicas.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import ray_faults  # registers echo_dies_once: a backend without torch (tests/support)

from medharness.backends import ray_replicas
from medharness.backends.ray_replicas import RayExecutor, _plan, check_executor, engine_ref, gpus_per_replica
from medharness.cli import main
from medharness.core.errors import ConfigError
from medharness.runs.pipeline import RunConfig, Runner


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as on a light install


def test_missing_extra_is_a_clear_error(no_ray: None, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = RunConfig(model="m", backend="echo_dies_once", tasks="phantom_presence", limit=2)
    with pytest.raises(ConfigError, match=r"pip install 'medharness\[ray\]'"):
        Runner(config, output=tmp_path / "run", executor=RayExecutor())
    assert main(["run", "--model", "m", "--backend", "echo_dies_once", "--tasks", "phantom_presence",
                 "--executor", "ray", "--output", str(tmp_path / "run")]) == 2
    assert "needs Ray, which is not installed here: pip install 'medharness[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_vllm_data_parallel_size_is_ray_replicas(no_ray: None, tmp_path: Path) -> None:
    """data_parallel_size > 1 runs its engines as Ray replicas: without the extra, it says which one."""
    pytest.importorskip("transformers")
    from medharness.backends.vllm import VLLMBackend

    with pytest.raises(ConfigError, match=r"medharness\[ray\]"):
        VLLMBackend(str(tmp_path / "m"), data_parallel_size=2)


@pytest.mark.parametrize(("argv", "message"), [
    (["--backend", "replay", "--executor", "ray"], "the replay backend has none"),
    (["--model", "baseline:majority", "--executor", "ray"], "the baseline backend has none"),
    (["--backend", "echo_dies_once", "--executor", "ray", "--replicas", "0"], "--replicas must be >= 1"),
    (["--backend", "echo_dies_once", "--replicas", "2"], "--replicas and --ray-address need --executor ray"),
    (["--backend", "echo_dies_once", "--ray-address", "auto"], "--ray-address need --executor ray"),
    (["--backend", "echo_dies_once", "--executor", "ray", "--tasks", "lm_eval:arc_easy"],
     "lm_eval: tasks run in this"),
])
def test_refused_before_any_work(argv: list[str], message: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    if "lm_eval" in message:
        pytest.importorskip("lm_eval", reason="lm_eval: tasks need the `peers` extra (checked first)")
    args = ["run", "--model", str(tmp_path / "m"), "--tasks", "phantom_presence", "--output",
            str(tmp_path / "run"), *argv]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_engines_given_twice_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from medharness.backends import ray_replicas

    monkeypatch.setattr(ray_replicas, "import_ray", lambda: None)  # the refusal, with or without the extra
    with pytest.raises(ConfigError, match="as --replicas, not as the vllm option data_parallel_size"):
        check_executor("vllm", {"data_parallel_size": 2})
    check_executor("vllm", {"data_parallel_size": 1})


def fake_cluster(gpus: float, cpus_per_node: list[float]) -> Any:
    """The two calls `_plan` makes, with the numbers a cluster would report."""
    total = {"CPU": sum(cpus_per_node), **({"GPU": gpus} if gpus else {})}
    return SimpleNamespace(cluster_resources=lambda: total,
                           nodes=lambda: [{"Alive": True, "Resources": {"CPU": c}} for c in cpus_per_node])


def test_replicas_fit_the_cluster() -> None:
    eight_gpus = fake_cluster(8, [64, 64])
    assert _plan(eight_gpus, None, 1.0) == (8, 1.0, 1.0)  # default: one per GPU
    assert _plan(eight_gpus, None, 2.0) == (4, 1.0, 2.0)  # one per tensor_parallel_size GPUs
    assert _plan(eight_gpus, 3, 2.0) == (3, 1.0, 2.0)
    with pytest.raises(ConfigError, match=r"5 replica\(s\) x 2 GPU\(s\) each do not fit the Ray cluster's 8"):
        _plan(eight_gpus, 5, 2.0)
    assert _plan(eight_gpus, 2, 0.0) == (2, 64.0, 0.0)  # device=cpu on a GPU cluster: the cores, per node
    two_cpus = fake_cluster(0, [2])
    assert _plan(two_cpus, None, 1.0) == (1, 2.0, 0.0)  # no GPU: one replica with every core
    assert _plan(two_cpus, 2, 1.0) == (2, 1.0, 0.0)  # the cores shared out
    with pytest.raises(ConfigError, match="3 replicas need a CPU each; the Ray cluster has 2"):
        _plan(two_cpus, 3, 1.0)


def test_gpus_and_engine_of_a_replica() -> None:
    assert gpus_per_replica("vllm", {"tensor_parallel_size": 4}) == 4.0
    assert gpus_per_replica("hf", {}) == 1.0 and gpus_per_replica("hf", {"device": "cpu"}) == 0.0
    assert engine_ref("hf") == "hf"  # a built-in: imported in the replica only
    assert engine_ref("echo_dies_once") == "ray_faults:EchoDiesOnce"  # a plugin: by its class
    assert ray_faults.EchoDiesOnce.name == "echo_dies_once"


def test_help_and_the_run_loop_never_import_ray() -> None:
    code = ("import sys\nfrom medharness.cli import main\nimport medharness.runs.pipeline\n"
            "try:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'ray' not in sys.modules, 'ray imported'\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("ok") and "--executor {local,ray}" in out.stdout
    assert ray_replicas.RAY_EXTRA == "pip install 'medharness[ray]'"


def test_a_local_instance_gets_its_own_token_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray 2.60 generates a token into ~/.ray/auth_token for a local instance (outside any output folder):
    `instance_token` puts one in the environment instead, unless the user chose Ray's authentication."""
    from medharness.backends import ray_replicas

    for var in ray_replicas.AUTH_VARS:
        monkeypatch.delenv(var, raising=False)
    ray_replicas.instance_token()
    token = os.environ["RAY_AUTH_TOKEN"]
    assert len(token) == 64 and int(token, 16) >= 0
    ray_replicas.instance_token()
    assert os.environ["RAY_AUTH_TOKEN"] == token  # one per process: its instances and their workers agree
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray_replicas.instance_token()
    assert "RAY_AUTH_TOKEN" not in os.environ
