#!/usr/bin/env bash
# Installs what the `mpi` cargo feature needs on Debian/Ubuntu: Open MPI
# (`mpirun`, `mpicc`, the headers and libraries) and libclang, which the
# `mpi` crate's bindings generator (bindgen) loads at build time.
#
# Idempotent: packages already installed are left as they are. Runs
# apt-get non-interactively; needs root (or sudo).
set -euo pipefail

packages=(openmpi-bin libopenmpi-dev libclang-dev pkg-config)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-mpi: already installed: ${packages[*]}"
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-mpi: installing ${missing[*]}"
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
command -v mpirun >/dev/null
echo "install-mpi: $(mpirun --version | head -n 1)"
