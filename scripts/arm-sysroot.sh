#!/usr/bin/env bash
# Builds (once, then reuses) an aarch64 root filesystem in which edgempir's device side runs
# under qemu-user: Debian 12's Python 3.11 plus the device wheels (numpy, onnxruntime,
# click, psutil) from PyPI. scripts/edgempir-arm runs `edgempir` inside it. See docs/ARM.md.
#
# usage: scripts/arm-sysroot.sh [--check | --force | --cpuinfo MODEL]
#   (none)   build if missing or out of date, then print the sysroot's path on stdout
#   --check  exit 0 if the sysroot is built and up to date, 1 if not (no network, no changes)
#   --force  rebuild even if up to date (downloads already cached are reused)
#   --cpuinfo MODEL  print the /proc/cpuinfo the guest sees for a qemu CPU model
#
# environment:
#   EDGEMPIR_ARM_SYSROOT   where the sysroot goes (default ~/.cache/edgempir/arm-sysroot);
#                          downloads are cached beside it in <sysroot>.downloads
#   EDGEMPIR_ARM_DEBIAN    Debian mirror (default http://deb.debian.org/debian)
#   EDGEMPIR_ARM_DEBIAN_SECURITY  (default http://deb.debian.org/debian-security)
#   EDGEMPIR_HOST_PYTHON   host python whose pip downloads the aarch64 wheels (default python3)
#
# exit codes: 0 built/up to date; 1 --check: not built; 2 this machine cannot build it (no
# apt-get/dpkg-deb/qemu/pip: the message says what to install); 3 a download failed.
#
# The apt side uses a private apt state (own sources, arm64 as the only architecture) under
# the download cache, so it needs no root and leaves the host's apt/dpkg configuration alone.
# Root is needed only to apt-get install qemu-user-static when it is missing.
set -euo pipefail

# Bump when the recipe changes in a way the lists below do not show (e.g. a new build step).
RECIPE_VERSION=3
DEBIAN_SUITE=bookworm   # Debian 12: Python 3.11, glibc 2.36 (the wheels need manylinux_2_28)
PYTHON_VERSION=3.11

# python3.11-minimal and what it needs to start and to import numpy/onnxruntime/ssl/sqlite.
DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
      libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5
      libsqlite3-0 libuuid1 libncursesw6 libtinfo6 libreadline8 libdb5.3 libnsl2 libtirpc3
      libcrypt1 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2
      libkeyutils1)

# The `device` extra and onnxruntime's own needs, pinned so that a rebuild gives the same
# sysroot. onnxruntime is kept at the dev environment's version so that an x86-vs-ARM
# comparison differs in the CPU only.
WHEELS=(numpy==2.4.6 onnxruntime==1.32.0 flatbuffers==25.12.19 packaging==26.3
        protobuf==7.36.2 click==8.5.1 psutil==7.2.2)

STAMP_NAME=EDGEMPIR-SYSROOT
SYSROOT=${EDGEMPIR_ARM_SYSROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/edgempir/arm-sysroot}
SYSROOT=${SYSROOT%/}
DOWNLOADS=$SYSROOT.downloads
MIRROR=${EDGEMPIR_ARM_DEBIAN:-http://deb.debian.org/debian}
SECURITY=${EDGEMPIR_ARM_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
HOST_PYTHON=${EDGEMPIR_HOST_PYTHON:-python3}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

die() { echo "arm-sysroot: $2" >&2; exit "$1"; }
say() { echo "arm-sysroot: $*" >&2; }

# The cpuinfo that onnxruntime reads at import (via pytorch/cpuinfo): qemu-user passes the
# host's x86 /proc/cpuinfo through, on which the ARM parser finds no processors and aborts.
# qemu's -L makes the guest open SYSROOT/proc/cpuinfo instead. It must name the CPU model
# qemu emulates: cpuinfo also derives features from the core's part number (a Cortex-A76
# has dot product), and a kernel picked for a core qemu does not emulate dies with SIGILL.
# Four blocks, as on a Raspberry Pi (the parser copes with more or fewer than the host has).
CPU_MODELS="cortex-a53 cortex-a57 cortex-a72 cortex-a76 neoverse-n1"
cpuinfo() {  # cpuinfo QEMU_CPU_MODEL
    local part variant revision features i
    case $1 in  # part, variant, revision, features: as the boards' kernels report them
        cortex-a53) part=0xd03 variant=0x0 revision=4 features="fp asimd evtstrm crc32 cpuid" ;;
        cortex-a57) part=0xd07 variant=0x1 revision=1
                    features="fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid" ;;
        cortex-a72) part=0xd08 variant=0x0 revision=3 features="fp asimd evtstrm crc32 cpuid" ;;
        cortex-a76) part=0xd0b variant=0x4 revision=1
                    features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
        neoverse-n1) part=0xd0c variant=0x3 revision=1
                    features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs" ;;
        *) return 1 ;;
    esac
    for ((i = 0; i < 4; i++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\n' "$i" "$features"
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\n' "$variant"
        printf 'CPU part\t: %s\nCPU revision\t: %s\n\n' "$part" "$revision"
    done
}

mode=build
case "${1:-}" in
    "") ;;
    --check) mode=check ;;
    --force) mode=force ;;
    --cpuinfo) cpuinfo "${2:-}" ||
        die 2 "no cpuinfo for CPU model '${2:-}'; models: $CPU_MODELS"; exit 0 ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die 2 "unknown option '$1' (use --check, --force, --cpuinfo MODEL or --help)" ;;
esac

recipe_hash() {
    printf '%s\n' "$RECIPE_VERSION" "$DEBIAN_SUITE" "$MIRROR" "$SECURITY" "${DEBS[@]}" \
        "${WHEELS[@]}" "$(cpuinfo cortex-a76)" | sha256sum | cut -d' ' -f1
}

up_to_date() {
    [ -f "$SYSROOT/$STAMP_NAME" ] &&
        [ "$(sed -n 's/^recipe //p' "$SYSROOT/$STAMP_NAME")" = "$(recipe_hash)" ]
}

if [ "$mode" = check ]; then
    up_to_date && exit 0
    exit 1
fi
have_qemu() { command -v qemu-aarch64-static >/dev/null; }
if [ "$mode" = build ] && up_to_date && have_qemu; then
    echo "$SYSROOT"
    exit 0
fi
# one build at a time (parallel test runs); the one that waited finds the sysroot built
mkdir -p "$(dirname "$SYSROOT")"
exec 8>"$SYSROOT.lock"
flock 8
if [ "$mode" = build ] && up_to_date && have_qemu; then
    echo "$SYSROOT"
    exit 0
fi

# ---- what this machine must have ---------------------------------------------------------
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null ||
    die 2 "needs apt-get and dpkg-deb (Debian/Ubuntu) to fetch the arm64 Python; not found here"
command -v sha256sum >/dev/null || die 2 "needs sha256sum (coreutils); not found here"
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
"$HOST_PYTHON" -m pip --version >/dev/null 2>&1 ||
    die 2 "needs pip for the host python '$HOST_PYTHON' (set EDGEMPIR_HOST_PYTHON to one that has it)"

root_apt_install() {  # root_apt_install PACKAGE: install on the host, refreshing lists once
    [ "$(id -u)" = 0 ] || return 1
    say "installing $1 on the host (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$1" >&2 ||
        { apt-get update -q >&2 &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$1" >&2; }
}

if ! have_qemu; then
    root_apt_install qemu-user-static ||
        die 2 "qemu-aarch64-static not found: install it (sudo apt-get install qemu-user-static) and rerun"
    have_qemu || die 2 "qemu-user-static installed but qemu-aarch64-static is not on PATH"
fi
if [ ! -f "$KEYRING" ]; then
    root_apt_install debian-archive-keyring ||
        die 2 "$KEYRING not found: install debian-archive-keyring (sudo apt-get install debian-archive-keyring) and rerun"
fi

# ---- downloads (cached in $DOWNLOADS) ----------------------------------------------------
started=$SECONDS
apt_dir=$DOWNLOADS/apt
mkdir -p "$apt_dir"/{lists/partial,archives/partial,etc/empty} "$DOWNLOADS"/{debs,wheels}
: >"$apt_dir/status"
src="[arch=arm64 signed-by=$KEYRING]"
cat >"$apt_dir/etc/sources.list" <<EOF
deb $src $MIRROR $DEBIAN_SUITE main
deb $src $MIRROR $DEBIAN_SUITE-updates main
deb $src $SECURITY $DEBIAN_SUITE-security main
EOF
apt_opts=(-q -o "Dir::State=$apt_dir" -o "Dir::State::Lists=$apt_dir/lists"
          -o "Dir::State::status=$apt_dir/status" -o "Dir::Cache=$apt_dir"
          -o "Dir::Etc::SourceList=$apt_dir/etc/sources.list"
          -o "Dir::Etc::SourceParts=$apt_dir/etc/empty"
          -o "Dir::Etc::Preferences=$apt_dir/etc/empty/none"
          -o "Dir::Etc::PreferencesParts=$apt_dir/etc/empty"
          -o APT::Architecture=arm64 -o "APT::Architectures::=arm64"
          -o Acquire::Languages=none -o Debug::NoLocking=1)
# apt drops to the _apt user for downloads when root; that user cannot write under ~/.cache
[ "$(id -u)" = 0 ] && apt_opts+=(-o APT::Sandbox::User=root)

say "fetching the Debian $DEBIAN_SUITE arm64 package lists"
if ! apt-get "${apt_opts[@]}" update >&2; then
    ls "$apt_dir"/lists/*_Packages* >/dev/null 2>&1 ||
        die 3 "apt-get update for arm64 failed (is $MIRROR reachable?)"
    say "warning: apt-get update failed; using the package lists fetched before"
fi
# name=version: exactly the versions the lists give now (one apt-cache call: each loads the
# whole cache); the stamp records them
mapfile -t deb_versions < <(apt-cache "${apt_opts[@]}" policy "${DEBS[@]}" | awk '
    /^[^ ].*:$/ { name = substr($0, 1, length($0) - 1); sub(/:arm64$/, "", name) }
    /^  Candidate: / && $2 != "(none)" { print name "=" $2 }')
for p in "${DEBS[@]}"; do
    printf '%s\n' "${deb_versions[@]}" | grep -q "^$p=" ||
        die 3 "package $p is not in the Debian $DEBIAN_SUITE arm64 lists"
done
deb_file() {  # deb_file NAME=VERSION: where apt-get download puts it (epoch ':' as %3a)
    local p=${1%%=*} v=${1#*=}
    echo "$DOWNLOADS/debs/${p}_${v//:/%3a}_arm64.deb"
}
missing=()
for pv in "${deb_versions[@]}"; do [ -f "$(deb_file "$pv")" ] || missing+=("$pv"); done
if [ ${#missing[@]} -gt 0 ]; then
    say "downloading ${#missing[@]} arm64 packages"
    (cd "$DOWNLOADS/debs" && apt-get "${apt_opts[@]}" download "${missing[@]}" >&2) ||
        die 3 "apt-get download of the arm64 packages failed"
fi

wheel_file() {  # wheel_file NAME==VERSION: the cached aarch64 (or pure) wheel, if any
    local name=${1%%==*} version=${1#*==} f
    name=$(echo "$name" | tr '[:upper:]-.' '[:lower:]__')
    for f in "$DOWNLOADS/wheels/${name}-${version}-"*.whl; do
        case $f in *aarch64*.whl|*-none-any.whl) [ -f "$f" ] && { echo "$f"; return 0; } ;; esac
    done
    return 1
}
missing=()
for req in "${WHEELS[@]}"; do wheel_file "$req" >/dev/null || missing+=("$req"); done
if [ ${#missing[@]} -gt 0 ]; then
    say "downloading the aarch64 wheels: ${missing[*]}"
    "$HOST_PYTHON" -m pip download -q --only-binary=:all: --no-deps \
        --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 \
        --platform manylinux2014_aarch64 --python-version "$PYTHON_VERSION" --implementation cp \
        -d "$DOWNLOADS/wheels" "${missing[@]}" >&2 || die 3 "pip download of the aarch64 wheels failed"
fi
say "downloads done in $((SECONDS - started)) s"

# ---- assemble in a temporary folder, test it, then swap it in ----------------------------
tmp=$SYSROOT.tmp-$$
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp"
stamp=$tmp/$STAMP_NAME.partial
{
    echo "recipe $(recipe_hash)"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/arm-sysroot.sh (recipe version $RECIPE_VERSION)"
    echo "debian $DEBIAN_SUITE arm64 from $MIRROR"
    echo "qemu $(qemu-aarch64-static --version | head -1)"
} >"$stamp"

for pv in "${deb_versions[@]}"; do
    deb=$(deb_file "$pv")
    [ -f "$deb" ] || die 3 "downloaded package for $pv not found at $deb"
    dpkg-deb -x "$deb" "$tmp"
    echo "deb ${pv%%=*} ${pv#*=} $(sha256sum "$deb" | cut -d' ' -f1)" >>"$stamp"
done
rm -rf "$tmp"/usr/share/{doc,man,info,lintian,locale}

# Wheels go where Debian's python3.11 looks for distribution packages.
site=$tmp/usr/lib/python3/dist-packages
mkdir -p "$site"
wheel_files=()
for req in "${WHEELS[@]}"; do
    whl=$(wheel_file "$req") || die 3 "wheel for $req not found in $DOWNLOADS/wheels"
    wheel_files+=("$whl")
    echo "wheel $(basename "$whl") $(sha256sum "$whl" | cut -d' ' -f1)" >>"$stamp"
done
"$HOST_PYTHON" -m pip install -q --no-deps --no-index --no-compile \
    --only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
    --python-version "$PYTHON_VERSION" --implementation cp --target "$site" \
    "${wheel_files[@]}" >&2 || die 3 "installing the aarch64 wheels into the sysroot failed"
rm -rf "$site/bin"

mkdir -p "$tmp/proc"
cpuinfo cortex-a76 >"$tmp/proc/cpuinfo"  # scripts/edgempir-arm rewrites it per model
# Empty stand-ins: where the guest's Python looks but the sysroot has nothing, qemu's -L
# would fall through to the host's folders (and its x86 packages).
mkdir -p "$tmp/usr/local/lib/python$PYTHON_VERSION/dist-packages" \
    "$tmp/usr/lib/python$PYTHON_VERSION/site-packages" "$tmp/root/.local" "$tmp/opt/edgempir"

# The guest's python, as a host script. It is also what the guest's sys.executable names
# (qemu's -0 sets argv[0]), so child processes the guest starts with sys.executable
# (subprocess, multiprocessing; bench's memory probe) run under the same emulator, sysroot
# and CPU model, even where binfmt_misc cannot launch aarch64 executables (containers).
cat >"$tmp/usr/bin/python$PYTHON_VERSION-qemu" <<'WRAPPER'
#!/bin/sh
# python3.11 of this aarch64 sysroot under qemu-user (written by edgempir's arm-sysroot.sh)
root=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONNOUSERSITE=1  # the host's ~/.local packages are x86 builds
exec "${EDGEMPIR_QEMU:-qemu-aarch64-static}" -0 "$0" -L "$root" \
    -cpu "${EDGEMPIR_ARM_CPU:-cortex-a76}" "$root/usr/bin/python3.11" "$@"
WRAPPER
chmod +x "$tmp/usr/bin/python$PYTHON_VERSION-qemu"

say "checking the sysroot under qemu-aarch64-static -cpu cortex-a76"
check='import platform, subprocess, sys, numpy, onnxruntime as ort
assert platform.machine() == "aarch64", platform.machine()
for m in (numpy, ort):
    assert m.__file__.startswith(sys.argv[1]), m.__file__
child = subprocess.run([sys.executable, "-c", "import platform; print(platform.machine())"],
                       capture_output=True, text=True)
assert child.stdout.strip() == "aarch64", ("child process", child.returncode, child.stderr)
print("python", platform.python_version(), "numpy", numpy.__version__, "onnxruntime",
      ort.__version__, ort.get_available_providers()[-1])'
smoke=$(env -u PYTHONPATH -u PYTHONHOME -u EDGEMPIR_ARM_CPU -u EDGEMPIR_QEMU \
    PYTHONDONTWRITEBYTECODE=1 "$tmp/usr/bin/python$PYTHON_VERSION-qemu" -c "$check" "$tmp" 2>&1) ||
    die 3 "the new sysroot does not run: $(echo "$smoke" | tail -1)"
echo "check $smoke" >>"$stamp"
mv "$stamp" "$tmp/$STAMP_NAME"

if [ -e "$SYSROOT" ]; then
    rm -rf "$SYSROOT.old-$$"
    mv "$SYSROOT" "$SYSROOT.old-$$"
fi
mv "$tmp" "$SYSROOT"
trap - EXIT
rm -rf "$SYSROOT.old-$$"
say "built $SYSROOT ($(du -sh "$SYSROOT" | cut -f1)) in $((SECONDS - started)) s: $smoke"
echo "$SYSROOT"
