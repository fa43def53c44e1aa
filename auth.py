"""Who may reach the app, and what malformed requests get back.

* On a loopback address (127.0.0.1, ::1, localhost) with no credentials the app is open, as
  before, but only to clients on this machine (a server bound wider by gunicorn or a container
  answers 403 to anyone else).
* Bound to any other address, the app refuses to start unless credentials are configured:
  ``LATENTMAP_USERS="alice:secret,bob:pw"`` and/or ``LATENTMAP_AUTH_FILE`` / ``--auth-file``, a
  file of ``user:password`` lines (``#`` comments). A password may be a Werkzeug hash
  (``python -c "from werkzeug.security import generate_password_hash as g; print(g('pw'))"``).
* With credentials every route (pages, ``/_dash-*``, ``/thumb``, ``/reports``, assets) needs
  HTTP basic auth (dash-auth's ``BasicAuth``). Credentials travel in the Authorization header,
  never in a URL: a shared link carries view state only.

Passwords may hold ":" (the first one ends the user name); in ``LATENTMAP_USERS`` they cannot
hold ",", in the file they can.

Malformed requests (a callback body that is not a Dash payload, an unknown component-suite
path, a path under /thumb/ or /reports/ that no file route matched, a bad Authorization
header) are answered 400 / 404 / 404 / 401, never 500.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from pathlib import Path
from typing import Any

from latentmap.settings import Settings, SettingsError

log = logging.getLogger(__name__)

HASH_PREFIXES = ("scrypt:", "pbkdf2:")  # werkzeug.security hash formats
_HELP = "set LATENTMAP_USERS=user:password or --auth-file FILE (see README, 'Sharing on a network')"


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost (the addresses only this machine can reach)."""
    host = (host or "").strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
    return (mapped or ip).is_loopback


def _parse_pairs(lines: list[str], where: str) -> dict[str, str]:
    users: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        user = user.strip()
        if not sep or not user or not password:
            # never echo the line: it may hold a password
            raise SettingsError(f"{where}, entry {n}: expected user:password")
        users[user] = password
    return users


def load_users(settings: Settings) -> dict[str, str]:
    """user -> password (or Werkzeug hash) from ``settings.users`` and ``settings.auth_file``."""
    users = _parse_pairs((settings.users or "").split(","), "LATENTMAP_USERS")
    if settings.auth_file is not None:
        path = Path(settings.auth_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SettingsError(f"cannot read auth file {path}: {e}") from None
        found = _parse_pairs(text.splitlines(), f"auth file {path}")
        if not found:
            raise SettingsError(f"auth file {path} holds no user:password line")
        users.update(found)
    return users


def check_access(settings: Settings) -> dict[str, str]:
    """The configured users; SettingsError when serving beyond this machine would be open."""
    users = load_users(settings)
    if is_loopback(settings.host):
        return users
    if not users:
        raise SettingsError(
            f"refusing to serve on {settings.host!r} without credentials: anyone who can reach "
            f"it could read every dataset; {_HELP}, or bind to 127.0.0.1"
        )
    if settings.debug:
        raise SettingsError(
            f"refusing debug mode on {settings.host!r}: it shows tracebacks to visitors; "
            "use --debug only on 127.0.0.1"
        )
    return users


def password_ok(stored: str, given: str) -> bool:
    """Constant-time comparison, or Werkzeug's check for a hashed password."""
    if stored.startswith(HASH_PREFIXES):
        from werkzeug.security import check_password_hash

        return check_password_hash(stored, given)
    return hmac.compare_digest(stored.encode("utf-8"), given.encode("utf-8"))


def _basic_auth_class():
    from dash_auth import BasicAuth

    class _BasicAuth(BasicAuth):
        """dash-auth's BasicAuth with every route protected (no public routes) and a hook that
        answers malformed requests 401 instead of 500 (the stock one indexes the header and
        the callback body before checking them)."""

        def _protect(self) -> None:
            @self.app.server.before_request
            def _require_login():
                return None if self.is_authorized() else self.login_request()

        def is_authorized(self) -> bool:
            from flask import request

            creds = request.authorization  # werkzeug's parser: None when malformed
            if creds is None or creds.type != "basic":
                return False
            return bool(self._auth_func(creds.username or "", creds.password or ""))

        def login_request(self):
            from flask import Response

            return Response(
                "Login required",
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="latentmap", charset="UTF-8"'},
            )

    return _BasicAuth


def protect(app: Any, settings: Settings) -> None:
    """Install access control and request guards on a Dash app (called by ``create_app``)."""
    users = check_access(settings)
    server = app.server
    if users:

        def auth_func(user: str, password: str) -> bool:
            stored = users.get(user)
            return stored is not None and password_ok(stored, password)

        _basic_auth_class()(app, auth_func=auth_func)
        log.info("basic auth on for %d user(s)", len(users))
    else:

        @server.before_request
        def _this_machine_only():
            from flask import Response, request

            if not is_loopback(request.remote_addr):
                return Response(
                    f"latentmap is open only to this machine; to share it, {_HELP}\n",
                    status=403,
                    mimetype="text/plain",
                )
            return None

    _install_guards(app)


def _install_guards(app: Any) -> None:
    from dash.exceptions import CallbackException, DependencyException, InvalidCallbackReturnValue
    from flask import abort, request

    server = app.server

    @server.before_request
    def _well_formed_callback():
        if request.path != "/_dash-update-component" or request.method != "POST":
            return None
        if not _dash_payload_ok(request.get_json(silent=True), app.callback_map):
            abort(400)
        return None

    @server.before_request
    def _files_by_route_only():
        # "/thumb//etc/passwd" misses the /thumb routes and would fall through to Dash's
        # catch-all page: anything under these prefixes that no file route matched is a 404
        rule = request.url_rule.rule if request.url_rule is not None else ""
        for prefix in ("/thumb/", "/reports/"):
            if request.path.startswith(prefix) and not rule.startswith(prefix):
                abort(404)
        return None

    @server.errorhandler(DependencyException)
    def _unknown_dependency(_err):
        return "Not found\n", 404, {"Content-Type": "text/plain"}

    @server.errorhandler(CallbackException)
    def _bad_callback_request(err):
        if isinstance(err, InvalidCallbackReturnValue):
            raise err  # our bug, not the request's: a logged 500
        log.warning("rejected a callback request: %s", str(err).splitlines()[0][:200])
        return "Bad callback request\n", 400, {"Content-Type": "text/plain"}


def _is_all(spec_id: Any) -> bool:
    """A pattern-matching id with ALL / ALLSMALLER: the renderer sends a list of matches."""
    text = spec_id if isinstance(spec_id, str) else str(spec_id)
    return text.startswith("{") and ('["ALL"]' in text or '["ALLSMALLER"]' in text)


def _items_ok(item: Any, declared_id: Any) -> bool:
    if _is_all(declared_id):
        return isinstance(item, list) and all(_items_ok(i, "") for i in item)
    return isinstance(item, dict) and "id" in item and isinstance(item.get("property"), str)


def _dash_payload_ok(body: Any, callback_map: dict) -> bool:
    """The shape Dash's renderer sends. Dash indexes it unchecked (a 500 otherwise)."""
    if not isinstance(body, dict) or not isinstance(body.get("output"), str):
        return False
    cb = callback_map.get(body["output"])
    if cb is None:
        return False
    for key in ("inputs", "state"):
        items, declared = body.get(key, []), cb.get(key, [])
        if not isinstance(items, list) or len(items) != len(declared):
            return False
        if not all(_items_ok(i, d.get("id")) for i, d in zip(items, declared, strict=True)):
            return False
    changed = body.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        return False
    if cb.get("no_output"):
        return True
    spec = body["output"]
    parts = spec[2:-2].split("...") if spec.startswith("..") else [spec]
    declared = [p.split("@")[0].rpartition(".")[0] for p in parts]
    outputs = body.get("outputs", [])
    if len(parts) > 1:
        if not isinstance(outputs, list) or len(outputs) != len(parts):
            return False
        return all(_items_ok(o, d) for o, d in zip(outputs, declared, strict=True))
    return _items_ok(outputs, declared[0])
