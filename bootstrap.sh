#!/bin/sh
# Sets up .venv/ with rescue installed, needing nothing but python3: no root, no pip, and no
# venv package (Debian and Ubuntu ship python3 without ensurepip; their system pip refuses to
# install into the system's python). Extra arguments go to pip, e.g. `sh bootstrap.sh -e '.[test]'`.
set -eu
cd "$(dirname "$0")"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "rescue: Python 3.11 or newer is needed ($(python3 -V 2>&1))" >&2; exit 2; }
if [ ! -x .venv/bin/python ]; then
    # without ensurepip the first try fails, printing advice to install python3-venv: not needed
    python3 -m venv .venv >/dev/null 2>&1 || { rm -rf .venv; python3 -m venv --without-pip .venv; }
fi
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    # no ensurepip: run pip straight from its wheel on PyPI to install pip into the venv
    .venv/bin/python - <<'EOF'
import hashlib, json, os, subprocess, sys, tempfile, urllib.parse, urllib.request

INDEX = "https://pypi.org/pypi/pip/json"
with urllib.request.urlopen(INDEX, timeout=60) as answer:
    release = json.load(answer)
wheel = next(u for u in release["urls"] if u["filename"].endswith("-py3-none-any.whl"))
path = os.path.join(tempfile.mkdtemp(), wheel["filename"])
urllib.request.urlretrieve(urllib.parse.urljoin(INDEX, wheel["url"]), path)
with open(path, "rb") as downloaded:
    if hashlib.sha256(downloaded.read()).hexdigest() != wheel["digests"]["sha256"]:
        sys.exit("rescue: the pip wheel downloaded from PyPI does not match its published digest")
subprocess.run([sys.executable, f"{path}/pip", "install", "-q", path], check=True)
EOF
fi
if [ $# -eq 0 ]; then set -- .; fi
.venv/bin/python -m pip install -q --disable-pip-version-check "$@"
