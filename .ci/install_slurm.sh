#!/usr/bin/env bash
# Install a SLURM controller, node daemon, client and munge for tests/test_slurm.py.
# Idempotent, and never fails CI: without apt (or root, or a network) it says so and exits 0;
# the SLURM tests then skip with the reason.
set -uo pipefail

packages=(slurmctld slurmd slurm-client munge)
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null; then
    echo "install_slurm: already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install_slurm: no apt-get here; SLURM tests will skip"
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
    else
        echo "install_slurm: not root and no password-less sudo; SLURM tests will skip"
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d 101: the packages' postinst must not start daemons; the test starts its own.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && made_policy=1
fi
if $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}"; then
    echo "install_slurm: installed ${packages[*]}"
else
    echo "install_slurm: apt-get failed; SLURM tests will skip"
fi
[ "$made_policy" -eq 1 ] && $sudo rm -f "$policy"
exit 0
