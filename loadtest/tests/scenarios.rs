//! Every scenario, run briefly by the real tool against a real local
//! cluster; the reports and the comparison files are produced and parse.

mod common;

use cart_loadtest::compare;
use cart_loadtest::stats::ALL;
use common::{cart_bin, cart_load, cluster};

#[test]
fn stress_with_a_follower_killed_and_restarted_reports_checkouts_faults_memory_and_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stress.json");
    let bin = cart_bin();
    #[rustfmt::skip]
    let r = cart_load(
        &[
            "stress", "--temp-cluster", "--bin", bin.to_str().unwrap(),
            "--users", "10", "--ramp", "20", "--think-ms", "50", "--duration", "5",
            // Few orders, so that some get paid and checked out again.
            "--items", "100", "--customers", "100", "--orders", "60",
            "--kill", "stock-follower@1.5", "--restart-after", "1",
        ],
        &out,
    );
    assert_eq!(r.scenario, "stress");
    assert_eq!(r.settings["users"], 10);
    assert!(r.machine.cores > 0 && r.machine.mem_total_mib > 0);
    let first = &r.ops["checkout_first"];
    let repeat = &r.ops["checkout_repeat"];
    assert!(first.ok > 0 && repeat.ok > 0, "{first:?} {repeat:?}");
    let all = r.all();
    assert_eq!(all.count, first.count + repeat.count);
    let l = all.latency;
    assert!(l.p50_ms > 0.0 && l.p50_ms <= l.p90_ms && l.p90_ms <= l.p99_ms);
    assert!(l.p99_ms <= l.p999_ms && l.p999_ms <= l.max_ms);
    // A point per second of the load, adding up to the whole run.
    let series = &r.series[ALL];
    assert_eq!(series.len(), r.outcome.load_s.ceil() as usize);
    assert_eq!(series.iter().map(|p| p.count).sum::<u64>(), all.count);
    let steady = r.outcome.steady.as_ref().expect("a steady state");
    // 10 users thinking 50 ms offer 200 requests/s.
    assert_eq!(steady.offered_rps, 200.0);
    // The fault is marked where it happened.
    let kill = r.events.iter().find(|e| e.kind == "kill").expect("a kill");
    assert!(kill.detail.contains("stock-node"), "{kill:?}");
    assert!((1.5..2.5).contains(&kill.t_s), "{kill:?}");
    let restart = r
        .events
        .iter()
        .find(|e| e.kind == "restart")
        .expect("a restart");
    assert!(restart.t_s >= kill.t_s + 1.0, "{restart:?}");
    // Memory of all 16 processes (3 × (3 nodes + 2 coordinators) + gateway).
    assert_eq!(r.memory.len(), 16, "{:?}", r.memory);
    assert!(r.memory.iter().all(|m| m.max_kib > 0));
    // CPU of the same 16 processes over the load; the killed one had two
    // processes (pids), both counted.
    let cpu = r.cpu.as_ref().expect("a cpu section");
    let cpu_roles: Vec<&str> = cpu.processes.iter().map(|p| p.role.as_str()).collect();
    let memory_roles: Vec<&str> = r.memory.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(cpu_roles, memory_roles);
    let killed = kill.detail.split_whitespace().nth(1).expect("a role");
    let killed = cpu.processes.iter().find(|p| p.role == killed);
    assert_eq!(killed.map(|p| p.pids), Some(2), "{killed:?}");
    let kinds: Vec<&str> = cpu.kinds.iter().map(|k| k.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "gateway",
            "coordinators",
            "order nodes",
            "payment nodes",
            "stock nodes"
        ]
    );
    let t = &cpu.total;
    assert!(t.cpu_s > 0.0 && t.cores > 0.0, "{t:?}");
    let kinds_s: f64 = cpu.kinds.iter().map(|k| k.cpu_s).sum();
    assert!((kinds_s - t.cpu_s).abs() < 1e-6, "{kinds_s} {t:?}");
    assert!(t.answered > 0 && t.answered <= all.count, "{t:?}");
    let per_answer = t.cpu_ms_per_answer.expect("CPU per answer");
    assert!(per_answer.is_finite() && per_answer > 0.0, "{t:?}");
    assert_eq!(t.first_time_ok, Some(first.ok));
    assert!(t.cpu_ms_per_first_time_ok.is_some_and(|v| v >= per_answer));

    // What the nodes did, read from their own counters: every service's
    // nodes wrote entries, synced their logs and served requests (the
    // restarted follower counted from its restart).
    let work = r.work.as_ref().expect("a work section");
    let services: Vec<&str> = work.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(services, ["order", "payment", "stock"]);
    for s in &work.services {
        let c = &s.counts;
        assert!(
            c.entries > 0.0 && c.log_syncs > 0.0 && c.requests > 0.0,
            "{s:?}"
        );
    }
    let syncs: f64 = work.services.iter().map(|s| s.counts.log_syncs).sum();
    assert_eq!(work.total.counts.log_syncs, syncs);
    let per = work
        .total
        .per_first_time_ok
        .expect("per first-time checkout");
    assert!(per.log_syncs > 0.0 && per.log_syncs.is_finite(), "{per:?}");
}

#[test]
fn mixed_and_open_loop_against_a_gateway_url_compare_into_a_table_and_svg_plots() {
    let cluster = cluster();
    let gateway = cluster.gateway_url();
    let dir = tempfile::tempdir().unwrap();
    let mixed_out = dir.path().join("mixed.json");
    #[rustfmt::skip]
    let mixed = cart_load(
        &[
            "mixed", "--gateway", &gateway, "--label", "mixed",
            "--users", "8", "--ramp", "16", "--think-ms", "50", "--duration", "4", "--base", "50",
        ],
        &mixed_out,
    );
    for op in [
        "create_user",
        "create_item",
        "create_order",
        "add_item",
        "checkout",
    ] {
        let s = mixed
            .ops
            .get(op)
            .unwrap_or_else(|| panic!("no {op} in {:?}", mixed.ops.keys()));
        assert!(s.ok > 0, "{op}: {s:?}");
    }
    // Nothing started by the tool: no processes to measure.
    assert!(mixed.memory.is_empty() && mixed.cpu.is_none() && mixed.cluster.is_none());

    let open_out = dir.path().join("open.json");
    #[rustfmt::skip]
    let open = cart_load(
        &[
            "open-loop", "--gateway", &gateway, "--label", "open loop",
            "--rates", "10,20", "--step-secs", "2", "--keep-going",
            "--items", "100", "--customers", "100", "--orders", "200",
        ],
        &open_out,
    );
    assert_eq!(open.outcome.steps.len(), 2);
    assert_eq!(open.outcome.steps[1].rate, 20.0);
    // Every arrival took a fresh order: no repeats.
    assert!(open.ops["checkout_first"].count > 0);
    assert!(!open.ops.contains_key("checkout_repeat"));
    drop(cluster);

    let plots = dir.path().join("compare");
    let written = compare::run(&[mixed_out, open_out], &plots).unwrap();
    assert_eq!(written.len(), 3);
    let table = std::fs::read_to_string(plots.join(compare::TABLE)).unwrap();
    let rows: Vec<&str> = table
        .lines()
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[0].starts_with("| mixed | mixed | 8 |"), "{table}");
    assert!(rows[1].starts_with("| open loop | open-loop |"), "{table}");
    for plot in [compare::LATENCY_PLOT, compare::THROUGHPUT_PLOT] {
        let svg = std::fs::read_to_string(plots.join(plot)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{plot}"
        );
        // A polyline per percentile or rate, in each of the two panels.
        assert!(svg.matches("<polyline").count() >= 6, "{plot}");
        assert!(svg.contains("mixed") && svg.contains("open loop"), "{plot}");
    }
}

#[test]
fn a_bank_run_on_test_hosts_with_a_network_fault_checks_out_and_marks_the_fault() {
    use cart_cluster::harness::netns::TestNet;
    if let Some(tool) = TestNet::missing_tool() {
        cart_cluster::harness::missing::<()>(tool, cart_cluster::harness::INSTALL_TOOLS);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bank.json");
    let history = dir.path().join("history.json");
    let bin = cart_bin();
    #[rustfmt::skip]
    let r = cart_load(
        &[
            "bank", "--temp-cluster", "--netns", "--bin", bin.to_str().unwrap(),
            "--duration", "8", "--history", history.to_str().unwrap(),
            "--fault", "isolate:stock-leader@2+3", "--fault", "loss30:payment-leader,payment-follower@5",
            "--fault", "delay40~10:order-leader,order-follower@6",
        ],
        &out,
    );
    let fault = r
        .events
        .iter()
        .find(|e| e.kind == "fault")
        .expect("a fault");
    assert!(fault.detail.starts_with("isolate stock-node-"), "{fault:?}");
    assert!((2.0..3.0).contains(&fault.t_s), "{fault:?}");
    let faults: Vec<&str> = r
        .events
        .iter()
        .filter(|e| e.kind == "fault")
        .map(|e| e.detail.as_str())
        .collect();
    assert_eq!(faults.len(), 3, "{faults:?}");
    assert!(
        faults[1].starts_with("30% loss between payment-node-"),
        "{faults:?}"
    );
    assert!(
        faults[2].starts_with("40 ms ± 10 ms delay between order-node-"),
        "{faults:?}"
    );
    let heals: Vec<f64> = r
        .events
        .iter()
        .filter(|e| e.kind == "heal")
        .map(|e| e.t_s)
        .collect();
    // One after 3 s, one at the end of the load for the faults without a
    // duration.
    assert_eq!(heals.len(), 2, "{:?}", r.events);
    assert!((5.0..6.5).contains(&heals[0]), "{heals:?}");
    assert!(heals[1] >= 8.0, "{heals:?}");
    // The cluster served on the hosts' own addresses, through the faults,
    // and the history checks passed.
    assert!(r.gateway.starts_with("http://198.18."), "{}", r.gateway);
    let h = r.outcome.history.as_ref().expect("a history verdict");
    assert!(h.pass, "{h:?}");
    assert!(h.operations > 50 && h.paid > 0, "{h:?}");
    let recorded: Vec<cart_checker::Op> =
        serde_json::from_slice(&std::fs::read(&history).unwrap()).unwrap();
    assert_eq!(recorded.len(), h.operations);
    assert_eq!(r.memory.len(), 16, "{:?}", r.memory);
}
