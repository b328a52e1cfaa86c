"""Redis URLs: one server, a Redis Cluster, a primary watched by Sentinel (no server needed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from freshkeep.buses import bus_from_url
from freshkeep.buses.redis import RedisBus
from freshkeep.exceptions import ConfigurationError
from freshkeep.settings import Settings
from freshkeep.stores.base import store_from_url
from freshkeep.stores.redis import RedisStore
from freshkeep.stores.redis_client import RedisURL, close, connect, is_cluster


def test_one_server_goes_to_redis_py_as_it_is() -> None:
    url = RedisURL.parse("rediss://u:p@cache:6380/2")
    assert (url.topology, url.tls, url.nodes, url.url) == (
        "single",
        True,
        (),
        "rediss://u:p@cache:6380/2",
    )


def test_a_cluster_url() -> None:
    url = RedisURL.parse("redis+cluster://app:s%40cret@n1:7000, n2:7001,[::1]:7002")
    assert url.topology == "cluster" and not url.tls
    assert url.nodes == (("n1", 7000), ("n2", 7001), ("::1", 7002))
    assert (url.username, url.password) == ("app", "s@cret")
    assert RedisURL.parse("rediss+cluster://n1:7000/").tls


def test_a_sentinel_url() -> None:
    url = RedisURL.parse(
        "redis+sentinel://:pw@s1:26379,s2:26380/my%20primary/3?sentinel_password=spw"
    )
    assert url.topology == "sentinel"
    assert url.nodes == (("s1", 26379), ("s2", 26380))
    assert (url.service, url.db, url.username, url.password) == ("my primary", 3, None, "pw")
    assert (url.sentinel_username, url.sentinel_password) == (None, "spw")
    assert RedisURL.parse("redis+sentinel://s1:26379/mymaster").db == 0


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("memcached://h:1", "not a Redis URL"),
        ("redis+cluster://", "no host"),
        ("redis+cluster://h", "expected host:port"),
        ("redis+cluster://h:0", "expected host:port"),
        ("redis+cluster://h:x", "expected host:port"),
        ("redis+cluster://h:7000/1", "one database"),
        ("redis+sentinel://s:26379", "service"),
        ("redis+sentinel://s:26379/svc/1/2", "service"),
        ("redis+sentinel://s:26379/svc/x", "database number"),
    ],
)
def test_malformed_urls_are_configuration_errors(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        RedisURL.parse(url)


def test_a_password_never_shows_in_an_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisURL.parse("redis+sentinel://user:hunter2@s:26379")
    assert "hunter2" not in str(caught.value) and "user:***@" in str(caught.value)


async def test_clients_of_each_topology_connect_lazily() -> None:
    cluster = connect("redis+cluster://127.0.0.1:1,127.0.0.1:2")
    sentinel = connect("redis+sentinel://127.0.0.1:1/mymaster")
    try:
        assert is_cluster(cluster) and not is_cluster(sentinel)
    finally:
        await close(cluster)
        await close(sentinel)


async def test_store_and_bus_urls() -> None:
    store = store_from_url("redis+cluster://127.0.0.1:1", prefix="p:")
    assert isinstance(store, RedisStore) and store.hash_tags
    assert store.key_for("v", "k").startswith("p:{")
    sentinel_store = store_from_url("redis+sentinel://127.0.0.1:1/mymaster")
    assert isinstance(sentinel_store, RedisStore) and not sentinel_store.hash_tags
    assert sentinel_store.key_for("v", "k").startswith("freshkeep:v:")
    settings = Settings()
    cluster_bus = bus_from_url("redis+cluster://127.0.0.1:1", settings=settings)
    sentinel_bus = bus_from_url("rediss+sentinel://127.0.0.1:1/m", settings=settings)
    assert isinstance(cluster_bus, RedisBus) and cluster_bus.sharded
    assert isinstance(sentinel_bus, RedisBus) and not sentinel_bus.sharded
    for closing in (store, sentinel_store, cluster_bus, sentinel_bus):
        await closing.aclose()
    with pytest.raises(ConfigurationError, match="redis\\+sentinel"):
        store_from_url("redis+replica://h:1")
    with pytest.raises(ConfigurationError, match="redis\\+cluster"):
        bus_from_url("redis+replica://h:1", settings=settings)


def test_a_single_server_store_keeps_its_key_format() -> None:
    store = RedisStore("redis://127.0.0.1:1/0", prefix="p:")
    key = store.key_for("summary", ("u1", 42))
    assert key.startswith("p:summary:") and "{" not in key
    tagged = RedisStore("redis://127.0.0.1:1/0", prefix="p:", hash_tags=True)
    assert tagged.key_for("summary", ("u1", 42)).endswith("}:summary")
    assert tagged.key_for("a", 1) != tagged.key_for("b", 1)  # the view is in the digest


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_IDENTITY = st.one_of(st.none(), _TEXT, st.integers(-(2**63), 2**63 - 1))
_NO_BRACE = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="{}"), max_size=12
)


@given(view=_TEXT, identity=_IDENTITY, prefix=_NO_BRACE)
@settings(max_examples=300)
def test_an_entry_and_its_build_lock_always_hash_to_one_slot(
    view: str, identity: object, prefix: str
) -> None:
    """Whatever the view is called: the hash tag is the digest, never empty, brace-free."""
    store = RedisStore("redis://127.0.0.1:1/0", prefix=prefix, hash_tags=True)
    lock = store.lock()
    key = store.key_for(view, identity)  # type: ignore[arg-type]
    assert key.startswith(prefix + "{") and key.endswith("}:" + view)
    assert key_slot(key.encode()) == key_slot(lock.key(key).encode())


_HOST = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z0-9-]{1,8}){0,2}", fullmatch=True)
_NODES = st.lists(st.tuples(_HOST, st.integers(1, 65535)), min_size=1, max_size=4)


@given(
    nodes=_NODES,
    service=st.from_regex(r"[A-Za-z0-9_.-]{1,16}", fullmatch=True),
    db=st.integers(0, 15),
)
def test_a_sentinel_url_names_its_sentinels_service_and_database(
    nodes: list[tuple[str, int]], service: str, db: int
) -> None:
    hosts = ",".join(f"{h}:{p}" for h, p in nodes)
    url = RedisURL.parse(f"redis+sentinel://{hosts}/{service}/{db}")
    assert (url.nodes, url.service, url.db) == (tuple(nodes), service, db)
    cluster = RedisURL.parse(f"redis+cluster://{hosts}")
    assert cluster.nodes == tuple(nodes)


async def test_a_cluster_that_is_down_is_a_failure_not_a_corrupt_value() -> None:
    """``CLUSTERDOWN`` (no master serves the slot) is the server's failure: an error and an
    outage, never a value counted as corrupt."""
    from redis.exceptions import ClusterDownError

    class Down:
        async def get(self, key: str) -> bytes:
            raise ClusterDownError("CLUSTERDOWN The cluster is down")

    store = RedisStore("redis+cluster://127.0.0.1:1", prefix="p:")
    store.client = Down()  # type: ignore[assignment]
    assert await store.get(store.key_for("summary", "a")) is None
    assert (store.stats.errors, store.stats.corrupt, store.stats.outages) == (1, 0, 1)
    assert not store.snapshot().reachable


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h1:26379,h2:26379/mymaster/abc?sentinel_password=TOPSECRET",
        "redis+sentinel://h1:26379?sentinel_password=TOPSECRET",
        "redis+sentinel://h1:26x79/mymaster?sentinel_username=u&sentinel_password=TOPSECRET",
        "redis+cluster://default:TOP/SECRET@h1:x",
        "redis+sentinel://:TOP/SECRET@h1:26379",
        "redis+cluster://u:TOPSECRET@h1:7000/0",
        "memcached://u:TOPSECRET@h1:7000",
        "redis+sentinel://u:TOPSECRET@@h1:26379",
    ],
)
def test_no_secret_shows_in_an_error(url: str) -> None:
    """The Sentinels' password rides in the query; a password may hold an unescaped '/':
    neither shows in the error of a URL that cannot be used."""
    with pytest.raises(ConfigurationError) as caught:
        RedisURL.parse(url)
    assert "SECRET" not in str(caught.value), str(caught.value)


def test_a_password_may_hold_an_unescaped_slash() -> None:
    url = RedisURL.parse("redis+sentinel://:TOP/SECRET@h1:26379/mymaster/2")
    assert (url.password, url.service, url.db, url.nodes) == (
        "TOP/SECRET",
        "mymaster",
        2,
        (("h1", 26379),),
    )
    cluster = RedisURL.parse("redis+cluster://default:a/b@n1:7000,n2:7001")
    assert (cluster.username, cluster.password) == ("default", "a/b")
