"""Credentials in store URIs: out of everything normlab passes on, records or shows.

A tracking URI may carry a password in any scheme and any case
(``HTTP://user:pw@host``, ``postgresql://user:pw@host/db``). `strip_credentials`
takes it out of the config before anything else sees it:

- HTTP(S): user and password move to ``MLFLOW_TRACKING_USERNAME`` and
  ``MLFLOW_TRACKING_PASSWORD``, which MLflow sends as basic auth; the URI
  loses its user info.
- Any other scheme is a database MLflow opens through SQLAlchemy, whose
  driver needs the password in the URI. The full URI stays in this process's
  environment (``NORMLAB_STORE_URI``, inherited by the processes normlab
  starts) and the config holds ``user:***@``; `store_uri` hands MLflow the
  full URI back at the moment it connects.

`redact_uri` is for anything shown or recorded; `scrub` is the last line of
defence for error messages, which may quote a URI a library built.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

STORE_URI_VAR = "NORMLAB_STORE_URI"
MASK = "***"
_SECRET_QUERY_KEYS = ("token", "password", "passwd", "secret", "key", "apikey", "api_key", "access_token")
# ``scheme://user:password@``: the user info of any URI in a text.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")


def normalize_scheme(uri: str) -> str:
    """``uri`` with its scheme in lower case (``HTTP://h`` is ``http://h``), otherwise unchanged."""
    scheme, sep, rest = uri.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme):
        return uri
    return scheme.lower() + sep + rest


def redact_uri(uri: str) -> str:
    """``uri`` with the password of its user info and secret-looking query values replaced by ``***``."""
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return uri
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def strip_credentials(uri: str | None) -> str | None:
    """The URI to pass on in place of ``uri``: no password in it, the scheme in lower case.

    Side effect: the credentials go where MLflow finds them (see the module
    docstring). A URI without credentials only has its scheme normalized.
    """
    if not uri:
        return uri
    uri = normalize_scheme(uri)
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        if "@" not in parts.netloc:
            return uri
        userinfo, host = parts.netloc.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(user)
        if password:
            os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    public = redact_uri(uri)
    if public != uri:
        os.environ[STORE_URI_VAR] = uri
    return public


def store_uri(uri: str) -> str:
    """The URI MLflow connects with: the full one kept by `strip_credentials` when ``uri`` is its public form."""
    if MASK not in uri:
        return uri
    full = os.environ.get(STORE_URI_VAR)
    if full and redact_uri(full) == uri:
        return full
    return uri


def known_secrets() -> list[str]:
    """The passwords this process holds for its stores (to scrub from text)."""
    found = [os.environ.get("MLFLOW_TRACKING_PASSWORD", "")]
    full = os.environ.get(STORE_URI_VAR)
    if full:
        netloc = urlsplit(full).netloc
        if "@" in netloc:
            password = netloc.rsplit("@", 1)[0].partition(":")[2]
            found += [password, unquote(password)]
    return [s for s in dict.fromkeys(found) if len(s) >= 3]


def scrub(text: str) -> str:
    """``text`` with the password of every URI in it, and every known store password, replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    for secret in known_secrets():
        text = text.replace(secret, MASK)
    return text
