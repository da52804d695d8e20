#!/usr/bin/env bash
# Install Debian packages as root, first waiting (with a bound) for any other apt or dpkg run:
# on a fresh cloud VM unattended-upgrades often holds the locks for minutes.
#   tools/install-debs.sh PACKAGE...
#   APT_LOCK_TIMEOUT  seconds to wait for the locks in all (default 600)
#   APT_OPTIONS       more apt-get options (e.g. -o Dir::State=... for another apt root)
set -uo pipefail

timeout=${APT_LOCK_TIMEOUT:-600}
deadline=$((SECONDS + timeout))
waiting=""

# The first try takes the locks at once or says who holds them; later tries let apt-get wait for the
# dpkg lock itself (DPkg::Lock::Timeout). The package lists' lock apt-get does not wait for: a run
# refused by it is tried again every 2 s until the deadline.
apt_get() {
    local out rc lock_wait
    while true; do
        lock_wait=0
        [ -n "$waiting" ] && lock_wait=$((deadline > SECONDS ? deadline - SECONDS : 0))
        # shellcheck disable=SC2086 # APT_OPTIONS is a list of words
        out=$(DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout="$lock_wait" ${APT_OPTIONS:-} "$@" 2>&1)
        rc=$?
        if [ "$rc" = 0 ] || ! grep -q "Could not get lock\|Unable to acquire the dpkg frontend lock" <<<"$out"; then
            [ "$rc" = 0 ] || printf '%s\n' "$out" >&2
            return "$rc"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            printf '%s\n' "$out" >&2
            echo "another apt or dpkg run still holds its lock after ${timeout}s: wait for it to finish" \
                 "(e.g. unattended-upgrades), or raise APT_LOCK_TIMEOUT, and run make setup again" >&2
            return 1
        fi
        if [ -z "$waiting" ]; then
            waiting=yes
            echo "waiting up to ${timeout}s (APT_LOCK_TIMEOUT) for another apt or dpkg run to finish:" \
                 "$(grep -m1 -o 'Could not get lock.*' <<<"$out")"
        else
            sleep 2
        fi
    done
}

echo "installing: $*"
apt_get update && apt_get install -y --no-install-recommends "$@"
