#!/usr/bin/env python3
"""Tables for docs/scaling.md from `cart-load open-loop` reports (loadtest/scaling.sh):
per run and rate, the CPU per first-time checkout and the latency; per run,
each node process's share of the cluster's CPU over the load, and what each
service's nodes did per first-time checkout (entries, log syncs, requests
served, from the nodes' own counters)."""
import json
import sys


def main(paths):
    runs = [json.load(open(p)) for p in paths]
    m = runs[0]["machine"]
    print(f"Machine: {m['cores']} cores, {m['cpu_model']}, kernel {m['kernel']}.\n")
    print("| run | rate/s | first-time ok/s | CPU per checkout | cores | p50 | p99 |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        cpu = {s["rate"]: s for s in r["cpu"]["steps"]}
        for step in r["outcome"]["steps"]:
            ft = step["first_time"]
            c = cpu.get(step["rate"], {})
            ms = c.get("cpu_ms_per_first_time_ok")
            print(
                f"| {r['label']} | {step['rate']:.0f} | {ft['ok_rps']:.0f} | "
                f"{ms:.2f} ms | {c.get('cores', 0):.2f} | "
                f"{ft['latency']['p50_ms']:.1f} ms | {ft['latency']['p99_ms']:.1f} ms |"
            )
    print()
    print("Cores of each node process over the whole load (every rate):\n")
    services = ["order", "payment", "stock"]
    header = " | ".join(f"{s} 1 / 2 / 3" for s in services)
    print(f"| run | {header} | coordinators | gateway |")
    print("|---|" + "---|" * (len(services) + 2))
    for r in runs:
        cores = {p["role"]: p["cores"] for p in r["cpu"]["processes"]}
        cells = []
        for s in services:
            cells.append(" / ".join(f"{cores.get(f'{s}-node-{i}', 0):.2f}" for i in (1, 2, 3)))
        coords = sum(v for k, v in cores.items() if "coordinator" in k)
        print(f"| {r['label']} | " + " | ".join(cells) + f" | {coords:.2f} | {cores.get('gateway', 0):.2f} |")

    worked = [r for r in runs if r.get("work")]
    if worked:
        print()
        print("Per first-time checkout over the whole load, each service's nodes summed: "
              "Raft entries / log syncs (fdatasyncs) / requests served:\n")
        names = services + ["all"]
        print("| run | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for r in worked:
            work = {s["service"]: s for s in r["work"]["services"]}
            work["all"] = r["work"]["total"]
            cells = []
            for s in names:
                per = (work.get(s) or {}).get("per_first_time_ok")
                cells.append(
                    f"{per['entries']:.2f} / {per['log_syncs']:.2f} / {per['requests']:.1f}"
                    if per else "–"
                )
            print(f"| {r['label']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
