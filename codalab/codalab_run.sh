#!/usr/bin/env bash
# The original's CodaLab worksheet recipe, updated for this project.
#
#   bash codalab/codalab_run.sh [--image REGISTRY/USER/NAME:TAG]
#
# DRY_RUN=1 (the default) prints the `cl` commands instead of running them; set DRY_RUN=0
# on a machine with the CodaLab CLI logged in to a worksheet to run them.
#
# Every bundle runs in the docker image named by --image (or $INFLUENCE_IMAGE). CodaLab
# workers pull that image from a registry, so it must be built from this repository's
# Dockerfile and pushed there first (README, "Running on CodaLab"):
#   docker build -t group-influence .
#   docker tag group-influence docker.io/USER/group-influence:1.0
#   docker push docker.io/USER/group-influence:1.0
# The default, group-influence:latest, is the local name of that build: no worker can pull
# it, so a real run (DRY_RUN=0) refuses it and a dry run prints a note.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY_RUN="${DRY_RUN:-1}"
DEFAULT_IMAGE="group-influence:latest"
IMAGE="${INFLUENCE_IMAGE:-$DEFAULT_IMAGE}"
while [ $# -gt 0 ]; do
  case "$1" in
    --image) [ $# -ge 2 ] && [ -n "$2" ] || { echo "error: --image needs a value (REGISTRY/USER/NAME:TAG)" >&2; exit 2; }
             IMAGE="$2"; shift 2 ;;
    --image=*) IMAGE="${1#--image=}"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "error: unknown argument '$1' (usage: bash codalab/codalab_run.sh [--image REGISTRY/USER/NAME:TAG])" >&2
       exit 2 ;;
  esac
done
# A pullable image has a registry or user part ("user/name:tag", "ghcr.io/user/name:tag").
if [ -z "$IMAGE" ] || [[ "$IMAGE" != */* ]]; then
  MESSAGE="docker image '$IMAGE' is a local name that CodaLab workers cannot pull: build and push the image (docker build -t group-influence . && docker tag group-influence docker.io/USER/group-influence:1.0 && docker push docker.io/USER/group-influence:1.0), then pass --image docker.io/USER/group-influence:1.0 or set INFLUENCE_IMAGE"
  if [ "$DRY_RUN" = "1" ]; then
    echo "note: $MESSAGE" >&2
  else
    echo "error: $MESSAGE" >&2
    exit 2
  fi
fi
REQ=(--request-memory 32g --request-docker-image "$IMAGE")

cl() {
  if [ "$DRY_RUN" = "1" ]; then
    printf 'cl'; printf ' %q' "$@"; printf '\n'
  else
    command cl "$@"
  fi
}

SRC="datasets:datasets experiments:experiments influence:influence scripts:scripts codalab:codalab notebooks:notebooks"
cl upload datasets experiments influence scripts codalab notebooks

cl run -n data-babble $SRC "bash codalab/prepare_babble.sh" "${REQ[@]}"
cl run -n data-hospital $SRC "bash codalab/prepare_data.sh hospital" "${REQ[@]}"
cl run -n data-mnist $SRC "bash codalab/prepare_data.sh mnist mnist_small" "${REQ[@]}"
cl run -n data-animals $SRC "bash codalab/prepare_data.sh dogfish animals" "${REQ[@]}"
cl run -n data-spam $SRC "bash codalab/prepare_data.sh spam" "${REQ[@]}"

for pair in reduced-cdr:reduced_cdr:data-babble hospital:hospital:data-hospital mnist:mnist:data-mnist \
            mnist-small:mnist_small:data-mnist animals:animals:data-animals dogfish:dogfish:data-animals \
            spam:spam:data-spam; do
  IFS=: read -r name id dep <<< "$pair"
  cl run -n "subsets-$name" $SRC ":$dep" "bash codalab/link_data.sh && bash codalab/run_subsets.sh $id" "${REQ[@]}"
done
for pair in hospital:hospital:data-hospital mnist-small:mnist_small:data-mnist dogfish:dogfish:data-animals \
            spam:spam:data-spam; do
  IFS=: read -r name id dep <<< "$pair"
  cl run -n "reg-$name" $SRC ":$dep" "bash codalab/link_data.sh && bash codalab/run_reg.sh $id" "${REQ[@]}"
done
cl run -n counterexamples $SRC "bash codalab/run_counterexamples.sh" "${REQ[@]}"
cl run -n data-valuation $SRC ":data-babble" "bash codalab/link_data.sh && bash codalab/run_data_valuation.sh" "${REQ[@]}"
cl run -n credit-assignment $SRC ":data-mnli" "bash codalab/link_data.sh && bash codalab/run_credit_assignment.sh" "${REQ[@]}"
cl run -n figures $SRC :subsets-reduced-cdr :subsets-hospital :subsets-mnist :subsets-mnist-small \
  :subsets-animals :subsets-dogfish :subsets-spam :reg-hospital :reg-mnist-small :reg-dogfish :reg-spam \
  :counterexamples :data-valuation :credit-assignment \
  "bash codalab/link_output.sh && bash codalab/run_figures.sh" "${REQ[@]}"
