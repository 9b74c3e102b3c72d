"""Make `import torchvision` work next to a CPU-only torch when the installed torchvision is a CUDA build.

transformers 5 needs torchvision to build Qwen2-VL style processors. A CUDA torchvision wheel cannot load
its native ops (`_C`) next to a CPU torch, and its import then dies with "operator torchvision::nms does
not exist" (its Python side registers fake kernels for `nms`/`qnms` unconditionally). Declaring those two
op schemas first lets the pure-Python parts (`torchvision.transforms.v2`) import; `torchvision.ops` stays
unusable. Call `ensure_torchvision_importable()` before the first import of torchvision or transformers.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()
_shim_lib: Any = None  # the torch.library.Library holding the declared schemas; kept alive on purpose
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def _native_ops_library(package_dir: Path) -> Path | None:
    """torchvision's compiled `_C` extension, found the way torchvision itself looks for it."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = package_dir / f"_C{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _nms_declared(torch: Any) -> bool:
    try:
        torch.ops.torchvision.nms  # noqa: B018 - attribute access is the probe
    except (AttributeError, RuntimeError):
        return False
    return True


def ensure_torchvision_importable() -> bool:
    """Declare the missing torchvision op schemas if (and only if) its native ops cannot load.

    A no-op when torchvision is absent, already imported, or a build whose `_C` loads (a matching
    install). Idempotent and thread-safe. Returns True when the workaround was applied by this call.
    """
    global _shim_lib
    with _lock:
        if _shim_lib is not None or "torchvision" in sys.modules:
            return False
        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            return False
        import torch

        if _nms_declared(torch):
            return False
        native = _native_ops_library(Path(next(iter(spec.submodule_search_locations))))
        if native is not None:
            try:
                torch.ops.load_library(str(native))
            except OSError as exc:
                log.debug("torchvision native ops do not load (%s)", exc)
            if _nms_declared(torch):
                return False
        lib = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            lib.define(schema)
        _shim_lib = lib
        log.info("torchvision native ops unavailable (CUDA build next to CPU torch?): declared nms/qnms "
                 "schemas so torchvision.transforms imports; torchvision.ops will not work")
        return True
