"""The benchmark's outputs: a Markdown report, the raw figures as JSON, and a PNG chart.

:func:`machine` describes the machine; :func:`targets` checks the figures against the targets
of the hit path budget (``docs/performance.md``); :func:`write` writes ``results.md``,
``results.json`` and (with matplotlib installed) ``results.png``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import textwrap
from pathlib import Path
from typing import Any

from freshkeep.bench import distributed, fastapi_route, scale
from freshkeep.bench.noise import WITHIN_NOISE, ratio_cell, side_by_side, within_noise

PACKAGES = (
    "freshkeep",
    "uvicorn",
    "uvloop",
    "httptools",
    "starlette",
    "fastapi",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "redis",
    "orjson",
    "dogpile.cache",
    "aiocache",
    "cashews",
    "matplotlib",
)
PEERS = ("dogpile", "aiocache", "cashews", "cashews_norepr")
REFERENCES = {
    "await": "`await` of a coroutine (reference)",
    "freshkeep": "summary hit, probe=interval (reference)",
}
"""Rows of the hit table repeated in the probes' table, for scale."""


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, memory, OS, Python, package versions."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or platform.machine(),
    )
    mem = next(
        (
            int(line.split()[1]) // 1024
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        None,
    )
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": mem,
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "packages": versions,
    }


def _case(library: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    if not library:
        return None
    return next((c for c in library["cases"] if c["name"] == name), None)


def _mode(service: dict[str, Any] | None, name: str, phase: str) -> dict[str, Any] | None:
    if not service or name not in service["modes"]:
        return None
    result: dict[str, Any] = service["modes"][name][phase]
    return result


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with what was measured and whether it is met (``None``: not measured)."""
    lib, svc = results.get("library"), results.get("service")
    out: list[dict[str, Any]] = []

    def add(target: str, measured: str, met: bool | None) -> None:
        out.append({"target": target, "measured": measured, "met": met})

    fk, aw = _case(lib, "freshkeep"), _case(lib, "await")
    # The ratio of samples taken in the same round where there is one (a burst of load from
    # elsewhere weighs on both), else the ratio of the medians.
    paired = {(r["num"], r["den"]): r["ratio"] for r in (lib or {}).get("ratios", [])}
    for name, how in (("freshkeep", ""), ("freshkeep_read", " `view.read()`")):
        case = _case(lib, name)
        if case and aw:
            r = paired.get((name, "await"), case["median_ns"] / aw["median_ns"])
            target = f"in-process hit{how} ≤ 2x a plain `await` returning a dict"
            add(target, f"{r:.2f}x", r <= 2.0)
    if fk:
        peers = [p for p in (_case(lib, n) for n in PEERS) if p]
        if peers:
            fastest = min(peers, key=lambda p: p["median_ns"])
            r = fastest["median_ns"] / fk["median_ns"]
            add(
                "in-process hit no slower than the peers' memory caches",
                f"fastest: {fastest['name']}, {r:.1f}x slower",
                r >= 1.0,
            )
    fresh = _mode(svc, "freshkeep", "read")
    for name, floor_name, need, target in (
        ("freshkeep", "floor", 0.8, "HTTP hit throughput ≥ 80% of the floor"),
        ("freshkeep-fastapi", "floor-fastapi", 0.9, "FastAPI route ≥ 90% of a bare one"),
    ):
        if svc and _mode(svc, name, "read") and _mode(svc, floor_name, "read"):
            r, measured = _versus(svc, name, floor_name)
            add(target, measured, r >= need)
    for name, need in (("maxprobe", 3.0), ("uncached", 20.0)):
        other = _mode(svc, name, "read")
        if fresh and other and other["rps"]:
            r = fresh["rps"] / other["rps"]
            add(f"HTTP hit throughput ≥ {need:g}x {name}", f"{r:.1f}x", r >= need)
    for name in ("freshkeep", "freshkeep-fastapi"):
        w = _mode(svc, name, "write")
        if w and w.get("freshness"):
            f = w["freshness"]
            add(
                f"zero stale responses beyond the bound ({name})",
                f"{f['beyond_bound']} of {f['checked']:,} (stale: {f['stale']})",
                f["beyond_bound"] == 0,
            )
    out += fastapi_route.targets(results.get("fastapi"))
    out += distributed.targets(results.get("distributed"))
    core, rebuilt = _case(lib, "section_core"), _case(lib, "section_core_rebuild")
    if lib and core:
        ms = core["median_ns"] / 1e6
        also = f" (rebuild: {rebuilt['median_ns'] / 1e6:,.1f} ms)" if rebuilt else ""
        add(
            f"read after a core write ≤ 1 ms ({lib['seed_tasks']:,} tasks)",
            f"{ms:,.2f} ms{also}",
            ms <= 1.0,
        )
    out += scale.targets(results.get("scale"))
    ttl = _mode(svc, "ttl", "write")
    if ttl and ttl.get("freshness"):
        f = ttl["freshness"]
        add(
            "fixed TTL: stale share reported as measured",
            f"{f['stale_share']:.1%} stale, up to {f['stale_age_ms']['max'] / 1000:.1f} s old",
            None,
        )
    return out


def _rounds(svc: dict[str, Any], name: str) -> list[float] | None:
    rounds: list[float] | None = svc["modes"][name].get("read_rounds_rps")
    return rounds


def _versus(svc: dict[str, Any], name: str, floor: str) -> tuple[float, str]:
    """Mode ``name``'s read throughput against ``floor``'s: the median of the rounds' ratios
    (both modes ran seconds apart, under the same load) and how to show it."""
    num, den = _mode(svc, name, "read"), _mode(svc, floor, "read")
    assert num is not None and den is not None
    r = num["rps"] / den["rps"] if den["rps"] else 0.0
    per_round = side_by_side(_rounds(svc, name), _rounds(svc, floor))
    if len(per_round) < 2:
        return r, f"{r:.0%} (one round: noise not measured)"
    r = statistics.median(per_round)
    if len(per_round) > 4:  # the table's line stays under 100 columns
        shown = f"{len(per_round)} rounds: {min(per_round):.0%} to {max(per_round):.0%}"
    else:
        shown = "rounds: " + ", ".join(f"{x:.0%}" for x in per_round)
    if within_noise(per_round):
        return r, f"{WITHIN_NOISE} ({shown})"
    return r, f"{r:.0%} (median of {shown})"


def _ns(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:,.2f} ms"
    if value >= 1e4:
        return f"{value / 1e3:,.1f} µs"
    return f"{value:,.0f} ns"


def markdown(results: dict[str, Any]) -> str:
    """The report as Markdown."""
    m = results["machine"]
    lines = [
        f"# freshkeep benchmark ({results['preset']}, {results['started_at']})",
        "",
        _wrap(
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mib'] or '?'} MiB, {m['os']}, "
            f"{m['python']}. Command: `{results['command']}`; {results['seconds']:.0f} s."
        ),
        "",
    ]
    lib, svc = results.get("library"), results.get("service")
    if lib:
        aw, fk = _case(lib, "await"), _case(lib, "freshkeep")
        lines += [
            f"## Library level: one process, the hub's summary ({lib['body_bytes']:,} bytes, "
            f"{lib['seed_tasks']:,} tasks)",
            "",
            f"Hits: {lib['rounds']} interleaved rounds of calibrated loops; reads that work: "
            "each timed",
            "alone. Spread: interquartile range (min and max in results.json).",
            "",
            "| operation | median | IQR | x await | x freshkeep hit |",
            "|---|---:|---:|---:|---:|",
        ]
        for c in lib["cases"]:
            if c.get("group", "read") != "read":
                continue
            med = c["median_ns"]
            x_aw = f"{med / aw['median_ns']:.2f}" if aw and aw["median_ns"] else ""
            x_fk = f"{med / fk['median_ns']:.2f}" if fk and fk["median_ns"] else ""
            if c["kind"] != "hit":  # a ratio of milliseconds to nanoseconds says nothing
                x_aw = x_fk = ""
            lines.append(
                f"| {c['label']} | {_ns(med)} | {_ns(c['q1_ns'])} - {_ns(c['q3_ns'])} "
                f"| {x_aw} | {x_fk} |"
            )
        lines += _probes(lib)
        for note in lib.get("notes", []):
            lines.append("\n" + _wrap(f"Note: {note}"))
        lines.append("")
    if svc:
        floor = _mode(svc, "floor", "read")
        fresh = _mode(svc, "freshkeep", "read")
        lines += [
            "## Service level: `GET` the summary under uvicorn",
            "",
            _wrap(
                f"uvicorn with {svc['server']['loop']} and {svc['server']['http']}, 1 worker; "
                f"{svc['connections']} keep-alive connections from another process; "
                f"{svc['seed_tasks']:,} tasks."
            ),
            "",
            f"### Read phase: no writes (per mode the median of {svc.get('read_rounds', 1)} "
            f"interleaved rounds of {svc['read_s']:g} s)",
            "",
            "Ratios of the median rounds; *within noise* where the rounds' own ratios (side by",
            "side) differ from 1 by less than their spread (as factors).",
            "",
            "| mode | req/s | p50 ms | p99 ms | x floor | freshkeep / mode | served as |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for name, d in svc["modes"].items():
            r = d["read"]
            x_floor = r["rps"] / floor["rps"] if floor and floor["rps"] else 0.0
            x_fresh = fresh["rps"] / r["rps"] if fresh and r["rps"] else 0.0
            vs_floor = side_by_side(_rounds(svc, name), _rounds(svc, "floor"))
            vs_fresh = side_by_side(_rounds(svc, "freshkeep"), _rounds(svc, name))
            lines.append(
                f"| {name} | {r['rps']:,.0f} | {r['latency_ms']['p50']:.2f} "
                f"| {r['latency_ms']['p99']:.2f} | {ratio_cell(x_floor, vs_floor)} "
                f"| {ratio_cell(x_fresh, vs_fresh)} | {_labels(r)} |"
            )
        lines += [
            "",
            f"### Write phase: {svc['write_rate']:g} writes/s for {svc['write_s']:g} s per mode",
            "",
            "| mode | req/s | p50 ms | p99 ms | writes | served as |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for name, d in svc["modes"].items():
            w = d["write"]
            lines.append(
                f"| {name} | {w['rps']:,.0f} | {w['latency_ms']['p50']:.2f} "
                f"| {w['latency_ms']['p99']:.2f} | {w['writes']['count'] if w['writes'] else 0} "
                f"| {_labels(w)} |"
            )
        lines += [
            "",
            "Freshness: every response of the write phase checked against the committed history.",
            "",
            "| mode | checked | stale | stale share | beyond bound | stale age p50 / p99 / max |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, d in svc["modes"].items():
            f = d["write"].get("freshness")
            if not f:
                lines.append(f"| {name} | n/a (fixed bytes) | | | | |")
                continue
            a = f["stale_age_ms"]
            ages = f"{a['p50']:,.0f} / {a['p99']:,.0f} / {a['max']:,.0f} ms" if f["stale"] else ""
            lines.append(
                f"| {name} | {f['checked']:,} | {f['stale']:,} | {f['stale_share']:.1%} "
                f"| {f['beyond_bound']} (bound {d['bound_s']:g} s) | {ages} |"
            )
        lines += ["", "Modes:", ""]
        lines += [
            textwrap.fill(
                f"- `{name}` (`{d['path']}`): {d['what']}",
                width=100,
                subsequent_indent="  ",
                break_long_words=False,
                break_on_hyphens=False,
            )
            for name, d in svc["modes"].items()
        ]
        lines.append("")
    dist = results.get("distributed")
    if dist:
        lines += _distributed(dist)
    keyed = results.get("keyed")
    if keyed:
        lines += _keyed(keyed)
    if results.get("fastapi"):
        lines += fastapi_route.markdown_lines(results["fastapi"])
    if results.get("scale"):
        lines += scale.markdown(results["scale"])
    t = results.get("targets") or []
    if t:
        lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
        for row in t:
            met = {True: "yes", False: "**no**", None: "(reported)"}[row["met"]]
            lines.append(f"| {row['target']} | {row['measured']} | {met} |")
        lines.append("")
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    lines += [_wrap(f"Packages: {pk}."), ""]
    return "\n".join(lines)


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)


def _probes(lib: dict[str, Any]) -> list[str]:
    """The revision probes' table and the ratios of the library level (lines < 100 columns)."""
    probes = [c for c in lib["cases"] if c.get("group") == "probe"]
    lines: list[str] = []
    aw = _case(lib, "await")
    if probes:
        lines += [
            "",
            f"### Revision probes: the summary's {lib.get('sources', '?')} sources, SQLite file",
            "",
            'Rows "after a commit": each read timed alone, right after another connection',
            "committed to the file (the commit not timed); the other rows: the rounds above.",
            "Queried: reads that ran the counter `SELECT`.",
            "",
            "| probe | median | IQR | x await | queried |",
            "|---|---:|---:|---:|---:|",
        ]
        refs = [c for c in (aw, _case(lib, "freshkeep")) if c]
        for c in refs + probes:
            med = c["median_ns"]
            x_aw = f"{med / aw['median_ns']:,.1f}" if aw and aw["median_ns"] else ""
            st = c.get("statuses") or {}
            reads = st.get("queried", 0) + st.get("skipped", 0)
            queried = f"{st.get('queried', 0):,} of {reads:,}" if reads else ""
            label = REFERENCES.get(c["name"], c["label"]) if c not in probes else c["label"]
            lines.append(
                f"| {label} | {_ns(med)} | {_ns(c['q1_ns'])} - {_ns(c['q3_ns'])} "
                f"| {x_aw} | {queried} |"
            )
    ratios = lib.get("ratios") or []
    if ratios:
        lines += [
            "",
            "Ratios: the median of the ratios of samples taken side by side (the same round, or",
            "the same pair of reads after a commit); the ratio of the medians beside it.",
            "",
            "| ratio, this run | side by side | of medians |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {r['label']} | {r['ratio']:,.2f} | {r.get('ratio_of_medians', r['ratio']):,.2f} |"
            for r in ratios
        ]
    return lines


def _distributed(dist: dict[str, Any]) -> list[str]:
    rd = dist["read"]
    lines = [
        "## Distributed: two hubs on PostgreSQL + Redis",
        "",
        _wrap(
            f"Two `freshkeep demo` processes (uvicorn, one worker each) on one PostgreSQL "
            f"database ({dist['seed_tasks']:,} tasks), with a Redis store and bus (resync "
            f"interval {dist['resync_interval_s']:g} s)."
        ),
        "",
        f"### Read phase: `GET /state/summary`, {dist['read_s']:g} s",
        "",
        f"{dist['connections']} keep-alive connections split between the hubs.",
        "",
        "| hub | connections | req/s | p50 ms | p99 ms | errors | served as |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in rd["hubs"].items():
        lines.append(
            f"| {name} | {r['connections']} | {r['rps']:,.0f} | {r['latency_ms']['p50']:.2f} "
            f"| {r['latency_ms']['p99']:.2f} | {r['errors']} | {_labels(r)} |"
        )
    lines.append(f"| both | {dist['connections']} | {rd['rps']:,.0f} | | | {rd['errors']} | |")
    lines += ["", *distributed.invalidation_lines(dist)]
    return lines


def _keyed(k: dict[str, Any]) -> list[str]:
    views = k["views"]
    base = views[0]["reads_per_s"] if views else 0.0
    w = k["writes"]
    lines = [
        f"## Keyed level: {k['keys']:,} keys read by key under {k['write_rate']:g} writes/s",
        "",
        _wrap(
            f"{k['database']}; {k['keys']:,} customers (ids: a seeded sample of 1 to "
            f"{k['id_space']:,}), {k['orders_per_key']} orders each at the start; the builder "
            "runs one query (the count and sum of the key's orders). Every key was built once "
            f"in every view, then {k['elapsed_s']:.0f} s of reads, uniform over the keys "
            f"({k['reads_per_s_per_view']:,.0f}/s per view, {k['read_rate']:g} offered), "
            "every view reading the same keys in turn, and writes "
            f"({w['count']}: {w['insert']} inserts of an order, {w['update']} updates of one), "
            "each for one key through a tracked session. Each read timed; reads/s: reads "
            "over the time spent in that view's reads."
        ),
        "",
        "| view | reads | hit ratio | hit µs p50 / p99 | rebuild ms p50 | reads/s | x per-table |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for v in views:
        h, r = v["hit_us"], v["rebuild_ms"]
        x = f"{v['reads_per_s'] / base:,.1f}" if base else ""
        lines.append(
            f"| {v['label']} | {v['reads']:,} | {v['hit_ratio']:.1%} "
            f"| {h['p50']:,.1f} / {h['p99']:,.1f} | {r['p50']:,.2f} | {v['reads_per_s']:,.0f} "
            f"| {x} |"
        )
    lines += [
        "",
        _wrap(
            "Rebuilds: *needed* when the key was written since its last build, *false* "
            "otherwise (a write to another key of its bucket; for per-table revisions, to any "
            "other key). Sharing: the other keys of the written key's bucket, what a write "
            "would rebuild for nothing if every key were read before the next write."
        ),
        "",
        "| view | builds | per write | needed | false | false per write | false share | sharing |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in views:
        lines.append(
            f"| {v['label']} | {v['builds']:,} | {v['builds_per_write']:,.2f} | {v['needed']:,} "
            f"| {v['false']:,} | {v['false_per_write']:,.2f} | {v['false_share']:.1%} "
            f"| {v['sharing_per_write']:,.2f} |"
        )
    lines += ["", "Sources:", ""]
    lines += [f"- {v['label']}: {v['sources']}" for v in views]
    off = [v for v in views if v["builds"] != v["model_builds"]]
    for v in off:
        lines.append(
            "\n"
            + _wrap(
                f"Note: {v['label']}: {v['builds']:,} builds, where the reads and writes call "
                f"for {v['model_builds']:,}: something else moved its revisions."
            )
        )
    lines.append("")
    return lines


def _labels(phase: dict[str, Any]) -> str:
    labels = {k or "-": v for k, v in phase.get("labels", {}).items()}
    if list(labels) == ["-"]:
        return ""
    total = sum(labels.values()) or 1
    return ", ".join(f"{k} {v / total:.1%}" for k, v in sorted(labels.items(), key=lambda x: -x[1]))


def chart(results: dict[str, Any], path: Path) -> str | None:
    """Draw the PNG chart; return why not when matplotlib is missing."""
    try:
        mpl = importlib.import_module("matplotlib")
    except ImportError:
        return "matplotlib is not installed: no chart (pip install 'freshkeep[bench]')"
    mpl.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    lib, svc = results.get("library"), results.get("service")
    panels = [p for p in (lib, svc) if p]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels) + 0.6), squeeze=False)
    row = 0
    if lib:
        ax = axes[row][0]
        hits = [
            c
            for c in lib["cases"]
            if c["kind"] == "hit" and c["name"] != "empty" and c.get("group", "read") == "read"
        ]
        names = [c["name"] for c in hits]
        vals = [c["median_ns"] for c in hits]
        colors = [
            "tab:green" if n == "freshkeep" or n.startswith("hit_") else "tab:gray" for n in names
        ]
        ax.barh(names, vals, color=colors)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel("ns per hit (median, log scale): lower is better")
        ax.set_title("Library level: one read of the same value in one process")
        for i, v in enumerate(vals):
            ax.text(v, i, f" {_ns(v)}", va="center", fontsize=8)
        row += 1
    if svc:
        ax = axes[row][0]
        names = list(svc["modes"])
        vals = [svc["modes"][n]["read"]["rps"] for n in names]
        colors = ["tab:green" if n.startswith("freshkeep") else "tab:gray" for n in names]
        ax.barh(names, vals, color=colors)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel("requests/s, no writes (log scale): higher is better")
        ax.set_title("Service level: GET the summary; label: stale share under writes")
        for i, n in enumerate(names):
            f = svc["modes"][n]["write"].get("freshness")
            stale = f"{f['stale_share']:.0%} stale" if f else "fixed bytes"
            ax.text(vals[i], i, f" {vals[i]:,.0f}/s, {stale}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write(results: dict[str, Any], out: Path, *, draw: bool = True) -> dict[str, Path]:
    """Write ``results.md``, ``results.json`` and ``results.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    results["targets"] = targets(results)
    paths = {"markdown": out / "results.md", "json": out / "results.json"}
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    paths["markdown"].write_text(markdown(results))
    if draw and (results.get("library") or results.get("service")):  # nothing else is drawn
        png = out / "results.png"
        why = chart(results, png)
        if why is None:
            paths["png"] = png
        else:
            results.setdefault("notes", []).append(why)
    return paths
