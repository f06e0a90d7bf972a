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

# --- podman: the container tier (tests/deploy/test_image.py, test_compose.py) ------------------
# No container registry is reachable here, so nothing is pulled: the base image the
# Containerfile pins is made from Debian with mmdebstrap and tagged under that exact name, and
# everything else is built locally. Podman gets a private configuration, storage and network
# folder under the cache folder ($OWUI_GATE_CACHE/podman), so it touches nothing system-wide
# and reruns reuse the base image and every cached build layer.

OWUI_PODMAN_BASE_PACKAGES="python3,python3-venv,python-is-python3,ca-certificates"

owui_podman_dir() { echo "${OWUI_GATE_CACHE:-$HOME/.cache/owui-gate}/podman"; }

owui_podman() {
  # podman with the private configuration written by ensure_podman.
  local dir; dir=$(owui_podman_dir)
  CONTAINERS_CONF="$dir/containers.conf" CONTAINERS_STORAGE_CONF="$dir/storage.conf" podman "$@"
}

_write_if_changed() {  # FILE: stdin replaces FILE only when it differs (keeps its mtime)
  local tmp; tmp=$(mktemp)
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

ensure_podman() {
  ensure_debian_packages podman:podman runc:runc mmdebstrap:mmdebstrap
  local dir; dir=$(owui_podman_dir)
  mkdir -p "$dir/networks"
  # This VM's kernel limits: podman's default ulimits are above the hard limits here and
  # cannot be raised, crun refuses the hybrid cgroup layout, and there is no systemd.
  _write_if_changed "$dir/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$dir/tmp"

[network]
network_config_dir = "$dir/networks"
CONF
  _write_if_changed "$dir/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$dir/storage"
runroot = "$dir/run"
CONF
  # Podman keeps the state of running containers in runroot and tmp_dir and notices a reboot
  # by a file in tmp_dir vanishing (normally a tmpfs). Both live on disk here, so after a
  # reboot they are cleared by hand and podman resets the containers it believed running.
  local boot; boot=$(cat /proc/sys/kernel/random/boot_id)
  if [ "$(cat "$dir/boot-id" 2>/dev/null)" != "$boot" ]; then
    rm -rf "$dir/run" "$dir/tmp"
    echo "$boot" >"$dir/boot-id"
  fi
  ensure_podman_base_image
}

ensure_podman_base_image() {
  # The Containerfile's FROM image, from Debian bookworm (the slim image's own release) with
  # the Python the lock needs. The host's extra CA certificates go in too: where TLS to the
  # package registries is intercepted, pip and apt inside builds must trust it. A label holds
  # a digest of this recipe, so a changed recipe or certificate rebuilds it.
  local name certs recipe
  name=$(awk 'toupper($1) == "FROM" { print $2; exit }' deploy/container/Containerfile)
  certs=$(find /usr/local/share/ca-certificates -name '*.crt' -type f 2>/dev/null | sort)
  recipe=$( { echo "bookworm minbase $OWUI_PODMAN_BASE_PACKAGES"; [ -z "$certs" ] || cat $certs; } \
    | sha256sum | cut -c1-16)
  if [ "$(owui_podman image inspect --format '{{index .Labels "owui-gate.base"}}' \
        "docker.io/library/$name" 2>/dev/null)" = "$recipe" ]; then
    return 0
  fi
  echo "== building the base image $name (mmdebstrap, Debian bookworm)"
  local work; work=$(mktemp -d)
  local hooks=()
  if [ -n "$certs" ]; then
    hooks+=(--customize-hook="mkdir -p \"\$1/usr/local/share/ca-certificates\"")
    local cert
    for cert in $certs; do
      hooks+=(--customize-hook="copy-in $cert /usr/local/share/ca-certificates/")
    done
    hooks+=(--customize-hook='chroot "$1" update-ca-certificates >/dev/null 2>&1')
  fi
  mmdebstrap --quiet --variant=minbase --include="$OWUI_PODMAN_BASE_PACKAGES" \
    "${hooks[@]}" bookworm "$work/rootfs.tar"
  owui_podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --change "LABEL owui-gate.base=$recipe" \
    "$work/rootfs.tar" "docker.io/library/$name" >/dev/null
  rm -rf "$work"
}
