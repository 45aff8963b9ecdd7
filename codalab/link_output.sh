#!/usr/bin/env bash
# Symlink every run folder of the run bundles (./subsets-*, ./reg-*, ./counterexamples, ...) into ./output/.
set -euo pipefail
mkdir -p output
for bundle in ./subsets-* ./reg-* ./counterexamples ./data-valuation ./credit-assignment; do
  [ -d "$bundle/output" ] || continue
  for exp_dir in "$bundle"/output/*/; do
    exp=$(basename "$exp_dir")
    mkdir -p "output/$exp"
    for run in "$exp_dir"*/; do
      [ -d "$run" ] && ln -sfn "$(realpath "$run")" "output/$exp/$(basename "$run")"
    done
  done
done
