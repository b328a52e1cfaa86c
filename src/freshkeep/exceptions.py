"""Every error freshkeep raises on purpose derives from :class:`FreshkeepError`.

The tree::

    FreshkeepError
    ├── ConfigurationError          a view, policy or setting that cannot work
    │   ├── UnknownViewError        no view registered under that name
    │   ├── UnknownSourceError      a view reads a source nothing can ever move
    │   ├── DuplicateNameError      a component, processor or job name registered twice
    │   │   └── DuplicateViewError  a view name registered twice
    │   ├── UnknownProcessorError   no processor registered under that name
    │   ├── UnknownTaskError        no job task registered under that name
    │   └── PrincipalRequiredError  a shared view asked to cache a per-user response
    ├── MissingDependencyError      an optional extra is not installed (also an ImportError)
    ├── EncodeError                 a builder returned something that is not JSON-encodable
    ├── UnavailableError            no value within its bounds can be served
    │   ├── BuildError              a builder raised and no servable entry exists
    │   │   └── ArtifactBuildError  an artifact failed to build; none within its bound exists
    │   ├── RevisionSourceError     the revisions could not be read
    │   ├── RemoteUnavailableError  a remote has no value and no fallback to serve
    │   └── HealthUnreachableError  a service's health endpoint could not be read
    ├── LockBusy                    a lock is held by another holder (``Lock.hold``)
    │   └── ProcessorBusy           a run of that processor is already going on
    ├── JobQueueError               a job queue could not enqueue, claim or finish jobs
    │   └── JobQueueTimeout         jobs still ready or running when ``drain`` gave up
    ├── InvalidSignatureError       a signed artifact URL is tampered with or expired
    └── StoreError                  a store failed (always caught on the read path)
        └── CorruptEntryError       a stored entry is unreadable, tampered with or unsigned

Each class's docstring is its default message. Errors from drivers are wrapped with
``raise ... from exc`` so the original stays on ``__cause__``.
"""

from __future__ import annotations


class FreshkeepError(Exception):
    """freshkeep failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())


class ConfigurationError(FreshkeepError):
    """The configuration cannot work."""


class UnknownViewError(ConfigurationError, KeyError):
    """No view is registered under that name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class UnknownSourceError(ConfigurationError):
    """A view reads a source that no write hook, trigger, table or declaration can move."""


class DuplicateNameError(ConfigurationError):
    """A component of that kind and name is already registered."""


class DuplicateViewError(DuplicateNameError):
    """A view with that name is already registered."""


class UnknownProcessorError(ConfigurationError, KeyError):
    """No processor is registered under that name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class PrincipalRequiredError(ConfigurationError):
    """A shared view refused to cache a response for an authenticated request.

    Key the view by principal (``per_principal=True``) or declare it ``public=True``.
    """


class MissingDependencyError(FreshkeepError, ImportError):
    """An optional dependency is not installed."""


class EncodeError(FreshkeepError, TypeError):
    """A builder returned a value that cannot be encoded as JSON."""


class UnavailableError(FreshkeepError):
    """No value within its bounds can be served."""


class BuildError(UnavailableError):
    """A builder failed and no entry within ``stale_if_error`` exists."""

    def __init__(self, message: str | None = None, *, view: str = "", key: object = None) -> None:
        super().__init__(message)
        self.view = view
        self.key = key


class ArtifactBuildError(BuildError):
    """An artifact failed to build and no artifact within ``max_stale_on_error`` exists."""

    def __init__(
        self,
        message: str | None = None,
        *,
        cache: str = "",
        key: object = None,
        counts: dict[str, int] | None = None,
    ) -> None:
        super().__init__(message, view=cache, key=key)
        self.cache = cache
        self.counts = counts
        """For a failed prebuild: its ``requested``, ``built``, ``skipped``, ``failed``."""


class RevisionSourceError(UnavailableError):
    """The revisions of the sources could not be read."""


class RemoteUnavailableError(UnavailableError):
    """A remote value could not be fetched, and nothing fetched before nor a fallback exists."""

    def __init__(self, message: str | None = None, *, remote: str = "", key: object = None) -> None:
        super().__init__(message)
        self.remote = remote
        self.key = key


class HealthUnreachableError(UnavailableError):
    """The health endpoint of the service could not be reached or read."""


class LockBusy(FreshkeepError):
    """The lock is held by another holder (here or in another instance)."""

    def __init__(self, message: str | None = None, *, name: str = "") -> None:
        super().__init__(message)
        self.name = name


class ProcessorBusy(LockBusy):
    """A run of that processor is already going on (here or in another instance)."""

    def __init__(self, message: str | None = None, *, processor: str = "") -> None:
        super().__init__(message, name=processor)
        self.processor = processor


class UnknownTaskError(ConfigurationError, KeyError):
    """No job task is registered under that name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class JobQueueError(FreshkeepError):
    """A job queue operation failed."""


class JobQueueTimeout(JobQueueError, TimeoutError):
    """Jobs were still ready or running when the wait ended."""


class InvalidSignatureError(FreshkeepError):
    """A signed artifact URL is tampered with, malformed or expired."""


class StoreError(FreshkeepError):
    """A store operation failed."""


class CorruptEntryError(StoreError):
    """A stored entry is unreadable, tampered with, or unsigned while a secret is configured."""


def missing_extra(extra: str, module: str) -> MissingDependencyError:
    """Return the error raised when ``module`` is missing; it names the extra to install."""
    return MissingDependencyError(
        f"{module!r} is not installed; install it with: pip install 'freshkeep[{extra}]'"
    )
