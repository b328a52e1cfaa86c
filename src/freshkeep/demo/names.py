"""Realistic-looking names for seeded data, drawn from a seeded :class:`random.Random`."""

from __future__ import annotations

import random

AREAS = (
    "Billing|Search|Onboarding|Payments|Mobile app|Analytics|Identity|Notifications|Storage|"
    "Checkout|Reporting|Infrastructure|Security|Localization|Developer docs|Support tooling|"
    "Pricing|Data pipeline|Integrations|Accessibility|Admin console|Audit trail|Sync engine|Exports"
).split("|")
KINDS = "migration revamp reliability launch cleanup v2 performance audit rollout redesign".split()
STREAMS = (
    "Backend|Frontend|API|Data model|QA|Rollout|Design|Docs|Monitoring|Migration scripts|"
    "Load testing|Customer comms"
).split("|")
VERBS = (
    "Add Fix Refactor Remove Document Test Migrate Optimize Review Investigate Update "
    "Implement Split Harden"
).split()
OBJECTS = (
    "invoice exporter|retry logic|login form|rate limiter|search index|webhook handler|"
    "CSV import|audit log|feature flag|cache layer|email templates|permission checks|"
    "dashboard widget|schema migration|error pages|pagination|timezone handling|background jobs|"
    "session store|upload validation|usage metering|status page|SSO callback|PDF renderer"
).split("|")
QUALIFIERS = (
    "|||| for EU customers| on mobile| in staging| behind a flag| (follow-up)"
    "| for large accounts| before GA"
).split("|")
FIRST = (
    "Ada Ben Chloé Dmitri Eva Farid Grace Hiro Ines Jonas Kemi Lars Maya Nadia Omar Priya "
    "Quentin Rosa Sven Tariq Uma Viktor Wen Yusuf Zoe"
).split()
LAST = (
    "Lovelace Okafor Martin Ivanov Schmidt Haddad Hopper Tanaka Garcia Berg Adeyemi Nilsson "
    "Cohen Rahman Farouk Patel Dubois Rossi Larsen Aziz Menon Novak Li Demir Keller"
).split()
ROLES = "engineer engineer engineer designer product qa lead".split()
LABELS = (
    "bug:#d73a4a feature:#0e8a16 tech-debt:#fbca04 security:#b60205 performance:#5319e7 "
    "ux:#c5def5 docs:#0075ca infra:#bfd4f2 customer:#e99695 quick-win:#c2e0c6 "
    "needs-design:#f9d0c4 blocked-external:#000000 regression:#ee0701 flaky:#fef2c0 "
    "compliance:#1d76db research:#d4c5f9"
).split()
DECISIONS = (
    "Choose a queue for {o}|Adopt a new format for {o}|Drop the legacy {o}|Own the {o} in one "
    "team|Set an SLO for the {o}|Buy or build the {o}|Freeze the {o} for the release"
).split("|")
EVENT_TEXT = {
    "note": "Notes from the sync about {t}",
    "status_change": "Moved '{t}' forward",
    "review": "Review requested on '{t}'",
    "blocker": "'{t}' is waiting on another team",
    "release": "Shipped '{t}' to production",
    "milestone": "Milestone reached: {t}",
    "decision": "Decided how to proceed with {t}",
}
EVENT_TYPES = tuple(EVENT_TEXT)
COMMENTS = (
    "LGTM|Can we split this?|Blocked on review|Done in staging|Needs a test|See the design doc|"
    "Reproduced locally|Pairing on this tomorrow"
).split("|")


def topic_names(rng: random.Random, count: int) -> list[str]:
    """``count`` distinct topic names ("Billing migration", "Search v2", ...)."""
    names = [f"{a} {k}" for a in AREAS for k in KINDS]
    rng.shuffle(names)
    n = len(names)
    return [names[i % n] + (f" #{i // n + 1}" if i >= n else "") for i in range(count)]


def task_title(rng: random.Random) -> str:
    """A task title ("Refactor retry logic behind a flag")."""
    return f"{rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(QUALIFIERS)}"


def person(rng: random.Random) -> tuple[str, str]:
    """A first and a last name."""
    return rng.choice(FIRST), rng.choice(LAST)
