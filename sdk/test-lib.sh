# SPDX-License-Identifier: MIT
# Sourced by each SDK's test runner (sdk/*/test*/run.sh <path-to-presenced>):
# checks the argument, sets $root (the repository) and $presenced (absolute),
# and installs what the SDK suites need when missing (scripts/deps.sh --sdk).
# On a setup failure it prints the closing line the runners read and exits.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ $# -lt 1 ] || [ ! -x "$1" ]; then
  echo "usage: $0 <path-to-presenced>" >&2
  exit 2
fi
presenced=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
sdk_setup_failed() { echo "$0: $*" >&2; echo "0 passed, 1 failed"; exit 1; }
bash "$root/scripts/deps.sh" --sdk || sdk_setup_failed "scripts/deps.sh --sdk failed"
