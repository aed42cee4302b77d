//! Group commit for the mirror's per-page state, and a bound on its blocking work.
//!
//! Every page written to a mailbox ends with a durable commit of its id-map entries and the
//! mailbox's position. With hundreds of mailboxes at work, one durable transaction each means
//! one flush each, one after another under the store's single writer, and a blocking thread
//! parked per waiting mailbox. The committer instead takes whatever commits are waiting,
//! writes them in one transaction (each mailbox's keys are its own, so the sets do not touch),
//! and answers each only after that transaction is durable: what a mailbox is told is saved
//! is saved, as before, at one flush per round instead of one per page.

use std::sync::mpsc;
use std::sync::Arc;

use crate::store::{KvStore, Op, Store};

/// At most this many operations go into one transaction.
const MAX_OPS: usize = 20_000;

type Reply = tokio::sync::oneshot::Sender<Result<(), String>>;

struct Job {
    store: Arc<Store>,
    ops: Vec<Op>,
    reply: Reply,
}

/// The committer thread's mouth; the thread ends when this is dropped.
pub(super) struct Committer {
    tx: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the committer thread.
    pub(super) fn start() -> Result<Committer, String> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("crmgate-mirror-commit".into())
            .spawn(move || run(rx))
            .map_err(|e| format!("mirror: cannot start the committer: {e}"))?;
        Ok(Committer { tx })
    }

    /// Writes `ops` durably in one transaction (possibly with other mailboxes' commits).
    pub(super) async fn commit(&self, store: &Arc<Store>, ops: Vec<Op>) -> Result<(), String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            store: store.clone(),
            ops,
            reply,
        };
        self.tx
            .send(job)
            .map_err(|_| "the committer stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the committer stopped".to_owned())?
    }
}

fn run(rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut n = jobs[0].ops.len();
        while n < MAX_OPS {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.ops.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        // Jobs of one store go together (there is one per process, but tests run several).
        while !jobs.is_empty() {
            let store = jobs[0].store.clone();
            let (mine, rest): (Vec<Job>, Vec<Job>) = jobs
                .into_iter()
                .partition(|j| Arc::ptr_eq(&j.store, &store));
            jobs = rest;
            let mut ops = Vec::with_capacity(mine.iter().map(|j| j.ops.len()).sum());
            let mut replies = Vec::with_capacity(mine.len());
            for j in mine {
                ops.extend(j.ops);
                replies.push(j.reply);
            }
            let r = store.apply(ops).map_err(|e| format!("store: {e}"));
            drop(store);
            for reply in replies {
                let _ = reply.send(r.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_answered_commit_is_in_the_store_and_commits_of_two_stores_stay_apart() {
        let c = Arc::new(Committer::start().expect("start"));
        let (a, b) = (Arc::new(Store::memory()), Arc::new(Store::memory()));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200u32 {
            let (c, store) = (c.clone(), if i % 2 == 0 { a.clone() } else { b.clone() });
            tasks.spawn(async move {
                let ops = vec![
                    Op::Put(format!("k{i}/1").into_bytes(), vec![1]),
                    Op::Put(format!("k{i}/2").into_bytes(), vec![2]),
                ];
                c.commit(&store, ops).await.expect("commit");
                // Answered: both keys are there.
                for k in [format!("k{i}/1"), format!("k{i}/2")] {
                    assert!(store.get(k.as_bytes()).expect("get").is_some(), "{k}");
                }
                i
            });
        }
        let mut done = 0;
        while let Some(r) = tasks.join_next().await {
            r.expect("task");
            done += 1;
        }
        assert_eq!(done, 200);
        for i in 0..200u32 {
            let (mine, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            let k = format!("k{i}/1");
            assert!(mine.get(k.as_bytes()).expect("get").is_some());
            assert!(
                other.get(k.as_bytes()).expect("get").is_none(),
                "{k} leaked"
            );
        }
    }
}
