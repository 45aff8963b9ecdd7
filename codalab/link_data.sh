#!/usr/bin/env bash
# Symlink every subfolder of ./data-*/data/ into ./data/ (data-mnli is linked as data/multinli_1.0).
set -euo pipefail
mkdir -p data
for dep in ./data-*; do
  [ -d "$dep" ] || continue
  if [ "$(basename "$dep")" = "data-mnli" ]; then
    ln -sfn "$(realpath "$dep")" data/multinli_1.0
    continue
  fi
  for sub in "$dep"/data/*/; do
    [ -d "$sub" ] && ln -sfn "$(realpath "$sub")" "data/$(basename "$sub")"
  done
done
