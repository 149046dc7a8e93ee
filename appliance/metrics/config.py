"""``[metrics]``: who may scrape `/metrics` without the operator key.

``allow`` lists CIDRs whose clients may read `/metrics` with no credential
(a Prometheus server on the host or the LAN).  Empty (the default): the
operator key only, exactly as `/v1/operator/stats`, so the route exposes
nothing new and needs no ``enabled`` switch.  The address checked is the
client's as the edge sees it: the socket's peer, or a trusted proxy's PROXY
header.  Behind a reverse proxy that sends no PROXY header every request
comes from the proxy's address: do not allow that address then.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.edge.ipfilter import CidrSet, parse_cidr
from appliance.errors import ConfigError, UsageError

#: Entries `allow` may have: a scrape allowlist is a few monitoring hosts.
MAX_ALLOW = 1024


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Values of the ``[metrics]`` table."""

    #: CIDRs (or bare addresses) that may scrape without the operator key.
    allow: tuple[str, ...] = ()


def check(config: MetricsConfig) -> None:
    """Validate every entry of ``allow``.

    Raises:
        ConfigError: naming the entry (``metrics.allow[3]``).
    """
    if len(config.allow) > MAX_ALLOW:
        raise ConfigError(f"at most {MAX_ALLOW} entries, got {len(config.allow)}",
                          key_path="metrics.allow")
    for index, text in enumerate(config.allow):
        try:
            parse_cidr(text)
        except UsageError as exc:
            raise ConfigError(str(exc), key_path=f"metrics.allow[{index}]") from None


def allowed_networks(config: MetricsConfig) -> CidrSet:
    """The allowlist for lookups (entries already checked by `check`)."""
    return CidrSet(parse_cidr(text) for text in config.allow)
