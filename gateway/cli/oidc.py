"""`mssgw oidc check`: the identity provider's keys as this node gets them, and a token judged as a login would
judge it (gateway/auth/oidc.py), for setting up `[oidc]` and answering "why is my login refused"."""

from __future__ import annotations

import argparse

from gateway.audit.events import AuditEvent
from gateway.auth.lockout import Lockout
from gateway.auth.oidc import token_login
from gateway.cli.base import Command, Context, Outcome, read_secret_stdin, table
from gateway.errors import UsageError


async def check(ctx: Context, args: argparse.Namespace) -> Outcome:
    cfg = ctx.cfg.oidc
    login = token_login(cfg, ctx.cfg.path, ctx.node.mailboxes, Lockout())
    if login is None:
        raise UsageError("no identity provider: [oidc] issuer is empty")
    keys = await login.verifier.jwks.load()
    rows = [{"kid": k.kid or "", "kty": k.jwk.key_type, "alg": k.alg or ""} for k in keys]
    data: dict[str, object] = {"issuer": cfg.issuer, "jwks": cfg.jwks, "keys": rows, "error": login.verifier.jwks.error}
    lines = [f"issuer {cfg.issuer}", f"keys from {cfg.jwks}: {len(rows)}"]
    if rows:
        lines.append(table(rows, ["kid", "kty", "alg"]))
    if login.verifier.jwks.error:
        lines.append(f"the last read failed: {login.verifier.jwks.error}")
    audit: dict[str, object] = {"keys": len(rows)}
    ok = bool(rows)
    if args.token_stdin:
        # The token is a credential: read from standard input only, never printed, audited by its facts.
        judged = await login.judge(read_secret_stdin("access token").strip(), args.user.lower() if args.user else None)
        outcome, facts = judged.outcome, judged.facts
        verdict = {
            "result": outcome.result,
            "mailbox": outcome.address or None,
            "reason": outcome.reason or None,
            "idnat": facts.identifier if facts else None,
            "jti": facts.token_id if facts else None,
        }
        data["token"] = verdict
        shown = f"would log in to {outcome.address}" if outcome.result == "ok" else f"refused: {outcome.reason}"
        lines.append(f"token ({facts.identifier if facts else 'not verified'}): {shown}")
        audit.update({k: v for k, v in verdict.items() if v is not None})
        ok = ok and outcome.result == "ok"
    return Outcome(data, "\n".join(lines), audit=audit, exit_code=0 if ok else 1)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    grp = sub.add_parser("oidc", help="logins with the identity provider's tokens").add_subparsers(
        required=True, metavar="ACTION"
    )
    p = grp.add_parser(
        "check", parents=[common], help="fetch the provider's keys; with --token-stdin, judge a token as a login"
    )
    p.add_argument("--token-stdin", action="store_true", help="read an access token from standard input")
    p.add_argument("--user", help="the mailbox the token would log in to (default: its owner's only one)")
    p.set_defaults(_command=Command(AuditEvent.OIDC_CHECKED, check))
