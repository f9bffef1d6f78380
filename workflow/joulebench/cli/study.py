"""The study commands: `validate` (a config and the jobs it expands to) and `provenance` (where
records came from, a study audited for comparability)."""

from __future__ import annotations

import argparse


def cmd_validate(args: argparse.Namespace) -> None:
    from joulebench.study import config, matrix
    from joulebench.study.serving_specs import session_specs

    cfg = config.load(args.configfile)
    specs = matrix.expand(cfg)
    print(f"{args.configfile}: valid; {len(specs)} benchmark configurations")
    for spec in specs:
        print(f"  {spec.config_id}")
    skipped = matrix.unsupported(cfg)
    if skipped:
        print(f"{len(skipped)} combinations skipped (skip_unsupported: true):")
        for _, reason in skipped:
            print(f"  {reason}")
    sessions = session_specs(cfg)
    if sessions:
        print(f"{len(sessions)} serving sessions, each with these experiments:")
        for session in sessions:
            print(f"  {session.session_id}")
        for exp in sessions[0].experiments:
            print(f"    {exp['id']}: {exp['arrival']} shaping {exp['shaping']}")


def cmd_provenance(args: argparse.Namespace) -> None:
    from joulebench.results import audit

    status = audit.command(
        args.records,
        as_json=args.json,
        strict=args.strict,
        checkout_hash=args.code_hash,
        out_csv=args.out_csv,
        out_json=args.out_json,
    )
    if status:
        raise SystemExit(status)


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("validate", help="check a config file and list its configurations")
    c.add_argument("configfile")
    c.set_defaults(func=cmd_validate)

    pv = sub.add_parser(
        "provenance",
        help="where records came from: one record in detail, or a study audited for comparability",
    )
    pv.add_argument("records", nargs="+", help="record files and/or results directories")
    pv.add_argument("--json", action="store_true", help="the raw provenance / audit as JSON")
    pv.add_argument("--strict", action="store_true", help="exit 1 when anything is flagged")
    pv.add_argument("--code-hash", help="the checkout's bench code hash (default: this one's)")
    pv.add_argument("--out-csv", help="write the audit table (one row per record) here")
    pv.add_argument("--out-json", help="write the audit (verdict, flags, rows) here")
    pv.set_defaults(func=cmd_provenance)
