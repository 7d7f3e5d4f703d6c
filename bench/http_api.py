"""HTTP throughput and latency of `brandvx serve`, from a client process on the same machine.

Run by hand (not a test):  python bench/http_api.py [--requests 3000] [--concurrency 20]
Uses embedded servers in a temporary folder unless DATABASE_URL and REDIS_URL are set.
Traffic goes to 127.0.0.1 only; the request count is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-" + "x" * 40

CREATE_CONTACT = "mutation($i: CreateContactInput!) { createContact(input: $i) { userErrors { code } } }"
QUERIES = {
    "viewer": "{ viewer { userId role tenant { name } } }",
    "contacts50": "{ contacts(first: 50) { edges { cursor node { id displayName emailMasked tags } } } }",
    "settings+onboarding": "{ settings { timezone } onboarding { completedCount } }",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wrk(base: str, headers: dict[str, str], query: str, concurrency: int) -> str:
    """wrk (C, pipelined keep-alive) takes far less CPU than an httpx client on the same 2 cores."""
    import json
    import re

    lua = Path(tempfile.mkdtemp()) / "post.lua"
    header_lines = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    lua.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        + header_lines
        + f"wrk.body = [[{json.dumps({'query': query})}]]\n"
    )
    out = subprocess.run(
        ["wrk", "-t2", f"-c{concurrency}", "-d10s", "--latency", "-s", str(lua), base + "/graphql"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert rps, out
    assert p50, out
    assert p99, out
    assert errors is None, out
    return f"{float(rps.group(1)):8.0f} req/s   p50 {p50.group(1):>8}   p99 {p99.group(1):>8}   (wrk)"


async def run(requests: int, concurrency: int, client: str) -> None:
    sys.path.insert(0, str(ROOT))
    from integrations.auth_jwt import mint_token

    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="brandvx-bench-")
    env = {
        **os.environ,
        "BRANDVX_JWT_SECRET": SECRET,
        "BRANDVX_DATA_DIR": data_dir,
        "BRANDVX_LOG_LEVEL": "WARNING",
        # One tenant at hundreds of requests a second: the rate limit is charged on every request
        # (its Redis round trip is part of what is measured) but sized never to refuse one.
        "BRANDVX_RATE_LIMIT_POINTS": "100000000",
        "BRANDVX_RATE_LIMIT_RESTORE_PER_SECOND": "1000000",
    }
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, before any measurement
        [sys.executable, "-m", "brandvx", "serve", "--port", str(port), "--no-worker"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=concurrency)) as http:
            for _ in range(300):
                try:
                    if (await http.get("/ready")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
            token = mint_token(SECRET, user_id="bench-owner")
            auth = {"Authorization": f"Bearer {token}"}
            created = await http.post(
                "/graphql",
                json={"query": 'mutation { createTenant(input: {name: "Bench"}) { tenant { id } } }'},
                headers=auth,
            )
            tenant = created.json()["data"]["createTenant"]["tenant"]["id"]
            headers = {**auth, "X-Tenant-Id": tenant}
            for i in range(50):
                await http.post(
                    "/graphql",
                    json={
                        "query": CREATE_CONTACT,
                        "variables": {
                            "i": {
                                "displayName": f"Client {i}",
                                "email": f"c{i}@example.test",
                                "tags": ["bench"],
                            }
                        },
                    },
                    headers=headers,
                )
            if client == "wrk":
                for name, query in QUERIES.items():
                    print(f"{name:22s} " + _wrk(base, headers, query, concurrency))
                return
            for name, query in QUERIES.items():
                latencies: list[float] = []
                queue: asyncio.Queue[int] = asyncio.Queue()
                for i in range(requests):
                    queue.put_nowait(i)

                async def worker(
                    q: str = query, lat: list[float] = latencies, work: asyncio.Queue[int] = queue
                ) -> None:
                    while not work.empty():
                        work.get_nowait()
                        started = time.perf_counter()
                        response = await http.post("/graphql", json={"query": q}, headers=headers)
                        lat.append(time.perf_counter() - started)
                        assert response.status_code == 200, response.text
                        assert "errors" not in response.json(), response.text

                # Warm-up (connection pools, caches), not measured.
                for _ in range(50):
                    await http.post("/graphql", json={"query": query}, headers=headers)
                started = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                elapsed = time.perf_counter() - started
                latencies.sort()
                p50 = statistics.median(latencies) * 1000
                p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
                print(f"{name:22s} {requests / elapsed:8.0f} req/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms")
    finally:
        server.terminate()
        server.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--client", choices=["httpx", "wrk"], default="httpx")
    args = parser.parse_args()
    asyncio.run(run(min(args.requests, 100_000), args.concurrency, args.client))


if __name__ == "__main__":
    main()
