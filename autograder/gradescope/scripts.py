"""The two scripts Gradescope looks for at the root of the zip (written into it by `bundle`)."""

from __future__ import annotations

#: Run once, as root, when Gradescope builds the autograder's image (Ubuntu 22.04 by default).
SETUP_SH = r"""#!/usr/bin/env bash
# Datitos autograder: Gradescope runs this once, as root, when it builds the image.
# The system Python is left alone: everything goes into a virtual environment, /autograder/venv.
#
#   DATITOS_WHEELS=DIR       install only from the wheels in DIR (pip --no-index --find-links DIR)
#   DATITOS_TORCH_INDEX=URL  where torch comes from otherwise (default: the CPU-only index)
#   DATITOS_PYTHON=PATH      the interpreter of the venv (default: python3.13, 3.12 or 3.11, installed with apt)
set -euo pipefail
umask 022
SOURCE=/autograder/source
VENV=/autograder/venv
COURSE="$SOURCE/course"
TORCH_INDEX="${DATITOS_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
WORKER_UID=61000
started=$(date +%s)

have_apt() { command -v apt-get >/dev/null 2>&1 && [ -z "${DATITOS_WHEELS:-}" ]; }

usable_python() {
  "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

find_python() {
  for candidate in ${DATITOS_PYTHON:-} python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null 2>&1 && usable_python "$(command -v "$candidate")"; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

# 1. System packages: bubblewrap (the workers' filesystem view) and a Python >= 3.11 with venv.
if ! command -v bwrap >/dev/null 2>&1 || ! find_python >/dev/null; then
  if have_apt; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    command -v bwrap >/dev/null 2>&1 || apt-get install -y -q --no-install-recommends bubblewrap
    find_python >/dev/null || apt-get install -y -q --no-install-recommends python3.11 python3.11-venv
  fi
fi
command -v bwrap >/dev/null 2>&1 || echo "setup.sh: warning: bubblewrap is missing; the workers get the weaker unshare view"
PYTHON="$(find_python)" || { echo "setup.sh: no Python >= 3.11 with venv (set DATITOS_PYTHON)" >&2; exit 1; }
echo "setup.sh: $PYTHON ($("$PYTHON" -c 'import sys; print(sys.version.split()[0])'))"

# 2. The virtual environment: CPU-only torch first (from its own index), then the rest.
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir)
if [ -n "${DATITOS_WHEELS:-}" ]; then
  "${PIP[@]}" --no-index --find-links "$DATITOS_WHEELS" -r "$SOURCE/requirements.txt"
else
  grep -E '^torch' "$SOURCE/requirements.txt" > /tmp/datitos-torch.txt
  "${PIP[@]}" --index-url "$TORCH_INDEX" -r /tmp/datitos-torch.txt
  "${PIP[@]}" -r "$SOURCE/requirements.txt"
fi
"$VENV/bin/python" - "$COURSE" <<'PY'
import sys, sysconfig
from pathlib import Path
Path(sysconfig.get_paths()["purelib"], "datitos-course.pth").write_text(sys.argv[1] + "\n")
PY
"$VENV/bin/python" -m compileall -q "$COURSE/autograder" >/dev/null || true

# 3. The workers' uid (the engine uses the number; the name is for ps and logs).
if ! getent passwd "$WORKER_UID" >/dev/null; then
  useradd --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --uid "$WORKER_UID" \
    --user-group datitos-estudiante || echo "setup.sh: warning: could not create the user $WORKER_UID"
fi

# 4. Nothing the student's uid can write or read that matters: root's, not writable by others;
#    the checks (and the course's notebook copies) readable by root only.
chown -R root:root "$SOURCE" "$VENV"
chmod -R go-w "$SOURCE" "$VENV"
chmod 0700 "$COURSE/autograder/checks" "$COURSE/source" "$COURSE/release"
chmod 0600 "$SOURCE/gradescope.json"  # a fixed --seed would make the hidden inputs predictable
[ -e /autograder/run_autograder ] && chown root:root /autograder/run_autograder && chmod 0755 /autograder/run_autograder

# 5. Which sandbox layers this container gives the workers (informative: the grader measures again each run).
"$VENV/bin/python" -P -m autograder.gradescope.run --doctor || echo "setup.sh: warning: the sandbox check failed"
echo "setup.sh: done in $(( $(date +%s) - started ))s"
"""

#: Run by Gradescope as root, in /autograder, once per submission.
RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Datitos autograder: grade /autograder/submission into /autograder/results/results.json.
cd /autograder
/autograder/venv/bin/python -P -m autograder.gradescope.run "$@"
if [ ! -s /autograder/results/results.json ]; then  # the grader could not even start: still a result
  mkdir -p /autograder/results
  cat > /autograder/results/results.json <<'JSON'
{"score": 0.0, "output": "No se pudo corregir tu entrega por un error del corrector (no es culpa de tu código). Los docentes volverán a corregirla.", "output_format": "md", "visibility": "visible", "stdout_visibility": "hidden", "tests": []}
JSON
fi
exit 0
"""
