#!/usr/bin/env bash
# Idempotent machine + project set-up for herdtrace (Debian/Ubuntu, as root).
# Installs the apt packages, links kernel headers when the running kernel has
# none, mounts tracefs/debugfs, and builds .venv with Debian's bcc importable.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv
say() { echo "setup: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
  say "error: run as root (apt-get, mount and BPF need it): sudo make setup"; exit 1
fi

# 1. Debian packages: bcc (python3-bpfcc is pure Python over libbcc), headers for
#    bcc's run-time compile, and the tools the benchmarks compare against.
arch=$(dpkg --print-architecture)
pkgs=(python3-bpfcc bpfcc-tools libbpfcc "linux-headers-$arch" bpftrace linux-perf
      nginx apache2-utils wrk python3-venv bpftool apache2 haproxy nodejs prometheus)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts these servers on install; the tests start their own on loopback.
  for svc in nginx apache2 haproxy prometheus; do
    (systemctl stop "$svc" || service "$svc" stop) >/dev/null 2>&1 || true
  done
  nginx -s stop >/dev/null 2>&1 || true
fi

# 2. Kernel headers: bcc compiles against /lib/modules/$(uname -r)/build.
rel=$(uname -r)
mods=/lib/modules/$rel
if [ ! -e "$mods/build/include" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-"$arch" 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$hdr" ]; then say "error: no /usr/src/linux-headers-*-$arch after install"; exit 1; fi
  common=${hdr%-"$arch"}-common
  mkdir -p "$mods"
  ln -sfn "$hdr" "$mods/build"
  [ -d "$common" ] && ln -sfn "$common" "$mods/source"
  say "warning: kernel $rel has no headers; linked $(basename "$hdr") as $mods/build."
  say "  This is safe for herdtrace: no struct layout is taken from these headers (its probes"
  say "  read tracepoint arguments, helper results, and fields at offsets from the kernel's BTF)."
fi

# 3. tracefs (tracepoint ids and formats) and debugfs.
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug

# 4. The virtual environment: the project (editable) and its Python dependencies.
stamp=$VENV/.herdtrace-setup
if [ ! -x "$VENV/bin/python" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
# Expose Debian's bcc package, and nothing else of Debian's Python, via a .pth.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$VENV/debian-bcc"
ln -sfn /usr/lib/python3/dist-packages/bcc "$VENV/debian-bcc/bcc"
echo "$(pwd)/$VENV/debian-bcc" > "$site/debian-bcc.pth"
"$VENV/bin/python" -c 'import bcc; bcc.BPF' || { say "error: bcc not importable in $VENV"; exit 1; }
say "ok: $VENV/bin/herdtrace is ready (check with: $VENV/bin/herdtrace doctor)"
