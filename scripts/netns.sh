#!/usr/bin/env bash
# Run a command in a fresh network namespace that has only loopback (127.0.0.1), so nothing it starts
# can reach another machine. Ray probes public addresses when it starts (8.8.8.8, a cloud metadata
# address), even with usage stats off: every Ray test and notebook runs through this script.
#
#     bash scripts/netns.sh python -m pytest -q py-bindings/tests/test_ray.py
#
# As root it uses `unshare -n`; otherwise an unprivileged user namespace (`unshare -rn`). When neither
# works it fails, loudly: it never runs the command outside the namespace.
set -euo pipefail
if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi
if [ "$(id -u)" -eq 0 ]; then
    flags=(-n)
else
    flags=(-r -n)
fi
export RAY_USAGE_STATS_ENABLED=0                 # no usage report (it would fail here anyway)
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="${RAY_TRAIN_HEALTH_CHECK_INTERVAL_S:-0.1}"  # ray.train.report waits ~2 s per call at the default
export KILN_NETNS=1
if ! command -v ip >/dev/null; then  # iproute2 brings loopback up inside the namespace
    if [ "$(id -u)" -eq 0 ]; then
        (apt-get update -qq && apt-get install -y -qq --no-install-recommends iproute2) >/dev/null
    else
        echo "scripts/netns.sh: needs the ip command (apt-get install iproute2)" >&2
        exit 1
    fi
fi
if ! unshare "${flags[@]}" true 2>/dev/null; then
    echo "scripts/netns.sh: cannot create a network namespace (unshare ${flags[*]} failed): refusing to run '$*' with the machine's network" >&2
    exit 1
fi
# shellcheck disable=SC2016
exec unshare "${flags[@]}" bash -c 'set -euo pipefail; ip link set lo up; exec "$@"' netns "$@"
