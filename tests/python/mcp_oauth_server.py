"""A real OAuth-protected MCP server for the gateway's OAuth tests: the MCP Python SDK's authorization
server routes (RFC 8414 metadata, RFC 7591 registration, authorize, token, RFC 7009 revocation) and its
protected-resource routes (RFC 9728 metadata, bearer checks) on one Starlette app on 127.0.0.1.

The authorization endpoint approves at once (there is no user to ask): it redirects to the client's
redirect URI with a fresh code. Access tokens live `--token-lifetime` seconds, so a test can watch the
client refresh them. `POST /test/revoke-all` forgets every token, as an administrator revoking the grant
would; `GET /test/stats` counts registrations, authorizations, code and refresh grants and revocations.
`POST /test/hostile?mode=MODE` makes the authorization server misbehave from then on, for the client's
defences to be tested: `foreign-issuer` (its metadata names another issuer), `huge-metadata` (a 1 MiB
metadata document), `redirect-token` (the token endpoint redirects to another origin); `none` restores it.

`--transport sse` serves the MCP server over the older HTTP+SSE transport (GET /sse opens the event
stream, POST /messages/ carries the client's messages; both take the bearer token) instead of streamable
HTTP at /mcp; the resource the tokens are issued for is then .../sse.

Usage: mcp_oauth_server.py PORT [--token-lifetime SECONDS] [--transport streamable-http|sse]
"""

import argparse
import secrets
import time

import uvicorn
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from starlette.requests import Request
from starlette.responses import JSONResponse

SCOPE = "tools"


class AutoApprovingProvider:
    """An in-memory authorization server that approves every authorization request."""

    def __init__(self, lifetime: int):
        self.lifetime = lifetime
        self.clients: dict[str, OAuthClientInformationFull] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, RefreshToken] = {}
        self.stats = {"registered": 0, "authorized": 0, "code_grants": 0, "refresh_grants": 0, "revoked": 0}

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        self.stats["registered"] += 1
        self.clients[client_info.client_id] = client_info

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        self.stats["authorized"] += 1
        code = secrets.token_urlsafe(32)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [SCOPE],
            expires_at=time.time() + 300,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(self, client, authorization_code: str):
        code = self.codes.get(authorization_code)
        return code if code and code.client_id == client.client_id else None

    def _issue(self, client_id: str, scopes: list[str], resource: str | None) -> OAuthToken:
        access = "at-" + secrets.token_urlsafe(24)
        refresh = "rt-" + secrets.token_urlsafe(24)
        expires = int(time.time()) + self.lifetime
        self.access[access] = AccessToken(
            token=access, client_id=client_id, scopes=scopes, expires_at=expires, resource=resource
        )
        self.refresh[refresh] = RefreshToken(token=refresh, client_id=client_id, scopes=scopes, resource=resource)
        return OAuthToken(
            access_token=access,
            expires_in=self.lifetime,
            scope=" ".join(scopes),
            refresh_token=refresh,
        )

    async def exchange_authorization_code(self, client, authorization_code: AuthorizationCode) -> OAuthToken:
        if self.codes.pop(authorization_code.code, None) is None:
            raise TokenError("invalid_grant", "authorization code already used")
        self.stats["code_grants"] += 1
        return self._issue(client.client_id, authorization_code.scopes, authorization_code.resource)

    async def load_refresh_token(self, client, refresh_token: str):
        token = self.refresh.get(refresh_token)
        return token if token and token.client_id == client.client_id else None

    async def exchange_refresh_token(self, client, refresh_token: RefreshToken, scopes: list[str]) -> OAuthToken:
        if self.refresh.pop(refresh_token.token, None) is None:
            raise TokenError("invalid_grant", "refresh token already used")
        self.stats["refresh_grants"] += 1
        return self._issue(client.client_id, scopes or refresh_token.scopes, refresh_token.resource)

    async def load_access_token(self, token: str) -> AccessToken | None:
        access = self.access.get(token)
        if access is None or (access.expires_at is not None and access.expires_at < time.time()):
            return None
        return access

    async def revoke_token(self, token) -> None:
        self.stats["revoked"] += 1
        self.access.pop(token.token, None)
        self.refresh.pop(token.token, None)

    def revoke_all(self) -> None:
        self.access.clear()
        self.refresh.clear()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--token-lifetime", type=int, default=3600)
    parser.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    args = parser.parse_args()
    base = f"http://127.0.0.1:{args.port}"
    mcp_path = "/sse" if args.transport == "sse" else "/mcp"
    provider = AutoApprovingProvider(args.token_lifetime)
    server = MCPServer(
        "oauth-test",
        auth_server_provider=provider,
        auth=AuthSettings(
            issuer_url=base,
            resource_server_url=f"{base}{mcp_path}",
            validate_token_resource=True,
            required_scopes=[SCOPE],
            client_registration_options=ClientRegistrationOptions(
                enabled=True, valid_scopes=[SCOPE], default_scopes=[SCOPE]
            ),
            revocation_options=RevocationOptions(enabled=True),
        ),
    )

    @server.tool()
    def whoami() -> str:
        """Says that the caller is authorized."""
        return "authorized caller"

    @server.custom_route("/test/revoke-all", methods=["POST"])
    async def revoke_all(_: Request) -> JSONResponse:
        provider.revoke_all()
        return JSONResponse({"ok": True})

    @server.custom_route("/test/stats", methods=["GET"])
    async def stats(_: Request) -> JSONResponse:
        return JSONResponse(provider.stats)

    hostile = {"mode": "none"}

    @server.custom_route("/test/hostile", methods=["POST"])
    async def set_hostile(request: Request) -> JSONResponse:
        hostile["mode"] = request.query_params.get("mode", "none")
        return JSONResponse({"mode": hostile["mode"]})

    inner = server.sse_app() if args.transport == "sse" else server.streamable_http_app()

    async def app(scope, receive, send):
        """The SDK's app, unless a hostile mode answers the request first."""
        path, method, mode = scope.get("path"), scope.get("method"), hostile["mode"]
        if scope["type"] == "http" and path == "/.well-known/oauth-authorization-server":
            if mode == "foreign-issuer":
                body = JSONResponse(
                    {
                        "issuer": "http://127.0.0.1:1",
                        "authorization_endpoint": "http://127.0.0.1:1/authorize",
                        "token_endpoint": "http://127.0.0.1:1/token",
                        "code_challenge_methods_supported": ["S256"],
                        "response_types_supported": ["code"],
                    }
                )
                return await body(scope, receive, send)
            if mode == "huge-metadata":
                body = JSONResponse({"issuer": base, "padding": "x" * (1 << 20)})
                return await body(scope, receive, send)
        if scope["type"] == "http" and path == "/token" and method == "POST" and mode == "redirect-token":
            redirect = JSONResponse({}, status_code=307, headers={"location": "http://127.0.0.1:1/steal"})
            return await redirect(scope, receive, send)
        await inner(scope, receive, send)

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
