#!/usr/bin/env python3
"""Renders chat templates as Hugging Face transformers' `apply_chat_template` does (jinja2's sandbox with
trim_blocks and lstrip_blocks, loop controls, its `raise_exception`, `strftime_now` and `tojson`), for
reference fixtures of what a model's own tooling would give.

    render-chat-template.py TEMPLATE.jinja CONVERSATION.json [--date YYYY-MM-DD] > RENDERED.txt
    render-chat-template.py --families tests/fixtures/templates/families.json [--date 2026-01-01]

CONVERSATION.json: {"messages": [...], "tools": [...] (optional), "add_generation_prompt": true, and any
further template variables}. `--date` fixes what `strftime_now` returns, so that the output is stable.

`--families` writes every family's rendered fixtures: for each entry of the manifest (a template, its
`bos_token` and `eos_token`) and each of its conversations NAME (`NAME-conversation.json` beside the
manifest), `FAMILY.NAME.txt` with what the template renders, or `FAMILY.NAME.error` with the message of the
exception it raises. Conversations are written as an OpenAI client sends them (a call's `arguments` a JSON
string, its `content` null); the template gets them as servers that speak OpenAI hand them to
transformers (vLLM among them): `arguments` parsed into an object, `content` an empty text. The generation prompt is always added.

With transformers installed, its own `render_jinja_template` renders (its clock fixed to `--date`);
without it, an environment built here the way transformers builds its own.
"""
import argparse
import json
import os
import sys
from datetime import datetime


def fixed_clock(date):
    """A `datetime` whose `now()` is `date` (midnight), or the real one when no date is given."""
    if not date:
        return datetime
    fixed = datetime.strptime(date, "%Y-%m-%d")

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return fixed

    return Clock


def renderer(date):
    """A function (template source, variables) -> rendered text, as transformers renders."""
    try:
        from transformers.utils import chat_template_utils as hf
    except ImportError:
        hf = None
    if hf is not None:
        hf.datetime = fixed_clock(date)

        def render_hf(source, variables):
            variables = dict(variables)
            messages = variables.pop("messages")
            tools = variables.pop("tools", None)
            add_generation_prompt = variables.pop("add_generation_prompt", True)
            rendered, _ = hf.render_jinja_template(
                conversations=[messages],
                tools=tools,
                chat_template=source,
                add_generation_prompt=add_generation_prompt,
                **variables,
            )
            return rendered[0]

        return render_hf

    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # transformers' own filter: no HTML escaping, Python's default separators.
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    clock = fixed_clock(date)

    def strftime_now(fmt):
        return clock.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now

    def render_jinja(source, variables):
        variables = dict(variables)
        variables.setdefault("tools", None)
        variables.setdefault("documents", None)
        return env.from_string(source).render(**variables)

    return render_jinja


def as_template_sees_it(conversation):
    """The conversation as transformers is handed it: each call's `arguments` JSON string parsed, a
    missing `content` (a call's, from OpenAI clients) as an empty text."""
    conversation = json.loads(json.dumps(conversation))
    for message in conversation["messages"]:
        if message.get("content") is None:
            message["content"] = ""
        for call in message.get("tool_calls") or []:
            arguments = call.get("function", {}).get("arguments")
            if isinstance(arguments, str):
                call["function"]["arguments"] = json.loads(arguments)
    return conversation


def render_families(manifest_path, render):
    here = os.path.dirname(os.path.abspath(manifest_path))
    fixtures = os.path.dirname(here)
    with open(manifest_path, encoding="utf-8") as f:
        families = json.load(f)
    for family in families:
        with open(os.path.join(fixtures, family["template"]), encoding="utf-8") as f:
            source = f.read()
        for name in family["conversations"]:
            with open(os.path.join(here, f"{name}-conversation.json"), encoding="utf-8") as f:
                conversation = as_template_sees_it(json.load(f))
            variables = {
                "bos_token": family["bos_token"],
                "eos_token": family["eos_token"],
                "add_generation_prompt": True,
                **conversation,
            }
            stem = os.path.join(here, f"{family['family']}.{name}")
            for stale in (stem + ".txt", stem + ".error"):
                if os.path.exists(stale):
                    os.remove(stale)
            try:
                text, suffix = render(source, variables), ".txt"
            except Exception as e:  # the template's raise_exception, or a jinja error
                text, suffix = f"{e}\n", ".error"
            with open(stem + suffix, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            print(f"{family['family']}.{name}{suffix}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("template", nargs="?")
    parser.add_argument("conversation", nargs="?")
    parser.add_argument("--families", help="a manifest of families: write all their fixtures")
    parser.add_argument("--date", help="the date strftime_now gives (default: today)")
    args = parser.parse_args()
    render = renderer(args.date)
    if args.families:
        render_families(args.families, render)
        return
    if not (args.template and args.conversation):
        parser.error("give TEMPLATE and CONVERSATION, or --families MANIFEST")
    with open(args.template, encoding="utf-8") as f:
        source = f.read()
    with open(args.conversation, encoding="utf-8") as f:
        variables = json.load(f)
    sys.stdout.write(render(source, variables))


if __name__ == "__main__":
    main()
