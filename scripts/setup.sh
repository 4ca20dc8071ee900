#!/usr/bin/env bash
# Set up prunerepro on a Debian machine: system packages FFCV builds against, a virtual
# environment, torch, FFCV with its pins, and the project itself (editable).
#
#   bash scripts/setup.sh            # .venv/ with exactly the tested set (requirements/tested.txt)
#   bash scripts/setup.sh --slurm    # ... the test set-up: TeX (the tables' LaTeX is compiled by the
#                                    # tests) and the local two-node SLURM test cluster
#   bash scripts/setup.sh --latest   # .venv-latest/: the newest releases pyproject.toml allows
#   bash scripts/setup.sh --lowest   # .venv-lowest/: the lowest supported releases (requirements/lowest.txt)
#
# .venv/ is what CI tests: every package at the version CI last passed with, so a new upstream
# release cannot turn CI red. --latest tries upstream (then `.venv-latest/bin/python -m pytest`;
# when green, refresh the tested set as requirements/tested.txt says); --lowest checks the lower
# bounds. Idempotent: a second run checks a stamp and returns in a second or two (--latest always
# asks for the newest releases again).
# Environment knobs:
#   PRUNEREPRO_PYTHON   interpreter for the venv (default: python3)
#   PRUNEREPRO_TORCH    torch requirement to install when torch is missing
#                       (default: torch==2.13.0 on a machine without a GPU; plain "torch" with one)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WITH_SLURM=0
MODE=tested
for arg in "$@"; do
  case "$arg" in
    --slurm) WITH_SLURM=1 ;;
    --latest) MODE=latest ;;
    --lowest) MODE=lowest ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done
case "$MODE" in
  tested) VENV=.venv;        PINS=requirements/tested.txt ;;
  lowest) VENV=.venv-lowest; PINS=requirements/lowest.txt ;;
  latest) VENV=.venv-latest; PINS="" ;;
esac
log() { echo "[setup $(date +%T)] $*" >&2; }
T0=$(date +%s)

# ---------------------------------------------------------------- 1. Debian packages
# python3-venv: Debian's python3 cannot create a venv without it (ensurepip is split out).
APT_PKGS=(pkg-config libturbojpeg0-dev libopencv-dev g++ python3-dev python3-venv git)
# The test set-up only: pdflatex with booktabs and geometry (tests/test_tables.py compiles every
# tables/*.tex; poppler-utils' pdftoppm renders a compiled table to PNG for a look).
TEST_PKGS=(texlive-latex-base texlive-latex-recommended poppler-utils)
apt_install() {  # apt_install PKG...: those not installed yet
  local missing=() p SUDO=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get -o Acquire::Retries=3 update -qq
  $SUDO apt-get -o Acquire::Retries=3 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
apt_install "${APT_PKGS[@]}"
# --slurm: the test-only packages and the SLURM test cluster need nothing from the Python
# environment, so they come up in the background while pip works (on a fresh machine their
# downloads and installs take a minute or two); step 5 waits for them. The one apt user
# from here on is that background job.
BG=""
if [ "$WITH_SLURM" = 1 ]; then
  BG_LOG=$(mktemp /tmp/prunerepro-setup-slurm.XXXXXX)
  ( apt_install "${TEST_PKGS[@]}" && bash "$ROOT/scripts/slurm/start_slurm.sh" ) >"$BG_LOG" 2>&1 &
  BG=$!
  # never leave it behind half-way through an apt install: if this script fails, wait for it
  trap '[ -z "$BG" ] || wait "$BG" 2>/dev/null || true' EXIT
fi

# ---------------------------------------------------------------- 2. virtual environment
PY=${PRUNEREPRO_PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
VPY="$ROOT/$VENV/bin/python"
export PIP_CONSTRAINT="$ROOT/requirements/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1
PIN_ARGS=()
[ -z "$PINS" ] || PIN_ARGS=(-c "$ROOT/$PINS")
UPGRADE=()
[ "$MODE" != latest ] || UPGRADE=(--upgrade --upgrade-strategy eager)

# pip installs with --no-compile and this writes the bytecode pip would have written file by file on
# one core (~70 s of CPU, half of it torch's) on every core instead. Without it each process would
# compile what it imports, every time, where PYTHONDONTWRITEBYTECODE is set. Exit status ignored, as
# pip ignores it: a few files are Python-3.12 syntax (torch's tests) that no import reaches.
compile_env() {
  log "compiling the environment's bytecode"
  "$VPY" -m compileall -q -j 0 "$("$VPY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null 2>&1 || true
}

# The stamp covers everything that decides what gets installed; unchanged stamp = nothing to do.
STAMP=$VENV/.prunerepro-stamp
want=$(cat pyproject.toml requirements/constraints.txt ${PINS:+"$PINS"} scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$MODE" = latest ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  # ------------------------------------------------------------ 3. torch, never a CUDA build on CPU
  has_gpu=0
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && has_gpu=1
  if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    if [ "$has_gpu" = 1 ]; then TORCH_REQ=${PRUNEREPRO_TORCH:-torch}; else TORCH_REQ=${PRUNEREPRO_TORCH:-torch==2.13.0}; fi
    log "installing $TORCH_REQ"
    "$VPY" -m pip install -q --no-compile "$TORCH_REQ"
    compile_env  # before the first `import torch` below
  fi
  if [ "$has_gpu" = 0 ]; then
    "$VPY" -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 'a CUDA torch build was installed on a machine without a GPU; remove .venv and re-run')"
  fi
  # ------------------------------------------------------------ 4. FFCV (pinned) and the project
  log "installing prunerepro with FFCV, export and test extras (constraints: $PIP_CONSTRAINT${PINS:+, versions: $PINS})"
  # torch is pinned to the build installed above so that no extra can replace it: the dev extra's
  # torchvision then resolves to the release made for this torch (torchvision X pins torch ==Y;
  # an unpinned resolve would upgrade torch to a CUDA build from PyPI).
  TORCH_NOW=$("$VPY" -W ignore -c "import torch; print(torch.__version__.split('+')[0])")
  "$VPY" -m pip install -q --no-compile -e ".[ffcv,dev,export]" "torch==$TORCH_NOW" "${PIN_ARGS[@]}" "${UPGRADE[@]}"
  compile_env
  if [ "$has_gpu" = 0 ]; then
    "$VPY" -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 'the project install replaced the CPU torch build with a CUDA one; remove .venv and re-run')"
  fi
  # ffcv.__version__ is stale upstream (says 0.0.3rc1 in 1.0.2): ask the installed metadata.
  "$VPY" -c "import ffcv, torch, submitit, wandb; from importlib.metadata import version; print('torch', torch.__version__, '| ffcv', version('ffcv'))"
  if [ "$MODE" = tested ]; then  # the set CI passed with, and nothing else (or say what differs)
    drift=$(diff <(grep -v '^#' "$PINS" | sort -f) <("$VPY" -m pip freeze --exclude-editable | sed 's/+cpu$//' | sort -f) || true)
    [ -z "$drift" ] || log "warning: $VENV differs from $PINS (< only in the file, > only installed):"$'\n'"$drift"
  fi
  echo "$want" > "$STAMP"
else
  log "Python environment up to date"
fi

# ---------------------------------------------------------------- 5. optional: the background job
if [ -n "$BG" ]; then
  status=0; wait "$BG" || status=$?
  BG=""
  cat "$BG_LOG" >&2; rm -f "$BG_LOG"
  [ "$status" = 0 ] || { log "installing the test packages or starting the SLURM test cluster failed (above)"; exit 1; }
fi
log "done in $(( $(date +%s) - T0 )) s"
