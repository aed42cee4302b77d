//! The mailbox mirror (docs/mirror.md): crmgate's two folders of every mirrored user written
//! into that user's Exchange Online mailbox through Microsoft Graph, driven by the same folder
//! change log every client sync reads, so the folders appear in every Outlook the user has.
//!
//! - [`config`]: the `[mirror]` settings;
//! - [`client`]: the Graph client (application token, `$batch` chains, budgets per mailbox);
//! - [`state`]: the durable position, folders and id map per mailbox;
//! - [`body`]: the contact as Graph JSON with crmgate's extended properties;
//! - `sync`: one mailbox's step.
//!
//! May use `app`, `view`, `graph::json` (the one Graph mapping), `store`, `domain`; never a
//! CRM backend or the replica's internals.

pub mod body;
pub mod client;
mod commit;
pub mod config;
pub mod credential;
mod pull;
pub mod state;
mod sync;

use crate::app::App;
use client::{GraphClient, MailboxBudget};
use config::MirrorConfig;
use state::{Keys, Meta};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use sync::{MbError, Run};

/// Failed contacts remembered per mailbox for the status.
const FAILED_KEPT: usize = 20;

/// A mailbox's state as operators see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The first fill is not done.
    Initial,
    /// Caught up or following the change log.
    Incremental,
    /// Graph asked to wait (`429`).
    Throttled,
    /// The last step failed; retried with back-off.
    Failing,
    /// Not worked on: no such mailbox, no consent, a folder name taken, credentials refused.
    Skipped,
}

impl Phase {
    /// Every phase, for `/metrics`.
    pub const ALL: [Phase; 5] = [
        Phase::Initial,
        Phase::Incremental,
        Phase::Throttled,
        Phase::Failing,
        Phase::Skipped,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Initial => "initial",
            Phase::Incremental => "incremental",
            Phase::Throttled => "throttled",
            Phase::Failing => "failing",
            Phase::Skipped => "skipped",
        }
    }
}

/// One mailbox's status (`GET /admin/v1/mirror`, `crmgate mirror status`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct MailboxStatus {
    /// crmgate login.
    pub login: String,
    /// The mailbox (UPN).
    pub mailbox: String,
    /// State.
    pub state: Phase,
    /// Changes of the user's folders not yet in the mailbox.
    pub backlog: u64,
    /// Writes that landed since start.
    pub written: u64,
    /// Contacts in the user's folders now (what the mailbox must hold).
    pub contacts: u64,
    /// Seconds since the mailbox was last caught up, while changes wait (0 when caught up).
    pub lag_secs: u64,
    /// Unix seconds of the last step that caught up.
    pub last_ok: Option<u64>,
    /// The last error, if the last step failed.
    pub last_error: Option<String>,
    /// Contacts the mailbox refused (contact: reason), newest last.
    pub refused: Vec<String>,
}

struct Rt {
    login: String,
    upn: String,
    keys: Keys,
    budget: Arc<MailboxBudget>,
    busy: AtomicBool,
    resync: AtomicBool,
    chain: Arc<std::sync::atomic::AtomicUsize>,
    inner: Mutex<RtInner>,
}

#[derive(Default)]
struct RtInner {
    meta: Option<Meta>,
    /// Replica sequence at the start of the last step that caught up.
    seen: Option<u64>,
    next_try: Option<Instant>,
    failures: u32,
    skipped: bool,
    backlog: u64,
    written: u64,
    last_ok: Option<u64>,
    behind_since: Option<Instant>,
    last_pull: Option<Instant>,
    /// Contacts in the user's folders at the last step (the status reads this, not the view).
    contacts: u64,
    /// The id map was checked against the mailbox in this process.
    verified: bool,
    last_error: Option<String>,
    refused: Vec<String>,
}

/// A mailbox as the store knows it (server stopped).
#[derive(Clone, Debug, serde::Serialize)]
pub struct StoredStatus {
    /// crmgate login.
    pub login: String,
    /// The mailbox the settings name.
    pub mailbox: String,
    /// The mailbox the stored state is for (empty: none yet).
    pub stored_for: String,
    /// The initial fill finished.
    pub filled: bool,
    /// The id map will be read back from the mailbox first.
    pub doubtful: bool,
    /// Contacts in the id map (My, Global).
    pub mapped: [usize; 2],
    /// Changes of the folders not yet written (My, Global); `None`: the fill has not reached
    /// the end of the folder.
    pub waiting: [Option<u64>; 2],
    /// Unix seconds of the last full comparison.
    pub last_repair: u64,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct MirrorCounters {
    /// Writes that landed (creates, updates, deletes).
    pub written: AtomicU64,
    /// Mailbox steps run.
    pub steps: AtomicU64,
    /// Steps that failed.
    pub failed_steps: AtomicU64,
}

/// The mirror. Built with the app; [`Mirror::run`] drives it.
pub struct Mirror {
    /// Settings.
    pub cfg: Arc<MirrorConfig>,
    /// The Graph client.
    pub client: Arc<GraphClient>,
    boxes: Mutex<BTreeMap<String, Arc<Rt>>>,
    wake: tokio::sync::Notify,
    /// Writes each round's waiting page commits in one durable transaction.
    committer: commit::Committer,
    /// Bounds the mirror's blocking work (view reads, store reads) to the cores, so hundreds
    /// of mailboxes at work do not become hundreds of threads.
    work: Arc<tokio::sync::Semaphore>,
    /// Counters.
    pub counters: MirrorCounters,
    started: Instant,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Mirror {
    /// A mirror for the configured app; fails when the secret cannot be read.
    pub fn new(cfg: MirrorConfig) -> Result<Mirror, String> {
        let credential = credential::AppCredential::load(&cfg.credential)?;
        let cfg = Arc::new(cfg);
        Ok(Mirror {
            client: Arc::new(GraphClient::new(cfg.clone(), credential)?),
            cfg,
            boxes: Mutex::new(BTreeMap::new()),
            wake: tokio::sync::Notify::new(),
            committer: commit::Committer::start()?,
            work: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            )),
            counters: MirrorCounters::default(),
            started: Instant::now(),
        })
    }

    fn boxes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Rt>>> {
        self.boxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mailboxes to mirror now: (login, mailbox) of every active user the settings name.
    fn targets(&self, app: &App) -> Vec<(String, String)> {
        let Ok(e) = app.replica.read() else {
            return Vec::new();
        };
        e.user_ids()
            .into_iter()
            .filter_map(|u| e.user_record(u))
            .filter(|u| u.active)
            .filter_map(|u| Some((u.login.clone(), self.cfg.mailbox(&u.login)?)))
            .collect()
    }

    fn runtime(&self, login: &str, upn: &str) -> Arc<Rt> {
        let mut b = self.boxes();
        let key = login.to_lowercase();
        if let Some(rt) = b.get(&key) {
            if rt.upn == upn {
                return rt.clone();
            }
        }
        let rt = Arc::new(Rt {
            login: login.to_owned(),
            upn: upn.to_owned(),
            keys: Keys::new(login),
            budget: Arc::new(MailboxBudget::new(&self.cfg)),
            busy: AtomicBool::new(false),
            resync: AtomicBool::new(false),
            chain: Arc::new(std::sync::atomic::AtomicUsize::new(self.cfg.batch_size)),
            inner: Mutex::new(RtInner::default()),
        });
        b.insert(key, rt.clone());
        rt
    }

    pub(crate) fn note_failures(&self, login: &str, failed: &[String]) {
        if let Some(rt) = self.boxes().get(&login.to_lowercase()) {
            let mut i = rt.inner.lock().unwrap_or_else(|p| p.into_inner());
            i.refused.extend(failed.iter().cloned());
            let n = i.refused.len();
            if n > FAILED_KEPT {
                i.refused.drain(..n - FAILED_KEPT);
            }
        }
    }

    /// Asks for one mailbox to be rebuilt: its id map and position are forgotten and read
    /// back from the mailbox, then it is brought up to date. False for no mirrored user.
    pub fn resync(&self, login: &str) -> bool {
        let found = self.boxes().get(&login.to_lowercase()).cloned();
        match found {
            Some(rt) => {
                rt.resync.store(true, Ordering::Release);
                let mut i = rt.inner.lock().unwrap_or_else(|p| p.into_inner());
                i.next_try = None;
                i.skipped = false;
                drop(i);
                self.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Runs forever: a step for every mailbox whose folders changed, that is not filled yet, or
    /// whose back-off is over; woken by every replica change.
    /// Returns once `stop` turns true, with every step it started stopped.
    pub async fn run(self: Arc<Self>, app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut changed = app.replica.subscribe();
        let slots = Arc::new(tokio::sync::Semaphore::new(
            self.cfg.parallel_mailboxes.max(1),
        ));
        let mut steps = tokio::task::JoinSet::new();
        loop {
            if *stop.borrow() {
                steps.shutdown().await;
                return;
            }
            while steps.try_join_next().is_some() {}
            if app.replica.is_ready() {
                let seq = app.replica.read().map(|e| e.seq()).unwrap_or(0);
                for (login, upn) in self.targets(&app) {
                    let rt = self.runtime(&login, &upn);
                    if !self.due(&rt, seq) || rt.busy.swap(true, Ordering::AcqRel) {
                        continue;
                    }
                    let (me, app, slots) = (self.clone(), app.clone(), slots.clone());
                    steps.spawn(async move {
                        if let Ok(_slot) = slots.acquire_owned().await {
                            me.step(&app, &rt, seq).await;
                        }
                        rt.busy.store(false, Ordering::Release);
                        me.wake.notify_one();
                    });
                }
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = changed.changed() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn due(&self, rt: &Rt, seq: u64) -> bool {
        let i = rt.inner.lock().unwrap_or_else(|p| p.into_inner());
        if rt.resync.load(Ordering::Acquire) {
            return true;
        }
        if i.next_try.is_some_and(|t| t > Instant::now()) {
            return false;
        }
        i.next_try.is_some()
            || i.seen != Some(seq)
            || i.meta.as_ref().is_none_or(|m| !m.filled)
            || i.last_pull
                .is_none_or(|t| t.elapsed() >= self.cfg.poll_interval)
    }

    async fn step(&self, app: &Arc<App>, rt: &Arc<Rt>, seq: u64) {
        self.counters.steps.fetch_add(1, Ordering::Relaxed);
        let resync = rt.resync.swap(false, Ordering::AcqRel);
        let (cached, pull) = {
            let mut i = rt.inner.lock().unwrap_or_else(|p| p.into_inner());
            let pull = i
                .last_pull
                .is_none_or(|t| t.elapsed() >= self.cfg.poll_interval);
            if pull {
                i.last_pull = Some(Instant::now());
            }
            if i.behind_since.is_none() {
                i.behind_since = Some(Instant::now());
            }
            if resync {
                i.meta = None;
            }
            (i.meta.clone(), pull)
        };
        let meta = match cached {
            Some(m) => Ok(m),
            None => {
                let (keys, app2) = (rt.keys.clone(), app.clone());
                let _permit = self.work.clone().acquire_owned().await;
                tokio::task::spawn_blocking(move || {
                    if resync {
                        keys.forget(&app2.store)?;
                    }
                    keys.load_meta(&app2.store)
                })
                .await
                .map_err(|e| MbError::Retry(format!("worker: {e}")))
                .and_then(|r| r.map_err(|e| MbError::Retry(format!("store: {e}"))))
            }
        };
        let run = Run {
            app,
            mirror: self,
            login: rt.login.clone(),
            upn: rt.upn.clone(),
            keys: rt.keys.clone(),
            budget: rt.budget.clone(),
            chain: rt.chain.clone(),
            progress: AtomicU64::new(0),
            vanished: AtomicBool::new(false),
            contacts: AtomicU64::new(0),
            denied: std::sync::Mutex::new(None),
        };
        let verify = !rt.inner.lock().unwrap_or_else(|p| p.into_inner()).verified;
        let (mut meta, result) = match meta {
            Ok(mut m) => {
                if verify && m.folders.iter().any(Option::is_some) {
                    // First step of this process: the id map is checked against the mailbox
                    // (a crash, a restored store or a lost id map leave it wrong).
                    m.doubtful = true;
                }
                let repair =
                    m.filled && unix_now() >= m.last_repair + self.cfg.repair_interval.as_secs();
                let r = run.step(&mut m, pull, repair).await;
                (Some(m), r)
            }
            Err(e) => (None, Err(e)),
        };
        if let Err(e) = &result {
            tracing::debug!(mailbox = %rt.upn, error = %e, "mirror step ended early");
        }
        let mut i = rt.inner.lock().unwrap_or_else(|p| p.into_inner());
        let n = run.contacts.load(Ordering::Relaxed);
        if n > 0 {
            i.contacts = n;
        }
        if let Some(m) = meta.take() {
            i.meta = Some(m);
        }
        match result {
            Ok(s) => {
                i.verified = true;
                self.counters
                    .written
                    .fetch_add(s.written, Ordering::Relaxed);
                i.written += s.written;
                i.backlog = s.backlog;
                i.failures = 0;
                i.next_try = None;
                i.skipped = false;
                i.last_error = None;
                i.last_ok = Some(unix_now());
                if s.backlog == 0 {
                    i.seen = Some(seq);
                    i.behind_since = None;
                }
            }
            Err(MbError::Gone) => {
                drop(i);
                self.boxes().remove(&rt.login.to_lowercase());
            }
            Err(e) => {
                self.counters.failed_steps.fetch_add(1, Ordering::Relaxed);
                let skip = matches!(e, MbError::Skip(_));
                // A step that got writes in before it failed made progress: the next one
                // comes soon, without growing back-off.
                let progressed = run.progress.load(Ordering::Relaxed) > 0;
                if progressed && !skip {
                    i.failures = 0;
                }
                i.failures = i.failures.saturating_add(1);
                let wait = if skip {
                    self.cfg.failure_backoff
                } else {
                    Duration::from_millis(250 << i.failures.min(8)).min(Duration::from_secs(60))
                };
                if i.last_error.as_deref() != Some(&e.to_string()) {
                    tracing::warn!(mailbox = %rt.upn, error = %e, retry_in_ms = wait.as_millis() as u64,
                        "mailbox mirror step failed");
                }
                i.last_error = Some(e.to_string());
                i.skipped = skip;
                i.next_try = Some(Instant::now() + wait);
                // The cached meta may be behind a failed save: read it again next time.
                if !skip {
                    i.meta = None;
                }
            }
        }
    }

    /// What the store says of every mailbox the settings name (for `crmgate mirror status`
    /// with the server stopped): login, mailbox, filled, contacts in the id map per folder,
    /// changes waiting per folder (`None`: the fill has not reached the end).
    pub fn stored_status(&self, app: &App) -> Result<Vec<StoredStatus>, String> {
        let mut out = Vec::new();
        for (login, upn) in self.targets(app) {
            let keys = Keys::new(&login);
            let meta = keys.load_meta(&app.store).map_err(|e| e.to_string())?;
            let mut mapped = [0usize; 2];
            for f in state::FOLDERS {
                mapped[state::slot(f)] = keys
                    .entries(&app.store, f)
                    .map_err(|e| e.to_string())?
                    .len();
            }
            let engine = app.replica.read().map_err(|e| e.to_string())?;
            let waiting = crate::view::Session::open(
                &app.view_cache,
                &engine,
                &app.codec,
                &app.view,
                &login,
                false,
            )
            .and_then(|s| s.mailbox(None).ok())
            .map(|mb| {
                state::FOLDERS.map(|f| {
                    meta.states[state::slot(f)]
                        .as_deref()
                        .and_then(|st| mb.changes_pending(f, st))
                })
            })
            .unwrap_or([None, None]);
            out.push(StoredStatus {
                login,
                mailbox: upn,
                stored_for: meta.upn.clone(),
                filled: meta.filled,
                doubtful: meta.doubtful,
                mapped,
                waiting,
                last_repair: meta.last_repair,
            });
        }
        Ok(out)
    }

    /// Forgets one mailbox's id map and position in the store (`crmgate mirror resync` with
    /// the server stopped): the next start reads it back from the mailbox.
    pub fn forget(app: &App, login: &str) -> Result<(), String> {
        Keys::new(login)
            .forget(&app.store)
            .map_err(|e| e.to_string())
    }

    /// The status of every mailbox known so far.
    pub fn status(&self) -> Vec<MailboxStatus> {
        let boxes: Vec<Arc<Rt>> = self.boxes().values().cloned().collect();
        boxes
            .iter()
            .map(|rt| {
                let i = rt.inner.lock().unwrap_or_else(|p| p.into_inner());
                let filled = i.meta.as_ref().is_some_and(|m| m.filled);
                let state = if i.skipped {
                    Phase::Skipped
                } else if rt.budget.throttled() {
                    Phase::Throttled
                } else if i.failures > 0 {
                    Phase::Failing
                } else if !filled {
                    Phase::Initial
                } else {
                    Phase::Incremental
                };
                MailboxStatus {
                    login: rt.login.clone(),
                    mailbox: rt.upn.clone(),
                    state,
                    backlog: i.backlog,
                    written: i.written,
                    contacts: i.contacts,
                    lag_secs: i.behind_since.map_or(0, |t| t.elapsed().as_secs()),
                    last_ok: i.last_ok,
                    last_error: i.last_error.clone(),
                    refused: i.refused.clone(),
                }
            })
            .collect()
    }

    /// Progress of the initial fill: (mailboxes filled, mailboxes, contacts written, seconds
    /// left at the rate so far — `None` before anything was written or when done).
    pub fn progress(&self, status: &[MailboxStatus]) -> (usize, usize, u64, Option<u64>) {
        let filled = status
            .iter()
            .filter(|s| s.state != Phase::Initial && s.state != Phase::Skipped)
            .count();
        let written = self.counters.written.load(Ordering::Relaxed);
        let left: u64 = status
            .iter()
            .filter(|s| s.state == Phase::Initial)
            .map(|s| s.contacts.saturating_sub(s.written))
            .sum();
        let secs = self.started.elapsed().as_secs_f64();
        let eta = (written > 0 && left > 0).then(|| (left as f64 * secs / written as f64) as u64);
        (filled, status.len(), written, eta)
    }

    /// The mirror's lines for `/metrics` (Prometheus text format).
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        let status = self.status();
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE crmgate_mirror_mailboxes gauge");
        for p in Phase::ALL {
            let n = status.iter().filter(|s| s.state == p).count();
            let _ = writeln!(
                out,
                "crmgate_mirror_mailboxes{{state=\"{}\"}} {n}",
                p.name()
            );
        }
        let backlog: u64 = status.iter().map(|s| s.backlog).sum();
        let lag = status.iter().map(|s| s.lag_secs).max().unwrap_or(0);
        let (filled, total, written, eta) = self.progress(&status);
        let c = &self.client.counters;
        for (name, kind, v) in [
            ("crmgate_mirror_backlog", "gauge", backlog),
            ("crmgate_mirror_max_lag_seconds", "gauge", lag),
            ("crmgate_mirror_filled_mailboxes", "gauge", filled as u64),
            ("crmgate_mirror_known_mailboxes", "gauge", total as u64),
            ("crmgate_mirror_fill_eta_seconds", "gauge", eta.unwrap_or(0)),
            ("crmgate_mirror_written_total", "counter", written),
            (
                "crmgate_mirror_graph_requests_total",
                "counter",
                c.graph_requests.load(Ordering::Relaxed),
            ),
            (
                "crmgate_mirror_http_requests_total",
                "counter",
                c.http_requests.load(Ordering::Relaxed),
            ),
            (
                "crmgate_mirror_throttled_total",
                "counter",
                c.throttled.load(Ordering::Relaxed),
            ),
            (
                "crmgate_mirror_no_answer_total",
                "counter",
                c.no_answer.load(Ordering::Relaxed),
            ),
            (
                "crmgate_mirror_token_grants_total",
                "counter",
                c.token_grants.load(Ordering::Relaxed),
            ),
            (
                "crmgate_mirror_failed_steps_total",
                "counter",
                self.counters.failed_steps.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {v}");
        }
        out
    }
}
