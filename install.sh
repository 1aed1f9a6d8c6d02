#!/usr/bin/env bash
# fedlora device installer ("flasher"): venv + fedlora[device], node identity, model bundle, device.toml,
# systemd unit, then `fedlora diag`. Idempotent: a second run with the same inputs changes no file.
# fedlora itself comes only from what the operator hands over (--wheelhouse, --wheel or --source), never
# from a package index. A failed run removes what it created. docs/install.md describes every option.
set -euo pipefail
# The caller's Python environment must not leak into the venv: a PYTHONPATH holding a fedlora checkout
# (or its fedlora.egg-info) would make pip think fedlora is installed already.
unset PYTHONPATH PYTHONHOME PYTHONUSERBASE
export PYTHONNOUSERSITE=1

readonly UNIT_NAME="fedlora-device.service"
readonly SERVICE_USER="fedlora"
# Device runtime requirements without ONNX Runtime, used with --ort-wheel (the wheel brings ORT).
# Keep in step with the [device] extra of pyproject.toml (minus onnxruntime-training-cpu).
readonly DEVICE_RUNTIME_REQS=("paho-mqtt>=2.0,<3" "tokenizers>=0.15" "tomli>=2; python_version < '3.11'")

PREFIX="/opt/fedlora"
WHEELHOUSE=""
FEDLORA_WHEEL=""
SOURCE_DIR=""
ORT_WHEEL=""
NODE_DIR=""
BUNDLE_DIR=""
DATA_DIR=""
PYTHON_BIN=""
UNIT_DIR="/etc/systemd/system"
SYSTEMD=1
FORCE_SYSTEMD=0
UNINSTALL=0
PURGE=0
DRY_RUN=0
RUN_DIAG=1
CHANGED=0
CREATED=()       # paths this run created: removed again if the run fails
USER_CREATED=0
DATA_DIR_GIVEN=0
# Test-only overrides of what the platform detection reads (docs/install.md, "Testing the installer").
ARCH="${FEDLORA_INSTALL_ARCH:-$(uname -m)}"
ETC_ROOT="${FEDLORA_INSTALL_ETC:-/etc}"
PROC_ROOT="${FEDLORA_INSTALL_PROC:-/proc}"

usage() {
    cat <<'EOF'
usage: install.sh [options]
  --prefix DIR        install root (default /opt/fedlora): venv/, etc/, bundle/, state/, data/
  --node DIR          node bundle from `fedlora provision` (DIR/nodes/<id>): certificates, keys, config.toml
  --bundle DIR        model bundle from `fedlora export` (verified against its manifest)
  --data-dir DIR      local training data directory (default PREFIX/data)
fedlora comes from exactly one of (never from a package index):
  --wheelhouse DIR    fedlora-*.whl and every dependency in DIR; installs offline (pip --no-index)
  --wheel PATH        a fedlora-*.whl file; its dependencies come from the configured index
  --source DIR        a fedlora source checkout (pyproject.toml); dependencies from the configured index
  --ort-wheel PATH    onnxruntime-training wheel to use (aarch64/Jetson source build, or the CUDA build)
  --python PATH       Python interpreter (default: python3.11, python3.10, python3; needs >= 3.10)
  --no-systemd        do not create the service user nor the systemd unit (the default when systemd
                      is not running here; the installer then prints how to start the device)
  --systemd           write user and unit even though systemd is not running here (image building)
  --unit-dir DIR      where the unit is written (default /etc/systemd/system)
  --no-diag           do not run `fedlora diag` at the end
  --uninstall         remove venv, config, bundle and unit (keeps data and state: the privacy ledger,
                      and .install/ so that a later --purge still knows a custom data directory)
  --purge             with --uninstall: also remove data, state and the service user
  --dry-run           print what would be done, change nothing
  -h, --help          this help
EOF
}

log() { printf '[install] %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

# act CMD...: run CMD, or only print it with --dry-run.
act() {
    if ((DRY_RUN)); then
        printf '[dry-run] %s\n' "$*"
    else
        "$@"
    fi
}

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }

parse_args() {
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
            --prefix) need_value "$@"; PREFIX="$2"; shift ;;
            --node) need_value "$@"; NODE_DIR="$2"; shift ;;
            --bundle) need_value "$@"; BUNDLE_DIR="$2"; shift ;;
            --data-dir) need_value "$@"; DATA_DIR="$2"; DATA_DIR_GIVEN=1; shift ;;
            --wheelhouse) need_value "$@"; WHEELHOUSE="$2"; shift ;;
            --wheel) need_value "$@"; FEDLORA_WHEEL="$2"; shift ;;
            --source) need_value "$@"; SOURCE_DIR="$2"; shift ;;
            --ort-wheel) need_value "$@"; ORT_WHEEL="$2"; shift ;;
            --python) need_value "$@"; PYTHON_BIN="$2"; shift ;;
            --unit-dir) need_value "$@"; UNIT_DIR="$2"; shift ;;
            --no-systemd) SYSTEMD=0 ;;
            --systemd) FORCE_SYSTEMD=1 ;;
            --no-diag) RUN_DIAG=0 ;;
            --uninstall) UNINSTALL=1 ;;
            --purge) PURGE=1 ;;
            --dry-run) DRY_RUN=1 ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die "unknown option $1" ;;
        esac
        shift
    done
    PREFIX="$(realpath -m -- "$PREFIX")"
    DATA_DIR="$(realpath -m -- "${DATA_DIR:-$PREFIX/data}")"
    UNIT_DIR="$(realpath -m -- "$UNIT_DIR")"
    ((PURGE == 0 || UNINSTALL == 1)) || die "--purge goes with --uninstall"
    ((SYSTEMD == 1 || FORCE_SYSTEMD == 0)) || die "--systemd and --no-systemd exclude each other"
    local path
    for path in "$PREFIX" "$DATA_DIR"; do
        [[ "$path" != "/" && "$path" != *[\"\\]* ]] || die "unusable path '$path'"
    done
}

# ---------------------------------------------------------------- platform

detect_platform() {
    OS_NAME="unknown"
    if [[ -r "$ETC_ROOT/os-release" ]]; then
        OS_NAME="$(sed -n 's/^PRETTY_NAME=//p' "$ETC_ROOT/os-release" | tr -d '"' | head -n1)"
    fi
    JETSON_L4T=""
    JETSON_MODEL=""
    if [[ -r "$ETC_ROOT/nv_tegra_release" ]]; then
        JETSON_L4T="$(sed -n 's/^# R\([0-9]*\) (release), REVISION: \([0-9.]*\).*/\1.\2/p' \
            "$ETC_ROOT/nv_tegra_release" | head -n1)"
        JETSON_L4T="${JETSON_L4T:-unknown}"
    fi
    if [[ -r "$PROC_ROOT/device-tree/model" ]]; then
        JETSON_MODEL="$(tr -d '\0' <"$PROC_ROOT/device-tree/model")"
        [[ -n "$JETSON_L4T" || "${JETSON_MODEL,,}" == *jetson* ]] || JETSON_MODEL=""
    fi
    log "platform: $ARCH, ${OS_NAME:-unknown}${JETSON_MODEL:+, $JETSON_MODEL}${JETSON_L4T:+ (L4T R$JETSON_L4T)}"
}

find_python() {
    local candidates=("$PYTHON_BIN")
    [[ -n "$PYTHON_BIN" ]] || candidates=(python3.11 python3.10 python3)
    local cand
    for cand in "${candidates[@]}"; do
        command -v "$cand" >/dev/null 2>&1 || continue
        if "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            PYTHON_BIN="$(command -v "$cand")"
            PY_VERSION="$("$PYTHON_BIN" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
            "$PYTHON_BIN" -c 'import venv, ensurepip' 2>/dev/null \
                || die "$PYTHON_BIN lacks venv/ensurepip (Debian/Ubuntu: apt-get install python$PY_VERSION-venv)"
            log "python: $PYTHON_BIN ($PY_VERSION)"
            return
        fi
    done
    die "no Python >= 3.10 found (tried ${candidates[*]}); install python3.10 or python3.11, or pass --python"
}

# Sets FEDLORA_SPEC (what pip installs fedlora from) and FEDLORA_WHEEL_FILE from --wheelhouse, --wheel
# or --source; refuses before anything is created when none (or more than one) is given. fedlora is not
# a published package: resolving the name on an index would install whatever someone registered there.
choose_fedlora_source() {
    local given=0
    [[ -z "$WHEELHOUSE" ]] || given=$((given + 1))
    [[ -z "$FEDLORA_WHEEL" ]] || given=$((given + 1))
    [[ -z "$SOURCE_DIR" ]] || given=$((given + 1))
    ((given == 1)) || die "give exactly one of --wheelhouse DIR, --wheel FILE or --source DIR: fedlora is \
not installed from a package index (build a wheelhouse with: pip wheel -w wheels/ '.[device]' in a \
fedlora checkout; docs/install.md)"
    FEDLORA_WHEEL_FILE=""
    if [[ -n "$WHEELHOUSE" ]]; then
        [[ -d "$WHEELHOUSE" ]] || die "--wheelhouse $WHEELHOUSE is not a directory"
        WHEELHOUSE="$(realpath -- "$WHEELHOUSE")"
        FEDLORA_WHEEL_FILE="$(find "$WHEELHOUSE" -maxdepth 1 -name 'fedlora-*.whl' | sort -V | tail -n1)"
        [[ -n "$FEDLORA_WHEEL_FILE" ]] || die "no fedlora-*.whl in --wheelhouse $WHEELHOUSE \
(build it in a fedlora checkout: pip wheel -w $WHEELHOUSE '.[device]')"
        FEDLORA_SPEC="fedlora"  # resolved with --no-index --find-links: only from the wheelhouse
    elif [[ -n "$FEDLORA_WHEEL" ]]; then
        [[ -f "$FEDLORA_WHEEL" && "$(basename "$FEDLORA_WHEEL")" == fedlora-*.whl ]] \
            || die "--wheel $FEDLORA_WHEEL is not a fedlora-*.whl file"
        FEDLORA_WHEEL_FILE="$(realpath -- "$FEDLORA_WHEEL")"
        FEDLORA_SPEC="$FEDLORA_WHEEL_FILE"
    else
        if ! grep -qs '^name = "fedlora"' "$SOURCE_DIR/pyproject.toml"; then
            die "--source $SOURCE_DIR is not a fedlora checkout (no pyproject.toml naming fedlora)"
        fi
        FEDLORA_SPEC="$(realpath -- "$SOURCE_DIR")"
    fi
    log "fedlora from: ${FEDLORA_WHEEL_FILE:-$FEDLORA_SPEC}${WHEELHOUSE:+ (offline wheelhouse)}"
}

# Sets REQS (pip requirements) and BACKEND_NOTE from the architecture, Python and --ort-wheel.
choose_requirements() {
    if [[ -n "$ORT_WHEEL" ]]; then
        [[ -f "$ORT_WHEEL" && "$ORT_WHEEL" == *.whl ]] || die "--ort-wheel $ORT_WHEEL is not a wheel file"
        ORT_WHEEL="$(realpath -- "$ORT_WHEEL")"
        REQS=("$ORT_WHEEL" "$FEDLORA_SPEC" "${DEVICE_RUNTIME_REQS[@]}")
        BACKEND_NOTE="ONNX Runtime training from $(basename "$ORT_WHEEL")"
    elif [[ "$ARCH" == "x86_64" && "$PY_VERSION" =~ ^3\.1[01]$ ]]; then
        REQS=("${FEDLORA_SPEC}[device]")
        BACKEND_NOTE="ONNX Runtime training (onnxruntime-training-cpu wheel)"
    else
        REQS=("${FEDLORA_SPEC}[device-torch]")
        BACKEND_NOTE="torch fallback: no onnxruntime-training wheel exists for $ARCH / Python $PY_VERSION;"
        BACKEND_NOTE+=" pass --ort-wheel with a source-built wheel for the faster ORT backend (docs/install.md)"
    fi
    log "trainer backend: $BACKEND_NOTE"
}

# ---------------------------------------------------------------- files

# install_file SRC DST MODE: copy only when content or mode differ (so a re-run changes nothing).
install_file() {
    local src="$1" dst="$2" mode="$3"
    if [[ -f "$dst" ]] && cmp -s "$src" "$dst" && [[ "$(stat -c '%a' "$dst")" == "${mode#0}" ]]; then
        return
    fi
    CHANGED=1
    if ((DRY_RUN)); then
        printf '[dry-run] install -m %s %s %s\n' "$mode" "$src" "$dst"
        return
    fi
    install -m "$mode" "$src" "$dst.tmp.$$"
    mv -f "$dst.tmp.$$" "$dst"
    log "wrote $dst"
}

# make_dir DIR MODE: create (or fix the mode of) a directory.
make_dir() {
    local dir="$1" mode="$2"
    if [[ -d "$dir" && "$(stat -c '%a' "$dir")" == "${mode#0}" ]]; then
        return
    fi
    [[ -e "$dir" ]] || CREATED+=("$dir")
    act install -d -m "$mode" "$dir"
}

# On a failed run (any non-zero exit): remove what this run created, newest first, and say so.
cleanup_on_failure() {
    local rc=$? i
    ((rc != 0 && DRY_RUN == 0)) || return 0
    if ((USER_CREATED)); then userdel "$SERVICE_USER" 2>/dev/null || true; fi
    ((${#CREATED[@]})) || return 0
    for ((i = ${#CREATED[@]} - 1; i >= 0; i--)); do rm -rf -- "${CREATED[i]}"; done
    printf 'install.sh: failed; removed what this run had created: %s\n' "${CREATED[*]}" >&2
}

setup_venv() {
    local venv="$PREFIX/venv"
    if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
        log "venv: $venv (kept)"
    else
        [[ -e "$venv" ]] || CREATED+=("$venv")
        act "$PYTHON_BIN" -m venv "$venv"
        CHANGED=1
    fi
    local pip=("$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q)
    if [[ -n "$WHEELHOUSE" ]]; then
        pip+=(--no-index --find-links "$WHEELHOUSE")
        export PIP_CONFIG_FILE=/dev/null  # offline and exact: no index or find-links from pip.conf
    fi
    if ! act "${pip[@]}" "${REQS[@]}"; then
        die "pip could not install ${REQS[*]} (its message is above)${WHEELHOUSE:+; is every dependency \
in the wheelhouse? build it with: pip wheel -w $WHEELHOUSE '.[device]' on a machine of this architecture \
and Python $PY_VERSION}"
    fi
    # A rebuilt fedlora wheel keeps its version number: reinstall it when its hash changed.
    FEDLORA_WHEEL_SHA=""
    if [[ -n "$FEDLORA_WHEEL_FILE" ]]; then
        local wheel="$FEDLORA_WHEEL_FILE"
        FEDLORA_WHEEL_SHA="$(sha256sum "$wheel" | cut -d' ' -f1)"
        local recorded
        recorded="$(sed -n 's/^fedlora_wheel_sha256=//p' "$PREFIX/.install/state" 2>/dev/null || true)"
        if [[ -n "$recorded" && "$recorded" != "$FEDLORA_WHEEL_SHA" ]]; then
            log "fedlora wheel changed: reinstalling it"
            act "${pip[@]}" --no-deps --force-reinstall "$wheel"
            CHANGED=1
        fi
    fi
}

install_node() {
    local etc="$PREFIX/etc" file name mode
    make_dir "$etc" 0700
    for file in "$NODE_DIR"/*; do
        [[ -f "$file" ]] || continue
        name="$(basename "$file")"
        [[ "$name" != "device.toml" && "$name" != "config.toml" ]] || continue  # merged below
        mode=0644
        [[ "$name" != *.key ]] || mode=0600
        install_file "$file" "$etc/$name" "$mode"
    done
    local tmp
    tmp="$(mktemp)"
    {
        printf '# fedlora device configuration, written by install.sh from the node'"'"'s config.toml.\n'
        printf '# Re-running install.sh regenerates it; put extra sections ([gates], [privacy.tiers.*])\n'
        printf '# into the node'"'"'s config.toml before installing.\n'
        cat "$NODE_DIR/config.toml"
        printf '\n[device]\nbundle_dir = "%s"\ndata_dir = "%s"\nstate_dir = "%s"\n' \
            "$PREFIX/bundle" "$DATA_DIR" "$PREFIX/state"
    } >"$tmp"
    install_file "$tmp" "$etc/device.toml" 0600
    rm -f "$tmp"
}

verify_bundle() {
    "$PREFIX/venv/bin/python" -c 'import sys; from pathlib import Path
from fl_protocol.manifest import load_manifest
m = load_manifest(Path(sys.argv[1]), verify=True)
print("[install] bundle %s: %d files verified" % (m.bundle_id[:12], len(m.raw["files"])))' "$1"
}

install_bundle() {
    [[ -f "$BUNDLE_DIR/manifest.json" ]] || die "--bundle $BUNDLE_DIR has no manifest.json (run fedlora export)"
    local dst="$PREFIX/bundle"
    if [[ -f "$dst/manifest.json" ]] && cmp -s "$BUNDLE_DIR/manifest.json" "$dst/manifest.json" \
        && { ((DRY_RUN)) || verify_bundle "$dst" >/dev/null; }; then
        log "bundle: $dst (unchanged)"
        return
    fi
    CHANGED=1
    if ((DRY_RUN)); then
        printf '[dry-run] copy %s to %s and verify its manifest\n' "$BUNDLE_DIR" "$dst"
        return
    fi
    local new="$PREFIX/.bundle.new"
    rm -rf "$new"
    [[ -e "$dst" ]] || CREATED+=("$dst")
    cp -R "$BUNDLE_DIR" "$new"
    find "$new" -type d -exec chmod 0755 {} + && find "$new" -type f -exec chmod 0644 {} +
    verify_bundle "$new" || { rm -rf "$new"; die "bundle $BUNDLE_DIR fails its manifest check"; }
    rm -rf "$dst"
    mv "$new" "$dst"
}

write_state_record() {
    local tmp
    tmp="$(mktemp)"
    printf 'data_dir=%s\nsystemd=%s\nunit=%s\nfedlora_wheel_sha256=%s\n' "$DATA_DIR" "$SYSTEMD" \
        "$UNIT_DIR/$UNIT_NAME" "$FEDLORA_WHEEL_SHA" >"$tmp"
    make_dir "$PREFIX/.install" 0755
    install_file "$tmp" "$PREFIX/.install/state" 0644
    rm -f "$tmp"
}

# ---------------------------------------------------------------- systemd

systemd_running() { command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; }

# Decides SYSTEMD: without a running systemd (containers, chroots) no user and no unit are made unless
# --systemd asks for them (building an image that boots with systemd later).
decide_systemd() {
    ((SYSTEMD)) || return 0
    if ! systemd_running && ((FORCE_SYSTEMD == 0)); then
        log "systemd is not running here: no service user, no unit (--systemd writes them anyway)"
        SYSTEMD=0
    fi
}

# under DIR PARENT...: true if DIR is PARENT or lies below one of the PARENTs.
under() {
    local dir="$1" parent
    shift
    for parent in "$@"; do
        [[ "$dir" == "$parent" || "$dir" == "$parent"/* ]] && return 0
    done
    return 1
}

setup_systemd() {
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        act useradd --system --home-dir "$PREFIX" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
        ((DRY_RUN)) || USER_CREATED=1
    fi
    act chown -R "$SERVICE_USER:$SERVICE_USER" "$PREFIX/etc" "$PREFIX/state"
    if ((DATA_DIR_OWNED)); then
        act chown -R "$SERVICE_USER:$SERVICE_USER" "$DATA_DIR"
    else
        log "data directory $DATA_DIR kept as it is (owner, mode): user $SERVICE_USER must be able to read it"
    fi
    local tmp groups="" protect_home="ProtectHome=true" private_tmp="PrivateTmp=true" path
    [[ -z "$JETSON_MODEL" ]] || groups="SupplementaryGroups=video"  # GPU device nodes on Jetson
    # ProtectHome / PrivateTmp would hide an install or data directory below /home, /root or /tmp.
    for path in "$PREFIX" "$DATA_DIR"; do
        if under "$path" /home /root /run/user; then protect_home="# ProtectHome off: $path is below it"; fi
        if under "$path" /tmp /var/tmp; then private_tmp="# PrivateTmp off: $path is below /tmp"; fi
    done
    tmp="$(mktemp)"
    cat >"$tmp" <<EOF
[Unit]
Description=fedlora device agent (federated LoRA fine-tuning)
Wants=network-online.target
After=network-online.target time-sync.target

[Service]
Type=simple
User=$SERVICE_USER
Group=$SERVICE_USER
${groups}
ExecStart=$PREFIX/venv/bin/fedlora device --config $PREFIX/etc/device.toml
Restart=on-failure
RestartSec=10
NoNewPrivileges=true
ProtectSystem=strict
${protect_home}
${private_tmp}
ReadWritePaths=$PREFIX/state

[Install]
WantedBy=multi-user.target
EOF
    make_dir "$UNIT_DIR" 0755
    install_file "$tmp" "$UNIT_DIR/$UNIT_NAME" 0644
    rm -f "$tmp"
}

start_service() {
    if ! systemd_running; then
        log "systemd is not running here: $UNIT_NAME written for a later boot, not started"
        return
    fi
    act systemctl daemon-reload
    act systemctl enable "$UNIT_NAME"
    if ((CHANGED)); then
        act systemctl restart "$UNIT_NAME"
    else
        act systemctl start "$UNIT_NAME"
    fi
}

# Runs `fedlora diag`. Installing and reaching the broker are separate verdicts: a broker that is not up
# yet (brokers start before devices, docs/operations.md) is reported, not an installation failure.
run_diag() {
    if ((DRY_RUN)); then
        printf '[dry-run] %s diag --config %s\n' "$PREFIX/venv/bin/fedlora" "$PREFIX/etc/device.toml"
        return
    fi
    log "running fedlora diag"
    local report failed
    report="$(mktemp)"
    "$PREFIX/venv/bin/fedlora" diag --config "$PREFIX/etc/device.toml" --json "$report" || true
    failed="$("$PREFIX/venv/bin/python" -c 'import json, sys
r = json.load(open(sys.argv[1]))
print(" ".join(c["name"] for c in r["checks"] if c["status"] == "fail"))' "$report" 2>/dev/null)" \
        || failed="(no report)"
    rm -f "$report"
    BROKER_VERDICT="reachable"
    if [[ "$failed" == "broker" ]]; then
        BROKER_VERDICT="NOT reachable yet (start the brokers first; the device keeps retrying)"
    elif [[ -n "$failed" ]]; then
        die "fedlora diag reports failed check(s): $failed (table above); fix and re-run install.sh"
    fi
}

# ---------------------------------------------------------------- uninstall

uninstall() {
    local record="$PREFIX/.install/state" unit="$UNIT_DIR/$UNIT_NAME" data="$DATA_DIR"
    if [[ -f "$record" ]]; then
        unit="$(sed -n 's/^unit=//p' "$record")"
        data="$(sed -n 's/^data_dir=//p' "$record")"
    elif ((PURGE)) && ((DATA_DIR_GIVEN == 0)); then
        die "no install record in $PREFIX/.install: pass --data-dir to say which data directory to purge"
    fi
    if [[ -f "$unit" ]]; then
        if systemd_running; then
            act systemctl disable --now "$UNIT_NAME" || true
        fi
        act rm -f "$unit"
        if systemd_running; then act systemctl daemon-reload; fi
    fi
    act rm -rf "$PREFIX/venv" "$PREFIX/etc" "$PREFIX/bundle" "$PREFIX/.bundle.new"
    if ((PURGE)); then
        act rm -rf "$PREFIX/state" "$data" "$PREFIX/.install"
        if getent passwd "$SERVICE_USER" >/dev/null && grep -q '^systemd=1' "$record" 2>/dev/null; then
            act userdel "$SERVICE_USER"
        fi
    else
        log "kept $PREFIX/state (privacy ledger), $data and the install record; --purge removes them"
    fi
    if [[ -d "$PREFIX" ]] && [[ -z "$(ls -A "$PREFIX")" ]]; then act rmdir "$PREFIX"; fi
    log "uninstalled from $PREFIX"
}

main() {
    parse_args "$@"
    if ((UNINSTALL)); then
        uninstall
        return
    fi
    [[ -n "$NODE_DIR" ]] || die "--node DIR is required (a provisioned nodes/<id> directory)"
    [[ -n "$BUNDLE_DIR" ]] || die "--bundle DIR is required (a bundle from fedlora export)"
    NODE_DIR="$(realpath -- "$NODE_DIR")"
    BUNDLE_DIR="$(realpath -- "$BUNDLE_DIR")"
    [[ -f "$NODE_DIR/config.toml" ]] || die "--node $NODE_DIR has no config.toml (expected a provisioned nodes/<id>)"
    grep -q '^role = "device"' "$NODE_DIR/config.toml" || die "$NODE_DIR/config.toml is not a device's config"
    ! grep -q '^\[device\]' "$NODE_DIR/config.toml" || die "$NODE_DIR/config.toml already has [device]"
    [[ -f "$BUNDLE_DIR/manifest.json" ]] || die "--bundle $BUNDLE_DIR has no manifest.json (run fedlora export)"
    choose_fedlora_source
    detect_platform
    find_python
    choose_requirements
    decide_systemd
    trap cleanup_on_failure EXIT
    make_dir "$PREFIX" 0755
    setup_venv
    install_node
    install_bundle
    make_dir "$PREFIX/state" 0700
    # A data directory the operator supplied keeps its owner and mode; only one made here is 0700.
    DATA_DIR_OWNED=0
    if [[ ! -e "$DATA_DIR" || "$DATA_DIR" == "$PREFIX/data" ]]; then
        DATA_DIR_OWNED=1
        make_dir "$DATA_DIR" 0700
    fi
    write_state_record
    if ((SYSTEMD)); then setup_systemd; fi
    BROKER_VERDICT="not checked (--no-diag)"
    if ((RUN_DIAG)); then run_diag; fi
    if ((SYSTEMD)); then start_service; fi
    trap - EXIT
    log "installed: $PREFIX (config $PREFIX/etc/device.toml)"
    log "broker: $BROKER_VERDICT"
    if ((SYSTEMD == 0)); then
        log "start the device (no systemd unit): $PREFIX/venv/bin/fedlora device --config $PREFIX/etc/device.toml"
    fi
}

# Sourcing the script (tests) defines the functions without running anything.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
