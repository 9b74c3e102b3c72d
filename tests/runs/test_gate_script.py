"""The GPU regression workflow: its YAML parses, names what exists, and its commands
(scripts/regression-gate.sh) run on the CPU with the hf backend and the tiny model; a degraded candidate fails
the same script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medharness.taskfiles.splits import read_sample_ids
from medharness.taskfiles.task import load_task

ROOT = Path(__file__).parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "gpu-regression.yml"
SCRIPT = ROOT / "scripts" / "regression-gate.sh"
GATE_DATA = ROOT / "tests" / "data" / "gate"
MEDHARNESS = str(Path(sys.executable).parent / "medharness")


def test_workflow_parses_and_names_what_exists() -> None:
    flow = yaml.safe_load(WORKFLOW.read_text())
    job = flow["jobs"]["gate"]
    assert job["env"]["BACKEND"] == "vllm"
    runs = [step.get("run", "") for step in job["steps"]]
    assert "bash scripts/regression-gate.sh" in runs
    assert any("GITHUB_STEP_SUMMARY" in r for r in runs)
    assert any(step.get("uses", "").startswith("actions/upload-artifact") for step in job["steps"])
    subsets = read_sample_ids(ROOT / job["env"]["SUBSETS"])
    for task in job["env"]["TASKS"].split(","):
        assert (ROOT / "tasks" / "subsets" / f"{task}-ci.json").is_file()
        assert load_task(task).name == task and 20 <= len(subsets[task]) <= 60  # a few dozen items
        assert f"-T {task}.data_dir=" in job["env"]["RUN_ARGS"]


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "MEDHARNESS": MEDHARNESS, "OUT": str(tmp_path / "out"),
            "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=900, check=False)


@pytest.mark.shared_data
def test_a_constant_candidate_fails_the_script(tmp_path: Path, vqa_rad_dir: Path) -> None:
    done = run_script(tmp_path, MODEL="baseline:constant:unknown", BACKEND="baseline", TASKS="vqa_rad",
                      BASELINE=str(GATE_DATA / "vqa_rad-constant-yes.json"),
                      RUN_ARGS=f"--data-dir {vqa_rad_dir}")
    assert done.returncode == 1, done.stderr
    assert "**worse**" in (tmp_path / "out" / "gate.md").read_text()
    assert (tmp_path / "out" / "board.md").is_file() and (tmp_path / "out" / "gate.json").is_file()


@pytest.mark.slow
@pytest.mark.shared_data
def test_workflow_commands_run_on_cpu_with_the_tiny_model(tmp_path: Path, vqa_rad_dir: Path,
                                                          tiny_models: dict[str, Path]) -> None:
    """What .ci/run does: the tiny model on the pinned phantom and VQA-RAD subsets against tiny-cpu.json."""
    done = run_script(tmp_path, MODEL=str(tiny_models["qwen2_vl"]), BACKEND="hf",
                      TASKS="phantom_presence,phantom_count,vqa_rad",
                      BASELINE=str(GATE_DATA / "tiny-cpu.json"),
                      RUN_ARGS=f"-T vqa_rad.data_dir={vqa_rad_dir}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "## medharness gate: PASS" in done.stdout
