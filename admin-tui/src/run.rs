//! The edges: the terminal, the keyboard and the network. A background task
//! refreshes the cluster view (falling back to other coordinators) and
//! scrapes metrics; actions run as tasks of their own; everything they learn
//! comes back to the UI thread as an `Update` for the `App`. The screen is
//! redrawn only when something changed, and ratatui writes only the cells
//! that differ, so refreshes do not flicker.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossterm::event::{self, Event as TermEvent, KeyEventKind};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::action::{Action, ActionOutcome};
use crate::api::ConsoleClient;
use crate::app::{App, Effect, Level, Refresh, Scrapes, Status, PENDING_FOR};
use crate::cli::Config;
use crate::failover::Coordinators;
use crate::metrics::NodeKey;
use crate::views;
use cart_common::admin::{CheckReport, CheckStarted, ClusterView};
use cart_common::admin_client::AdminError;

/// How long to wait for a key before looking at updates again.
const POLL: Duration = Duration::from_millis(50);
/// Ages on screen move on this often even when nothing else changes.
const TICK: Duration = Duration::from_secs(1);

/// What the background tasks tell the UI thread.
pub enum Update {
    View(Refresh),
    Metrics(Scrapes),
    ActionDone(Action, Result<ActionOutcome, AdminError>),
    /// The report of a check, repair or rebuild the console started.
    CheckReport(CheckReport),
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Applies one update to the app.
pub fn apply(app: &mut App, update: Update) {
    match update {
        Update::View(refresh) => app.on_refresh(refresh),
        Update::Metrics(scrapes) => app.on_metrics(&scrapes),
        Update::ActionDone(action, result) => app.on_action_done(&action, result),
        Update::CheckReport(report) => app.on_check_report(&report),
    }
}

type Shared = Arc<Mutex<Coordinators>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Coordinators> {
    // The list stays usable even if a task panicked while holding it.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = ConsoleClient::new(config.token.clone());
    let coordinators: Shared = Arc::new(Mutex::new(Coordinators::new(
        &config.addr,
        config.fallbacks.clone(),
    )));
    let (tx, rx) = std::sync::mpsc::channel();
    let wake = Arc::new(Notify::new());
    runtime.spawn(refresher(
        client.clone(),
        coordinators.clone(),
        tx.clone(),
        wake.clone(),
        config.interval,
    ));

    let mut app = App::new(config.access, &config.addr, now_ms());
    if let Some(warning) = &config.spec_warning {
        app.status = Some(Status {
            text: format!("spec not read: {warning}"),
            level: Level::Warning,
        });
    }
    // Raw mode and the alternate screen, with a panic hook that restores
    // the terminal before the panic message is printed.
    let mut terminal = ratatui::try_init()?;
    let result = ui_loop(&mut terminal, &mut app, &rx, |effect| match effect {
        Effect::RefreshNow => wake.notify_one(),
        Effect::Perform(action) => {
            let (client, coordinators, tx, wake) = (
                client.clone(),
                coordinators.clone(),
                tx.clone(),
                wake.clone(),
            );
            let interval = config.interval;
            runtime.spawn(async move {
                let snapshot = lock(&coordinators).clone();
                let result = client.perform(&snapshot, &action).await;
                let started = match &result {
                    Ok(ActionOutcome::Started(started)) => started.clone(),
                    _ => vec![],
                };
                let _ = tx.send(Update::ActionDone(action, result));
                wake.notify_one();
                for one in started {
                    let report = await_report(&client, &coordinators, &one, interval).await;
                    if let Some(report) = report {
                        let _ = tx.send(Update::CheckReport(report));
                        wake.notify_one();
                    }
                }
            });
        }
    });
    ratatui::restore();
    // Requests in flight are abandoned: nothing waits for their answers.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result.map_err(Into::into)
}

fn ui_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    updates: &Receiver<Update>,
    mut perform: impl FnMut(Effect),
) -> std::io::Result<()> {
    let mut dirty = true;
    let mut last_tick = Instant::now();
    while !app.quit {
        if dirty {
            terminal.draw(|frame| views::render(frame, app))?;
            dirty = false;
        }
        if event::poll(POLL)? {
            match event::read()? {
                TermEvent::Key(key) if key.kind != KeyEventKind::Release => {
                    if let Some(effect) = app.on_key(key) {
                        perform(effect);
                    }
                    dirty = true;
                }
                TermEvent::Resize(..) => dirty = true,
                _ => {}
            }
        }
        for update in updates.try_iter() {
            apply(app, update);
            dirty = true;
        }
        if last_tick.elapsed() >= TICK {
            app.on_tick(now_ms());
            last_tick = Instant::now();
            dirty = true;
        }
    }
    Ok(())
}

/// Every node of a view, with its address.
fn node_targets(view: &ClusterView) -> Vec<(NodeKey, String)> {
    view.services
        .iter()
        .flat_map(|s| {
            s.nodes.iter().map(|n| {
                let key = NodeKey {
                    service: s.service.clone(),
                    id: n.id,
                };
                (key, n.addr.clone())
            })
        })
        .collect()
}

/// Every `(key, address)`'s `/metrics` page at once, or `None` for each
/// process that did not answer in time.
async fn scrape<K: Send + 'static>(
    client: &ConsoleClient,
    targets: impl IntoIterator<Item = (K, String)>,
) -> Vec<(K, Option<String>)> {
    let mut scrapes = JoinSet::new();
    for (key, addr) in targets {
        let client = client.clone();
        scrapes.spawn(async move {
            let page = client.metrics_page(&addr).await.ok();
            (key, page)
        });
    }
    scrapes.join_all().await
}

/// Asks for the report of `started` every `interval` until it exists, for
/// as long as the app waits for it.
async fn await_report(
    client: &ConsoleClient,
    coordinators: &Shared,
    started: &CheckStarted,
    interval: Duration,
) -> Option<CheckReport> {
    let give_up = tokio::time::Instant::now() + PENDING_FOR;
    while tokio::time::Instant::now() < give_up {
        let snapshot = lock(coordinators).clone();
        if let Some(report) = client.check_report(&snapshot, started).await {
            return Some(report);
        }
        tokio::time::sleep(interval).await;
    }
    None
}

/// Fetches the cluster view every `interval` (or at once when woken),
/// from the current coordinator or, failing that, the next that answers;
/// then scrapes the metrics of every known coordinator and of every node of
/// the view (at the addresses the view gives: the console must reach them).
async fn refresher(
    client: ConsoleClient,
    coordinators: Shared,
    tx: Sender<Update>,
    wake: Arc<Notify>,
    interval: Duration,
) {
    let mut nodes = vec![];
    loop {
        let candidates = lock(&coordinators).candidates();
        let (answer, failed) = client.cluster_view_from(&candidates).await;
        if let Some((via, view)) = &answer {
            let mut c = lock(&coordinators);
            c.use_addr(via);
            c.learn(view);
        }
        if let Some((_, view)) = &answer {
            // Without a view, the nodes last seen are still scraped.
            nodes = node_targets(view);
        }
        let refresh = Refresh {
            at_ms: now_ms(),
            failed,
            answer,
        };
        if tx.send(Update::View(refresh)).is_err() {
            return;
        }
        let coordinator_addrs = lock(&coordinators).all().to_vec();
        let (coordinators_pages, node_pages) = tokio::join!(
            scrape(
                &client,
                coordinator_addrs.into_iter().map(|a| (a.clone(), a))
            ),
            scrape(&client, nodes.clone()),
        );
        let scrapes = Scrapes {
            at_ms: now_ms(),
            coordinators: coordinators_pages,
            nodes: node_pages,
        };
        if tx.send(Update::Metrics(scrapes)).is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
        }
    }
}
