#!/usr/bin/env bash
# goosebit (PyPI), the hawkBit-DDI-compatible server updater/tests/goosebit.rs runs
# `berth agent` against: a Python virtual environment outside the tree
# ($BERTH_GOOSEBIT_VENV, else /var/cache/berth/goosebit-venv) holding exactly the
# versions in testkit/goosebit/requirements.txt. Idempotent: a complete environment is
# stamped with the hash of that file, and a matching stamp means there is nothing to do.
# Test-only: ci/setup.sh --test-tools calls it; the main job never needs it.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${BERTH_GOOSEBIT_VENV:-/var/cache/berth/goosebit-venv}
requirements=testkit/goosebit/requirements.txt
want=$(sha256sum "$requirements" | cut -d' ' -f1)
stamp=$venv/berth-requirements.sha256
[[ -f $stamp && $(cat "$stamp") == "$want" ]] && exit 0

# Debian's Python (3.11 on Debian 12, as the pins were made with); venv needs
# python3-venv for its pip.
python=/usr/bin/python3
if ! "$python" -c 'import ensurepip' 2>/dev/null; then
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends python3-venv
fi
echo "ci/setup-goosebit.sh: installing goosebit into $venv"
rm -rf "$venv"
"$python" -m venv "$venv"
# --no-deps: the list is the whole closure, so nothing unpinned comes in.
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --no-deps \
    -r "$requirements"
"$venv/bin/python" -c 'import importlib.metadata as m, uvicorn, aerich; m.version("goosebit")'
# Written last: an interrupted install has no stamp, and the tests call it missing.
echo "$want" >"$stamp"
