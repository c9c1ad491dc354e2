#!/usr/bin/env bash
# Package one Chalice stage as a CloudFormation (SAM) template plus its deployment.zip.
#
#   usage: infra/package.sh STAGE OUTDIR
#
# 1. refuses a chalice running on Python < 3.12 (the Lambda runtime follows the
#    interpreter that runs `chalice package`; python3.11 is deprecated by Lambda);
# 2. links vendor/migrations -> ../migrations: Chalice copies vendor/ contents to the zip
#    root (following links), so the Alembic scripts land next to chalicelib/, where
#    chalicelib/migrate.py looks for them;
# 3. runs `chalice package --stage STAGE --merge-template infra/cfn/chalice-merge.yaml`;
#    a YAML merge template makes Chalice write sam.yaml, which is converted here to
#    OUTDIR/sam.json with the Stage parameter pinned to STAGE;
# 4. lints OUTDIR/sam.json and infra/cfn/stateful.yaml with cfn-lint (offline);
# 5. checks that deployment.zip holds app.py, chalicelib/ and the migrations.
#
# Tools: CHALICE and CFN_LINT override the commands; by default the project's .venv/bin,
# else PATH. The requirements are resolved by pip as configured (index or local mirror),
# except when the wheel cache WHEELHOUSE (default: wheelhouse/, filled by `make wheels`)
# holds wheels: then pip reads only that folder (PIP_NO_INDEX), and packaging is offline.
# The Migrate custom resource's Migrations property is pinned to a hash of
# migrations/versions/*.py, so CloudFormation runs `db upgrade` exactly when they change.
set -euo pipefail

usage() {
    echo "usage: $0 STAGE OUTDIR" >&2
    exit 2
}
die() {
    echo "package.sh: $*" >&2
    exit 1
}
now_ms() { date +%s%3N; }
step() { printf '==> %s\n' "$*"; }

[[ $# -eq 2 ]] || usage
stage=$1
outdir=$2
[[ $stage =~ ^[a-z][a-z0-9]{0,9}$ ]] || die "invalid stage name: $stage"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $outdir == /* ]] || outdir=$PWD/$outdir
cd "$root"

find_tool() {  # find_tool NAME OVERRIDE
    if [[ -n $2 ]]; then
        command -v "$2" || die "$1 not found: $2"
    elif [[ -x $root/.venv/bin/$1 ]]; then
        echo "$root/.venv/bin/$1"
    else
        command -v "$1" || die "$1 not found (install requirements-dev.txt into .venv)"
    fi
}
chalice=$(find_tool chalice "${CHALICE:-}")
cfn_lint=$(find_tool cfn-lint "${CFN_LINT:-}")
# Helper scripts below need PyYAML: use chalice's own interpreter (its venv, its shebang).
python=$(dirname "$chalice")/python
if [[ ! -x $python ]]; then
    python=$(sed -n '1s/^#![[:space:]]*\([^[:space:]]*python[^[:space:]]*\).*/\1/p' "$chalice")
    [[ -n $python && -x $python ]] || python=$(command -v python3)
fi

# 1. The interpreter behind chalice decides the Lambda runtime.
version=$("$chalice" --version)
py=$(sed -n 's/.*python \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' <<<"$version")
[[ -n $py ]] || die "cannot read the Python version from: $version"
read -r major minor <<<"$py"
if ((major < 3 || (major == 3 && minor < 12))); then
    die "$chalice runs on Python $major.$minor; the Lambda runtime would be python$major.$minor." \
        "Package from a Python 3.12+ venv (e.g. python3.12 -m venv .venv)."
fi
runtime="python$major.$minor"

"$python" - "$stage" <<'EOF' || die "stage '$stage' is not in .chalice/config.json"
import json, sys
sys.exit(0 if sys.argv[1] in json.load(open(".chalice/config.json")).get("stages", {}) else 1)
EOF

# 2. Migrations into the zip root through vendor/ (git-ignored).
mkdir -p vendor
if [[ -L vendor/migrations ]]; then
    [[ $(readlink vendor/migrations) == ../migrations ]] || ln -sfn ../migrations vendor/migrations
elif [[ -e vendor/migrations ]]; then
    die "vendor/migrations exists and is not a symlink; remove it (vendor/ is generated)"
else
    ln -s ../migrations vendor/migrations
fi
[[ -f vendor/migrations/env.py ]] || die "vendor/migrations/env.py missing: is migrations/ there?"

# Offline from the wheel cache when there is one.
wheelhouse=${WHEELHOUSE:-$root/wheelhouse}
if compgen -G "$wheelhouse/*.whl" >/dev/null; then
    export PIP_NO_INDEX=1 PIP_FIND_LINKS=$wheelhouse
    step "offline: requirements from the wheel cache $wheelhouse"
fi

# 3. chalice package + merge template.
mkdir -p "$outdir"
rm -f "$outdir/sam.json" "$outdir/sam.yaml" "$outdir/deployment.zip"
step "chalice package --stage $stage ($runtime) -> $outdir"
t0=$(now_ms)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-eu-west-1} \
    "$chalice" package --stage "$stage" \
    --merge-template infra/cfn/chalice-merge.yaml "$outdir" >"$log" 2>&1; then
    cat "$log" >&2
    die "chalice package failed"
fi
cat "$log"
# Chalice only warns when a requirement has no Lambda-compatible wheel: treat it as fatal.
if grep -q "Could not install dependencies" "$log"; then
    die "some requirements could not be packaged for $runtime (see above)"
fi
echo "    took $(($(now_ms) - t0)) ms"

"$python" - "$outdir" "$stage" <<'EOF'
import glob, hashlib, json, os, sys
import yaml

outdir, stage = sys.argv[1], sys.argv[2]
src = os.path.join(outdir, "sam.yaml")
with open(src) as fh:
    template = yaml.safe_load(fh)  # long-form intrinsics only: plain YAML
param = template["Parameters"]["Stage"]
param["Default"] = stage
param["AllowedValues"] = [stage]  # a dev package cannot be deployed against prod's stack
# The migration custom resource runs when its properties change: when the migrations do.
digest = hashlib.sha256()
for path in sorted(glob.glob("migrations/versions/*.py")):
    digest.update(os.path.basename(path).encode() + b"\0")
    with open(path, "rb") as fh:
        digest.update(fh.read())
template["Resources"]["Migrate"]["Properties"]["Migrations"] = digest.hexdigest()
with open(os.path.join(outdir, "sam.json"), "w") as fh:
    json.dump(template, fh, indent=2, sort_keys=True)
    fh.write("\n")
os.remove(src)
EOF

# 4. Lint, offline (SKIP_LINT=1: the caller lints, as infra/lint.sh does for all stages).
if [[ ${SKIP_LINT:-} != 1 ]]; then
    step "cfn-lint sam.json infra/cfn/stateful.yaml"
    t0=$(now_ms)
    "$cfn_lint" -- "$outdir/sam.json" infra/cfn/stateful.yaml
    echo "    took $(($(now_ms) - t0)) ms"
fi

# 5. What must be in the zip.
step "checking deployment.zip"
"$python" - "$outdir/deployment.zip" <<'EOF'
import glob, os, sys, zipfile

names = set(zipfile.ZipFile(sys.argv[1]).namelist())
required = ["app.py", "chalice/app.py", "chalicelib/__init__.py", "chalicelib/migrate.py",
            "migrations/env.py"]
required += sorted(glob.glob("migrations/versions/*.py"))
required += sorted(
    p for p in glob.glob("chalicelib/**/*", recursive=True)
    if os.path.isfile(p) and "__pycache__" not in p
)  # chalicelib/api/openapi.json among them when it exists
missing = [p for p in required if p not in names]
if missing:
    sys.exit("deployment.zip lacks: " + ", ".join(missing))
if not any(n.startswith("migrations/versions/") and n.endswith(".py") for n in names):
    sys.exit("deployment.zip has no migrations/versions/*.py")
print(f"    {len(names)} files; app, chalicelib ({sum(n.startswith('chalicelib/') for n in names)}"
      f" files) and migrations present")
EOF
step "done: $outdir/sam.json + deployment.zip (runtime $runtime)"
