#!/usr/bin/env bash
# Makes build/finrl-venv: FinRL 0.3.7's own virtual environment for tests/finrl/ (never the project's
# environment: wrds pins pandas<2.3, the project runs pandas 3). Idempotent: a venv whose marker holds
# the same requirements hash is left as it is; any other is made anew.
#
#   bash .ci/finrl_venv.sh            # make or reuse; prints the venv's python on the last line
#   bash .ci/finrl_venv.sh --force    # make anew
#   bash .ci/finrl_venv.sh --freeze   # print the venv's pip freeze (to refresh finrl-constraints.txt)
#
# torch==2.13.0 goes in FIRST, alone: it resolves to the machine's local CPU build; installing FinRL's
# stack first could let pip pick a CUDA torch from the index. The constraints pin torch (+cpu) too.
# PYTHON selects the interpreter (default python3; it must be 3.11). FINRL_VENV overrides the folder.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${FINRL_VENV:-build/finrl-venv}"
py="${PYTHON:-python3}"
req=.ci/finrl-requirements.txt
con=.ci/finrl-constraints.txt
marker="$venv/.l2fast-finrl-venv"

if [[ "${1:-}" == "--freeze" ]]; then
    "$venv/bin/python" -m pip freeze --all | grep -v '^pip=='
    exit 0
fi

"$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || { echo "finrl_venv: $py is not Python 3.11" >&2; exit 1; }

# The hash covers what decides the venv's contents: both pin files, this script and the interpreter.
hash="$( { cat "$req" "$con" "$0"; "$py" -c 'import sys; print(sys.version, sys.base_prefix)'; } \
    | sha256sum | cut -d' ' -f1)"

imports='import finrl.meta.env_stock_trading.env_stocktrading
from finrl.meta.preprocessor.preprocessors import FeatureEngineer
from finrl.agents.stablebaselines3.models import DRLAgent
import torch
assert torch.__version__ == "2.13.0+cpu", torch.__version__
assert not torch.cuda.is_available()'

if [[ "${1:-}" != "--force" && -f "$marker" && "$(cat "$marker")" == "$hash" ]] \
        && "$venv/bin/python" -c "$imports" 2>/dev/null; then
    echo "finrl_venv: $venv is up to date (${hash:0:12})" >&2
    echo "$venv/bin/python"
    exit 0
fi

start=$SECONDS
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install torch==2.13.0 -c "$con"
"${pip[@]}" install -r "$req" -c "$con"
"$venv/bin/python" -c "$imports"
# Nothing in the venv may have replaced the CPU torch.
"$venv/bin/python" -m pip check >&2 || { echo "finrl_venv: pip check failed" >&2; exit 1; }
echo "$hash" > "$marker"
echo "finrl_venv: made $venv in $((SECONDS - start)) s, $(du -sh "$venv" | cut -f1)" >&2
echo "$venv/bin/python"
