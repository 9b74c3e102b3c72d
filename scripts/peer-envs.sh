#!/usr/bin/env bash
# Build lmms-eval's environment for the bridges' round-trip test (tests/bridges/test_round_trip.py).
#
#   scripts/peer-envs.sh [ENV_DIR]        # default: .venv-lmms (relative to the repo root); needs .venv built
#
# lmms-eval 0.7.3's pins do not clash with medharness's (`pip install --dry-run` downgrades nothing), but it pulls
# in wandb, opencv, yt-dlp, sentence-transformers and more, and needs filelock < 4 (it imports filelock._api) and
# decord (its qwen2_vl model imports it): so it gets its own environment, layered on .venv (a .pth file adds
# .venv's site-packages, so torch, transformers and medharness itself are shared, not installed twice).
# lm-eval needs no environment of its own: the `peers` extra installs it into .venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ENV_DIR="${1:-.venv-lmms}"
LMMS_EVAL_VERSION="${LMMS_EVAL_VERSION:-0.7.3}"
BASE="$ROOT/.venv"
[[ -x "$BASE/bin/python" ]] || { echo "peer-envs: $BASE is missing: run make install first" >&2; exit 1; }
STAMP="$ENV_DIR/.medharness-lmms-stamp"
WANT="$( { cat "$0" constraints.txt; echo "$LMMS_EVAL_VERSION"; } | sha256sum | cut -c1-16)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$ENV_DIR/bin/python" ]]; then
    echo "lmms-eval env $ENV_DIR is up to date (stamp $WANT)"; exit 0
fi
rm -f "$STAMP"
"$BASE/bin/python" -m venv "$ENV_DIR"  # the same interpreter as .venv, so its site-packages can be layered
SITE="$("$ENV_DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
BASE_SITE="$("$BASE/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "import site; site.addsitedir('$BASE_SITE')" > "$SITE/_medharness_base.pth"
"$ENV_DIR/bin/python" -m pip install -q -c constraints.txt "lmms-eval==$LMMS_EVAL_VERSION" "filelock<4" decord
"$ENV_DIR/bin/python" -c "import lmms_eval, medharness, torch; print('lmms-eval env ok:', torch.__version__)"
echo "$WANT" > "$STAMP"
