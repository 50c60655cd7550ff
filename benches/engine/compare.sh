#!/usr/bin/env bash
# `make bench-engine-compare BASE=<rev> [NEW=<rev>]`: MiniDB's engine at BASE against NEW
# (default: the working tree),
# same workloads, alternating runs in one session, each engine in its own process (the
# harness's `--engine minidb` child). Prints each row's best run and the ratio.
set -euo pipefail
cd "$(dirname "$0")/../.."
base=${BASE:?set BASE to a git revision, e.g. BASE=HEAD~5}
rounds=${BENCH_ROUNDS:-3}
root=$PWD
wt=$root/target/bench-base-src
rm -rf "$wt"
git worktree prune
git worktree add --detach "$wt" "$base" >/dev/null
trap 'git worktree remove --force "$wt" >/dev/null 2>&1 || true' EXIT
build() { # $1 = source root, $2 = target dir
  (cd "$1/benches/engine" && CARGO_TARGET_DIR=$2 cargo build --release --quiet)
}
newsrc=$root
if [[ -n ${NEW:-} ]]; then
  newsrc=$root/target/bench-new-src
  rm -rf "$newsrc"
  git worktree add --detach "$newsrc" "$NEW" >/dev/null
  trap 'git worktree remove --force "$wt" >/dev/null 2>&1 || true; git worktree remove --force "$newsrc" >/dev/null 2>&1 || true' EXIT
fi
build "$wt" "$root/target/bench-base"
build "$newsrc" "$root/target/bench-engine"
old=$root/target/bench-base/release/minidb-engine-bench
new=$root/target/bench-engine/release/minidb-engine-bench
echo "engine at $(git rev-parse --short "$base") vs ${NEW:-the working tree}; best of $rounds alternating runs; load $(cut -d' ' -f1-3 /proc/loadavg)"
out=$(mktemp -d)
for r in $(seq "$rounds"); do
  "$old" --engine minidb | grep '^RESULT' > "$out/old.$r"
  "$new" --engine minidb | grep '^RESULT' > "$out/new.$r"
done
python3 - "$out" "$rounds" <<'PY'
import sys, collections
d, rounds = sys.argv[1], int(sys.argv[2])
def best(prefix):
    b = {}
    for r in range(1, rounds + 1):
        for line in open(f"{d}/{prefix}.{r}"):
            _, k, v = line.rstrip("\n").split("\t")
            v = float(v)
            low = "(ms)" in k or "(MiB)" in k
            b[k] = v if k not in b else (min(b[k], v) if low else max(b[k], v))
    return b
o, n = best("old"), best("new")
print("| workload | base | now | now/base |")
print("|---|---:|---:|---:|")
for k in sorted(o):
    name = k.split(" ", 1)[1]
    print(f"| {name} | {o[k]:,.1f} | {n.get(k, float('nan')):,.1f} | {n.get(k, float('nan')) / o[k]:.2f} |")
PY
