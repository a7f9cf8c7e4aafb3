#!/usr/bin/env bash
# Wheels the GPU machine lacks (it has torch, numpy, pandas, matplotlib, rich, tensorboard,
# scikit-learn, opencv; Python 3.12), downloaded into .whl (git-ignored) to carry there with
# scripts/gpu_check.sh. envpool (115 MB with its ROM assets) exceeds the 64 MiB carry limit,
# so the GPU check uses the ale-py backend.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
for spec in ale-py==0.12.1 gymnasium==1.4.0 farama-notifications==0.0.6 stable-baselines3==2.9.2; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$spec"
done
ls -la .whl
