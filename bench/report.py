#!/usr/bin/env python3
"""Writes bench/RESULTS.md from bench/last-run/*.json and postgres.txt (called by bench/run)."""
import json
import os
import platform
import subprocess
import sys
import time

out_dir, command, knobs = sys.argv[1], sys.argv[2], sys.argv[3]


def load(name):
    path = os.path.join(out_dir, name + ".json")
    with open(path) as f:
        return json.load(f)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return "%.1f GiB" % (int(line.split()[1]) / 1024 / 1024)
    except OSError:
        pass
    return "unknown"


def load_avg():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "unknown"


def fmt_ms(v):
    return "%.2f" % v


def mib(kib):
    return "%.0f" % (kib / 1024) if kib else "n/a"


def postgres_info():
    """What bench/run wrote of row (d): replicas asked for, pool, version, skip reason."""
    info = {"replicas": "", "pool_max": "", "version": "", "synchronous_commit": "",
            "fsync": "", "skipped": ""}
    try:
        with open(os.path.join(out_dir, "postgres.txt")) as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition("=")
                info[key] = value
    except OSError:
        info["skipped"] = "no postgres.txt in %s (bench/run did not reach row d)" % out_dir
    return info


def replica_word(n):
    return "replica" if n == 1 else "replicas"


targets = [("ceiling", "(a) ceiling: axum, parse JSON, 202"),
           ("gate", "(b) triage-gate: SQLite durable, full pipeline, rules classifier"),
           ("alertmanager", "(c) Prometheus Alertmanager, POST /api/v2/alerts")]
pg = postgres_info()
pg_targets = []  # (key, name, replicas)
if not pg["skipped"]:
    for word in pg["replicas"].split():
        n = int(word)
        key = "gate-pg%d" % n
        if os.path.exists(os.path.join(out_dir, key + "-max.json")):
            pg_targets.append((key, "(d) triage-gate on PostgreSQL, %d %s, one database" % (
                n, replica_word(n)), n))
runs = {}
for key, _ in targets + [(k, name) for k, name, _ in pg_targets]:
    for mode in ("max", "half"):
        runs[(key, mode)] = load("%s-%s" % (key, mode))
ceiling = runs[("ceiling", "max")]["throughput_rps"] or 1.0
sqlite = runs[("gate", "max")]["throughput_rps"] or 1.0


def decided_per_sec(r):
    """Runs (events) decided per second while the load ran: the lag histogram's
    count at the end of the load (scraped right after it; warm-up included)
    over the load's whole duration, warm-up included."""
    lag = r.get("lag")
    if not lag:
        return None
    return lag["count"] / max(1, r["secs"] + r.get("warmup_secs", 0))

am_bin = os.environ.get("AM_BIN", "alertmanager")
try:
    am_version = subprocess.run([am_bin, "--version"], capture_output=True, text=True,
                                timeout=10).stdout.splitlines()[0].strip()
except (OSError, IndexError, subprocess.SubprocessError):
    am_version = ""

lines = []
w = lines.append
w("# Benchmark results")
w("")
w("Written by `bench/run` (issue 11); numbers from the last run, unedited. "
  "What they mean, the issue's targets and the profile: [README.md](README.md#findings).")
w("")
w("- machine: %d CPUs (`nproc`), %s, %s memory, %s %s" % (
    os.cpu_count() or 0, cpu_model(), mem_total(), platform.system(), platform.release()))
w("- load average at the end of the run: %s (the load generator shares the machine with the "
  "server; other jobs may too)" % load_avg())
w("- date: %s" % time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
w("- command: `%s`" % command)
w("- load: %s; payloads: %d golden inputs of every source but SNS (`crates/normalize/tests/golden`), "
  "a fresh alert name per request except the duplicate share, which repeats an earlier alert" % (
      knobs, runs[("gate", "max")]["payload_templates"]))
w("- Alertmanager: %s, receiving the equivalent alerts (same names, labels, summary)" % (am_version or "unknown"))
if pg["skipped"]:
    w("- PostgreSQL: skipped: %s" % pg["skipped"])
else:
    w("- PostgreSQL: %s on this machine (127.0.0.1, so the database, the gate replicas and the load "
      "generator share the same %d CPUs); a fresh database per run, dropped after it; "
      "`store.pool_max` %s per replica; replicas: %s, each its own `triage-gate serve` (own port and "
      "data directory), requests round-robin over them by the load generator (no load balancer)" % (
          pg["version"] or "unknown", os.cpu_count() or 0, pg["pool_max"], pg["replicas"]))
    w("- PostgreSQL durability: `synchronous_commit=%s`, `fsync=%s` (with both on, a commit "
      "returns after its WAL is flushed to disk, as SQLite's `synchronous=FULL`)" % (
          pg["synchronous_commit"] or "unknown", pg["fsync"] or "unknown"))
w("")
w("Throughput counts 2xx answers only (the gate's 202 means committed to SQLite with "
  "`synchronous=FULL`, or in rows (d) to PostgreSQL with the settings above). Max: closed loop, %s callers. Half: an open loop at half the max "
  "rate, latency measured from each request's scheduled send time. Peak RSS is the server's "
  "`VmHWM` (with replicas, the largest replica's). Load is the machine's 1-minute load average "
  "before and after each run: with %d CPUs, a load well above the server's own share means other "
  "work skewed that row; the load generator itself competes with the server for the same CPUs "
  "(and, in rows (d), with PostgreSQL and the other replicas). Ratios are against rows (a) and "
  "(b) at max measured in this same run." % (
      runs[("gate", "max")]["concurrency"], os.cpu_count() or 0))
w("")
w("| target | mode | ok/s | vs (a) max | vs (b) max | p50 ms | p99 ms | p99.9 ms | non-2xx | peak RSS MiB | load before/after |")
w("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|")
for key, name in targets + [(k, name) for k, name, _ in pg_targets]:
    for mode in ("max", "half"):
        r = runs[(key, mode)]
        lat = r["latency"]
        bad = {k: v for k, v in r["status"].items() if not k.startswith("2")}
        if r.get("skipped_in_flight_cap"):
            bad["skipped"] = r["skipped_in_flight_cap"]
        label = "max" if mode == "max" else "fixed %d/s" % r["rate_target"]
        load = "%s / %s" % (r.get("loadavg_1m_before"), r.get("loadavg_1m_after"))
        w("| %s | %s | %.0f | %.2f | %.2f | %s | %s | %s | %s | %s | %s |" % (
            name, label, r["throughput_rps"], r["throughput_rps"] / ceiling,
            r["throughput_rps"] / sqlite,
            fmt_ms(lat["p50_ms"]), fmt_ms(lat["p99_ms"]), fmt_ms(lat["p999_ms"]),
            ", ".join("%s: %d" % kv for kv in sorted(bad.items())) or "none",
            mib(r.get("peak_rss_kib")), load))
if not pg_targets:
    w("| (d) triage-gate on PostgreSQL | | skipped: %s | | | | | | | | |" % (
        pg["skipped"] or "no replica count in BENCH_PG_REPLICAS").replace("|", "/"))
w("")
refusals = []
for key, name in targets + [(k, name) for k, name, _ in pg_targets]:
    for mode in ("max", "half"):
        for status, body in sorted(runs[(key, mode)].get("refusal_samples", {}).items()):
            kind = body
            try:
                kind = json.loads(body).get("type") or json.loads(body).get("title") or body
            except (ValueError, AttributeError):
                pass
            refusals.append("- %s %s: %s answered with `%s`" % (key, mode, status, str(kind)[:120]))
if refusals:
    w("Refusals (first answer of each non-2xx status):")
    w("")
    lines.extend(refusals)
    w("")
w("## Replicas on PostgreSQL vs the SQLite default (issue 10)")
w("")
if pg_targets:
    w("Accepted: requests answered 202 per second (each committed before its answer); a request "
      "may hold more than one event. Decided: runs (one per event) decided per second while the "
      "load ran, from the replicas' `triage_gate_decision_lag_seconds` counts added up, over the "
      "load's whole duration (warm-up included). Every replica runs its own workers "
      "(`server.workers`, 4 by default); their decisions are serial across replicas (one "
      "advisory lock, docs/high-availability.md), as on SQLite's single writer.")
    w("")
    w("| store | replicas | max: accepted/s | vs (b) | max: decided/s | vs (b) | half: accepted/s | "
      "half: p99 ms | half: decided/s | non-2xx at max |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    sqlite_decided = decided_per_sec(runs[("gate", "max")])
    rows = [("gate", "SQLite (b)", 1)] + [(k, "PostgreSQL (d)", n) for k, _, n in pg_targets]
    for key, store, n in rows:
        mx, hf = runs[(key, "max")], runs[(key, "half")]
        dmx, dhf = decided_per_sec(mx), decided_per_sec(hf)
        bad = {k: v for k, v in mx["status"].items() if not k.startswith("2")}
        w("| %s | %d | %.0f | %.2f | %s | %s | %.0f | %s | %s | %s |" % (
            store, n, mx["throughput_rps"], mx["throughput_rps"] / sqlite,
            "%.0f" % dmx if dmx is not None else "n/a",
            "%.2f" % (dmx / sqlite_decided) if dmx is not None and sqlite_decided else "n/a",
            hf["throughput_rps"], fmt_ms(hf["latency"]["p99_ms"]),
            "%.0f" % dhf if dhf is not None else "n/a",
            ", ".join("%s: %d" % kv for kv in sorted(bad.items())) or "none"))
    w("")
    spread = []
    for key, _, n in pg_targets:
        per = runs[(key, "max")].get("ok_per_url") or []
        if n > 1 and per:
            spread.append("%d replicas: %s" % (n, " / ".join(str(x) for x in per)))
    if spread:
        w("Accepted requests per replica at max (round-robin by request number): %s." % "; ".join(spread))
        w("")
else:
    w("Skipped: %s." % (pg["skipped"] or "no replica count in BENCH_PG_REPLICAS"))
    w("")
def le(bound):
    """A quantile's bucket bound; past the largest bucket there is none."""
    return "> 10" if bound is None else "<= %s" % bound


w("## Processing lag")
w("")
lag_targets = [("gate", "gate")] + [(k, "gate on PostgreSQL, %d %s" % (n, replica_word(n)))
                                    for k, _, n in pg_targets]
for key, who in lag_targets:
    for mode in ("max", "half"):
        r = runs[(key, mode)]
        lag = r.get("lag")
        if lag:
            w("- %s %s: %d runs decided by the end of the load (warm-up included), %.0f/s over the "
              "load's %d seconds (warm-up included), against %.0f accepted/s." % (
                  who, mode, lag["count"], decided_per_sec(r), r["secs"] + r.get("warmup_secs", 0),
                  r["throughput_rps"]))
            w("- %s %s: `triage_gate_decision_lag_seconds` over %d runs: p50 %s s, p99 %s s, "
              "mean %.4f s (bucket upper bounds)." % (
                  who, mode, lag["count"], le(lag["p50_le_secs"]), le(lag["p99_le_secs"]),
                  lag["mean_secs"] or 0.0))
        else:
            w("- %s %s: no `triage_gate_decision_lag_seconds` histogram found." % (who, mode))
w("")
w("This histogram is the issue's processing lag: accepted -> decided, the time a run waits "
  "in the queue included and the model call left out (the rules classifier here makes none). "
  "Quantiles are bucket upper bounds (buckets at 5, 10, 15, 20, 25, 50 ms ...).")
w("")
print("\n".join(lines))
