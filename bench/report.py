#!/usr/bin/env python3
"""Writes bench/RESULTS.md from bench/last-run/*.json (called by bench/run)."""
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


targets = [("ceiling", "(a) ceiling: axum, parse JSON, 202"),
           ("gate", "(b) triage-gate: SQLite durable, full pipeline, rules classifier"),
           ("alertmanager", "(c) Prometheus Alertmanager, POST /api/v2/alerts")]
runs = {}
for key, _ in targets:
    for mode in ("max", "half"):
        runs[(key, mode)] = load("%s-%s" % (key, mode))
ceiling = runs[("ceiling", "max")]["throughput_rps"] or 1.0

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
w("")
w("Throughput counts 2xx answers only (the gate's 202 means committed to SQLite with "
  "`synchronous=FULL`). Max: closed loop, %s callers. Half: an open loop at half the max "
  "rate, latency measured from each request's scheduled send time. Peak RSS is the server's "
  "`VmHWM`. Load is the machine's 1-minute load average before and after each run: "
  "with %d CPUs, a load well above the server's own share means other work skewed that row." % (
      runs[("gate", "max")]["concurrency"], os.cpu_count() or 0))
w("")
w("| target | mode | ok/s | vs (a) max | p50 ms | p99 ms | p99.9 ms | non-2xx | peak RSS MiB | load before/after |")
w("|---|---|---:|---:|---:|---:|---:|---|---:|---|")
for key, name in targets:
    for mode in ("max", "half"):
        r = runs[(key, mode)]
        lat = r["latency"]
        bad = {k: v for k, v in r["status"].items() if not k.startswith("2")}
        if r.get("skipped_in_flight_cap"):
            bad["skipped"] = r["skipped_in_flight_cap"]
        label = "max" if mode == "max" else "fixed %d/s" % r["rate_target"]
        load = "%s / %s" % (r.get("loadavg_1m_before"), r.get("loadavg_1m_after"))
        w("| %s | %s | %.0f | %.2f | %s | %s | %s | %s | %s | %s |" % (
            name, label, r["throughput_rps"], r["throughput_rps"] / ceiling,
            fmt_ms(lat["p50_ms"]), fmt_ms(lat["p99_ms"]), fmt_ms(lat["p999_ms"]),
            ", ".join("%s: %d" % kv for kv in sorted(bad.items())) or "none",
            mib(r.get("peak_rss_kib")), load))
w("| (d) triage-gate on PostgreSQL | | skipped: no PostgreSQL backend yet | | | | | | | |")
w("")
refusals = []
for key, name in targets:
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
w("## Processing lag")
w("")
for mode in ("max", "half"):
    r = runs[("gate", mode)]
    lag = r.get("lag")
    if lag:
        w("- gate %s: %d runs decided by the end of the load (warm-up included), %.0f/s over the "
          "measured seconds, against %.0f accepted/s." % (
              mode, lag["count"], lag["count"] / max(1, r["secs"]), r["throughput_rps"]))
    if lag:
        w("- gate %s: `triage_gate_processing_seconds` over %d runs: p50 <= %s s, p99 <= %s s, mean %.4f s "
          "(bucket upper bounds)." % (mode, lag["count"], lag["p50_le_secs"], lag["p99_le_secs"],
                                      lag["mean_secs"] or 0.0))
    else:
        w("- gate %s: no `triage_gate_processing_seconds` histogram found." % mode)
w("")
w("This histogram covers claim -> decision (the worker's share, classifier included). "
  "The issue's lag, accepted -> decided, also includes the time a run waits in the queue; "
  "the gate has no histogram for it yet (the runs table holds both timestamps).")
w("")
print("\n".join(lines))
