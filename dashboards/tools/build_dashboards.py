#!/usr/bin/env python3
"""Writes the Grafana dashboards of ../grafana/ from the definitions below.

The JSON files are what Grafana loads and what is committed; this script is
only the convenient way to change them consistently (shared template
variables, datasource, layout). Run it from anywhere:

    python3 dashboards/tools/build_dashboards.py

then `scripts/test -E 'binary(observability) | binary(k8s)'` to check the result.
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "grafana")

DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "[$__rate_interval]"
SVC = 'service=~"$service"'
INST = 'instance=~"$instance"'
# Node processes: the scrape config gives them role/service/node target labels.
NODE = f'role="node", {SVC}, {INST}'


# --- panels -----------------------------------------------------------------


def target(expr, legend="", ref="A", instant=False, table=False):
    t = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    if table:
        t["format"] = "table"
    return t


def targets(*pairs, instant=False, table=False):
    """(expr, legend) pairs to targets A, B, C, ..."""
    return [
        target(e, l, chr(ord("A") + i), instant=instant, table=table)
        for i, (e, l) in enumerate(pairs)
    ]


def panel(kind, title, tgts, desc, w, h, defaults, options, **extra):
    """The envelope every panel shares; `extra` keys go before the targets."""
    return {
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "_size": (w, h),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        **extra,
        "targets": tgts,
    }


def timeseries(title, tgts, unit="short", desc="", w=12, h=8, stack=False,
               step=False, max_=None, mappings=None):
    defaults = {
        "color": {"mode": "palette-classic"},
        "custom": {
            "axisPlacement": "auto",
            "drawStyle": "line",
            "fillOpacity": 10,
            "gradientMode": "none",
            "lineInterpolation": "stepAfter" if step else "linear",
            "lineWidth": 1,
            "pointSize": 4,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if stack else "none"},
            "thresholdsStyle": {"mode": "off"},
        },
        "mappings": mappings or [],
        "min": 0,
        "thresholds": {"mode": "absolute",
                       "steps": [{"color": "green", "value": None}]},
        "unit": unit,
    }
    if max_ is not None:
        defaults["max"] = max_
    return panel("timeseries", title, tgts, desc, w, h, defaults, {
        "legend": {"calcs": [], "displayMode": "list",
                   "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    })


def steps(*pairs):
    """(color, from-value) pairs; the first starts at -inf."""
    return {"mode": "absolute",
            "steps": [{"color": c, "value": v} for c, v in pairs]}


def value_map(texts):
    """{value: (text, color)} to a Grafana value mapping."""
    return [{"type": "value", "options": {
        value: {"text": text, "color": color, "index": i}
        for i, (value, (text, color)) in enumerate(texts.items())}}]


def stat(title, tgts, unit="short", desc="", w=6, h=4, thresholds=None,
         mappings=None):
    return panel("stat", title, tgts, desc, w, h, {
        "color": {"mode": "thresholds"},
        "mappings": mappings or [],
        "thresholds": thresholds or steps(("green", None)),
        "unit": unit,
    }, {
        "colorMode": "value",
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                          "values": False},
        "showPercentChange": False,
        "textMode": "auto",
        "wideLayout": True,
    })


def state_timeline(title, tgts, desc="", w=12, h=8, mappings=None,
                   thresholds=None):
    """One band per series, colored by its (mapped) value over time."""
    return panel("state-timeline", title, tgts, desc, w, h, {
        "color": {"mode": "thresholds"},
        "custom": {"fillOpacity": 80, "lineWidth": 0,
                   "hideFrom": {"legend": False, "tooltip": False,
                                "viz": False}},
        "mappings": mappings or [],
        "thresholds": thresholds or steps(("green", None)),
    }, {
        "alignValue": "left",
        "mergeValues": True,
        "rowHeight": 0.9,
        "showValue": "auto",
        "legend": {"displayMode": "list", "placement": "bottom",
                   "showLegend": False},
        "tooltip": {"mode": "single", "sort": "none"},
    })


def table(title, tgts, desc="", w=12, h=8, rename=None, mappings=None,
          hide=("Time", "job", "__name__")):
    return panel("table", title, tgts, desc, w, h, {
        "custom": {"align": "auto", "cellOptions": {"type": "color-text"}
                   if mappings else {"type": "auto"},
                   "inspect": False},
        "mappings": mappings or [],
        "thresholds": steps(("green", None)),
    }, {
        "cellHeight": "sm",
        "footer": {"countRows": False, "fields": "", "reducer": ["sum"],
                   "show": False},
        "showHeader": True,
        "sortBy": [],
    }, transformations=[{
        "id": "organize",
        "options": {
            "excludeByName": {k: True for k in hide},
            "indexByName": {},
            "renameByName": rename or {},
        },
    }])


def quantiles(metric, sel, by, legend_prefix, qs=(0.5, 0.99), fallback=False):
    """p50/p99 targets of a histogram, `by` labels alongside le."""
    by_clause = ", ".join(["le"] + list(by))
    pairs = []
    for q in qs:
        e = (f"histogram_quantile({q}, sum by ({by_clause}) "
             f"(rate({metric}_bucket{{{sel}}}{RI})))")
        if fallback:
            e += " or on() vector(0)"
        pairs.append((e, f"{legend_prefix}p{int(q * 100)}"))
    return targets(*pairs)


# --- template variables -------------------------------------------------------


def variables():
    def query_var(name, label, query):
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "definition": query,
            "query": query,
            "refresh": 2,
            "regex": "",
            "sort": 1,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [],
            "hide": 0,
            "skipUrlSync": False,
        }

    return {"list": [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {"selected": False, "text": "Prometheus",
                        "value": "prometheus"},
            "regex": "",
            "refresh": 1,
            "multi": False,
            "includeAll": False,
            "options": [],
            "hide": 0,
            "skipUrlSync": False,
        },
        query_var("service", "Service", "label_values(cart_raft_term, service)"),
        # The gateway's own HTTP series carry service="all": keep it listed.
        query_var("instance", "Instance",
                  'label_values(cart_http_requests_total{service=~"$service|all"}, instance)'),
    ]}


# --- layout and output ---------------------------------------------------------


def section(panels):
    """Panels that start on a line of their own (a group such as Storage).

    No Grafana row panel: every panel carries a query (the tests check it),
    so a section is its panels' common title prefix on a new line."""
    panels[0]["_section"] = True
    return panels


def layout(panels):
    x = y = row_h = 0
    out = []
    for i, p in enumerate(panels, start=1):
        w, h = p.pop("_size")
        if x + w > 24 or (p.pop("_section", False) and x > 0):
            x, y, row_h = 0, y + row_h, 0
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        p["id"] = i
        if not p.get("description"):
            p.pop("description", None)
        out.append(p)
        x += w
        row_h = max(row_h, h)
    return out


def dashboard(uid, title, description, panels):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["cart"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {},
        "annotations": {"list": []},
        "links": [{
            "title": "Cart dashboards",
            "type": "dashboards",
            "tags": ["cart"],
            "asDropdown": True,
            "includeVars": True,
            "keepTime": True,
            "icon": "external link",
            "targetBlank": False,
            "tooltip": "",
            "url": "",
        }],
        "templating": variables(),
        "panels": layout(panels),
    }


# --- dashboards ---------------------------------------------------------------

UP_MAP = value_map({"1": ("up", "green"), "0": ("down", "red")})
LEADER_MAP = value_map({"1": ("leader", "green"), "0": ("follower", "text")})
STORAGE_MAP = value_map({"1": ("healthy", "green"), "0": ("failing", "red")})


def cluster_overview():
    node_up = f'max by (service, node) (cart_node_up{{{SVC}}})'
    # One series per shard's group a node hosts (a single-shard service's
    # shard is "0").
    leaders = f'max by (service, shard, node) (cart_raft_is_leader{{role="node", {SVC}}})'
    return dashboard(
        "cart-cluster-overview", "Cart / Cluster overview",
        "Nodes up and down, leaders, group members, leader changes, events, scrape targets.",
        [
            stat("Nodes up", targets((f"sum by (service) ({node_up})", "{{service}}")),
                 desc="Nodes up (answering and caught up) as the service's coordinators see them (max over coordinators).",
                 thresholds=steps(("red", None), ("orange", 1), ("green", 2))),
            stat("Nodes down", targets((f"sum by (service) (1 - {node_up})", "{{service}}")),
                 desc="Nodes down or still catching up.",
                 thresholds=steps(("green", None), ("red", 1))),
            stat("Leaders", targets((
                f'sum by (service, shard) ({leaders}) or on (service) '
                f'max by (service) (cart_group_members{{{SVC}}}) * 0', "{{service}} shard {{shard}}")),
                desc="Nodes reporting themselves leader, per service and shard: 1 expected, 0 while no node leads (also when every node is gone).",
                thresholds=steps(("red", None), ("green", 1), ("orange", 2))),
            stat("Group members", targets((
                f"max by (service) (cart_group_members{{{SVC}}})", "{{service}}")),
                desc="Members (voters and learners) of each Raft group."),
            timeseries("Node up (coordinators' view)", targets((node_up, "{{service}} node {{node}}")),
                       desc="1 while the node answers and is caught up; max over the service's coordinators.",
                       step=True, max_=1, mappings=UP_MAP),
            table("Current leaders", targets((leaders, ""), instant=True, table=True),
                  desc="cart_raft_is_leader of every live node, per shard it hosts.",
                  rename={"Value": "role"},
                  mappings=LEADER_MAP),
            timeseries("Leader changes", targets((
                f"max by (service) (increase(cart_leader_changes_total{{{SVC}}}{RI}))", "{{service}}")),
                desc="Leader changes observed by the coordinators (max over coordinators)."),
            timeseries("Cluster events by kind", targets((
                f"max by (service, kind) (rate(cart_events_total{{{SVC}}}{RI})) or on() vector(0)",
                "{{service}} {{kind}}")),
                unit="ops", desc="Events the coordinators record (node_down, node_up, caught_up, leader_change, check, ...); max over coordinators."),
            timeseries("Node transitions", targets(
                (f"max by (service, node) (increase(cart_node_down_total{{{SVC}}}{RI}))", "{{service}} node {{node}} down"),
                (f"max by (service, node) (increase(cart_node_up_total{{{SVC}}}{RI}))", "{{service}} node {{node}} answering again"),
                (f"max by (service, node) (increase(cart_node_caught_up_total{{{SVC}}}{RI}))", "{{service}} node {{node}} caught up"),
            ), desc="Node-down protocol transitions per interval."),
            timeseries("Node-down detection time", quantiles(
                "cart_node_down_detection_seconds", SVC, ["service"], "{{service}} ", fallback=True),
                unit="s", desc="Time from last hearing from a node to marking it down (NaN until a node went down)."),
            timeseries("Health probe failures", targets((
                f"max by (service, node) (rate(cart_node_probe_failures_total{{{SVC}}}{RI}))",
                "{{service}} node {{node}}")), unit="ops"),
            timeseries("Coordinator event sync failures", targets((
                f"sum by (service, instance, peer) (rate(cart_coordinator_event_sync_failures_total{{{SVC}, {INST}}}{RI})) or on() vector(0)",
                "{{instance}} from {{peer}}")), unit="ops"),
            stat("Scrape targets down", targets((
                'count(up{job="cart"} == 0) or on() vector(0)', "down")),
                desc="Prometheus targets of job cart whose last scrape failed.",
                thresholds=steps(("green", None), ("red", 1))),
            table("Scrape targets", targets((f'up{{job="cart", {INST}}}', ""), instant=True, table=True),
                  desc="Prometheus' up per target with its target labels.",
                  rename={"Value": "up"}, mappings=UP_MAP, w=18, h=10),
        ])


def http(role_sel, by, legend, error_by=None):
    """Request rate, 4xx/5xx, error ratio and latency targets for one role."""
    sel = role_sel
    by_s = ", ".join(by)
    eby = ", ".join(error_by if error_by is not None else by)
    eby_clause = f" by ({eby})" if eby else ""
    elegend = "".join(f"{{{{{b}}}}} " for b in (error_by if error_by is not None else by))
    all_rate = f"sum{eby_clause} (rate(cart_http_requests_total{{{sel}}}{RI}))"

    def cls(c):
        # Keeps a zero series per group when that class never happened.
        fill = f"{all_rate} * 0" if eby else "on() vector(0)"
        return (f'sum{eby_clause} (rate(cart_http_requests_total{{{sel}, status=~"{c}.."}}{RI}))'
                f" or {fill}")

    rate = targets((f"sum by ({by_s}) (rate(cart_http_requests_total{{{sel}}}{RI}))", legend))
    errors = targets((cls(4), elegend + "4xx"), (cls(5), elegend + "5xx"))
    ratio = targets((f"({cls(5)}) / clamp_min({all_rate}, 1e-9)", elegend + "5xx ratio"))
    return rate, errors, ratio


def service_red():
    gw = f'role="gateway", {INST}'
    co = f'role=~"coordinator|coordinator_admin", {SVC}, {INST}'
    co_pub = f'role="coordinator", {SVC}, {INST}'
    no = f'role="node", {SVC}, {INST}'
    g_rate, g_err, g_ratio = http(gw, ["route"], "{{route}}", error_by=[])
    c_rate, c_err, c_ratio = http(co, ["service", "role"], "{{service}} {{role}}", error_by=["service"])
    n_rate, n_err, n_ratio = http(no, ["service", "node"], "{{service}} node {{node}}", error_by=["service"])
    return dashboard(
        "cart-service-red", "Cart / Service RED",
        "Rate, errors and duration of HTTP requests at the gateway, the coordinators and the nodes; cross-service calls and group-client retries.",
        [
            # Gateway
            timeseries("Gateway: request rate by route", g_rate, unit="reqps", w=8),
            timeseries("Gateway: errors by status class", g_err, unit="reqps", w=8),
            timeseries("Gateway: latency", quantiles(
                "cart_http_request_duration_seconds", gw, [], ""), unit="s", w=8),
            timeseries("Gateway: 5xx ratio", g_ratio, unit="percentunit", w=8),
            timeseries("Gateway: upstream failures (retried elsewhere)", targets((
                f"sum by (service, upstream, reason) (rate(cart_gateway_upstream_failures_total{{{SVC}, {INST}}}{RI})) or on() vector(0)",
                "{{service}} {{upstream}} {{reason}}")), unit="ops", w=8),
            timeseries("Gateway: upstream health changes", targets((
                f"sum by (service, upstream, state) (increase(cart_gateway_upstream_health_changes_total{{{SVC}, {INST}}}{RI})) or on() vector(0)",
                "{{service}} {{upstream}} {{state}}")), w=8),
            # Coordinators
            timeseries("Coordinators: request rate", c_rate, unit="reqps", w=8,
                       desc="Public API (role coordinator) and admin/internal port (coordinator_admin)."),
            timeseries("Coordinators: errors by status class", c_err, unit="reqps", w=8),
            timeseries("Coordinators: public API latency", quantiles(
                "cart_http_request_duration_seconds", co_pub, ["service"], "{{service}} "), unit="s", w=8),
            timeseries("Coordinators: 5xx ratio", c_ratio, unit="percentunit", w=8),
            timeseries("Coordinators: request rate by route", targets((
                f"sum by (service, route) (rate(cart_http_requests_total{{{co}}}{RI}))",
                "{{service}} {{route}}")), unit="reqps", w=16),
            # Nodes
            timeseries("Nodes: request rate", n_rate, unit="reqps", w=8,
                       desc="Raft RPCs and the internal API of every node."),
            timeseries("Nodes: errors by status class", n_err, unit="reqps", w=8),
            timeseries("Nodes: latency", quantiles(
                "cart_http_request_duration_seconds", no, ["service"], "{{service}} "), unit="s", w=8),
            timeseries("Nodes: 5xx ratio", n_ratio, unit="percentunit", w=8),
            timeseries("Nodes: request rate by route", targets((
                f"sum by (service, route) (rate(cart_http_requests_total{{{no}}}{RI}))",
                "{{service}} {{route}}")), unit="reqps", w=16),
            # Calls between services and into groups
            timeseries("Cross-service calls", targets((
                f"sum by (target, mode, result) (rate(cart_cross_service_calls_total{{{INST}}}{RI})) or on() vector(0)",
                "to {{target}} ({{mode}}) {{result}}")), unit="ops", w=8,
                desc="Calls of the order service (coordinators and nodes) to payment and stock."),
            timeseries("Cross-service call latency", quantiles(
                "cart_cross_service_duration_seconds", INST, ["target"], "to {{target}} ", fallback=True),
                unit="s", w=8),
            timeseries("Group-client retries", targets((
                f"sum by (service, target, reason) (rate(cart_group_client_retries_total{{{SVC}, {INST}}}{RI})) or on() vector(0)",
                "{{service}} to {{target}} {{reason}}")), unit="ops", w=8,
                desc="Attempts at a Raft group retried (not_leader, unreachable, ...)."),
        ])


def replication_consistency():
    csel = f'role="node", {SVC}'  # consistency series: node label = the replica concerned
    return dashboard(
        "cart-replication-consistency", "Cart / Replication and consistency",
        "Replication lag, Raft state, snapshots, consistency checks and repairs.",
        [
            timeseries("Replication lag (entries)", targets((
                f"max by (service, node) (cart_replication_lag_entries{{{SVC}}}) or on() vector(0)",
                "{{service}} node {{node}}")), desc="Entries the leader has that the follower lacks."),
            timeseries("Replication lag (seconds)", targets((
                f"max by (service, node) (cart_replication_lag_seconds{{{SVC}}}) or on() vector(0)",
                "{{service}} node {{node}}")), unit="s",
                desc="Now minus the append time of the oldest entry the follower lacks."),
            timeseries("Leader changes", targets((
                f"max by (service) (increase(cart_leader_changes_total{{{SVC}}}{RI}))", "{{service}}")), w=8),
            timeseries("Raft term", targets((
                f"max by (service, shard, node) (cart_raft_term{{{NODE}}})", "{{service}}/{{shard}} node {{node}}")),
                step=True, w=8),
            timeseries("Leader", targets((
                f"max by (service, shard, node) (cart_raft_is_leader{{{NODE}}})", "{{service}}/{{shard}} node {{node}}")),
                step=True, max_=1, mappings=LEADER_MAP, w=8),
            timeseries("Raft log indexes", targets(
                (f"max by (service, node) (cart_raft_last_log_index{{{NODE}}})", "{{service}} node {{node}} last log"),
                (f"max by (service, node) (cart_raft_committed_index{{{NODE}}})", "{{service}} node {{node}} committed"),
                (f"max by (service, node) (cart_raft_last_applied_index{{{NODE}}})", "{{service}} node {{node}} applied"),
            ), w=8),
            timeseries("Committed but not yet applied", targets((
                f"max by (service, node) (cart_raft_committed_index{{{NODE}}} - cart_raft_last_applied_index{{{NODE}}})",
                "{{service}} node {{node}}")), w=8),
            timeseries("Entries applied", targets((
                f"sum by (service, node) (rate(cart_raft_applied_entries_total{{{NODE}}}{RI}))",
                "{{service}} node {{node}}")), unit="ops", w=8),
            timeseries("Writes applied per shard", targets((
                f"max by (service, shard) (rate(cart_raft_applied_writes_total{{{NODE}}}{RI}))",
                "{{service}} shard {{shard}}")), unit="ops", w=8,
                desc="Client writes each shard's group applies (its furthest replica): a shard far above "
                     "the others of its service holds hot keys, which more shards do not spread."),
            timeseries("Snapshots", targets(
                (f"sum by (service, node) (increase(cart_raft_snapshots_built_total{{{NODE}}}{RI}))", "{{service}} node {{node}} built"),
                (f"sum by (service, node) (increase(cart_raft_snapshots_installed_total{{{NODE}}}{RI}))", "{{service}} node {{node}} installed"),
            ), w=8),
            timeseries("Raft RPC failures and split appends", targets(
                (f"sum by (service, node, rpc) (rate(cart_raft_rpc_failures_total{{{NODE}}}{RI}))",
                 "{{service}} node {{node}} {{rpc}} failed"),
                (f"sum by (service, node, reason) (rate(cart_raft_append_splits_total{{{NODE}}}{RI}))",
                 "{{service}} node {{node}} append split ({{reason}})"),
            ), unit="ops", w=8),
            timeseries("Writes queued on the leader and entries in flight", targets(
                (f"max by (service, node) (cart_raft_proposal_queue_writes{{{NODE}}})",
                 "{{service}} node {{node}} queued writes"),
                (f"max by (service, node) (cart_raft_proposals_in_flight{{{NODE}}})",
                 "{{service}} node {{node}} entries in flight"),
                (f"max by (service, node) (cart_raft_last_log_index{{{NODE}}} - cart_raft_committed_index{{{NODE}}})",
                 "{{service}} node {{node}} uncommitted"),
            ), w=8, desc="A queue that stays long is a leader that cannot keep up (429 beyond 10,000)."),
            timeseries("Write p99 on the leader", quantiles(
                "cart_raft_write_duration_seconds", NODE, ["service"], "{{service}} ", qs=(0.99,)),
                unit="s", w=8, desc="From joining the queue to the applied outcome; no line while the "
                                    "group took no write in the interval."),
            timeseries("Log fsync p99 by node", quantiles(
                "cart_raft_log_flush_duration_seconds", NODE, ["service", "node"], "{{service}} node {{node}} ",
                qs=(0.99,)),
                unit="s", w=8, desc="One replica far above the others is a slow disk."),
            timeseries("Writes per entry", targets((
                f"sum by (service) (rate(cart_raft_proposal_batch_writes_sum{{{NODE}}}{RI}))"
                f" / clamp_min(sum by (service) (rate(cart_raft_proposal_batch_writes_count{{{NODE}}}{RI})), 1e-9)",
                "{{service}}")), w=8, desc="Client writes the leader batched into one Raft entry."),
            timeseries("Raft log held in memory", targets((
                f"max by (service, node) (cart_raft_log_resident_bytes{{{NODE}}})",
                "{{service}} node {{node}}")), unit="bytes", w=8,
                desc="Encoded bytes of the newest log entries kept in memory (bounded by raft.resident_log_kib)."),
            timeseries("Raft log entries read back from disk", targets((
                f"sum by (service, node) (rate(cart_raft_log_disk_reads_total{{{NODE}}}{RI}))",
                "{{service}} node {{node}}")), unit="ops", w=8,
                desc="Entries no longer in memory, read from the log files for a follower behind or a replay."),
            timeseries("Duplicate writes and membership changes", targets(
                (f"sum by (service) (rate(cart_raft_duplicate_requests_total{{{NODE}}}{RI}))", "{{service}} duplicate writes /s"),
                (f"sum by (service, change, result) (increase(cart_raft_membership_changes_total{{{NODE}}}{RI}))", "{{service}} {{change}} {{result}}"),
            ), w=8),
            timeseries("Leader reads by how they were confirmed", targets((
                f"sum by (service, round) (rate(cart_raft_leader_reads_total{{{NODE}}}{RI}))",
                "{{service}} {{round}}")), unit="ops", w=8,
                desc="Linearizable reads at leaders (their own, followers' read indexes, paid-order "
                     "checks): lease (no round: a majority acknowledged the leader within the "
                     "election timeout), own or shared quorum round, failed."),
            timeseries("Votes refused", targets(
                (f"sum by (service, node) (increase(cart_raft_votes_held_total{{{NODE}}}{RI}))",
                 "{{service}} node {{node}} restart hold"),
                (f"sum by (service, node) (increase(cart_raft_votes_refused_total{{{NODE}}}{RI}))",
                 "{{service}} node {{node}} sticky leader"),
            ), w=8,
                desc="Vote requests refused by a node in its restart hold (it may count in its "
                     "leader's read lease) and by a leader a majority still acknowledges."),
            timeseries("Consistency checks by verdict", targets((
                f"sum by (service, verdict) (increase(cart_consistency_checks_total{{{NODE}}}{RI}))",
                "{{service}} {{verdict}}")), w=8),
            timeseries("Mismatching replicas by node", targets((
                f"sum by (service, node) (increase(cart_consistency_mismatches_total{{{csel}}}{RI})) or on() vector(0)",
                "{{service}} node {{node}}")), w=8,
                desc="Replicas a check found not matching the majority (node = the replica)."),
            timeseries("Buckets and keys repaired by node", targets(
                (f"sum by (service, node) (increase(cart_consistency_buckets_repaired_total{{{csel}}}{RI})) or on() vector(0)", "{{service}} node {{node}} buckets"),
                (f"sum by (service, node) (increase(cart_consistency_keys_repaired_total{{{csel}}}{RI})) or on() vector(0)", "{{service}} node {{node}} keys"),
            ), w=8),
            timeseries("Repairs by action", targets(
                (f"sum by (service, action) (increase(cart_consistency_repairs_total{{{csel}}}{RI})) or on() vector(0)", "{{service}} {{action}}"),
                (f"sum by (service) (increase(cart_consistency_rebuilds_total{{{csel}}}{RI}))", "{{service}} rebuilds"),
            ), w=8, desc="One per node a repair or rebuild operation handled: repaired, rebuilt, failed, none."),
            timeseries("Rows overwritten on each replica", targets((
                f"sum by (service, node) (increase(cart_consistency_rows_repaired_here_total{{{NODE}}}{RI}))",
                "{{service}} node {{node}}")), w=8),
            timeseries("Repair duration", quantiles(
                "cart_consistency_repair_duration_seconds", csel, ["service"], "{{service}} ", fallback=True),
                unit="s", w=8, desc="NaN until a repair ran in the interval."),
            timeseries("Digest duration", quantiles(
                "cart_consistency_digest_duration_seconds", csel, ["service"], "{{service}} ", fallback=True),
                unit="s", w=8, desc="Time to digest a replica for a check; NaN until a check ran in the interval."),
            stat("Age of last clean check", targets((
                f"max by (service) (cart_consistency_last_clean_check_age_seconds{{{SVC}}})"
                f" or max by (service) (cart_group_members{{{SVC}}}) * 0 - 1", "{{service}}")),
                unit="s", w=8,
                desc="Seconds since the group last passed a consistency check; 'never' before its first clean check.",
                mappings=value_map({"-1": ("never", "orange")}),
                thresholds=steps(("green", None), ("orange", 900), ("red", 3600))),
            *storage_panels(),
        ])


def storage_panels():
    """The nodes' storage (embedded or MongoDB), from each node's own metrics."""
    return section([
        state_timeline("Storage: healthy", targets((
            f"max by (service, node) (cart_storage_healthy{{{NODE}}})",
            "{{service}} node {{node}}")),
            desc="1 while the node's storage answers; 0 while its operations fail "
                 "(the node then answers writes 503 and is reported down with reason storage). "
                 "Alert CartStorageFailing after 30s.",
            mappings=STORAGE_MAP, thresholds=steps(("red", None), ("green", 1))),
        timeseries("Storage: errors by op", targets((
            f"sum by (service, node, op) (rate(cart_storage_errors_total{{{NODE}}}{RI}))",
            "{{service}} node {{node}} {{op}}")), unit="ops",
            desc="Failed storage operations (read, commit, recover, freeze, replace, ping); "
                 "failed commits are retried until they succeed."),
        timeseries("Storage: operation p99 by op", quantiles(
            "cart_storage_operation_duration_seconds", NODE, ["op"], "{{op}} ", qs=(0.99,)),
            unit="s",
            desc="MongoDB backend only (the embedded store reports no durations); no line while no "
                 "operation of that kind ran in the interval."),
        timeseries("Storage: stale writes skipped", targets((
            f"sum by (service, node) (rate(cart_storage_stale_writes_skipped_total{{{NODE}}}{RI}))",
            "{{service}} node {{node}}")), unit="ops",
            desc="MongoDB writes skipped because the document already carries a later log index "
                 "(a retried or replayed batch)."),
    ])


def transactions():
    o = f'role="node", {INST}'  # order nodes drive the sagas
    ck = f"cart_checkouts_total{{{INST}}}"
    return dashboard(
        "cart-transactions", "Cart / Transactions",
        "Checkouts as answered by the order coordinators and the sagas the order leader drives.",
        [
            timeseries("Checkouts by outcome", targets((
                f"sum by (outcome) (rate({ck}{RI}))", "{{outcome}}")),
                unit="ops", stack=True, w=12),
            stat("Checkout failure ratio", targets((
                f'(sum(rate(cart_checkouts_total{{{INST}, outcome="failed"}}{RI})) or on() vector(0))'
                f" / clamp_min(sum(rate({ck}{RI})), 1e-9)", "failed")),
                unit="percentunit", w=6, desc="Checkouts answered 'failed' over all checkouts answered.",
                thresholds=steps(("green", None), ("orange", 0.01), ("red", 0.05))),
            stat("Sagas in flight", targets((
                f"sum(cart_sagas_in_flight{{{o}}}) or on() vector(0)", "in flight")), w=6),
            timeseries("Sagas by outcome and reason", targets((
                f"sum by (outcome, reason) (rate(cart_sagas_total{{{o}}}{RI})) or on() vector(0)",
                "{{outcome}} {{reason}}")), unit="ops", stack=True, w=12),
            timeseries("Saga duration", quantiles(
                "cart_saga_duration_seconds", o, ["outcome"], "{{outcome}} ", fallback=True),
                unit="s", w=12),
            timeseries("Sagas in flight by node", targets((
                f"sum by (service, node) (cart_sagas_in_flight{{{o}}}) or on() vector(0)",
                "{{service}} node {{node}}")), w=8),
            timeseries("Oldest saga in flight", targets((
                f"max by (service, node) (cart_saga_oldest_in_flight_seconds{{{o}}}) or on() vector(0)",
                "{{service}} node {{node}}")), unit="s", w=8,
                desc="Age of the oldest saga the leader drives, as of its last sweep; one that keeps "
                     "growing is a checkout stuck on a step."),
            timeseries("Sagas recovered after a leader change", targets(
                (f"sum by (service, node) (increase(cart_sagas_recovered_total{{{o}}}{RI})) or on() vector(0)",
                 "{{service}} node {{node}} took over"),
                (f'max(increase(cart_leader_changes_total{{service="order"}}{RI})) or on() vector(0)',
                 "order leader changes"),
            ), w=8, desc="Open checkouts a new order leader took over, beside the order leader changes "
                         "(the console's Transactions view lists each recovery from the events)."),
            timeseries("Compensations by step", targets((
                f"sum by (step) (increase(cart_saga_compensations_total{{{o}}}{RI})) or on() vector(0)",
                "{{step}}")), w=8),
            timeseries("Saga step retries", targets((
                f"sum by (step) (rate(cart_saga_step_retries_total{{{o}}}{RI})) or on() vector(0)",
                "{{step}}")), unit="ops", w=8),
            timeseries("Finished-transaction garbage collection", targets((
                f"sum by (result) (increase(cart_saga_forget_runs_total{{{o}}}{RI})) or on() vector(0)",
                "{{result}}")), w=8),
            timeseries("Saga cross-service calls", targets((
                f"sum by (target, result) (rate(cart_cross_service_calls_total{{{INST}}}{RI})) or on() vector(0)",
                "to {{target}} {{result}}")), unit="ops", w=8),
            timeseries("Commits by how their wait for company ended", targets((
                f"sum by (outcome) (rate(cart_raft_lazy_write_wait_seconds_count{{{o}}}{RI})) or on() vector(0)",
                "{{outcome}}")), unit="ops", stack=True, w=8,
                desc="A checkout answered paid has its commit wait (raft.lazy_write_ms) to share the next "
                     "write's entry: joined it, went alone, or was hurried by a read of its order."),
            timeseries("Order reads waiting for a checkout's decision", quantiles(
                "cart_saga_read_wait_seconds", o, ["outcome"], "{{outcome}} ", fallback=True),
                unit="s", w=8,
                desc="A read of an order whose checkout is answered but not yet committed waits for the "
                     "commit (at most 3 s; expired: read as it stands)."),
            timeseries("Hurried reads' wait for the commit", quantiles(
                "cart_raft_hurry_wait_seconds", o, [], "", fallback=True),
                unit="s", w=8,
                desc="At the order leader: a read that hurried the waiting commit waits until it is "
                     "written (a follower's read index then covers it)."),
        ])


def main():
    boards = {
        "cluster-overview.json": cluster_overview(),
        "service-red.json": service_red(),
        "replication-consistency.json": replication_consistency(),
        "transactions.json": transactions(),
    }
    for name, board in boards.items():
        path = os.path.join(OUT, name)
        with open(path, "w") as f:
            json.dump(board, f, indent=2)
            f.write("\n")
        print(f"wrote {os.path.relpath(path)} ({len(board['panels'])} panels)")


if __name__ == "__main__":
    main()
