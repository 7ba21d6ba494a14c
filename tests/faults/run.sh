#!/bin/bash
# The fault matrix: every scenario of scenario.sh (or those chosen), each
# run N times with random timing from one seed, on new pairs of real mirrord
# nodes. Prints and writes the table: scenario x runs x acknowledged writes
# checked x lost (must be 0) x converged. Exit 0 only if every run passed.
#
#   MIRRORD=build/mirrord MIRRORCTL=build/mirrorctl tests/faults/run.sh \
#       [--seed S] [--runs N] [--scenario a,b,...] [--out FILE] [--list]
#
# The seed (default: from the clock) is printed first; giving it back
# repeats the same timings. Run i of a scenario uses seed S + i. Needs root
# for the ENOSPC scenario's tmpfs (it skips without). docs/reliability.md
# has the full command and the last table.
#
# FAULT_VOL_EXTRA adds lines to every run's [volume] table, e.g. FAULT_VOL_EXTRA='resync-checksums = true'
# runs the matrix with checksum-based resync.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SEED=$(( $(date +%s%N) % 1000000000 ))
RUNS=3
ONLY=""
OUT=""
RUN_TIMEOUT=${RUN_TIMEOUT:-420}
while [ $# -gt 0 ]; do
    case $1 in
        --seed) SEED=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --scenario) ONLY=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --list) "$HERE/scenario.sh" --list; exit 0 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument '$1' (--seed --runs --scenario --out --list)" >&2; exit 2 ;;
    esac
done
[[ "$SEED" =~ ^[0-9]+$ ]] || { echo "run.sh: --seed takes a number" >&2; exit 2; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --runs takes a positive number" >&2; exit 2; }
mapfile -t ALL < <("$HERE/scenario.sh" --list)
if [ -n "$ONLY" ]; then
    IFS=, read -r -a CHOSEN <<<"$ONLY"
    for s in "${CHOSEN[@]}"; do
        printf '%s\n' "${ALL[@]}" | grep -qx -- "$s" || { echo "run.sh: unknown scenario '$s' (--list)" >&2; exit 2; }
    done
else
    CHOSEN=("${ALL[@]}")
fi
OUT=${OUT:-${TMPDIR:-/tmp}/mirrord-faults-$SEED.txt}
ROWS=$(mktemp)
trap 'rm -f "$ROWS"' EXIT

echo "fault matrix: seed $SEED, $RUNS run(s) of ${#CHOSEN[@]} scenario(s) (repeat with --seed $SEED)"
t0=$SECONDS
for s in "${CHOSEN[@]}"; do
    for i in $(seq 1 "$RUNS"); do
        seed=$((SEED + i))
        before=$(wc -l <"$ROWS")
        log=$(mktemp "${TMPDIR:-/tmp}/mirrord-faults-$s-$i.XXXXXX.log")
        timeout -k 10 "$RUN_TIMEOUT" "$HERE/scenario.sh" "$s" "$seed" "$i" "$ROWS" >"$log" 2>&1
        rc=$?
        if [ "$(wc -l <"$ROWS")" -eq "$before" ]; then
            # Killed by the timeout or skipped before it started.
            if [ $rc -eq 77 ]; then
                echo "$s $i $seed 0 0 - skip" >>"$ROWS"
            else
                echo "$s $i $seed 0 0 no fail" >>"$ROWS"
            fi
        fi
        row=$(tail -n 1 "$ROWS")
        case $row in
            *" pass") echo "  $s #$i (seed $seed): pass"; rm -f "$log" ;;
            *" skip") echo "  $s #$i (seed $seed): skipped: $(grep -m1 SKIP "$log")"; rm -f "$log" ;;
            *) echo "  $s #$i (seed $seed): FAILED (exit $rc); log kept: $log"
               grep -E 'FAIL|FATAL' "$log" | head -n 8 | sed 's/^/      /' ;;
        esac
    done
done

{
    echo "mirrord fault matrix, seed $SEED, $(date -u '+%Y-%m-%d %H:%M UTC'), $((SECONDS - t0)) s"
    printf '%-28s %5s %8s %8s %5s %10s %s\n' scenario runs passed checked lost converged result
    awk '
    { n[$1]++; if ($7 == "pass") p[$1]++; if ($7 == "skip") sk[$1]++
      c[$1] += $4; l[$1] += $5; if ($6 == "yes") cv[$1]++
      if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
    END {
      for (i = 1; i <= k; i++) { s = order[i]
        res = (p[s] + sk[s] == n[s] && l[s] == 0) ? (sk[s] == n[s] ? "SKIP" : "ok") : "FAIL"
        printf "%-28s %5d %8d %8d %5d %6d/%-3d %s\n", s, n[s], p[s] + 0, c[s], l[s], cv[s] + 0, n[s], res
        tn += n[s]; tp += p[s]; tc += c[s]; tl += l[s]; tcv += cv[s] }
      printf "%-28s %5d %8d %8d %5d %6d/%-3d\n", "total", tn, tp, tc, tl, tcv, tn
    }' "$ROWS"
} | tee "$OUT"
echo "table written to $OUT"
! grep -qE ' FAIL$' "$OUT"
