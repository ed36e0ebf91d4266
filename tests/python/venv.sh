#!/usr/bin/env bash
# Makes (or reuses) the Python virtual environment for the foreign-client
# tests: `venv.sh VENV_DIR` (the tests use <target dir>/python-venv).
#
# The venv is reused while requirements.txt and the Python version are
# unchanged: their hash is stored in VENV_DIR/.requirements.sha256, written
# only after a complete install, so a half-made venv is never reused. Callers
# running at once are serialized by an flock on VENV_DIR.lock (bounded wait).
# Set PYTHON to choose the interpreter (default python3).
set -euo pipefail

venv=${1:?usage: venv.sh VENV_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
requirements=$here/requirements.txt
python=${PYTHON:-python3}

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
if ! flock -w 900 9; then
    echo "venv.sh: gave up waiting 900 s for the lock $venv.lock" >&2
    exit 1
fi

want=$({ cat "$requirements"; "$python" --version; } | sha256sum | cut -d' ' -f1)
if [[ -x $venv/bin/python && -f $venv/.requirements.sha256 &&
      $(cat "$venv/.requirements.sha256") == "$want" ]]; then
    exit 0
fi

echo "venv.sh: creating $venv from $requirements" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)
"${pip[@]}" install --quiet --timeout 60 --retries 3 -r "$requirements" >&2
"${pip[@]}" check >&2
echo "$want" >"$venv/.requirements.sha256"
