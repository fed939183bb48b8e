"""Anthropic Messages passthrough: direct vs nginx (reference) vs LiteLLM /anthropic (vs hepgg).

python bench/run_anthropic.py
python bench/run_anthropic.py --hepgg-url http://127.0.0.1:8000/anthropic/pt_...
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit

import peers
from harness import Scenario, Target, render_markdown, run_bench, write_results

PATH = "/v1/messages"
MODEL = "claude-sonnet-4-5"


def body(stream: bool) -> dict[str, Any]:
    b: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 64,
        "system": "You are a helpful assistant.",
        "messages": [{"role": "user", "content": "Count from one to twenty, one word per line."}],
    }
    if stream:
        b["stream"] = True
    return b


def headers(api_key: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": api_key,
    }


def targets(args: argparse.Namespace, upstream: str, stream: bool) -> list[Target]:
    expect = ("word19", "message_stop") if stream else ("word19", "end_turn")
    client_key = "sk-ant-bench-client"
    out = [Target("direct", upstream, PATH, headers(client_key), body(stream), expect)]
    if args.hepgg_url:
        h = {**headers(client_key), **peers.parse_headers(args.hepgg_header)}
        out.append(Target("hepgg", args.hepgg_url, PATH, h, body(stream), expect))
    if not args.no_nginx:
        out.append(
            Target(
                "nginx",
                f"http://127.0.0.1:{args.nginx_port}",
                PATH,
                headers(client_key),
                body(stream),
                expect,
            )
        )
    if not args.no_litellm:
        # LiteLLM authenticates the caller by x-api-key = its master key, then sends its own
        # ANTHROPIC_API_KEY upstream.
        out.append(
            Target(
                "litellm",
                f"http://127.0.0.1:{args.litellm_port}/anthropic",
                PATH,
                headers(peers.LITELLM_MASTER_KEY),
                body(stream),
                expect,
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--hepgg-url", help="hepgg Claude proxy base, e.g. http://127.0.0.1:8000/anthropic/pt_..."
    )
    peers.add_common_args(ap)
    args = ap.parse_args()
    hepgg_port = urlsplit(args.hepgg_url).port if args.hepgg_url else None
    with peers.stack(args, hepgg_port) as st:
        if not args.no_nginx:
            st.add(
                peers.nginx(
                    args.nginx_port, args.fake_port, st.workdir, log_dir=args.out_dir / "logs"
                )
            )
        scenarios = [
            Scenario(name, targets(args, st.upstream, stream))
            for name, stream in (("non-streaming", False), ("streaming", True))
            if args.only in (None, name)
        ]
        res = run_bench(
            "Anthropic Messages passthrough", scenarios, peers.bench_config(args), st.sampler
        )
    json_path, md_path = write_results(res, "anthropic", args.out_dir)
    print("\n" + render_markdown(res))
    print(f"wrote {md_path} and {json_path}")


if __name__ == "__main__":
    main()
