"""OpenAI-compatible chat completions: direct vs LiteLLM proxy vs Portkey's gateway (vs hepgg
with --hepgg-url; a second hepgg target with --hepgg-limited-key, a key with limits).

Portkey's gateway 1.15.2 answers streams with a 500 on Node 20 (``TypeError: immutable`` in its
header update), so it is measured on non-streaming chat only.

python bench/run_openai.py
python bench/run_openai.py --hepgg-url http://127.0.0.1:8000 \\
    --hepgg-key sk-hyd-... --hepgg-limited-key sk-hyd-... --hepgg-model bench-model
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit

import peers
from harness import Scenario, Target, render_markdown, run_bench, write_results

PATH = "/v1/chat/completions"


def body(model: str, stream: bool) -> dict[str, Any]:
    b: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Count from one to twenty, one word per line."},
        ],
        "max_tokens": 64,
        "temperature": 0,
    }
    if stream:
        b |= {"stream": True, "stream_options": {"include_usage": True}}
    return b


def targets(args: argparse.Namespace, upstream: str, stream: bool) -> list[Target]:
    expect = ("word19", "[DONE]") if stream else ("word19", '"usage"')
    json_h = {"Content-Type": "application/json"}
    out = [
        Target(
            "direct",
            upstream,
            PATH,
            {**json_h, "Authorization": f"Bearer {peers.UPSTREAM_OPENAI_KEY}"},
            body(peers.LITELLM_MODEL, stream),
            expect,
        )
    ]
    if args.hepgg_url:
        h = {
            **json_h,
            "Authorization": f"Bearer {args.hepgg_key}",
            **peers.parse_headers(args.hepgg_header),
        }
        out.append(Target("hepgg", args.hepgg_url, PATH, h, body(args.hepgg_model, stream), expect))
        if args.hepgg_unmetered_url:
            hepgg_body = body(args.hepgg_model, stream)
            out.append(
                Target("hepgg-unmetered", args.hepgg_unmetered_url, PATH, h, hepgg_body, expect)
            )
        if args.hepgg_limited_key:
            h = {**h, "Authorization": f"Bearer {args.hepgg_limited_key}"}
            hepgg_body = body(args.hepgg_model, stream)
            out.append(Target("hepgg+limits", args.hepgg_url, PATH, h, hepgg_body, expect))
    if not args.no_litellm:
        h = {**json_h, "Authorization": f"Bearer {peers.LITELLM_MASTER_KEY}"}
        out.append(
            Target(
                "litellm",
                f"http://127.0.0.1:{args.litellm_port}",
                PATH,
                h,
                body(peers.LITELLM_MODEL, stream),
                expect,
            )
        )
    if not args.no_portkey and not stream:  # its streams fail on Node 20: see the docstring
        h = {**json_h, **peers.portkey_headers(upstream)}
        out.append(
            Target(
                "portkey",
                f"http://127.0.0.1:{args.portkey_port}",
                PATH,
                h,
                body(peers.LITELLM_MODEL, stream),
                expect,
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hepgg-url", help="hepgg base URL, e.g. http://127.0.0.1:8000")
    ap.add_argument("--hepgg-key", default="", help="hepgg API key (sk-hyd-...), sent as Bearer")
    ap.add_argument(
        "--hepgg-model", default=peers.LITELLM_MODEL, help="model slug the key is bound to"
    )
    ap.add_argument(
        "--hepgg-limited-key",
        default="",
        help="a second hepgg key, with limits (rpm, tpm, budget): measured as hepgg+limits",
    )
    peers.add_common_args(ap)
    args = ap.parse_args()
    args.with_portkey = True
    hepgg_port = urlsplit(args.hepgg_url).port if args.hepgg_url else None
    with peers.stack(args, hepgg_port) as st:
        scenarios = [
            Scenario(name, targets(args, st.upstream, stream))
            for name, stream in (("non-streaming", False), ("streaming", True))
            if args.only in (None, name)
        ]
        res = run_bench("OpenAI chat completions", scenarios, peers.bench_config(args), st.sampler)
    json_path, md_path = write_results(res, "openai", args.out_dir)
    print("\n" + render_markdown(res))
    print(f"wrote {md_path} and {json_path}")


if __name__ == "__main__":
    main()
