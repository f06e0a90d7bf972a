# Shared set-up steps for scripts/test and scripts/demo. Sourced, not run.

# Debian packages the tests and the demo use: command -> package.
DEBIAN_NEEDS=(nginx:nginx chromium:chromium ip:iproute2 wrk:wrk curl:curl node:nodejs npm:npm)

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

ensure_oidc_chain() {
  # The real identity chain of tests/e2e/test_oidc_*.py: Apache with mod_auth_openidc (the
  # relying party in the forward-auth role) and npm's oidc-provider (the OpenID Provider).
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ ! -x /usr/sbin/apache2 ] || [ ! -f /usr/lib/apache2/modules/mod_auth_openidc.so ]; then
    echo "== installing Debian packages: apache2 libapache2-mod-auth-openidc"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      apache2 libapache2-mod-auth-openidc >/dev/null
    # Installing starts the system Apache on port 80; the tests run private instances on
    # their own ports and need none of it.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      $sudo systemctl disable --now apache2 >/dev/null 2>&1 || true
    else
      $sudo apache2ctl stop >/dev/null 2>&1 || true
    fi
  fi
  # oidc-provider 9.x needs Node >= 20 (it crashes on Node 18 at the first authorization
  # request); 8.8.1 works on Debian 12's Node 18. Each has its committed package lock.
  local major pin
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -ge 20 ]; then pin=node20; else pin=node18; fi
  local src=tests/e2e/oidc/npm/$pin
  local version
  version=$(node -p "require('./$src/package.json').dependencies['oidc-provider']")
  local dest="${OWUI_GATE_CACHE:-$HOME/.cache/owui-gate}/oidc-provider-$version"
  if [ -f "$dest/.owui-gate-installed" ] && cmp -s "$src/package-lock.json" "$dest/package-lock.json"; then
    return 0
  fi
  echo "== installing oidc-provider $version (npm) into $dest"
  mkdir -p "$dest"
  cp "$src/package.json" "$src/package-lock.json" "$dest/"
  (cd "$dest" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
  touch "$dest/.owui-gate-installed"
}

ensure_scaleout_services() {
  # The scale-out tier (tests/e2e/test_scaleout.py) runs private PostgreSQL and Redis servers
  # from Debian's packages. Installing them may start system instances; the tests use their
  # own ports and data folders and need none of them.
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v redis-server >/dev/null 2>&1; then
    echo "== installing Debian packages: postgresql redis-server"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql redis-server >/dev/null
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      $sudo systemctl disable --now postgresql redis-server >/dev/null 2>&1 || true
    fi
  fi
}

ensure_prometheus() {
  # promtool checks and unit-tests deploy/prometheus's rules; the e2e tier runs a private
  # Prometheus server (its own config, data folder and loopback port). Installing the
  # package starts the system one on :9090 where systemd runs: the tests need none of it.
  command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 && return 0
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "== installing Debian packages: prometheus"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    prometheus >/dev/null
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
}
