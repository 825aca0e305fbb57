//! openraft's `RaftStateMachine`: applies committed commands to the node's
//! storage backend through the domain, remembers request ids for a window so
//! retries apply once, and builds and installs snapshots.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder,
    StoredMembership,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::snapshot::{self, Meta};
use super::{
    now_ms, storage_error, LogCommand, NodeId, Proposals, StorageError, TypeConfig,
    FORMAT_OWN_RECORDS, LOG_FORMAT_VERSION,
};
use crate::consistency::replica::Replica;
use crate::domain::steps::{forget_before, time_key};
use crate::domain::{
    self, get_value, put_value, Command, Outcome, Rejection, RejectionCode, Reply, StoreError,
};
use crate::domain::{StateStore, Table};
use crate::metrics::GroupMetrics;
use crate::request_key::{self, RequestKey};
use crate::storage::{io, Backend, LAST_APPLIED, MEMBERSHIP};
use cart_common::spec::StorageBackend;

/// What a node remembers about a request id.
#[derive(Serialize, Deserialize)]
struct Remembered {
    ts_ms: u64,
    outcome: Outcome,
    /// The client operation the id was first used for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fingerprint: Option<u64>,
}

impl Remembered {
    /// The answer to `key` from this memory: the first answer again for the
    /// same operation, a conflict for another one.
    fn answer(self, key: &RequestKey, metrics: &GroupMetrics) -> Outcome {
        if key.conflicts_with(self.fingerprint) {
            metrics.request_id_conflicts.inc();
            Err(request_key::conflict())
        } else {
            metrics.duplicate_requests.inc();
            self.outcome
        }
    }
}

type Membership = StoredMembership<NodeId, BasicNode>;

#[derive(Clone)]
pub struct StateMachine {
    backend: Arc<dyn Backend>,
    dir: PathBuf,
    request_window_ms: u64,
    /// This replica's id: a repair entry names the replica it is for.
    id: NodeId,
    /// Digest captures and repairs of this replica.
    replica: Arc<Replica>,
    metrics: GroupMetrics,
}

impl StateMachine {
    pub fn new(
        backend: Arc<dyn Backend>,
        dir: PathBuf,
        request_window_ms: u64,
        id: NodeId,
        replica: Arc<Replica>,
        metrics: GroupMetrics,
    ) -> Self {
        Self {
            backend,
            dir,
            request_window_ms,
            id,
            replica,
            metrics,
        }
    }

    /// The answer to `key` if this replica has applied its id: the
    /// remembered outcome, or a conflict if the id was used for another
    /// operation.
    pub fn remembered(&self, key: &RequestKey) -> Result<Option<Outcome>, StoreError> {
        let view = self.backend.reader()?;
        let found: Option<Remembered> = get_value(view.as_ref(), Table::Requests, &key.request_id)?;
        Ok(found.map(|r| r.answer(key, &self.metrics)))
    }

    fn applied(&self) -> Result<(Option<LogId<NodeId>>, Membership), StoreError> {
        let last = decode(self.backend.meta(LAST_APPLIED)?)?.flatten();
        let membership = decode(self.backend.meta(MEMBERSHIP)?)?.unwrap_or_default();
        Ok((last, membership))
    }

    /// Applies entries in order. A check entry ends a batch: right after it
    /// commits, a frozen view holds exactly the state at the check's log
    /// position, and the digest is computed from it.
    fn apply_entries(
        &self,
        mut entries: Vec<Entry<TypeConfig>>,
    ) -> Result<Vec<Vec<Outcome>>, StoreError> {
        let mut replies = Vec::with_capacity(entries.len());
        loop {
            let cut = entries
                .iter()
                .position(|e| check_of(e).is_some())
                .map_or(entries.len(), |i| i + 1);
            let rest = entries.split_off(cut);
            let check = entries.last().and_then(check_of);
            replies.extend(self.apply_batch(entries)?);
            if let Some((check_id, index)) = check {
                self.replica
                    .capture(&check_id, index, self.backend.freeze()?);
            }
            if rest.is_empty() {
                return Ok(replies);
            }
            entries = rest;
        }
    }

    fn apply_batch(
        &self,
        entries: Vec<Entry<TypeConfig>>,
    ) -> Result<Vec<Vec<Outcome>>, StoreError> {
        let Some(last) = entries.last().map(|e| e.log_id) else {
            return Ok(Vec::new());
        };
        // The bookkeeping committed with the batch.
        let mut meta = vec![(LAST_APPLIED, serde_json::to_vec(&Some(last)).map_err(io)?)];
        let membership = entries.iter().rev().find_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some(Membership::new(Some(e.log_id), m.clone())),
            _ => None,
        });
        if let Some(m) = membership {
            meta.push((MEMBERSHIP, serde_json::to_vec(&m).map_err(io)?));
        }
        let mut replies = Vec::with_capacity(entries.len());
        let mut writes = 0;
        self.backend.apply(last.index, &meta, &mut |view| {
            let mut newest_ts = 0;
            for entry in &entries {
                let outcomes = match &entry.payload {
                    EntryPayload::Blank | EntryPayload::Membership(_) => Vec::new(),
                    EntryPayload::Normal(proposals) => {
                        let mut outcomes = Vec::with_capacity(proposals.0.len());
                        for req in &proposals.0 {
                            newest_ts = newest_ts.max(req.ts_ms);
                            outcomes.push(self.apply_once(view, req)?);
                        }
                        outcomes
                    }
                };
                writes += outcomes.len();
                replies.push(outcomes);
            }
            // Forget request ids older than the window, measured on the log's
            // own clock so every replica forgets the same ones.
            let cutoff = newest_ts.saturating_sub(self.request_window_ms);
            let _forgotten = forget_before(view, Table::Requests, Table::RequestTimes, cutoff)?;
            Ok(())
        })?;
        self.metrics.applied_entries.inc_by(replies.len() as u64);
        self.metrics.applied_writes.inc_by(writes as u64);
        Ok(replies)
    }

    /// Applies a client command unless its request id was applied before;
    /// then it answers what it first answered, or refuses an id reused for
    /// another operation (changing nothing, remembering nothing new).
    fn apply_once(
        &self,
        view: &mut dyn StateStore,
        req: &LogCommand,
    ) -> Result<Outcome, StoreError> {
        // Applying one of these again answers from its own record: its id
        // and a copy of its outcome (a whole checkout, for a decision)
        // would only cost memory. Older entries apply as they did, so
        // replicas replaying them agree.
        if req.v >= FORMAT_OWN_RECORDS && req.cmd.keeps_own_record() {
            return self.apply_command(view, req);
        }
        let seen: Option<Remembered> = get_value(view, Table::Requests, &req.request_id)?;
        if let Some(seen) = seen {
            return Ok(seen.answer(&req.key(), &self.metrics));
        }
        let outcome = self.apply_command(view, req)?;
        let remembered = Remembered {
            ts_ms: req.ts_ms,
            outcome: outcome.clone(),
            fingerprint: req.fingerprint,
        };
        put_value(view, Table::Requests, &req.request_id, &remembered)?;
        view.put(
            Table::RequestTimes,
            &time_key(req.ts_ms, &req.request_id),
            &[],
        )?;
        Ok(outcome)
    }

    /// Builds a snapshot into the node's snapshot file, row by row.
    fn build(&self) -> Result<Meta, StoreError> {
        // Make every applied entry durable before the log before it may be
        // purged.
        self.backend.flush()?;
        let frozen = self.backend.freeze()?;
        let last_log_id: Option<LogId<NodeId>> = decode(frozen.meta(LAST_APPLIED)?)?.flatten();
        let last_membership: Membership = decode(frozen.meta(MEMBERSHIP)?)?.unwrap_or_default();
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, now_ms()),
            None => format!("empty-{}", now_ms()),
        };
        let meta = Meta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        snapshot::write(&self.dir, &meta, |rows| {
            for table in Table::ALL {
                let tag = snapshot::tag_of(table);
                frozen.scan(table, &mut |k, v| rows.row(tag, k.as_bytes(), v))?;
            }
            Ok(())
        })?;
        self.metrics.snapshots_built.inc();
        Ok(meta)
    }

    fn install(&self, meta: &Meta, data: &[u8]) -> Result<(), StoreError> {
        self.load(meta, data)?;
        snapshot::save(&self.dir, meta, data)?;
        self.metrics.snapshots_installed.inc();
        Ok(())
    }

    /// Loads the node's last snapshot into a backend whose state does not
    /// survive a restart; openraft then re-applies the log after it.
    pub fn restore(&self) -> Result<(), StoreError> {
        if self.backend.survives_restart() {
            return Ok(());
        }
        if let Some((meta, data)) = snapshot::load(&self.dir)? {
            self.load(&meta, &data)?;
            tracing::info!(snapshot = %meta.snapshot_id, "state restored from the last snapshot");
        }
        Ok(())
    }

    /// Replaces the backend's state with a snapshot's.
    fn load(&self, meta: &Meta, data: &[u8]) -> Result<(), StoreError> {
        let mut rows = snapshot::rows(data).map(|row| {
            let (tag, key, value) = row?;
            let table = snapshot::table_of(tag)
                .ok_or_else(|| StoreError(format!("unknown snapshot table tag {tag}")))?;
            let key = std::str::from_utf8(key).map_err(io)?;
            Ok((table, key.to_string(), value.to_vec()))
        });
        let bookkeeping = [
            (
                LAST_APPLIED,
                serde_json::to_vec(&meta.last_log_id).map_err(io)?,
            ),
            (
                MEMBERSHIP,
                serde_json::to_vec(&meta.last_membership).map_err(io)?,
            ),
        ];
        let index = meta.last_log_id.map_or(0, |l| l.index);
        self.backend.replace(index, &mut rows, &bookkeeping)
    }
}

/// A JSON bookkeeping value, if stored.
fn decode<T: DeserializeOwned>(bytes: Option<Vec<u8>>) -> Result<Option<T>, StoreError> {
    bytes
        .map(|b| serde_json::from_slice(&b).map_err(io))
        .transpose()
}

impl StateMachine {
    /// Applies one client command, refusing a log format from the future.
    fn apply_command(
        &self,
        view: &mut dyn StateStore,
        req: &LogCommand,
    ) -> Result<Outcome, StoreError> {
        if req.v > LOG_FORMAT_VERSION {
            return Ok(Err(Rejection::new(
                RejectionCode::UnsupportedVersion,
                format!(
                    "log format {} is newer than this node's {LOG_FORMAT_VERSION}",
                    req.v
                ),
            )));
        }
        if let Command::RepairRows {
            check_id,
            target,
            rows,
        } = &req.cmd
        {
            if *target == self.id {
                self.replica.repair(view, check_id, rows)?;
            }
            return Ok(Ok(Reply::Done));
        }
        // Format 3 bounds an order's lines; an older entry applies as it did
        // when it was logged, so replicas replaying it agree with those that
        // applied it before.
        if req.v >= 3 {
            if let Some(refused) = domain::order::over_line_limit(view, &req.cmd)? {
                return Ok(Err(refused));
            }
        }
        domain::apply(view, &req.cmd, req.ts_ms)
    }
}

/// The check id and log index of a check entry.
fn check_of(entry: &Entry<TypeConfig>) -> Option<(String, u64)> {
    match &entry.payload {
        // The proposer never batches a check with other writes.
        EntryPayload::Normal(Proposals(writes)) => match writes.as_slice() {
            [LogCommand {
                cmd: Command::ComputeDigest { check_id },
                ..
            }] => Some((check_id.clone(), entry.log_id.index)),
            _ => None,
        },
        _ => None,
    }
}

fn sm_err(verb: ErrorVerb) -> impl FnOnce(StoreError) -> StorageError {
    move |e| storage_error(ErrorSubject::StateMachine, verb, e)
}

fn snap_err(verb: ErrorVerb) -> impl FnOnce(StoreError) -> StorageError {
    move |e| storage_error(ErrorSubject::Snapshot(None), verb, e)
}

/// Runs blocking I/O (snapshot files) without stalling the runtime's other
/// tasks on this worker.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

impl StateMachine {
    /// Runs `f` on the state store: in place for the embedded store, which
    /// answers from memory, and inside `block_in_place` for a store that
    /// waits on a server. Handing the worker over for an in-memory apply
    /// cost about a tenth of a follower's CPU under load (a thread wake and
    /// park per apply; docs/loadtest.md).
    fn on_store<T>(&self, f: impl FnOnce(&Self) -> T) -> T {
        match self.backend.kind() {
            StorageBackend::Embedded => f(self),
            StorageBackend::Mongodb => blocking(|| f(self)),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let meta = blocking(|| self.build()).map_err(snap_err(ErrorVerb::Write))?;
        // openraft 0.9 keeps only the meta of a snapshot it had built
        // (`sm::worker::build_snapshot`); a follower is sent the file, read by
        // `get_current_snapshot`. So the data is not read back here.
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership), StorageError> {
        self.on_store(|sm| sm.applied())
            .map_err(sm_err(ErrorVerb::Read))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Outcome>>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        self.on_store(|sm| sm.apply_entries(entries))
            .map_err(sm_err(ErrorVerb::Write))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        blocking(|| self.install(meta, &data)).map_err(snap_err(ErrorVerb::Write))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let loaded = blocking(|| snapshot::load(&self.dir)).map_err(snap_err(ErrorVerb::Read))?;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId};

    use super::*;
    use crate::domain::{Command, Query};

    fn machine(dir: &std::path::Path, window_ms: u64) -> StateMachine {
        let store = crate::storage::embedded::Store::new();
        StateMachine::new(
            Arc::new(store),
            dir.to_path_buf(),
            window_ms,
            1,
            Arc::default(),
            GroupMetrics::of(cart_common::shard::Shard(0)),
        )
    }

    fn entry(index: u64, request_id: &str, ts_ms: u64, cmd: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(
                LogCommand {
                    v: LOG_FORMAT_VERSION,
                    request_id: request_id.into(),
                    fingerprint: None,
                    ts_ms,
                    cmd,
                }
                .into(),
            ),
        }
    }

    fn credit(sm: &StateMachine, user: &str) -> i64 {
        let view = sm.backend.reader().unwrap();
        match domain::query(
            view.as_ref(),
            &Query::FindUser {
                user_id: user.into(),
            },
        )
        .unwrap()
        {
            Ok(Reply::User(u)) => u.credit,
            other => panic!("{other:?}"),
        }
    }

    fn fund(amount: i64) -> Command {
        Command::AddFunds {
            user_id: "0".into(),
            amount,
        }
    }

    fn init() -> Command {
        Command::BatchInitUsers {
            n: 1,
            starting_money: 0,
            part: None,
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_request_id_applied_twice_changes_state_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = machine(dir.path(), 60_000);
        let out = sm
            .apply(vec![
                entry(1, "init", 1, init()),
                entry(2, "a", 2, fund(5)),
                entry(3, "a", 3, fund(5)),
            ])
            .await
            .unwrap();
        assert_eq!(out[1], out[2]);
        assert_eq!(credit(&sm, "0"), 5);
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(3));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_entry_of_several_writes_applies_each_once_with_its_own_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = machine(dir.path(), 60_000);
        let write = |request_id: &str, cmd: Command| LogCommand {
            v: LOG_FORMAT_VERSION,
            request_id: request_id.into(),
            fingerprint: None,
            ts_ms: 1,
            cmd,
        };
        let batch = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(Proposals(vec![
                write("init", init()),
                write("a", fund(5)),
                // A retry of "a" in the same entry: answered, not applied.
                write("a", fund(5)),
                write("b", fund(-100)),
                write("c", fund(2)),
            ])),
        };
        let out = sm.apply(vec![batch]).await.unwrap();
        assert_eq!(out.len(), 1, "one entry, one list of outcomes");
        let outcomes = &out[0];
        assert_eq!(outcomes.len(), 5);
        assert_eq!(outcomes[1], outcomes[2]);
        assert!(outcomes[3].is_err(), "overdraft refused: {:?}", outcomes[3]);
        assert!(outcomes[4].is_ok());
        assert_eq!(credit(&sm, "0"), 7);
        for id in ["init", "a", "b", "c"] {
            assert!(
                sm.remembered(&RequestKey::internal(id)).unwrap().is_some(),
                "{id} remembered"
            );
        }
    }

    fn charge(tx_id: &str) -> Command {
        Command::Charge {
            tx_id: tx_id.into(),
            user_id: "0".into(),
            amount: 2,
        }
    }

    fn versioned(index: u64, v: u16, request_id: &str, cmd: Command) -> Entry<TypeConfig> {
        let mut e = entry(index, request_id, 1, cmd);
        if let EntryPayload::Normal(Proposals(writes)) = &mut e.payload {
            writes.iter_mut().for_each(|w| w.v = v);
        }
        e
    }

    /// A saga step keeps its own record per transaction: delivered twice
    /// under one id it applies once, answers the same, and its id is not
    /// remembered (the memory a copy of each outcome cost).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_saga_step_applies_once_by_its_own_record_and_its_id_is_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = machine(dir.path(), 60_000);
        let out = sm
            .apply(vec![
                entry(1, "init", 1, init()),
                entry(2, "fund", 1, fund(10)),
                entry(3, "tx:charge", 1, charge("tx")),
                entry(4, "tx:charge", 1, charge("tx")),
            ])
            .await
            .unwrap();
        assert_eq!(out[2], out[3]);
        assert_eq!(credit(&sm, "0"), 8);
        let step = RequestKey::internal("tx:charge");
        assert_eq!(sm.remembered(&step).unwrap(), None);
        assert!(sm
            .remembered(&RequestKey::internal("fund"))
            .unwrap()
            .is_some());
    }

    /// Entries written before format 4 apply as they did: their step ids
    /// are remembered, so a replica replaying an old log agrees with one
    /// that applied it when it was new.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_saga_step_of_an_older_format_is_remembered_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = machine(dir.path(), 60_000);
        sm.apply(vec![
            entry(1, "init", 1, init()),
            entry(2, "fund", 1, fund(10)),
            versioned(3, FORMAT_OWN_RECORDS - 1, "tx:charge", charge("tx")),
        ])
        .await
        .unwrap();
        let step = RequestKey::internal("tx:charge");
        assert!(sm.remembered(&step).unwrap().is_some());
        assert_eq!(credit(&sm, "0"), 8);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn request_ids_older_than_the_window_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = machine(dir.path(), 1_000);
        sm.apply(vec![
            entry(1, "init", 0, init()),
            entry(2, "old", 100, fund(1)),
        ])
        .await
        .unwrap();
        assert!(sm
            .remembered(&RequestKey::internal("old"))
            .unwrap()
            .is_some());
        sm.apply(vec![entry(3, "new", 5_000, fund(1))])
            .await
            .unwrap();
        assert!(sm
            .remembered(&RequestKey::internal("old"))
            .unwrap()
            .is_none());
        assert!(sm
            .remembered(&RequestKey::internal("new"))
            .unwrap()
            .is_some());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_snapshot_installed_on_another_replica_reproduces_state_and_request_ids() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut source = machine(a.path(), 60_000);
        source
            .apply(vec![entry(1, "init", 1, init()), entry(2, "x", 2, fund(7))])
            .await
            .unwrap();
        let built = source.build_snapshot().await.unwrap();
        // What a follower is sent: the file, as openraft asks for it.
        let snap = source.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(snap.meta, built.meta);

        let mut target = machine(b.path(), 60_000);
        target
            .apply(vec![entry(1, "stale", 1, init())])
            .await
            .unwrap();
        target
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        assert_eq!(credit(&target, "0"), 7);
        assert!(target
            .remembered(&RequestKey::internal("x"))
            .unwrap()
            .is_some());
        assert!(target
            .remembered(&RequestKey::internal("stale"))
            .unwrap()
            .is_none());
        let (applied, _) = target.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(2));
        // The installed snapshot is kept for followers that fall behind.
        let current = target.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snap.meta);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_request_id_reused_for_another_operation_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = machine(dir.path(), 60_000);
        let client = |fp: u64, cmd: Command| LogCommand {
            v: LOG_FORMAT_VERSION,
            request_id: "c:r".into(),
            fingerprint: Some(fp),
            ts_ms: 1,
            cmd,
        };
        let first = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(Proposals(vec![
                LogCommand {
                    v: LOG_FORMAT_VERSION,
                    request_id: "init".into(),
                    fingerprint: None,
                    ts_ms: 1,
                    cmd: init(),
                },
                client(1, fund(5)),
                // The same id for another operation in the same entry.
                client(2, fund(9)),
            ])),
        };
        let second = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 2),
            payload: EntryPayload::Normal(Proposals(vec![client(2, fund(9)), client(1, fund(5))])),
        };
        let out = sm.apply(vec![first, second]).await.unwrap();
        let conflict = Err(request_key::conflict());
        assert_eq!(out[0][2], conflict);
        assert_eq!(out[1][0], conflict);
        assert_eq!(out[1][1], out[0][1], "the real retry gets the first answer");
        assert_eq!(
            credit(&sm, "0"),
            5,
            "applied once, the conflicting ones never"
        );
        let key = |fp| RequestKey {
            request_id: "c:r".into(),
            fingerprint: Some(fp),
        };
        assert_eq!(sm.remembered(&key(2)).unwrap(), Some(conflict));
        assert_eq!(sm.remembered(&key(1)).unwrap(), Some(out[0][1].clone()));
    }
}
