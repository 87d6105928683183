#!/usr/bin/env bash
# Put Fashion-MNIST into <ROOT>/FashionMNIST/raw/ (torchvision's layout, read by
# scalelong.data.FashionMNISTDataModule). Uses Debian's package dataset-fashion-mnist where apt
# works (as root or with passwordless sudo), else downloads through torchvision. Idempotent.
#
# Usage: bash scripts/get_fashion_mnist.sh [ROOT]    (ROOT defaults to data)
set -euo pipefail

ROOT="${1:-data}"
RAW="$ROOT/FashionMNIST/raw"
DEBIAN_DIR=/usr/share/datasets/fashion-mnist
FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
PYTHON="${PYTHON:-python3}"

have_all() {
    local file
    for file in "${FILES[@]}"; do [[ -s "$1/$file$2" ]] || return 1; done
}

if have_all "$RAW" ""; then
    echo "Fashion-MNIST is already in $RAW"
    exit 0
fi

if ! have_all "$DEBIAN_DIR" ".gz" && command -v apt-get >/dev/null; then
    if [[ "$(id -u)" == 0 ]]; then
        apt-get install -y dataset-fashion-mnist || { apt-get update && apt-get install -y dataset-fashion-mnist; } || true
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo -n apt-get install -y dataset-fashion-mnist \
            || { sudo -n apt-get update && sudo -n apt-get install -y dataset-fashion-mnist; } || true
    fi
fi

mkdir -p "$RAW"
if have_all "$DEBIAN_DIR" ".gz"; then
    for file in "${FILES[@]}"; do
        if [[ ! -s "$RAW/$file" ]]; then
            gunzip -c "$DEBIAN_DIR/$file.gz" > "$RAW/$file.partial"
            mv "$RAW/$file.partial" "$RAW/$file"
        fi
    done
    echo "Fashion-MNIST unzipped from $DEBIAN_DIR into $RAW"
else
    "$PYTHON" -c 'import sys, torchvision; torchvision.datasets.FashionMNIST(sys.argv[1], download=True)' "$ROOT"
    echo "Fashion-MNIST downloaded into $RAW"
fi
