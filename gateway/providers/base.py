"""The provider interface: one class per provider kind, one instance per configured provider.

A kind says where calls go (`url`), how they authenticate (`own_credentials`,
`client_credentials`), its defaults (base URL, API version, the SDK variables the
zero-config gateway reads), its OpenTelemetry GenAI provider name and whose price list
applies. Kinds register themselves by name (`@register`); config parsing, routing,
metrics and tracing look them up in `KINDS` and never compare kind names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

Headers = list[tuple[bytes, bytes]]


class MissingCredentials(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = field(default=10.0, metadata={"min": 0.001})
    first_byte: float = field(default=120.0, metadata={"min": 0.001})
    total: float = field(default=600.0, metadata={"min": 0.001})


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str
    api_key: str | None = None
    # "gateway": the configured key is used and the client's is ignored; "passthrough":
    # the client's own credential header goes upstream. Default: gateway when a key is set.
    auth: str = "passthrough"
    timeouts: Timeouts = field(default_factory=Timeouts)
    # OpenAI-compatible servers differ on `stream_options`; some reject it.
    inject_stream_usage: bool = True
    api_version: str | None = None  # azure: api-version; anthropic: anthropic-version
    deployments: dict[str, str] = field(default_factory=dict)  # azure: model -> deployment
    headers: dict[str, str] = field(default_factory=dict)  # extra headers sent upstream
    # genai-prices provider id whose price list applies; "" = none known (cost NULL unless
    # a price override in config names the model).
    price_as: str = ""


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
    # Zero-config: the kind is a default provider, read from the official SDK's variables.
    base_url_env: ClassVar[str] = ""
    api_key_env: ClassVar[str] = ""
    zero_config: ClassVar[bool] = False
    # Models routed to this kind by the default routes (a glob); "" for "*" candidates.
    default_models: ClassVar[str] = ""

    __slots__ = ("_extra", "auth_headers", "cfg", "name")

    def __init__(self, cfg: ProviderConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._extra: Headers = [(k.lower().encode(), v.encode()) for k, v in cfg.headers.items()]
        if cfg.auth == "gateway":
            own = self.own_credentials((cfg.api_key or "").encode())
            self.auth_headers: Headers | None = own + self._extra
        else:
            self.auth_headers = None  # taken from the client per request

    @classmethod
    def default_price_as(cls, base_url: str) -> str:
        """The genai-prices provider id for a provider of this kind at `base_url`."""
        return cls.price_as

    def url(self, path: str, query: str, model: str) -> str:
        """Upstream URL for a client path such as `/v1/chat/completions`."""
        rest = path[4:] if path.startswith("/v1/") else path.lstrip("/")
        url = f"{self.cfg.base_url}/{rest}"
        return f"{url}?{query}" if query else url

    def own_credentials(self, key: bytes) -> Headers:
        """Headers carrying the gateway's own key."""
        return [(b"authorization", b"Bearer " + key)]

    def client_credentials(self, authorization: bytes, api_key: bytes, x_api_key: bytes) -> Headers:
        """Headers carrying the client's credential; empty when it sent none this kind takes."""
        if authorization:
            return [(b"authorization", authorization)]
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


KINDS: dict[str, type[Provider]] = {}


def register(cls: type[Provider]) -> type[Provider]:
    """Class decorator: makes a provider kind known by its `kind` name."""
    KINDS[cls.kind] = cls
    return cls


def genai_provider_name(kind: str) -> str:
    """`gen_ai.provider.name` for a provider kind (the kind itself when unknown)."""
    cls = KINDS.get(kind)
    return cls.genai_name if cls is not None else kind
