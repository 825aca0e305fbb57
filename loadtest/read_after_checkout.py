#!/usr/bin/env python3
"""Checkouts one at a time, each followed at once by a read of its order.

The latency of a first-time checkout at idle and of reading the order right
after its answer (which waits for the checkout's commit: docs/design.md,
"Answered before the commit"), against a running cluster's gateway:

    cargo run --release -p cart-cluster -- up        # in another shell
    python3 loadtest/read_after_checkout.py --gateway 127.0.0.1:8000 --n 300

Prints percentiles of both and how many reads showed the order unpaid
(always 0 when the read waits as it should). Each order is created and
given its item right before its checkout, so the order group has just
written; with --cold every order is made first, and each checkout finds
the whole cluster idle since the previous round (docs/loadtest.md, "The
idle checkout"). Standard library only.
"""

import argparse
import http.client
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateway", default="127.0.0.1:8000", help="host:port")
    ap.add_argument("--n", type=int, default=300, help="checkouts")
    ap.add_argument("--pause-ms", type=float, default=50, help="between rounds")
    ap.add_argument("--cold", action="store_true", help="make every order before the first checkout")
    args = ap.parse_args()
    host, port = args.gateway.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def call(method: str, path: str):
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read()
        return response.status, (json.loads(body) if body else None)

    for path in ("/stock/batch_init/1/1000000/1", "/payment/batch_init/1/1000000"):
        status, body = call("POST", path)
        assert status == 200, (path, status, body)
    def new_order() -> str:
        status, order = call("POST", "/orders/create/0")
        assert status == 200, order
        oid = order["order_id"]
        status, body = call("POST", f"/orders/addItem/{oid}/0/1")
        assert status == 200, body
        return oid

    made = [new_order() for _ in range(args.n)] if args.cold else []
    checkouts, reads, unpaid = [], [], 0
    for i in range(args.n):
        if i == 0 and args.cold:
            time.sleep(args.pause_ms / 1000)
        oid = made[i] if args.cold else new_order()
        t0 = time.perf_counter()
        status, body = call("POST", f"/orders/checkout/{oid}")
        t1 = time.perf_counter()
        assert status == 200, body
        status, found = call("GET", f"/orders/find/{oid}")
        t2 = time.perf_counter()
        assert status == 200, found
        unpaid += not found["paid"]
        checkouts.append((t1 - t0) * 1000)
        reads.append((t2 - t1) * 1000)
        time.sleep(args.pause_ms / 1000)

    def pct(values, p):
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    for name, values in (("checkout", checkouts), ("read right after", reads)):
        print(
            f"{name:17} p50 {pct(values, .5):5.1f} ms  p90 {pct(values, .9):5.1f} ms  "
            f"p99 {pct(values, .99):5.1f} ms  max {max(values):5.1f} ms"
        )
    print(f"reads showing the order unpaid: {unpaid} of {args.n}")


if __name__ == "__main__":
    main()
