#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# sdk/python's suite: sdk/python/tests/run.sh <path-to-presenced>
# Installs what is missing (scripts/deps.sh --sdk: pytest, Flask, FastAPI,
# uvicorn from Debian), then pytest against that presenced, bounded in time.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../../test-lib.sh"
cd "$here"
exec env PRESENCED="$presenced" timeout -k 5 240 /usr/bin/python3 -m pytest -q -p no:cacheprovider "$here"
