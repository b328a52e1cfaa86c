"""The metric families of :class:`~freshkeep.integrations.prometheus.FreshkeepCollector`
(a base class of it), one method per kind of component, read from their snapshots."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from freshkeep.exceptions import missing_extra

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("prometheus", exc.name or "prometheus_client") from exc

if TYPE_CHECKING:
    from freshkeep.artifacts import ArtifactSnapshot
    from freshkeep.health import Health
    from freshkeep.jobs import JobQueueSnapshot
    from freshkeep.keeper import KeeperSnapshot
    from freshkeep.notify import NotifierSnapshot
    from freshkeep.processing import PipelineSnapshot
    from freshkeep.remote import RemoteSnapshot
    from freshkeep.views import ViewSnapshot

PROCESSOR_OUTCOMES = ("skipped", "unchanged", "deferred", "processed", "failed")
"""The outcomes of the items of a processor run (see :class:`~freshkeep.processing.RunStats`)."""

NOTIFICATION_OUTCOMES = ("sent", "deduped", "skipped", "pending", "baseline", "failed")
"""The outcomes of a notifier's observations counted by ``freshkeep_notifications_total``."""

ARTIFACT_OUTCOMES = ("built", "skipped", "failed")
"""Outcomes of artifact builds counted by ``freshkeep_artifact_builds_total``."""

HEALTH_STATUS = {"ok": 0, "degraded": 1, "unhealthy": 2}
"""The value of ``freshkeep_health_status`` for each headline."""

HEALTH_LEVELS = {"ok": 0, "info": 1, "warning": 2, "error": 3}
"""The value of ``freshkeep_health_check_level`` for each level."""


@dataclass(frozen=True, slots=True)
class _Families:
    namespace: str

    def _name(self, name: str) -> str:
        return f"{self.namespace}_{name}"

    def counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(self._name(name), doc, value=value)

    def gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(self._name(name), doc, value=value)

    def counter_family(self, name: str, doc: str, labels: Sequence[str]) -> CounterMetricFamily:
        return CounterMetricFamily(self._name(name), doc, labels=labels)

    def gauge_family(self, name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(self._name(name), doc, labels=labels)


class CollectorFamilies:
    """The metric families of each kind of component (static: they read snapshots only)."""

    @staticmethod
    def _keeper_metrics(m: _Families, s: KeeperSnapshot) -> Iterator[Metric]:
        yield m.counter("commits", "Commits of this process applied to the keeper.", s.commits)
        yield m.counter(
            "bus_revisions",
            "Messages of revisions received from other instances through the bus.",
            s.remote_revisions,
        )
        yield m.counter("revision_probes", "Reads of source revisions.", s.probes)
        yield m.counter("probe_errors", "Reads whose revision probe failed.", s.probe_errors)
        yield m.counter(
            "unattributed_writes",
            "Raw SQL writes whose tables could not be determined (every tracked table bumped).",
            s.unattributed_writes,
        )
        store = s.store
        yield m.gauge("store_entries", "Entries in the memory store.", store.entries)
        yield m.gauge("store_bytes", "Bytes of entries in the memory store.", store.bytes)
        yield m.counter(
            "store_evictions", "Entries evicted from the memory store.", store.evictions
        )
        yield m.counter(
            "store_rejected",
            "Puts the memory store refused because its entry was built from newer revisions.",
            store.rejected,
        )
        yield m.gauge(
            "bus_up",
            "1 while revisions are pushed by the bus, 0 during an outage.",
            0 if s.bus_down else 1,
        )
        if s.shared is not None:
            yield m.gauge(
                "shared_store_up",
                "1 while the shared store is reachable, 0 during an outage.",
                1 if s.shared.reachable else 0,
            )

    @staticmethod
    def _view_metrics(m: _Families, stats: Mapping[str, ViewSnapshot]) -> Iterator[Metric]:
        reads = m.counter_family("view_reads", "Reads of a view, by status.", ("view", "status"))
        builds = m.counter_family(
            "view_builds", "Builds of a section of a view.", ("view", "section")
        )
        errors = m.counter_family("view_build_errors", "Builds of a view that failed.", ("view",))
        refreshes = m.counter_family(
            "view_background_refreshes",
            "Background refreshes started (stale-while-revalidate).",
            ("view",),
        )
        collapsed = m.counter_family(
            "view_collapsed_reads", "Reads that waited on a build another read started.", ("view",)
        )
        shared_hits = m.counter_family(
            "view_shared_hits",
            "Builds answered from the shared store (another instance built it).",
            ("view",),
        )
        shared_waits = m.counter_family(
            "view_shared_waits",
            "Builds that waited for another instance holding the build lock.",
            ("view",),
        )
        in_flight = m.gauge_family("view_builds_in_flight", "Builds running now.", ("view",))
        last_build = m.gauge_family(
            "view_last_build_timestamp_seconds",
            "Wall-clock time of the view's last successful build.",
            ("view",),
        )
        for name, s in stats.items():
            for status, n in sorted(s.reads.items()):
                reads.add_metric([name, status], n)
            for section, n in sorted(s.builds.items()):
                builds.add_metric([name, section], n)
            errors.add_metric([name], s.build_errors)
            refreshes.add_metric([name], s.background_refreshes)
            collapsed.add_metric([name], s.collapsed)
            shared_hits.add_metric([name], s.shared_hits)
            shared_waits.add_metric([name], s.shared_waits)
            in_flight.add_metric([name], s.in_flight)
            if s.last_build_at is not None:
                last_build.add_metric([name], s.last_build_at)
        yield from (reads, builds, errors, refreshes, collapsed, shared_hits, shared_waits)
        yield from (in_flight, last_build)

    @staticmethod
    def _remote_metrics(m: _Families, stats: Mapping[str, RemoteSnapshot]) -> Iterator[Metric]:
        reads = m.counter_family(
            "remote_reads", "Reads of a remote value, by status.", ("remote", "status")
        )
        fetches = m.counter_family("remote_fetches", "Fetches of a remote value.", ("remote",))
        failures = m.counter_family(
            "remote_fetch_errors", "Fetches of a remote value that failed.", ("remote",)
        )
        keys = m.gauge_family("remote_keys", "Keys a remote holds a value for.", ("remote",))
        failing = m.gauge_family(
            "remote_failing_keys", "Keys whose last fetch failed.", ("remote",)
        )
        max_age = m.gauge_family(
            "remote_max_age_seconds", "Age of the oldest value a remote holds.", ("remote",)
        )
        for name, s in stats.items():
            for status, n in sorted(s.reads.items()):
                reads.add_metric([name, status], n)
            fetches.add_metric([name], s.fetches)
            failures.add_metric([name], s.fetch_errors)
            keys.add_metric([name], s.keys)
            failing.add_metric([name], s.failing)
            if s.max_age is not None:
                max_age.add_metric([name], s.max_age)
        yield from (reads, fetches, failures, keys, failing, max_age)

    @staticmethod
    def _notifier_metrics(m: _Families, stats: Mapping[str, NotifierSnapshot]) -> Iterator[Metric]:
        outcomes = m.counter_family(
            "notifications",
            "Observations of a notifier by outcome: sent, deduped (no change), skipped "
            "(terminal state), pending (awaiting confirmation), baseline (first state recorded "
            "without notice), failed (send raised).",
            ("notifier", "outcome"),
        )
        recovered = m.counter_family(
            "notifications_recovered",
            "Notifications of kind recovered (also counted as sent).",
            ("notifier",),
        )
        store_errors = m.counter_family(
            "notifier_store_errors",
            "Failed reads or writes of a notifier's state store.",
            ("notifier",),
        )
        for name, s in stats.items():
            by_outcome = {
                "sent": s.sent,
                "deduped": s.deduped,
                "skipped": s.skipped,
                "pending": s.pending,
                "baseline": s.baseline,
                "failed": s.failed,
            }
            for outcome in NOTIFICATION_OUTCOMES:
                outcomes.add_metric([name, outcome], by_outcome[outcome])
            recovered.add_metric([name], s.recovered)
            store_errors.add_metric([name], s.store_errors)
        yield from (outcomes, recovered, store_errors)

    @staticmethod
    def _artifact_metrics(m: _Families, caches: Mapping[str, ArtifactSnapshot]) -> Iterator[Metric]:
        builds = m.counter_family(
            "artifact_builds",
            "Artifact builds by outcome: built, skipped (a prebuild found it fresh), failed.",
            ("cache", "outcome"),
        )
        reads = m.counter_family(
            "artifact_reads",
            "Artifact reads by result: hit (fresh), miss (built), stale (last good served "
            "after a failed build), unavailable (failed, nothing within bounds).",
            ("cache", "result"),
        )
        gc_runs = m.counter_family("artifact_gc_runs", "Garbage collections run.", ("cache",))
        gc_deleted = m.counter_family(
            "artifact_gc_deleted",
            "What garbage collection deleted, by kind: rows, objects, orphans, temp_files.",
            ("cache", "kind"),
        )
        in_flight = m.gauge_family("artifact_builds_in_flight", "Builds running now.", ("cache",))
        pending = m.gauge_family(
            "artifact_prebuilds_pending", "Prebuilds enqueued and not built yet.", ("cache",)
        )
        failing = m.gauge_family(
            "artifact_failing_keys", "Keys whose last build failed.", ("cache",)
        )
        for name, s in caches.items():
            by_outcome = {"built": s.built, "skipped": s.skipped, "failed": s.failed}
            for outcome in ARTIFACT_OUTCOMES:
                builds.add_metric([name, outcome], by_outcome[outcome])
            for result, value in (
                ("hit", s.hits),
                ("miss", s.misses),
                ("stale", s.stale_served),
                ("unavailable", s.unavailable),
            ):
                reads.add_metric([name, result], value)
            gc_runs.add_metric([name], s.gc_runs)
            for kind, value in (
                ("rows", s.gc_rows),
                ("objects", s.gc_objects),
                ("orphans", s.gc_orphans),
                ("temp_files", s.gc_temp_files),
            ):
                gc_deleted.add_metric([name, kind], value)
            in_flight.add_metric([name], s.in_flight)
            pending.add_metric([name], s.pending)
            failing.add_metric([name], s.failing_keys)
        yield from (builds, reads, gc_runs, gc_deleted, in_flight, pending, failing)

    @staticmethod
    def _processor_metrics(m: _Families, pipelines: Sequence[PipelineSnapshot]) -> Iterator[Metric]:
        running = m.gauge_family(
            "processor_running", "1 while a run of the processor is going on.", ("processor",)
        )
        items = m.gauge_family(
            "processor_last_run_items",
            "Items of the processor's last completed run, by outcome.",
            ("processor", "outcome"),
        )
        finished = m.gauge_family(
            "processor_last_run_timestamp_seconds",
            "Wall-clock time the processor's last completed run started.",
            ("processor",),
        )
        duration = m.gauge_family(
            "processor_last_run_duration_seconds",
            "Seconds the processor's last completed run took.",
            ("processor",),
        )
        seen: set[str] = set()
        for pipeline in pipelines:
            for name in pipeline.processors:
                if name in seen:
                    continue
                seen.add(name)
                running.add_metric([name], 1 if name in pipeline.running else 0)
                last = pipeline.last_runs.get(name)
                if last is None:
                    continue
                by_outcome = {
                    "skipped": last.skipped,
                    "unchanged": last.unchanged,
                    "deferred": last.deferred,
                    "processed": last.processed,
                    "failed": last.failed,
                }
                for outcome in PROCESSOR_OUTCOMES:
                    items.add_metric([name, outcome], by_outcome[outcome])
                finished.add_metric([name], last.started_at)
                duration.add_metric([name], last.duration)
        yield from (running, items, finished, duration)

    @staticmethod
    def _job_metrics(m: _Families, queues: Mapping[str, JobQueueSnapshot]) -> Iterator[Metric]:
        jobs = m.counter_family(
            "jobs",
            "Jobs of a queue seen by this process's workers, by outcome: enqueued, done, "
            "failed (every retry spent), retried, stalled (its worker stopped renewing it).",
            ("queue", "outcome"),
        )
        skipped = m.counter_family(
            "jobs_skipped",
            "Enqueues and periodic ticks skipped, by reason (deduplicated, in_flight, locked, "
            "misfire, tick_taken, superseded).",
            ("queue", "reason"),
        )
        size = m.gauge_family(
            "job_queue_jobs",
            "Jobs queued or running on every instance, as of the queue's last count.",
            ("queue", "state"),
        )
        for name, q in queues.items():
            for outcome, n in (
                ("enqueued", q.enqueued),
                ("done", q.done),
                ("failed", q.failed),
                ("retried", q.retried),
                ("stalled", q.stalled),
            ):
                jobs.add_metric([name, outcome], n)
            for reason, n in sorted(q.skipped.items()):
                skipped.add_metric([name, reason], n)
            size.add_metric([name, "queued"], q.queued)
            size.add_metric([name, "running"], q.running)
        yield from (jobs, skipped, size)

    @staticmethod
    def _health_metrics(m: _Families, health: Health) -> Iterator[Metric]:
        report = health.last_report
        if report is None:
            return
        yield m.gauge(
            "health_status",
            "Headline of the last health run: 0 ok, 1 degraded, 2 unhealthy.",
            HEALTH_STATUS.get(report.status, 2),
        )
        yield m.gauge(
            "health_last_run_timestamp_seconds",
            "Wall-clock time of the last health run.",
            report.generated_at,
        )
        levels = m.gauge_family(
            "health_check_level",
            "Level of each check in the last health run: 0 ok, 1 info, 2 warning, 3 error.",
            ("check",),
        )
        lag = m.gauge_family(
            "processor_lag_seconds",
            "How long changed items have waited for the processor, as of the last health run.",
            ("processor",),
        )
        for check in report.checks:
            levels.add_metric([check.name], HEALTH_LEVELS.get(str(check.level), 3))
            data = check.data
            if (
                check.name == f"processor:{data.get('processor')}"
                and isinstance(value := data.get("lag"), int | float)
                and not isinstance(value, bool)
            ):
                lag.add_metric([str(data["processor"])], value)
        yield from (levels, lag)
