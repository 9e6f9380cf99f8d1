#!/usr/bin/env python3
"""Renders a chat template as Hugging Face transformers' `apply_chat_template` does (jinja2's sandbox with
trim_blocks and lstrip_blocks, its `raise_exception`, `strftime_now` and `tojson`), for reference fixtures of
what a model's own tooling would give.

    render-chat-template.py TEMPLATE.jinja CONVERSATION.json [--date YYYY-MM-DD] > RENDERED.txt

CONVERSATION.json: {"messages": [...], "tools": [...] (optional), "add_generation_prompt": true, and any
further template variables}. `--date` fixes what `strftime_now` returns, so that the output is stable.
"""
import argparse
import json
import sys
from datetime import datetime

from jinja2.sandbox import ImmutableSandboxedEnvironment


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("template")
    parser.add_argument("conversation")
    parser.add_argument("--date", help="the date strftime_now gives (default: today)")
    args = parser.parse_args()

    def raise_exception(message):
        raise ValueError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # transformers' own filter: no HTML escaping, Python's default separators.
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        now = datetime.strptime(args.date, "%Y-%m-%d") if args.date else datetime.now()
        return now.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    with open(args.template, encoding="utf-8") as f:
        template = env.from_string(f.read())
    with open(args.conversation, encoding="utf-8") as f:
        variables = json.load(f)
    sys.stdout.write(template.render(**variables))


if __name__ == "__main__":
    main()
