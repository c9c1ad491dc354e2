#!/usr/bin/env bash
# `make lint-infra`: the infrastructure checks, offline, zero errors or a failure.
#
#   usage: infra/lint.sh [STAGE...]     (default: every stage of .chalice/config.json)
#
# 1. the IAM policy files and config.json are what infra/iam.py's tables give;
# 2. every stage is packaged (infra/package.sh) from a copy of the project whose
#    requirements.txt is empty — the template and the app code do not depend on the
#    third-party wheels, and no pip or network is needed;
# 3. cfn-lint on every packaged sam.json and infra/cfn/stateful.yaml, in one run.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[[ -x $python ]] || python=$(command -v python3)
cfn_lint=${CFN_LINT:-$(dirname "$python")/cfn-lint}
[[ -x $cfn_lint ]] || cfn_lint=$(command -v cfn-lint) || {
    echo "lint.sh: cfn-lint not found (pip install -r requirements-dev.txt)" >&2
    exit 1
}

cd "$root"
echo "==> IAM policies (python -m infra.iam --check)"
"$python" -m infra.iam --check

if [[ $# -gt 0 ]]; then
    stages=("$@")
else
    mapfile -t stages < <("$python" -c 'import json; print("\n".join(json.load(open(".chalice/config.json"))["stages"]))')
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/project/.chalice"
cp -R app.py chalicelib migrations infra "$work/project/"
cp .chalice/*.json "$work/project/.chalice/"
echo "# emptied by infra/lint.sh: the templates do not depend on the wheels" \
    >"$work/project/requirements.txt"
find "$work/project" -name __pycache__ -type d -prune -exec rm -rf {} +

templates=()
for stage in "${stages[@]}"; do
    (cd "$work/project" && PATH="$(dirname "$python"):$PATH" PIP_NO_INDEX=1 \
        WHEELHOUSE="$work/none" SKIP_LINT=1 bash infra/package.sh "$stage" "$work/out/$stage" \
        >"$work/$stage.log" 2>&1) || {
        cat "$work/$stage.log" >&2
        echo "lint.sh: packaging $stage failed" >&2
        exit 1
    }
    templates+=("$work/out/$stage/sam.json")
    echo "==> packaged $stage"
done
echo "==> cfn-lint ${stages[*]} + infra/cfn/stateful.yaml"
"$cfn_lint" -- "${templates[@]}" infra/cfn/stateful.yaml
echo "==> infrastructure lint clean"
