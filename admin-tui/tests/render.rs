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

#[test]
fn traffic_shows_rates_errors_and_p99_as_sparklines() {
    let app = on(with_traffic(app(healthy())), Tab::Traffic);
    for size in [SMALL, WIDE] {
        let screen = draw(&app, size);
        for s in SERVICES {
            find(&screen, &format!("{s:<8}last "));
        }
        find(&screen, "req/s 39.0");
        find(&screen, "p99 5.0 ms");
        // The stock error burst draws bars in red on the errors line.
        let (_, y) = find_on_line(&screen, "stock   last", "stock");
        let errors_y = lines(&screen)
            .iter()
            .enumerate()
            .skip(y as usize)
            .find(|(_, l)| l.contains("errors/s"))
            .map(|(i, _)| i as u16)
            .unwrap();
        let bars = (22..size.0)
            .filter(|x| screen[(*x, errors_y)].symbol() != " ")
            .count();
        assert!(bars > 0, "no error bars:\n{}", text(&screen));
        let bar = (22..size.0)
            .find(|x| screen[(*x, errors_y)].symbol() != " ")
            .unwrap();
        assert_eq!(screen[(bar, errors_y)].fg, Color::Red);
    }
}

#[test]
fn traffic_without_samples_says_so() {
    let app = on(app(healthy()), Tab::Traffic);
    let screen = draw(&app, SMALL);
    find(&screen, "order   no samples yet");
    find(&screen, "req/s -");
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
