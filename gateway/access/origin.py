"""The browser guard: no web page may spend the gateway's provider keys.

Two attacks reach a gateway on a private network from a public web page. CSRF: the page
POSTs (`text/plain`, no preflight) straight to the gateway; the browser adds an `Origin`
header naming the page. DNS rebinding: the page's own host name is re-pointed at the
gateway's address, so the request is "same-origin" for the browser and its answer readable
by the page; the `Host` header still names the attacker's domain. So, before anything else:

- a request carrying an `Origin` is refused unless that origin is listed in
  `auth.allowed_origins` (or is the gateway's own, same Host);
- a request whose `Host` is a public name not listed in `auth.allowed_hosts` is refused.
  Names nobody on the internet can own are always accepted: IP literals (rebinding needs a
  name), `localhost`, single-label names (`llm-gateway`), and `.local`, `.internal`,
  `.svc`, `.cluster.local` names (Kubernetes services).
"""

from __future__ import annotations

import fnmatch
import ipaddress

from gateway.access.answers import AccessDenied, refusal

_PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".svc", ".cluster.local")


def host_name(host: str) -> str:
    """`Host` header without the port, lower-cased; IPv6 without brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _private_name(name: str) -> bool:
    if not name or name == "localhost" or "." not in name:
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return name.endswith(_PRIVATE_SUFFIXES)


class OriginGuard:
    def __init__(self, allowed_origins: tuple[str, ...], allowed_hosts: tuple[str, ...]) -> None:
        self.any_origin = "*" in allowed_origins
        self.origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self.any_host = "*" in allowed_hosts
        self.hosts = tuple(h.lower() for h in allowed_hosts)
        self._ok_hosts: dict[str, bool] = {}

    def _host_ok(self, host: str) -> bool:
        ok = self._ok_hosts.get(host)
        if ok is None:
            name = host_name(host)
            ok = _private_name(name) or any(
                fnmatch.fnmatchcase(name, h) or host == h for h in self.hosts
            )
            if len(self._ok_hosts) < 1024:  # Host is client-supplied: bound the cache
                self._ok_hosts[host] = ok
        return ok

    def check(self, host: str, origin: str) -> AccessDenied | None:
        """The refusal for a request with these `Host` and `Origin` headers, or None."""
        if host and not self.any_host and not self._host_ok(host):
            return refusal("host_not_allowed", host)
        if origin and not self.any_origin:
            o = origin.strip().rstrip("/").lower()
            if o not in self.origins and o.split("://", 1)[-1] != host.strip().lower():
                return refusal("origin_not_allowed", origin)
        return None
