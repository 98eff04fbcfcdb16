# Sourced by the scripts: which Python the project runs on, and where its virtualenv is.
#
# TAKO_BASE_PYTHON: the interpreter the virtualenv is made from. $PYTHON when set, else
#   Debian's /usr/bin/python3 (what users of a Debian server have), else python3 on PATH.
# TAKO_VENV: the project virtualenv (default .venv in the checkout).
# After sourcing, $TAKO_VENV/bin is first on PATH, so `python3`, `tako` and `tako-server`
# are the project's own.
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -n ${PYTHON:-} ]]; then
  TAKO_BASE_PYTHON=$PYTHON
elif [[ -x /usr/bin/python3 ]]; then
  TAKO_BASE_PYTHON=/usr/bin/python3
else
  TAKO_BASE_PYTHON=$(command -v python3)
fi
TAKO_VENV=${TAKO_VENV:-$repo_root/.venv}
export TAKO_BASE_PYTHON TAKO_VENV
export PATH="$TAKO_VENV/bin:$PATH"
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
