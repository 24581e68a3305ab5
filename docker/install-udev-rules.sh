#!/usr/bin/env bash
# Install docker/udev/99-clamp-aloha.rules on the robot computer (the host, not the container),
# with the serial number of each arm's U2D2 adapter.
#
#   docker/install-udev-rules.sh --list       # serial numbers of the connected U2D2 adapters
#   sudo docker/install-udev-rules.sh follower_left=FT6Z5ABC follower_right=FT6Z5ABD \
#        leader_left=FT6Z5ABE leader_right=FT6Z5ABF
#
# Plug in one U2D2 at a time and run --list to learn which serial belongs to which arm.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TEMPLATE="$HERE/udev/99-clamp-aloha.rules"
TARGET="${CLAMP_UDEV_TARGET:-/etc/udev/rules.d/99-clamp-aloha.rules}"
ARMS=(follower_left follower_right leader_left leader_right)

if [ "${1:-}" = "--list" ]; then
  found=0
  for dev in /dev/ttyUSB*; do
    [ -e "$dev" ] || continue
    serial="$(udevadm info -q property -n "$dev" | sed -n 's/^ID_SERIAL_SHORT=//p')"
    echo "$dev serial=$serial"; found=1
  done
  [ $found = 1 ] || echo "no /dev/ttyUSB* devices: is a U2D2 plugged in?"
  exit 0
fi

rules="$(cat "$TEMPLATE")"
for arg in "$@"; do
  arm="${arg%%=*}"; serial="${arg#*=}"
  case " ${ARMS[*]} " in *" $arm "*) ;; *) echo "unknown arm '$arm'; arms: ${ARMS[*]}" >&2; exit 2 ;; esac
  [[ "$serial" =~ ^[A-Za-z0-9]+$ ]] || { echo "serial for $arm looks wrong: '$serial'" >&2; exit 2; }
  rules="${rules//@${arm}@/$serial}"
done
if grep -q '@[a-z_]*@' <<<"$rules"; then
  echo "missing serial numbers for: $(grep -o '@[a-z_]*@' <<<"$rules" | tr -d @ | sort -u | tr '\n' ' ')" >&2
  echo "usage: sudo $0 follower_left=SERIAL follower_right=SERIAL leader_left=SERIAL leader_right=SERIAL" >&2
  echo "       ($0 --list shows the serials of the connected adapters)" >&2
  exit 2
fi
printf '%s\n' "$rules" >"$TARGET"
if command -v udevadm >/dev/null && [ -z "${CLAMP_UDEV_TARGET:-}" ]; then
  udevadm control --reload-rules && udevadm trigger
fi
echo "installed $TARGET; replug the adapters, then: ls -l /dev/ttyDXL_*"
