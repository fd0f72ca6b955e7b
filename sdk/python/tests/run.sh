#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# sdk/python's suite: sdk/python/tests/run.sh <path-to-presenced>
# Installs what is missing (scripts/deps.sh --sdk: pytest, Flask, FastAPI,
# uvicorn from Debian), then pytest against that presenced, bounded in time.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
[ $# -ge 1 ] && [ -x "$1" ] || { echo "usage: $0 <path-to-presenced>" >&2; exit 2; }
presenced=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
bash "$root/scripts/deps.sh" --sdk || { echo "0 passed, 1 failed"; exit 1; }
cd "$here"
exec env PRESENCED="$presenced" timeout -k 5 240 /usr/bin/python3 -m pytest -q -p no:cacheprovider "$here"
