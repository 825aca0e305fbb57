//! Rendering with ratatui's `TestBackend`, from fixed fixtures: every view of
//! a healthy cluster, a down node, a mismatch, a repair and an unreachable
//! coordinator, at 80×24 and on a wide terminal. Whole screens are compared
//! with text snapshots under `tests/snapshots/` (a missing one fails;
//! `UPDATE_SNAPSHOTS=1` writes them); colours are checked cell by cell.

mod fixtures;

use std::path::PathBuf;

use cart_admin_tui::app::{App, Tab};
use cart_admin_tui::keys::KEYS;
use cart_admin_tui::views;
use cart_admin_tui::views::chart;
use cart_common::admin::{ClusterView, ServiceView, ShardView};
use cart_common::shard::Shard;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use fixtures::*;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};
use ratatui::Terminal;

const SMALL: (u16, u16) = (80, 24);
const WIDE: (u16, u16) = (160, 48);

fn draw(app: &App, (w, h): (u16, u16)) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    terminal.draw(|f| views::render(f, app)).unwrap();
    terminal.backend().buffer().clone()
}

fn lines(buffer: &Buffer) -> Vec<String> {
    let area = buffer.area;
    (0..area.height)
        .map(|y| {
            let line: String = (0..area.width).map(|x| buffer[(x, y)].symbol()).collect();
            line.trim_end().to_string()
        })
        .collect()
}

fn text(buffer: &Buffer) -> String {
    lines(buffer).join("\n")
}

/// The position of the first cell of `needle` on screen.
fn find(buffer: &Buffer, needle: &str) -> (u16, u16) {
    for (y, line) in lines(buffer).iter().enumerate() {
        // Columns are cells; wide symbols aside, one char is one cell.
        let chars: Vec<char> = line.chars().collect();
        let n: Vec<char> = needle.chars().collect();
        if let Some(x) = chars.windows(n.len()).position(|w| w == n.as_slice()) {
            return (x as u16, y as u16);
        }
    }
    panic!("{needle:?} not on screen:\n{}", text(buffer));
}

fn find_on_line(buffer: &Buffer, line_with: &str, needle: &str) -> (u16, u16) {
    let y = find(buffer, line_with).1;
    let line: Vec<char> = lines(buffer)[y as usize].chars().collect();
    let n: Vec<char> = needle.chars().collect();
    let x = line
        .windows(n.len())
        .position(|w| w == n.as_slice())
        .unwrap_or_else(|| panic!("{needle:?} not on the line of {line_with:?}"));
    (x as u16, y)
}

fn fg(buffer: &Buffer, at: (u16, u16)) -> Color {
    buffer[at].fg
}

/// Compares the screen with `tests/snapshots/{name}.txt`, failing when it
/// differs or does not exist; writes it instead only when asked to
/// (`UPDATE_SNAPSHOTS=1`).
fn assert_snapshot(name: &str, buffer: &Buffer) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    let actual = format!("{}\n", text(buffer));
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "missing snapshot {} ({e}): write it with \
             UPDATE_SNAPSHOTS=1 cargo nextest run -p cart-admin-tui --test render, \
             check it and commit it\n--- actual\n{actual}",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "screen differs from {} (UPDATE_SNAPSHOTS=1 rewrites it):\n\
         --- expected\n{expected}--- actual\n{actual}",
        path.display()
    );
}

fn on(mut app: App, tab: Tab) -> App {
    app.tab = tab;
    app
}

fn press(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

#[test]
fn healthy_cluster_every_view_at_80x24() {
    for tab in Tab::ALL {
        let name = format!("healthy_{}_80x24", tab.title().to_lowercase());
        assert_snapshot(&name, &draw(&on(busy(), tab), SMALL));
    }
}

#[test]
fn healthy_cluster_every_view_wide() {
    for tab in Tab::ALL {
        let name = format!("healthy_{}_160x48", tab.title().to_lowercase());
        assert_snapshot(&name, &draw(&on(busy(), tab), WIDE));
    }
}

/// A healthy cluster with two minutes of traffic.
fn busy() -> App {
    with_traffic(app(healthy()))
}

#[test]
fn healthy_cluster_shows_every_node_up_and_every_leader() {
    let screen = draw(&app(healthy()), SMALL);
    let summary = find(&screen, "nodes up 9/9");
    assert_eq!(fg(&screen, summary), Color::Green);
    find(&screen, "leaders 3/3");
    find(&screen, "coordinators 6/6 reachable");
    // Every service's section is on an 80×24 screen.
    for s in SERVICES {
        find(&screen, &format!("{s:<8}leader 1 · term 3 · 3/3 up"));
    }
    let up = find_on_line(&screen, "node 2", "up");
    assert_eq!(fg(&screen, up), Color::Green);
    find(&screen, "◂console");
}

/// One service's section of a fixture view, to change.
fn service_mut<'a>(view: &'a mut ClusterView, name: &str) -> &'a mut ServiceView {
    view.services
        .iter_mut()
        .find(|s| s.service == name)
        .expect("a service of the fixture")
}

#[test]
fn a_sharded_service_shows_each_shards_leader_and_what_each_node_leads() {
    let mut view = healthy();
    let order = service_mut(&mut view, "order");
    order.shards = (0..3)
        .map(|s| ShardView {
            shard: Shard(s),
            leader: Some(u64::from(s) + 1),
            term: Some(3),
            last_check: None,
        })
        .collect();
    order.shards[2].leader = None;
    for node in &mut order.nodes {
        node.leads = match node.id {
            1 => vec![Shard(0)],
            2 => vec![Shard(1)],
            _ => vec![],
        };
    }
    let screen = draw(&app(view), SMALL);
    // Every shard's group counts: one of the 5 groups has no leader.
    find(&screen, "leaders 4/5");
    find(&screen, "order   3 shards, leaders 0→1 1→2 2→NONE · 3/3 up");
    let missing = find(&screen, "2→NONE");
    assert_eq!(fg(&screen, missing), Color::Red);
    find_on_line(&screen, "node 2", "Leader 1");
    find_on_line(&screen, "node 3", "Follower");
    // Unsharded services keep their one leader and term.
    find(
        &screen,
        &format!("{:<8}leader 1 · term 3 · 3/3 up", "payment"),
    );
}

#[test]
fn a_sharded_services_consistency_shows_its_worst_shard_and_every_shards_verdict() {
    let mut view = healthy();
    let order = service_mut(&mut view, "order");
    let mut bad = mismatch_check("order");
    bad.shard = Shard(1);
    order.shards = (0..3)
        .map(|s| ShardView {
            shard: Shard(s),
            leader: Some(u64::from(s) + 1),
            term: Some(3),
            last_check: match s {
                0 => Some(clean_check("order")),
                1 => Some(bad.clone()),
                _ => None,
            },
        })
        .collect();
    order.last_check = Some(bad);
    let screen = draw(&on(app(view), Tab::Consistency), WIDE);
    let verdicts = find(&screen, "shard 1 of 3: 0:clean 1:mismatch 2:none");
    let mismatch = find_on_line(&screen, "shard 1 of 3", "1:mismatch");
    assert_eq!(fg(&screen, mismatch), Color::White, "{verdicts:?}");
    find_on_line(&screen, "shard 1 of 3", "MISMATCH");
}

#[test]
fn a_down_node_is_red_with_its_lag_in_every_size() {
    let app = app(down_node());
    for size in [SMALL, WIDE] {
        let screen = draw(&app, size);
        let summary = find(&screen, "nodes up 8/9");
        assert_eq!(fg(&screen, summary), Color::Red);
        find(&screen, "stock   leader 1 · term 3 · 2/3 up");
        // Stock is the last section: find node 3's row below its title.
        let stock_y = find(&screen, "stock   leader").1;
        let row = lines(&screen)
            .iter()
            .enumerate()
            .skip(stock_y as usize)
            .find(|(_, l)| l.contains("node 3"))
            .map(|(y, _)| y as u16)
            .unwrap();
        let line = &lines(&screen)[row as usize];
        assert!(
            line.contains("DOWN") && line.contains("44") && line.contains("12.4s"),
            "{line}"
        );
        let x = line.find("DOWN").unwrap() as u16;
        assert_eq!(fg(&screen, (x, row)), Color::Red);
        assert!(screen[(x, row)].modifier.contains(Modifier::BOLD));
        let unreachable = find(&screen, "unreachable");
        assert_eq!(fg(&screen, unreachable), Color::Red);
    }
    assert_snapshot("down_node_cluster_80x24", &draw(&app, SMALL));
    assert!(
        text(&draw(&app, WIDE)).contains("DOWN (probe)"),
        "the wide view says why"
    );
}

#[test]
fn a_down_node_shows_in_the_events_newest_first() {
    let app = on(app(down_node()), Tab::Events);
    let screen = draw(&app, SMALL);
    let first = find(&screen, "node_down");
    let later = find(&screen, "caught_up");
    assert!(first.1 < later.1, "newest first");
    assert_eq!(fg(&screen, first), Color::Red);
    find(&screen, "2s     stock    node_down");
    assert_snapshot("down_node_events_80x24", &screen);
}

#[test]
fn a_mismatch_is_highlighted_in_the_consistency_view() {
    let app = on(app(mismatch()), Tab::Consistency);
    for size in [SMALL, WIDE] {
        let screen = draw(&app, size);
        let verdict = find(&screen, " MISMATCH ");
        assert_eq!(screen[verdict].bg, Color::Red);
        // The bad replica's row: its own short root, the bucket count, red.
        let (x, y) = find_on_line(&screen, "deadbeef", "mismatch");
        assert_eq!(fg(&screen, (x, y)), Color::Red);
        let row = &lines(&screen)[y as usize];
        assert!(row.contains("node 2") && row.contains(" 1 "), "{row}");
        // The majority's replicas match, with the majority's root.
        let ok = find_on_line(&screen, "node 1", "match");
        assert_eq!(fg(&screen, ok), Color::Green);
        find(&screen, "majority 9f86d081");
    }
    assert!(
        text(&draw(&app, WIDE)).contains("40213"),
        "wide view lists the buckets"
    );
    assert_snapshot("mismatch_consistency_80x24", &draw(&app, SMALL));
}

#[test]
fn a_repair_shows_keys_repaired_and_the_recheck() {
    let app = on(app(repaired()), Tab::Consistency);
    let screen = draw(&app, SMALL);
    let line = find(
        &screen,
        "repair: node 2 repaired (1 key in 1 bucket); recheck clean · took 37ms",
    );
    let ok = find_on_line(&screen, "repair: node 2", "node 2 repaired");
    assert_eq!(fg(&screen, ok), Color::Green);
    let row = find_on_line(&screen, "deadbeef", "1 key");
    assert_eq!(
        row.1 + 3,
        line.1 + 1,
        "the repair line follows the replicas"
    );
    assert_snapshot("repaired_consistency_80x24", &screen);
}

#[test]
fn an_unreachable_coordinator_is_said_in_every_view_and_the_data_is_marked_stale() {
    let app = unreachable();
    for tab in Tab::ALL {
        for size in [SMALL, WIDE] {
            let screen = draw(&on(unreachable(), tab), size);
            let at = find(&screen, "coordinator unreachable · data 12s old");
            assert_eq!(screen[at].bg, Color::Red, "{tab:?}");
            assert_eq!(at.1, size.1 - 2, "on the status line");
        }
    }
    let screen = draw(&app, SMALL);
    find(&screen, "· STALE");
    find(&screen, "nodes up 9/9");
    assert_snapshot("unreachable_cluster_80x24", &screen);
}

#[test]
fn before_any_view_an_unreachable_coordinator_lists_what_was_tried() {
    let mut app = App::new(cart_admin_tui::app::Access::ReadWrite, VIA, NOW);
    let screen = draw(&app, SMALL);
    find(&screen, "waiting for the cluster view from 127.0.0.1:8101");
    find(&screen, "connecting to 127.0.0.1:8101");
    app.on_refresh(cart_admin_tui::app::Refresh {
        at_ms: NOW,
        failed: vec![(VIA.into(), "connection refused or no route".into())],
        answer: None,
    });
    for tab in Tab::ALL {
        let screen = draw(on_ref(&mut app, tab), SMALL);
        find(&screen, "coordinator unreachable");
    }
    app.tab = Tab::Cluster;
    let screen = draw(&app, SMALL);
    find(&screen, "coordinator unreachable; tried:");
    find(&screen, "  127.0.0.1:8101: connection refused or no route");
}

fn on_ref(app: &mut App, tab: Tab) -> &App {
    app.tab = tab;
    app
}

/// The row of the first line under `below` that holds `label`.
fn row_below(screen: &Buffer, below: &str, label: &str) -> u16 {
    let y = find(screen, below).1;
    lines(screen)
        .iter()
        .enumerate()
        .skip(y as usize)
        .find(|(_, l)| l.contains(label))
        .map(|(i, _)| i as u16)
        .unwrap_or_else(|| panic!("no {label:?} under {below:?}:\n{}", text(screen)))
}

/// The colour of the first bar drawn on row `y` right of the label that
/// starts at `x` (a wide screen has two charts side by side).
fn first_bar_from(screen: &Buffer, x: u16, y: u16) -> Option<Color> {
    (x + chart::LABEL..screen.area.width)
        .find(|x| !matches!(screen[(*x, y)].symbol(), " " | "m" | "a" | "x"))
        .map(|x| screen[(x, y)].fg)
}

fn first_bar(screen: &Buffer, y: u16) -> Option<Color> {
    first_bar_from(screen, 0, y)
}

#[test]
fn traffic_shows_the_public_api_beside_each_groups_writes_and_reads() {
    let app = on(with_traffic(app(healthy())), Tab::Traffic);
    for size in [SMALL, WIDE] {
        let screen = draw(&app, size);
        // Every service is on a wide screen; the first at least on a small one.
        let shown: &[&str] = if size == WIDE {
            &SERVICES
        } else {
            &SERVICES[..1]
        };
        for s in shown {
            find(&screen, &format!("{s:<8}last "));
        }
        find(&screen, "entries 25.0/s · 4.8 writes/entry · applied 119/s");
        find(&screen, "public req     39.0/s");
        find(&screen, "public p99     5.0 ms");
        find(&screen, "writes         119/s");
        find(&screen, "reads          34.0/s");
        find(&screen, "write p99      10.0 ms");
        // Every sparkline carries its scale.
        find_on_line(&screen, "public req     39.0/s", "max 39.0");
        find_on_line(&screen, "writes         119/s", "max 119");
        // The group's writes are drawn in green.
        let y = row_below(&screen, "order   last", "writes   ");
        let (x, _) = find_on_line(&screen, "writes   ", "writes   ");
        assert_eq!(first_bar_from(&screen, x - 2, y), Some(Color::Green));
    }
    // The stock error burst draws red bars on stock's errors line; the
    // selection scrolls a small screen down to it.
    let mut app = app;
    app.selection = Some(cart_admin_tui::app::Selection {
        service: "stock".into(),
        node: None,
    });
    let screen = draw(&app, SMALL);
    let errors = row_below(&screen, "stock   last", "public errors");
    assert_eq!(
        first_bar(&screen, errors),
        Some(Color::Red),
        "{}",
        text(&screen)
    );
}

#[test]
fn traffic_without_samples_says_so() {
    let app = on(app(healthy()), Tab::Traffic);
    let screen = draw(&app, SMALL);
    find(&screen, "order   no samples yet · no node metrics yet");
    find(&screen, "public req     -");
    find(&screen, "writes         -");
}

#[test]
fn transactions_show_checkouts_by_outcome_sagas_and_recoveries() {
    let busy = on(
        with_traffic(app(with_saga_recovery(healthy()))),
        Tab::Transactions,
    );
    for (size, name) in [(SMALL, "transactions_80x24"), (WIDE, "transactions_160x48")] {
        let screen = draw(&busy, size);
        find(
            &screen,
            "checkouts 25.0/s · paid 92% · refused 2.0/s · failed 0/s",
        );
        find(
            &screen,
            "sagas in flight 2, oldest 0.04 s · compensations 0.50/s",
        );
        find_on_line(&screen, "paid           23.0/s", "max 23.0");
        find(&screen, "no stock       2.0/s");
        find(
            &screen,
            "sagas recovered after leader changes · 1 recoveries",
        );
        let (_, y) = find(
            &screen,
            "node 2 took over 3 open checkout(s) as leader of term 4",
        );
        let kind = find_on_line(&screen, "node 2 took over", "saga_recovery");
        assert_eq!(kind.1, y);
        assert_eq!(fg(&screen, kind), Color::Yellow);
        let paid = row_below(&screen, "checkouts answered", "paid   ");
        assert_eq!(first_bar(&screen, paid), Some(Color::Green));
        assert_snapshot(name, &screen);
    }
    // Without traffic or events it says what it lacks.
    let screen = draw(&on(app(healthy()), Tab::Transactions), SMALL);
    find(&screen, "checkouts 0/s · refused 0/s · failed 0/s");
    find(&screen, "sagas in flight -, oldest -");
    find(&screen, "no order leader change in the events");
}

#[test]
fn the_cluster_view_says_which_replica_makes_a_group_slow() {
    let screen = draw(&with_traffic(app(healthy())), WIDE);
    let load = "load  queue 3 · in flight 1 · uncommitted 1 · ok";
    let ok = find_on_line(&screen, load, "ok");
    assert_eq!(fg(&screen, ok), Color::Green);
    find_on_line(&screen, "  node 2", "1.7 ms");

    let slow = with_slow_group(app(healthy()));
    for size in [SMALL, WIDE] {
        let screen = draw(&slow, size);
        let busy = find(&screen, "leader 1 overloaded (4000 writes queued)");
        assert_eq!(fg(&screen, busy), Color::Yellow);
    }
    let screen = draw(&slow, WIDE);
    find(&screen, "slow disk on node 2 (fsync p99 85 ms)");
    let stock = find(&screen, "stock   leader").1;
    let node2 = row_below(&screen, "stock   leader", "  node 2");
    assert!(node2 > stock);
    assert!(lines(&screen)[node2 as usize].contains("85.0 ms"));
    assert_snapshot("slow_group_cluster_160x48", &screen);

    // A follower seconds behind is named too.
    let mut view = healthy();
    view.services[1].nodes[2].lag_seconds = Some(4.5);
    let screen = draw(&with_traffic(app(view)), WIDE);
    find(&screen, "node 3 falls behind (4.5 s)");
    // Before any node metrics, the line says so.
    let screen = draw(&app(healthy()), WIDE);
    find(&screen, "load  no metrics from the leader yet");
    // A narrow screen has the verdict in the title line.
    let screen = draw(&with_traffic(app(healthy())), SMALL);
    let ok = find_on_line(&screen, "order   leader 1 · term 3 · 3/3 up · ok", "ok");
    assert_eq!(fg(&screen, ok), Color::Green);
}

#[test]
fn help_lists_every_key_and_fits_80x24() {
    let mut app = app(healthy());
    press(&mut app, KeyCode::Char('?'));
    let screen = draw(&app, SMALL);
    for binding in KEYS {
        find(&screen, binding.keys);
        find(&screen, binding.help);
    }
    find(&screen, "Esc close help");
    assert_snapshot("help_80x24", &screen);
}

#[test]
fn the_confirm_dialog_focuses_cancel_first() {
    let mut app = app(mismatch());
    press(&mut app, KeyCode::End);
    press(&mut app, KeyCode::Up);
    press(&mut app, KeyCode::Char('r'));
    let screen = draw(&app, SMALL);
    find(&screen, "Repair node 2 of stock?");
    let cancel = find(&screen, "[ Cancel ]");
    let repair = find(&screen, "[ Repair ]");
    assert_eq!(screen[cancel].bg, Color::Yellow);
    assert_ne!(screen[repair].bg, Color::Yellow);
    assert!(cancel.0 < repair.0, "Cancel comes first");
    assert_snapshot("confirm_repair_80x24", &screen);
    press(&mut app, KeyCode::Tab);
    let screen = draw(&app, SMALL);
    assert_eq!(screen[find(&screen, "[ Repair ]")].bg, Color::Yellow);
}

#[test]
fn the_add_dialog_shows_the_typed_id() {
    let mut app = app(healthy());
    press(&mut app, KeyCode::End);
    press(&mut app, KeyCode::Char('a'));
    let screen = draw(&app, SMALL);
    find(&screen, "Add node 4 to stock?");
    find(&screen, "node id: 4_");
}

#[test]
fn read_only_is_said_on_screen_and_hides_action_hints() {
    let app = app_with(healthy(), cart_admin_tui::app::Access::NoToken);
    let screen = draw(&app, SMALL);
    let badge = find(&screen, "READ-ONLY");
    assert_eq!(badge.1, 0);
    assert_eq!(screen[badge].bg, Color::Yellow);
    find(&screen, "read-only: no admin token");
    let hints = &lines(&screen)[23];
    assert!(!hints.contains("repair"), "{hints}");
    let full = draw(
        &app_with(healthy(), cart_admin_tui::app::Access::ReadWrite),
        SMALL,
    );
    assert!(lines(&full)[23].contains("repair"));
}

#[test]
fn the_selected_row_is_reversed() {
    let mut app = app(healthy());
    press(&mut app, KeyCode::End);
    let screen = draw(&app, SMALL);
    let stock_y = find(&screen, "stock   leader").1;
    let row_y = lines(&screen)
        .iter()
        .enumerate()
        .skip(stock_y as usize)
        .find(|(_, l)| l.contains("node 3"))
        .map(|(y, _)| y as u16)
        .unwrap();
    assert!(screen[(4, row_y)].modifier.contains(Modifier::REVERSED));
}

#[test]
fn the_events_filter_shows_one_service() {
    let mut app = app(down_node());
    for _ in 0..3 {
        press(&mut app, KeyCode::Char('f'));
    }
    let screen = draw(&app, SMALL);
    find(&screen, "events of stock");
    assert!(!text(&screen).contains("leader_change"));
    find(&screen, "node_down");
}

#[test]
fn resizing_and_tiny_terminals_never_panic() {
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    for (w, h) in [
        (80, 24),
        (120, 40),
        (40, 10),
        (1, 1),
        (0, 0),
        (200, 60),
        (80, 24),
    ] {
        terminal.backend_mut().resize(w, h);
        for tab in Tab::ALL {
            let app = on(with_traffic(app(down_node())), tab);
            terminal.draw(|f| views::render(f, &app)).unwrap();
        }
    }
    // After growing back the whole cluster view is there again.
    let screen = terminal.backend().buffer().clone();
    assert!(text(&screen).contains("Traffic"));
    let mut tiny = busy();
    press(&mut tiny, KeyCode::Char('?'));
    for (w, h) in [(10, 3), (2, 2)] {
        draw(&tiny, (w, h));
    }
}
