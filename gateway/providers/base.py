"""The provider interface: one class per provider kind, one instance per configured provider.

A kind says where calls go (`url`), how they authenticate (`own_credentials`,
`client_credentials`), its defaults (base URL, API version, the SDK variables the
zero-config gateway reads), its OpenTelemetry GenAI provider name and whose price list
applies. Kinds register themselves by name (`@register`); config parsing, routing,
metrics and tracing look them up in `KINDS` and never compare kind names.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from msgspec import Meta
from msgspec.structs import force_setattr

from gateway.errors import MissingCredentials
from gateway.sections import FieldError, Positive, Section, one_of
from gateway.upstream.origin import Origin, parse_base_url

Headers = list[tuple[bytes, bytes]]

DEFAULT_MAX_TOKENS = 4096


class Timeouts(Section, frozen=True):
    connect: Annotated[float, Meta(ge=0.001)] = 10.0
    first_byte: Annotated[float, Meta(ge=0.001)] = 120.0
    total: Annotated[float, Meta(ge=0.001)] = 600.0  # bounds the whole call, retries included


class ProviderConfig(Section, frozen=True):
    """A `providers:` entry. Where a default depends on the kind (its URL, its API version,
    whose prices apply), the field is empty until `__post_init__` fills in the kind's."""

    kind: str  # a registered kind (KINDS)
    name: str = ""  # the key it is declared under (set by the config that holds it)
    base_url: str = ""  # default: the kind's public API; required for kinds without one
    api_key: str | None = None
    # "gateway": the configured key is used and the client's is ignored; "passthrough":
    # the client's own credential header goes upstream. Default: gateway when a key is set.
    auth: Literal["gateway", "passthrough"] | None = None
    timeouts: Timeouts = Timeouts()
    # OpenAI-compatible servers differ on `stream_options`; some reject it. Default: the kind's.
    inject_stream_usage: bool | None = None
    api_version: str | None = None  # azure: api-version; anthropic: anthropic-version
    deployments: dict[str, str] = {}  # azure: model -> deployment
    headers: dict[str, str] = {}  # extra headers sent upstream
    # genai-prices provider id whose price list applies; "" = none known (cost NULL unless
    # a price override in config names the model). Default: `Provider.default_price_as`.
    price_as: str | None = None
    # Translated calls (another dialect's client): `max_tokens` when the client names none
    # (Anthropic requires one), and client parameters dropped rather than refused.
    max_tokens: Positive = DEFAULT_MAX_TOKENS
    drop_params: frozenset[Annotated[str, Meta(min_length=1)]] = frozenset()

    def __post_init__(self) -> None:
        one_of(KINDS, self.kind, "kind")
        kind = KINDS[self.kind]
        base_url = self.base_url or kind.default_base_url
        if not base_url:
            raise FieldError("base_url", f"is required for kind {self.kind}")
        try:
            parse_base_url(base_url)
        except ValueError as e:
            raise FieldError("base_url", str(e)) from None
        api_key = self.api_key or None
        auth = self.auth or ("gateway" if api_key else "passthrough")
        if auth == "gateway" and not api_key:
            raise FieldError("api_key", "is required when auth is gateway")
        resolved = {
            "base_url": base_url.rstrip("/"),
            "api_key": api_key,
            "auth": auth,
            "inject_stream_usage": self.inject_stream_usage,
            "api_version": self.api_version or kind.default_api_version,
            "price_as": self.price_as,
        }
        if self.inject_stream_usage is None:
            resolved["inject_stream_usage"] = kind.inject_stream_usage
        if self.price_as is None:
            resolved["price_as"] = kind.default_price_as(base_url)
        for k, v in resolved.items():
            force_setattr(self, k, v)


class Provider:
    """Builds upstream URLs and auth headers for one configured provider.

    Subclasses set the class attributes and override the methods their wire format needs.
    """

    kind: ClassVar[str]
    genai_name: ClassVar[str]  # gen_ai.provider.name
    dialect: ClassVar[str] = "openai"  # the wire family it speaks: openai | anthropic
    default_base_url: ClassVar[str | None] = None  # None: base_url is required
    default_api_version: ClassVar[str | None] = None
    inject_stream_usage: ClassVar[bool] = True  # default of the config key
    price_as: ClassVar[str] = ""  # default genai-prices provider id
    needs_key: ClassVar[bool] = True  # False: a call with no credential goes upstream as is
    signs: ClassVar[bool] = False  # True: `sign` adds headers computed over each request
    # Zero-config: the kind is a default provider, read from the official SDK's variables.
    base_url_env: ClassVar[str] = ""
    api_key_env: ClassVar[str] = ""
    zero_config: ClassVar[bool] = False
    # Models routed to this kind by the default routes (a glob); "" for "*" candidates.
    default_models: ClassVar[str] = ""

    __slots__ = ("_extra", "auth_headers", "cfg", "name", "origin")

    def __init__(self, cfg: ProviderConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.origin = Origin.of(cfg.base_url)  # parsed once: calls only build their path
        self._extra: Headers = [(k.lower().encode(), v.encode()) for k, v in cfg.headers.items()]
        if cfg.auth == "gateway":
            own = self.own_credentials((cfg.api_key or "").encode())
            self.auth_headers: Headers | None = own + self._extra
        else:
            self.auth_headers = None  # taken from the client per request

    @classmethod
    def default_price_as(cls, base_url: str) -> str:
        """The genai-prices provider id for a provider of this kind at `base_url`, the one
        rule for configured and zero-config providers: the kind's price list at its own
        public API (or for a kind without a single one, like Azure's per-resource URLs);
        elsewhere the host's own list when genai-prices knows it (Groq, Together, ...);
        else none, so an unknown server (a local one, a proxy) is priced only when the
        config says what to price it as (`price_as`, or `prices` per model)."""
        if cls.default_base_url is None or base_url.rstrip("/") == cls.default_base_url:
            return cls.price_as
        from genai_prices.data_snapshot import get_snapshot

        try:
            return get_snapshot().find_provider(None, None, base_url).id
        except LookupError:
            return ""

    def target(self, path: str, query: str, model: str) -> str:
        """The upstream path and query (under the base URL's path) for a client path such
        as `/v1/chat/completions`."""
        rest = path[4:] if path.startswith("/v1/") else path.lstrip("/")
        url = f"{self.origin.prefix}/{rest}"
        return f"{url}?{query}" if query else url

    def url(self, path: str, query: str, model: str) -> str:
        """The whole upstream URL: the origin, then `target` (what a call sends)."""
        return self.origin.root + self.target(path, query, model)

    def own_credentials(self, key: bytes) -> Headers:
        """Headers carrying the gateway's own key."""
        return [(b"authorization", b"Bearer " + key)]

    def client_credentials(self, authorization: bytes, api_key: bytes, x_api_key: bytes) -> Headers:
        """Headers carrying the client's credential; empty when it sent none this kind takes."""
        if authorization:
            return [(b"authorization", authorization)]
        if api_key:  # an Azure OpenAI client's key, sent to an OpenAI-style upstream
            return [(b"authorization", b"Bearer " + api_key)]
        return []

    def credentials(self, authorization: bytes, api_key: bytes, x_api_key: bytes) -> Headers:
        """Headers that authenticate upstream; raises MissingCredentials when there are none."""
        if self.auth_headers is not None:
            return self.auth_headers
        creds = self.client_credentials(authorization, api_key, x_api_key)
        if creds:
            return creds + self._extra
        if not self.needs_key:
            return self._extra
        raise MissingCredentials(
            f"no credentials for provider {self.name!r}: the gateway has no key for it and the "
            "request carried none"
        )

    def version_header(self, client_value: bytes) -> Headers:
        return []

    def sign(self, method: str, url: str, body: bytes) -> Headers:
        """Headers that sign one request over its URL and body (AWS SigV4); none by default."""
        return []


KINDS: dict[str, type[Provider]] = {}


def register(cls: type[Provider]) -> type[Provider]:
    """Class decorator: makes a provider kind known by its `kind` name."""
    KINDS[cls.kind] = cls
    return cls


def genai_provider_name(kind: str) -> str:
    """`gen_ai.provider.name` for a provider kind (the kind itself when unknown)."""
    cls = KINDS.get(kind)
    return cls.genai_name if cls is not None else kind
