#!/usr/bin/env bash
# Prepare a Debian 12 machine to build, test and run xdpguard (`make setup`).
#
# Installs the Debian packages (bcc comes from python3-bpfcc, not PyPI),
# gives bcc kernel headers when the running kernel ships none, mounts bpffs,
# and creates .venv with the project installed in editable mode.  Every step
# checks first, so a second run does nothing and takes well under a second;
# only steps that change the system need root.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
STAMP="$VENV/.installed"
PACKAGES=(
    python3-bpfcc bpfcc-tools libbpfcc   # bcc 0.26: compiles and loads the BPF C
    libbpf1 libbpf-dev                   # bpf(2) calls through libbpf.so.1; tests check its option structs
    bpftool linux-headers-amd64          # headers bcc compiles against
    iproute2 ethtool                     # interfaces, namespaces, offloads
    python3-venv                         # the venv (pip via ensurepip)
    gcc libc6-dev linux-libc-dev         # tests check ctypes layouts against linux/bpf.h
    netsniff-ng xdp-tools nftables       # benchmark traffic and peers
    iptables util-linux                  # peers (iptables-legacy); taskset pins the bench sender
    clang libbpf-dev libbpf1             # syn_cookies: its programs need kfuncs, which bcc cannot call
)

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
need_root() {
    [[ $EUID -eq 0 ]] || die "root is needed to $1; run \`sudo make setup\` once, later runs need no root"
}

# --- Debian packages -------------------------------------------------------
command -v dpkg-query >/dev/null || die "dpkg-query not found: this script sets up Debian 12 only"
installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null | awk '$2 == "installed" {print $1}' || true)
missing=()
for pkg in "${PACKAGES[@]}"; do
    grep -qx -- "$pkg" <<<"$installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    need_root "install ${missing[*]}"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "Debian packages present"
fi

# --- kernel headers for bcc ------------------------------------------------
# bcc reads /lib/modules/$(uname -r)/build and .../source; both must exist
# (BCC_KERNEL_SOURCE alone is not enough).  A kernel without its own headers
# gets Debian's: fine for programs that use only UAPI structs, as ours do.
krel=$(uname -r)
moddir=/lib/modules/$krel
if [[ ! -e $moddir/build || ! -e $moddir/source ]]; then
    if [[ -e $moddir/build ]]; then
        headers=$(readlink -f "$moddir/build")
    else
        headers=$(find /usr/src -maxdepth 1 -name 'linux-headers-*-amd64' -type d 2>/dev/null | sort -V | tail -n 1)
        [[ -n $headers ]] || die "no /usr/src/linux-headers-*-amd64 directory although linux-headers-amd64 is installed"
    fi
    common=${headers%-amd64}-common
    [[ -d $common ]] || die "$common is missing (it should come with $headers)"
    need_root "link kernel headers into $moddir"
    mkdir -p "$moddir"
    if [[ ! -e $moddir/build ]]; then
        ln -sfn "$headers" "$moddir/build"
        ln -sfn "$common" "$moddir/source"
        say "The running kernel $krel ships no headers, so $moddir/build now points to Debian's $headers and source to $common."
    else
        ln -sfn "$common" "$moddir/source"
        say "The running kernel $krel has build headers but no source link; $moddir/source now points to Debian's $common."
    fi
else
    say "kernel headers present for $krel"
fi

# --- bpffs -----------------------------------------------------------------
if ! awk '$2 == "/sys/fs/bpf" && $3 == "bpf" {found = 1} END {exit !found}' /proc/mounts; then
    need_root "mount bpffs at /sys/fs/bpf"
    mkdir -p /sys/fs/bpf
    mount -t bpf bpf /sys/fs/bpf
    say "mounted bpffs at /sys/fs/bpf"
else
    say "bpffs mounted"
fi

# --- virtualenv ------------------------------------------------------------
# --system-site-packages: bcc is importable only from Debian's python3-bpfcc.
if [[ ! -x $VENV/bin/python ]]; then
    say "creating $VENV"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
if ! grep -qi '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg"; then
    die "$VENV was made without --system-site-packages, so bcc cannot be imported; rm -rf $VENV and run make setup again"
fi
if [[ ! -e $STAMP || pyproject.toml -nt $STAMP ]]; then
    say "installing xdpguard and its dev tools into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[dev]'
    touch "$STAMP"
else
    say "$VENV up to date"
fi

# --- check -----------------------------------------------------------------
if ! err=$("$VENV/bin/python" -c 'import bcc' 2>&1); then
    die "bcc cannot be imported from $VENV (is python3-bpfcc installed for /usr/bin/python3?): ${err##*$'\n'}"
fi
# Bytecode, as an install has it: where the environment forbids writing it
# (PYTHONDONTWRITEBYTECODE), every CLI run would compile what it imports
# again, some 40-150 ms each.  compileall writes only what is out of date.
"$VENV/bin/python" -m compileall -q xdpguard >/dev/null || die "byte-compiling xdpguard failed"
say "ready"
