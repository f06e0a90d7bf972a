# Shared set-up steps for scripts/test and scripts/demo. Sourced, not run.

# Debian packages the tests and the demo use: command -> package.
DEBIAN_NEEDS=(nginx:nginx chromium:chromium ip:iproute2 wrk:wrk curl:curl)

ensure_debian_packages() {
  # Extra "command:package" pairs may be given as arguments (scripts/bench adds caddy).
  local missing=() pair
  for pair in "${DEBIAN_NEEDS[@]}" "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== installing Debian packages: ${missing[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_project_venv() {
  # Reinstall when pyproject.toml changed since the venv was made.
  local stamp=.venv/.owui-gate-installed
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "== installing the project venv (.venv)"
    .venv/bin/pip install -q --disable-pip-version-check -U pip
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
  fi
}
