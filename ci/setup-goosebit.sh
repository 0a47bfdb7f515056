#!/usr/bin/env bash
# goosebit (PyPI), the hawkBit-DDI-compatible server updater/tests/goosebit.rs runs
# `berth agent` against: a Python virtual environment outside the tree
# ($BERTH_GOOSEBIT_VENV, else /var/cache/berth/goosebit-venv) holding exactly the
# versions in testkit/goosebit/requirements.txt, and an empty goosebit database. Idempotent:
# a complete environment is stamped with a hash of the pins and this script, and a
# matching stamp means there is nothing to do.
# Test-only: ci/setup.sh --test-tools calls it; the main job never needs it.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${BERTH_GOOSEBIT_VENV:-/var/cache/berth/goosebit-venv}
requirements=testkit/goosebit/requirements.txt
# The pins and this script: a change to either rebuilds the environment.
want=$(cat "$requirements" "$0" | sha256sum | cut -d' ' -f1)
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
# --no-deps: the list is the whole closure, so nothing unpinned comes in. (pip keeps
# what it downloads in its own cache, outside the tree.)
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    -r "$requirements"
"$venv/bin/python" -c 'import importlib.metadata as m, uvicorn, aerich; m.version("goosebit")'
# An empty goosebit database, made once by goosebit's own migrations (aerich); each
# test starts from a copy (testkit/src/goosebit.rs).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
migrations=$("$venv/bin/python" -c \
    'import importlib.util as u, os; print(os.path.dirname(u.find_spec("goosebit").origin))')/db/migrations
printf '[tool.aerich]\ntortoise_orm = "goosebit.db.config.TORTOISE_CONF"\nlocation = "%s"\nsrc_folder = "."\n' \
    "$migrations" >"$work/aerich.toml"
(cd "$work" && GOOSEBIT_DB_URI="sqlite://$work/empty.sqlite3" \
    "$venv/bin/python" -m aerich -c aerich.toml upgrade >"$work/aerich.log" 2>&1) ||
    { cat "$work/aerich.log" >&2; exit 1; }
install -m 644 "$work/empty.sqlite3" "$venv/berth-empty.sqlite3"
# Written last: an interrupted install has no stamp, and the tests call it missing.
echo "$want" >"$stamp"
