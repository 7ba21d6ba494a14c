# Sourced by the bench scripts: what each request costs the CPU (CPU_COST=1).
#
# A QD1 row on one CPU is CPU-bound: the question for a gap is where the CPU goes, not where a
# request waits. Around the measured seconds of a run this snapshots the server's processes
# (/proc/PID/stat: every thread, io-wq workers and exited threads included, and the same for
# their children, e.g. nbd-server's per-connection process), their live threads' context
# switches (no count when threads exited between the snapshots),
# and CPU 1's busy/softirq/idle ticks from /proc/stat; cpu_cost_table prints microseconds per
# request. Needs: WORK, CPU_COST, WARMUP, RUN_SECONDS.

CPU_RES=${CPU_RES:-$WORK/cpu.tsv}   # server row run snapshot-before snapshot-after nbdload-json

# cpu_snapshot PID...: "ticks ctxsw cpu1_busy cpu1_irq cpu1_idle"
cpu_snapshot() {
  local ticks=0 cs=0 p c f line rest all=()
  for p in "$@"; do
    all+=("$p")
    for c in $(pgrep -P "$p" 2>/dev/null); do all+=("$c"); done
  done
  for p in "${all[@]}"; do
    line=$(<"/proc/$p/stat") || continue
    rest=${line##*) }
    read -r -a F <<<"$rest"
    ticks=$((ticks + F[11] + F[12]))   # utime, stime: fields 14 and 15 of proc(5)
    for f in /proc/"$p"/task/*/status; do
      cs=$((cs + $(awk '/^(non)?voluntary_ctxt_switches/ {n += $2} END {print n + 0}' "$f" 2>/dev/null || echo 0)))
    done
  done
  read -r _ u n sy id io irq sirq st _ < <(grep '^cpu1 ' /proc/stat)
  echo "$ticks $cs $((u + n + sy + irq + sirq + st)) $((irq + sirq)) $((id + io))"
}

# measured_run SERVER ROW RUN "PIDS" CMD...: runs the load CMD (which prints one JSON line),
# leaves its output in $WORK/nbdload.out and its errors in $WORK/nbdload.err; with CPU_COST=1
# also records the CPU snapshots around its measured seconds. Returns CMD's status.
measured_run() {
  local s=$1 r=$2 i=$3 pids=$4 c0="" c1="" pid rc=0
  shift 4
  "$@" >"$WORK/nbdload.out" 2>"$WORK/nbdload.err" &
  pid=$!
  if [[ $CPU_COST == 1 ]]; then
    # shellcheck disable=SC2086
    { sleep "$WARMUP"; c0=$(cpu_snapshot $pids); sleep "$RUN_SECONDS"; c1=$(cpu_snapshot $pids); }
  fi
  wait "$pid" || rc=$?
  if [[ $CPU_COST == 1 && $rc == 0 ]]; then
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$r" "$i" "$c0" "$c1" "$(<"$WORK/nbdload.out")" >>"$CPU_RES"
  fi
  return "$rc"
}

# cpu_cost_table: the CPU_COST table (markdown), if any run recorded one.
cpu_cost_table() {
  [[ -s $CPU_RES ]] || return 0
  echo
  echo "CPU cost per request on CPU 1 over the measured seconds (CPU_COST=1; the median run by \
requests/s; /proc ticks of $(getconf CLK_TCK) Hz): server = every thread of the server's processes; \
rest = the client, softirq (the loopback TCP stack) and kernel threads; context switches of the \
server's threads:"
  echo
  awk -F'\t' -v hz="$(getconf CLK_TCK)" -v secs="$RUN_SECONDS" '
    function field(json, key,   m) {
      if (match(json, "\"" key "\":[-0-9.eE+]+")) { m = substr(json, RSTART, RLENGTH); sub(/^[^:]*:/, "", m); return m + 0 }
      return -1
    }
    {
      split($4, a, " "); split($5, b, " "); ops = field($6, "iops") * secs
      if (ops <= 0) next
      key = $2 SUBSEP $1; k = ++n[key]
      IOPS[key, k] = ops / secs
      SRV[key, k] = (b[1] - a[1]) / hz * 1e6 / ops
      CS[key, k] = (b[2] - a[2]) / ops
      busy = b[3] - a[3]; idle = b[5] - a[5]
      REST[key, k] = busy / hz * 1e6 / ops - SRV[key, k]
      SIRQ[key, k] = (b[4] - a[4]) / hz * 1e6 / ops
      IDLE[key, k] = (busy + idle > 0) ? 100 * idle / (busy + idle) : 0
      if (!(key in seen)) { seen[key] = 1; order[++no] = key }
    }
    END {
      print "| load | server | requests/s | server CPU (us/request) | rest of CPU 1 (us/request; of it softirq) | CPU 1 idle | context switches/request |"
      print "|---|---|---:|---:|---:|---:|---:|"
      for (o = 1; o <= no; o++) {
        key = order[o]; m = n[key]; split(key, kk, SUBSEP); med = 1
        for (i = 1; i <= m; i++) {
          below = 0
          for (j = 1; j <= m; j++) if (IOPS[key, j] < IOPS[key, i]) below++
          if (below == int((m - 1) / 2)) med = i
        }
        # Threads that exited between the snapshots take their switches with them
        # (nbdkit ends the previous connection'"'"'s threads late): no count then.
        cs = (CS[key, med] < 0) ? "–" : sprintf("%.1f", CS[key, med])
        printf "| %s | %s | %.0f | %.1f | %.1f; %.1f | %.0f%% | %s |\n", kk[1], kk[2], IOPS[key, med], SRV[key, med], REST[key, med], SIRQ[key, med], IDLE[key, med], cs
      }
    }' "$CPU_RES"
}
