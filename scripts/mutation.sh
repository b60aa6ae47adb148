#!/usr/bin/env bash
# Mutation testing (cosmic-ray, in the mutation extra) of the modules where a silent bug would
# falsify a published number. One module at a time, each with the fast test selection that
# pins it (scripts/mutation/<name>.toml); see docs/TESTING.md for the figures and survivors.
#   bash scripts/mutation.sh vote            # edgempir/vote.py
#   bash scripts/mutation.sh npz graph       # several, one after the other
#   bash scripts/mutation.sh all             # every configured module (long: hours on 2 cores)
# The mutants run through scripts/mutation_fast.py (per mutant only the tests that execute
# its statement, in forks of one process that imported torch once: same verdicts, about
# 10x cheaper); MUTATION_EXEC=cosmic-ray runs them with plain `cosmic-ray exec` instead.
# cosmic-ray mutates the file in place and restores it after each mutant; this script refuses
# a module with uncommitted changes and restores it from git on exit, even after a kill.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
BIN=.venv/bin
if ! [ -x "$BIN/cosmic-ray" ]; then
  echo "mutation.sh: cosmic-ray is not installed; run: $PY -m pip install -e '.[host,dev,mutation]'" >&2
  exit 2
fi
names=("$@")
[ "${#names[@]}" -gt 0 ] || { echo "usage: mutation.sh NAME... | all (names: $(ls scripts/mutation | sed 's/\.toml//' | tr '\n' ' '))" >&2; exit 2; }
[ "${names[0]}" = all ] && mapfile -t names < <(ls scripts/mutation | sed 's/\.toml$//')
out=.mutation
mkdir -p "$out"
for name in "${names[@]}"; do
  cfg=scripts/mutation/$name.toml
  [ -f "$cfg" ] || { echo "mutation.sh: no $cfg" >&2; exit 2; }
  module=$(sed -n 's/^module-path = "\(.*\)"/\1/p' "$cfg")
  if ! git diff --quiet HEAD -- "$module"; then
    echo "mutation.sh: $module has uncommitted changes; commit or stash them first" >&2
    exit 2
  fi
  trap 'git checkout -q HEAD -- "$module"' EXIT INT TERM
  rm -f "$out/$name.sqlite"
  # the suite's trained run and bundles, built once by the cover run on the unmutated code
  # and reused by every mutant's session (tests/support/shared.py)
  rm -rf "$out/artefacts"
  export EDGEMPIR_TEST_ARTEFACTS="$PWD/$out/artefacts"
  PATH="$PWD/$BIN:$PATH" OMP_NUM_THREADS=1 "$BIN/cosmic-ray" init "$cfg" "$out/$name.sqlite"
  "$PY" scripts/mutation_tools.py skip-annotations "$out/$name.sqlite" "$module"
  if [ "${MUTATION_EXEC:-fast}" = cosmic-ray ]; then
    PATH="$PWD/$BIN:$PATH" OMP_NUM_THREADS=1 "$BIN/cosmic-ray" exec "$cfg" "$out/$name.sqlite"
  else
    OMP_NUM_THREADS=1 "$PY" scripts/mutation_fast.py cover "$cfg" "$out/$name.cover.json"
    OMP_NUM_THREADS=1 "$PY" scripts/mutation_fast.py exec "$cfg" "$out/$name.sqlite" \
      "$out/$name.cover.json"
  fi
  git checkout -q HEAD -- "$module"
  trap - EXIT INT TERM
  echo "== $name ($module)"
  "$PY" scripts/mutation_tools.py report "$out/$name.sqlite"
done
