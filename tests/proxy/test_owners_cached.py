"""``Owners.cached`` makes the owner cache's key itself (inlined for speed): it must find
exactly what :func:`proxy.owners.cache_key` keys, and nothing for another pair."""

from __future__ import annotations

from proxy import owners
from proxy.headers import HeaderPolicy
from proxy.identity import Identity
from proxy.settings import Settings


def _owners() -> owners.Owners:
    settings = Settings(upstream="http://127.0.0.1:1", auth="forward", forward_auth_url="http://a/")
    return owners.Owners(None, HeaderPolicy.from_settings(settings))  # type: ignore[arg-type]


def test_cached_finds_what_cache_key_keys() -> None:
    own = _owners()
    kate = Identity("kate@school.edu")
    for credential in ("sk-abc", "eyJ.x.y", "a:b", "\ud800", ""):
        own.cache.put(owners.cache_key(credential, kate.email), kate)
        assert own.cached(credential, kate)


def test_cached_is_keyed_by_the_pair() -> None:
    own = _owners()
    kate, bob = Identity("kate@school.edu"), Identity("bob@school.edu")
    own.cache.put(owners.cache_key("sk-abc", kate.email), kate)
    assert not own.cached("sk-abc", bob)
    assert not own.cached("sk-abd", kate)
