//! The storage conformance suite: the same tests run against the embedded
//! in-memory embedded backend (`storage::embedded::…`) and the MongoDB backend
//! (`storage::mongodb::…`, against jongodb or the MongoDB at `MONGODB_URL`),
//! through the state machine the nodes use. Plus one test across both: the
//! same log gives the same stored bytes and the same digests.

use std::sync::Arc;
use std::time::Duration;

use cart_cluster::mongo_server::MongoServer;
use cart_common::spec::StorageBackend;
use cart_services::consistency::{digest, replica};
use cart_services::domain::{self, Command, Outcome, Query, RepairRow, Reply, Table};
use cart_services::raft::state_machine::StateMachine;
use cart_services::raft::{LogCommand, TypeConfig, LOG_FORMAT_VERSION};
use cart_services::request_key::RequestKey;
use cart_services::storage::mongo::MongoBackend;
use cart_services::storage::{self, Backend, CrashPoint, Health, LAST_APPLIED};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

/// One backend under test: where its state lives, reopenable as a node
/// restarting would.
struct Under {
    kind: StorageBackend,
    dir: tempfile::TempDir,
    mongo: Option<Arc<MongoServer>>,
    db: String,
}

impl Under {
    /// `None` when the backend's server is not available here (the reason
    /// is printed; under CI that fails instead).
    fn new(kind: StorageBackend) -> Option<Self> {
        let mongo = match kind {
            StorageBackend::Embedded => None,
            StorageBackend::Mongodb => Some(Arc::new(
                MongoServer::for_tests().expect("MongoDB server for tests")?,
            )),
        };
        Some(Self::with(kind, mongo))
    }

    fn with(kind: StorageBackend, mongo: Option<Arc<MongoServer>>) -> Self {
        Self {
            kind,
            dir: tempfile::tempdir().expect("temp dir"),
            mongo,
            db: format!("conformance_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Another, empty backend of the same kind (on the same server).
    fn sibling(&self) -> Self {
        Self::with(self.kind.clone(), self.mongo.clone())
    }

    async fn open(&self) -> Arc<dyn Backend> {
        match &self.mongo {
            None => Arc::new(storage::embedded::Store::new()),
            Some(server) => Arc::new(
                MongoBackend::open(
                    &server.url,
                    &self.db,
                    Duration::from_secs(5),
                    Arc::new(Health::default()),
                    false,
                )
                .await
                .expect("MongoDB backend opens"),
            ),
        }
    }

    /// A state machine over the backend, started as a node starts: the
    /// embedded store restores its last snapshot from the directory.
    async fn machine(&self) -> (StateMachine, Arc<dyn Backend>) {
        let backend = self.open().await;
        let sm = StateMachine::new(
            backend.clone(),
            self.dir.path().to_path_buf(),
            600_000,
            1,
            Arc::default(),
            cart_services::metrics::GroupMetrics::of(cart_common::shard::Shard(0)),
        );
        sm.restore().expect("restores");
        (sm, backend)
    }
}

fn entry(index: u64, request_id: &str, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(
            LogCommand {
                v: LOG_FORMAT_VERSION,
                request_id: request_id.into(),
                fingerprint: None,
                ts_ms: 1_000 + index,
                cmd,
            }
            .into(),
        ),
    }
}

fn funds(user: &str, amount: i64) -> Command {
    Command::AddFunds {
        user_id: user.into(),
        amount,
    }
}

/// A small log touching users, items and orders.
fn history() -> Vec<Entry<TypeConfig>> {
    vec![
        entry(
            1,
            "users",
            Command::BatchInitUsers {
                n: 20,
                starting_money: 100,
                part: None,
            },
        ),
        entry(
            2,
            "items",
            Command::BatchInitItems {
                n: 20,
                starting_stock: 50,
                price: 3,
                part: None,
            },
        ),
        entry(3, "fund-1", funds("1", 7)),
        entry(
            4,
            "order",
            Command::CreateOrder {
                order_id: "o1".into(),
                user_id: "1".into(),
            },
        ),
        entry(
            5,
            "add",
            Command::AddItem {
                order_id: "o1".into(),
                item_id: "2".into(),
                quantity: 2,
                price: 3,
            },
        ),
        entry(
            6,
            "sub",
            Command::SubtractStock {
                item_id: "3".into(),
                amount: 5,
            },
        ),
    ]
}

/// Applies entries of one write each; the outcome of each write.
async fn apply(sm: &mut StateMachine, entries: Vec<Entry<TypeConfig>>) -> Vec<Outcome> {
    let per_entry = sm.apply(entries).await.expect("entries apply");
    per_entry.into_iter().flatten().collect()
}

fn ask(backend: &dyn Backend, query: Query) -> Outcome {
    let view = backend.reader().expect("reader");
    domain::query(view.as_ref(), &query).expect("query")
}

fn credit(backend: &dyn Backend, user: &str) -> i64 {
    match ask(
        backend,
        Query::FindUser {
            user_id: user.into(),
        },
    ) {
        Ok(Reply::User(u)) => u.credit,
        other => panic!("user {user}: {other:?}"),
    }
}

async fn applied(sm: &mut StateMachine) -> Option<u64> {
    let (last, _) = sm.applied_state().await.expect("applied state");
    last.map(|l| l.index)
}

/// Builds a snapshot and returns what a follower is sent: the snapshot
/// file, as openraft asks for it (a built snapshot carries only its meta).
async fn snapshot_sent(sm: &mut StateMachine) -> openraft::Snapshot<TypeConfig> {
    let built = sm.build_snapshot().await.expect("snapshot builds");
    let sent = sm
        .get_current_snapshot()
        .await
        .expect("snapshot reads")
        .expect("a snapshot");
    assert_eq!(sent.meta, built.meta);
    sent
}

fn tree(backend: &dyn Backend) -> digest::Tree {
    replica::scan(backend.freeze().expect("freeze").as_ref()).expect("digest")
}

// ---- the suite ----

async fn crud_reads_writes_and_orders_keys(under: Under) {
    let backend = under.open().await;
    let meta = [(LAST_APPLIED, b"1".to_vec())];
    backend
        .apply(1, &meta, &mut |view| {
            for key in ["b", "a", "d", "c"] {
                view.put(Table::Items, key, key.as_bytes())?;
            }
            view.delete(Table::Items, "d")?;
            view.put(Table::Users, "a", b"user")?;
            // The batch reads its own writes.
            assert_eq!(view.get(Table::Items, "b")?.as_deref(), Some(&b"b"[..]));
            assert_eq!(view.keys(Table::Items, None, 10)?, ["a", "b", "c"]);
            Ok(())
        })
        .expect("first batch");
    let meta = [(LAST_APPLIED, b"2".to_vec())];
    backend
        .apply(2, &meta, &mut |view| {
            view.put(Table::Items, "a", b"changed")?;
            view.delete(Table::Items, "b")?;
            view.put(Table::Items, "e", b"")?;
            assert_eq!(view.keys(Table::Items, Some("e"), 10)?, ["a", "c"]);
            Ok(())
        })
        .expect("second batch");
    let mut view = backend.reader().expect("reader");
    assert_eq!(view.get(Table::Items, "a").unwrap().unwrap(), b"changed");
    assert_eq!(view.get(Table::Items, "b").unwrap(), None);
    assert_eq!(view.get(Table::Items, "e").unwrap().unwrap(), b"");
    assert_eq!(view.get(Table::Users, "a").unwrap().unwrap(), b"user");
    assert_eq!(view.get(Table::Orders, "a").unwrap(), None);
    assert_eq!(view.keys(Table::Items, None, 10).unwrap(), ["a", "c", "e"]);
    assert_eq!(view.keys(Table::Items, None, 2).unwrap(), ["a", "c"]);
    assert_eq!(
        view.keys(Table::Items, None, usize::MAX).unwrap(),
        ["a", "c", "e"],
        "no limit"
    );
    assert_eq!(view.keys(Table::Items, Some("c"), 10).unwrap(), ["a"]);
    assert_eq!(backend.count(Table::Items).unwrap(), 3);
    assert_eq!(backend.meta(LAST_APPLIED).unwrap().unwrap(), b"2");
    assert!(
        view.put(Table::Items, "x", b"x").is_err(),
        "readers are read-only"
    );
}

async fn a_request_id_applies_once(under: Under) {
    let (mut sm, backend) = under.machine().await;
    apply(&mut sm, history()).await;
    let again = apply(
        &mut sm,
        vec![
            entry(7, "fund-1", funds("1", 7)),
            entry(8, "fund-2", funds("1", 1)),
        ],
    )
    .await;
    assert!(matches!(again[0], Ok(Reply::Done)), "{again:?}");
    assert_eq!(credit(backend.as_ref(), "1"), 108);
    assert_eq!(applied(&mut sm).await, Some(8));
}

async fn a_crash_anywhere_in_a_commit_applies_the_batch_exactly_once(under: Under) {
    for point in [
        CrashPoint::BeforeCommit,
        CrashPoint::AfterCommit,
        CrashPoint::MidApply,
    ] {
        let under = under.sibling();
        {
            let (mut sm, backend) = under.machine().await;
            apply(&mut sm, history()).await;
            sm.build_snapshot().await.expect("snapshot");
            backend.crash_next_apply(point);
            let crashed = sm
                .apply(vec![
                    entry(7, "fund-more", funds("1", 20)),
                    entry(8, "fund-2", funds("2", 1)),
                ])
                .await;
            assert!(
                crashed.is_err(),
                "{point:?}: the simulated crash fails the apply"
            );
        }
        // The node restarts on the same storage.
        let (mut sm, backend) = under.machine().await;
        let after = applied(&mut sm).await;
        let (want_applied, want_credit) = match point {
            // The embedded state restarts from the snapshot at 6.
            _ if !backend.survives_restart() => (Some(6), 107),
            CrashPoint::BeforeCommit => (Some(6), 107),
            CrashPoint::AfterCommit | CrashPoint::MidApply => (Some(8), 127),
        };
        assert_eq!(
            after, want_applied,
            "{point:?}: applied index after restart"
        );
        assert_eq!(credit(backend.as_ref(), "1"), want_credit, "{point:?}");
        // openraft re-applies what the log holds beyond the applied index.
        let replay: Vec<_> = [
            entry(7, "fund-more", funds("1", 20)),
            entry(8, "fund-2", funds("2", 1)),
        ]
        .into_iter()
        .filter(|e| Some(e.log_id.index) > after)
        .collect();
        apply(&mut sm, replay).await;
        assert_eq!(
            credit(backend.as_ref(), "1"),
            127,
            "{point:?}: once, not twice"
        );
        assert_eq!(credit(backend.as_ref(), "2"), 101, "{point:?}");
        assert_eq!(applied(&mut sm).await, Some(8), "{point:?}");
    }
}

async fn a_restarted_node_resumes_exactly_where_it_was(under: Under) {
    let before = {
        let (mut sm, backend) = under.machine().await;
        let mut log = history();
        let after_snapshot = log.split_off(4);
        apply(&mut sm, log).await;
        sm.build_snapshot().await.expect("snapshot");
        apply(&mut sm, after_snapshot).await;
        tree(backend.as_ref())
    };
    let (mut sm, backend) = under.machine().await;
    // Where the stored state stands: the last batch (MongoDB) or the last
    // snapshot (the embedded store); openraft re-applies the log from there.
    let stored = applied(&mut sm).await;
    let want = if backend.survives_restart() { 6 } else { 4 };
    assert_eq!(stored, Some(want));
    let replay: Vec<_> = history()
        .into_iter()
        .filter(|e| Some(e.log_id.index) > stored)
        .collect();
    apply(&mut sm, replay).await;
    assert_eq!(applied(&mut sm).await, Some(6));
    assert_eq!(
        tree(backend.as_ref()),
        before,
        "same stored state after restart"
    );
    assert_eq!(credit(backend.as_ref(), "1"), 107);
    apply(&mut sm, vec![entry(7, "fund-3", funds("3", 1))]).await;
    assert_eq!(credit(backend.as_ref(), "3"), 101);
    assert_eq!(applied(&mut sm).await, Some(7));
}

async fn a_snapshot_reproduces_state_digest_and_request_ids(under: Under) {
    let (mut source, source_backend) = under.machine().await;
    apply(&mut source, history()).await;
    let snap = snapshot_sent(&mut source).await;

    let other = under.sibling();
    let (mut target, target_backend) = other.machine().await;
    apply(&mut target, vec![entry(1, "stale", funds("0", 1))]).await;
    target
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .expect("snapshot installs");
    assert_eq!(tree(target_backend.as_ref()), tree(source_backend.as_ref()));
    assert_eq!(applied(&mut target).await, Some(6));
    assert!(target
        .remembered(&RequestKey::internal("fund-1"))
        .unwrap()
        .is_some());
    assert!(target
        .remembered(&RequestKey::internal("stale"))
        .unwrap()
        .is_none());
}

async fn a_repair_restores_the_digest_of_a_corrupted_row(under: Under) {
    let (mut sm, backend) = under.machine().await;
    apply(&mut sm, history()).await;
    let good = tree(backend.as_ref());
    let good_value = backend
        .reader()
        .unwrap()
        .get(Table::Users, "4")
        .unwrap()
        .expect("user 4 stored");
    backend
        .corrupt(Table::Users, "4", Some(b"{\"credit\":1000000}"))
        .expect("fault injected");
    backend
        .corrupt(Table::Items, "5", None)
        .expect("row deleted");
    let bad = tree(backend.as_ref());
    assert_ne!(bad.root, good.root, "the digest sees the corruption");
    let differing: Vec<usize> = (0..digest::LEAVES)
        .filter(|i| bad.leaves[*i] != good.leaves[*i])
        .collect();
    assert_eq!(differing.len(), 2, "exactly the two changed rows' leaves");

    assert_eq!(
        backend.reader().unwrap().get(Table::Items, "5").unwrap(),
        None
    );
    let bad_hash = |table: Table, key: &str, value: &[u8]| {
        Some(digest::hex(&digest::entry_hash(
            table,
            key.as_bytes(),
            value,
        )))
    };
    let rows = vec![
        RepairRow {
            table: "users".into(),
            key: "4".into(),
            bad_hash: bad_hash(Table::Users, "4", b"{\"credit\":1000000}"),
            good: Some(String::from_utf8(good_value).unwrap()),
        },
        RepairRow {
            table: "items".into(),
            key: "5".into(),
            bad_hash: None,
            good: Some(
                serde_json::to_string(&domain::Item {
                    stock: 50,
                    price: 3,
                })
                .unwrap(),
            ),
        },
    ];
    apply(
        &mut sm,
        vec![entry(
            7,
            "repair",
            Command::RepairRows {
                check_id: "c1".into(),
                target: 1,
                rows,
            },
        )],
    )
    .await;
    assert_eq!(
        tree(backend.as_ref()),
        good,
        "repaired back to the majority"
    );
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let under = super::Under::new(super::StorageBackend::Embedded).expect("embedded");
                    super::$test(under).await;
                }
            )*
        }
        mod mongodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(under) = super::Under::new(super::StorageBackend::Mongodb) {
                        super::$test(under).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    crud_reads_writes_and_orders_keys,
    a_request_id_applies_once,
    a_crash_anywhere_in_a_commit_applies_the_batch_exactly_once,
    a_restarted_node_resumes_exactly_where_it_was,
    a_snapshot_reproduces_state_digest_and_request_ids,
    a_repair_restores_the_digest_of_a_corrupted_row,
);

/// The same log on both backends: the same bytes stored, so the same
/// digests; and a snapshot of one installs on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_store_the_same_bytes_and_digests() {
    let Some(mongo) = Under::new(StorageBackend::Mongodb) else {
        return;
    };
    let embedded = Under::new(StorageBackend::Embedded).expect("embedded");
    let (mut a, a_backend) = embedded.machine().await;
    let (mut b, b_backend) = mongo.machine().await;
    apply(&mut a, history()).await;
    apply(&mut b, history()).await;
    let (ta, tb) = (tree(a_backend.as_ref()), tree(b_backend.as_ref()));
    assert_eq!(ta.keys, tb.keys);
    assert_eq!(ta.root, tb.root);
    for table in Table::ALL {
        assert_eq!(
            a_backend.count(table).unwrap(),
            b_backend.count(table).unwrap(),
            "{table:?}"
        );
    }

    // The embedded store's snapshot on MongoDB.
    let snap = snapshot_sent(&mut a).await;
    let other = mongo.sibling();
    let (mut c, c_backend) = other.machine().await;
    c.install_snapshot(&snap.meta, snap.snapshot)
        .await
        .expect("installs");
    assert_eq!(tree(c_backend.as_ref()).root, ta.root);
    assert_eq!(applied(&mut c).await, Some(6));
}

/// A node whose data directory is new (its Raft log is gone) starts with an
/// empty MongoDB database, as it would with the embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_raft_log_clears_the_nodes_mongodb_database() {
    let Some(under) = Under::new(StorageBackend::Mongodb) else {
        return;
    };
    let (mut sm, _) = under.machine().await;
    apply(&mut sm, history()).await;
    let server = under.mongo.as_ref().expect("a server");
    let open = |fresh| {
        MongoBackend::open(
            &server.url,
            &under.db,
            Duration::from_secs(5),
            Arc::new(Health::default()),
            fresh,
        )
    };
    let kept = open(false).await.expect("reopens");
    assert_eq!(kept.count(Table::Users).unwrap(), 20);
    let cleared = open(true).await.expect("reopens fresh");
    assert_eq!(cleared.count(Table::Users).unwrap(), 0);
    assert_eq!(cleared.meta(LAST_APPLIED).unwrap(), None);
}
