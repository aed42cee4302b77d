//! The assembled gateway: construction (store, CRM backend and its seed, replica, tokens,
//! limits, the write service) and the shared handles the faces get through an `Arc<App>`.
//! Record writes of the admin API and the CLI live in `admin::records`; client writes go
//! through `view::service::Writer`.

use crate::auth::tokens::{Directory, Tokens};
use crate::auth::{self, Principal, Throttle};
use crate::config::{Backend, Config};
use crate::crm::{Crm, CrmBackend, CrmError, EmbeddedCrm};
use crate::domain::dataset::{Dataset, Problem};
use crate::domain::{Kind, Record, User};
use crate::replica::{LoadStats, Replica, ReplicaError};
use crate::store::{Store, StoreError};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Why the gateway could not start or an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Replica.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// CRM.
    #[error(transparent)]
    Crm(#[from] CrmError),
    /// A dataset or record failed its checks.
    #[error("{}", problems_text(.0))]
    Invalid(Vec<Problem>),
    /// A file could not be read.
    #[error("{0}")]
    Io(String),
}

fn problems_text(p: &[Problem]) -> String {
    const SHOWN: usize = 50;
    let mut s = format!("{} problem(s), nothing was written:", p.len());
    for x in p.iter().take(SHOWN) {
        s.push_str("\n  ");
        s.push_str(&x.to_string());
    }
    if p.len() > SHOWN {
        s.push_str(&format!("\n  … and {} more", p.len() - SHOWN));
    }
    s
}

pub use crate::auth::AuthFailure;

/// Counters exported at `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// Requests answered, by class.
    pub requests_2xx: AtomicU64,
    /// 4xx answers.
    pub requests_4xx: AtomicU64,
    /// 5xx answers.
    pub requests_5xx: AtomicU64,
    /// CRM webhook deliveries accepted (valid signature, fresh, not replayed).
    pub webhooks_accepted: AtomicU64,
    /// CRM webhook deliveries refused.
    pub webhooks_refused: AtomicU64,
}

/// The gateway.
pub struct App {
    /// Validated configuration.
    pub config: Config,
    /// Storage.
    pub store: Arc<Store>,
    /// CRM backend.
    pub crm: Crm,
    /// Replica (shared with the token directory).
    pub replica: Arc<Replica>,
    /// Basic sign-in: verified-credential cache and login throttling.
    pub auth: crate::auth::Authenticator,
    /// Counters.
    pub metrics: Metrics,
    /// Start time.
    pub started: Instant,
    /// How the replica was loaded.
    pub load_stats: LoadStats,
    /// Makes and checks wire ids and sync states.
    pub codec: crate::view::IdCodec,
    /// What the protocol faces show.
    pub view: crate::view::ViewConfig,
    /// Sorted folder listings.
    pub view_cache: crate::view::ViewCache,
    /// Graph bearer tokens, bound to the identities of the replica's users.
    pub tokens: Tokens,
    /// Per-user Graph request limits.
    pub graph_limit: crate::auth::limit::Limiter,
    /// EWS requests in flight per user.
    pub ews_limit: crate::auth::limit::Limiter,
    /// CardDAV requests in flight per user (the EWS face's bound, `ews.concurrent_requests`).
    pub dav_limit: crate::auth::limit::Limiter,
    /// True while the start-up warm-up runs: `/readyz` waits for it, so a load balancer
    /// sends the first syncs only once they run at full speed.
    pub warming: std::sync::atomic::AtomicBool,
    /// Heavy requests running at once (see `server.heavy_workers`).
    pub heavy: Arc<tokio::sync::Semaphore>,
    /// Request memory budget in KiB (see `server.max_request_memory_bytes`).
    pub request_memory: Arc<tokio::sync::Semaphore>,
    /// The write path every face and the admin API use.
    pub writer: Arc<crate::view::service::Writer>,
    /// Sign-in data crmgate keeps itself, when the CRM keeps none (a remote CRM).
    pub signins: Option<Arc<crate::auth::logins::SignIns>>,
    /// The mailbox mirror, when `[mirror]` is on (`server::serve` runs it).
    pub mirror: Option<Arc<crate::mirror::Mirror>>,
}

const SERVER_KEY: &[u8] = b"meta/server_key";

/// The server key that authenticates wire ids, created once per data dir.
fn server_key(store: &Store) -> Result<[u8; 32], AppError> {
    use crate::store::KvStore;
    if let Some(v) = store.get(SERVER_KEY)? {
        if v.len() == 32 {
            let mut k = [0u8; 32];
            k.copy_from_slice(&v);
            return Ok(k);
        }
    }
    let k: [u8; 32] = rand::random();
    store.put(SERVER_KEY, &k)?;
    Ok(k)
}

/// Reads and checks a dataset file.
pub fn read_dataset(path: &Path) -> Result<Dataset, AppError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AppError::Io(format!("{}: cannot read: {e}", path.display())))?;
    Dataset::parse(&text).map_err(AppError::Invalid)
}

/// Replaces plain passwords by argon2 hashes.
pub fn hash_passwords(ds: &mut Dataset) -> Result<(), AppError> {
    for (i, u) in ds.users.iter_mut().enumerate() {
        if let Some(p) = u.password.take() {
            u.password_hash = Some(auth::hash_password(&p).map_err(|e| {
                AppError::Invalid(vec![Problem {
                    path: format!("users[{i}].password"),
                    message: e,
                }])
            })?);
        }
    }
    Ok(())
}

impl App {
    /// Opens the data dir: store, CRM (seeded from `crm.seed` when empty) and replica. The
    /// replica is ready after [`App::catch_up`] has loaded the CRM once.
    pub fn open(config: Config) -> Result<App, AppError> {
        crate::store::create_private_dir(&config.data_dir).map_err(|e| {
            AppError::Io(format!("{}: cannot create: {e}", config.data_dir.display()))
        })?;
        let store = Arc::new(Store::open(&config.data_dir, config.store_engine)?);
        Self::with_store(config, store)
    }

    /// Like [`App::open`] on a given store (tests use the in-memory one).
    pub fn with_store(config: Config, store: Arc<Store>) -> Result<App, AppError> {
        let mut seeded = None;
        let crm = match &config.crm.backend {
            Backend::Embedded => {
                let e = EmbeddedCrm::open(store.clone())?;
                if e.is_empty() {
                    if let Some(seed) = &config.crm.seed {
                        let t = Instant::now();
                        let mut ds = read_dataset(seed)?;
                        let read_ms = t.elapsed().as_millis() as u64;
                        let problems = ds.check(&|_, _| false);
                        if !problems.is_empty() {
                            return Err(AppError::Invalid(problems));
                        }
                        hash_passwords(&mut ds)?;
                        let snapshot = e.seed(ds)?;
                        tracing::info!(records = snapshot.0.len(), seed = %seed.display(), read_ms,
                            total_ms = t.elapsed().as_millis() as u64, "seeded the embedded CRM");
                        seeded = Some(snapshot);
                    }
                }
                Crm::Embedded(e)
            }
            Backend::HelloHq(cfg) => {
                let cfg = (**cfg).clone();
                Crm::HelloHq(crate::crm::HelloHq::open(cfg, store.clone()).map_err(AppError::Io)?)
            }
            Backend::HubSpot(cfg) => {
                let cfg = (**cfg).clone();
                Crm::HubSpot(crate::crm::HubSpot::open(cfg, store.clone()).map_err(AppError::Io)?)
            }
        };
        let signins = if crm.capabilities().keeps_sign_in {
            None
        } else {
            let file = match config.crm.backend.logins_file() {
                Some(p) => auth::logins::read_file(p).map_err(AppError::Io)?,
                None => Default::default(),
            };
            Some(Arc::new(auth::logins::SignIns::open(store.clone(), file)?))
        };
        let (replica, load_stats) = Replica::open(store.clone(), config.folders.rules.clone())?;
        tracing::info!(
            log_entries = load_stats.log_entries,
            ms = load_stats.ms,
            "replica log replayed"
        );
        if let Some((snapshot, cursor)) = seeded {
            // The seed's records are in hand: load the replica from them, not from the store.
            let t = Instant::now();
            let applied = replica.prime(snapshot, cursor)?;
            tracing::info!(
                new_entries = applied.log.len(),
                ms = t.elapsed().as_millis() as u64,
                "replica loaded from the seed"
            );
        }
        let codec = crate::view::IdCodec::new(server_key(&store)?);
        let replica = Arc::new(replica);
        let directory: Directory = {
            let (replica, signins) = (replica.clone(), signins.clone());
            Arc::new(
                move |id: &str| match replica.read().ok()?.record(Kind::User, id)? {
                    Record::User(mut u) => {
                        if let Some(s) = &signins {
                            s.overlay(&mut u);
                        }
                        Some(u)
                    }
                    _ => None,
                },
            )
        };
        let tokens = Tokens::new(store.clone(), directory, config.auth.max_tokens_per_user);
        let swept = tokens.sweep_legacy()?;
        if swept > 0 {
            tracing::info!(
                swept,
                "removed tokens stored before tokens were bound to identities"
            );
        }
        let view = crate::view::ViewConfig {
            my_name: config.folders.my_name.clone(),
            global_name: config.folders.global_name.clone(),
            mapping: config.folders.mapping.clone(),
            my_writable: config.folders.my_writable,
            global_writable: config.folders.global_writable,
            policies: crate::view::write::WritePolicies {
                my_delete: config.folders.my_delete,
                global_delete: config.folders.global_delete,
            },
            capabilities: crm.capabilities(),
            face_folders: crate::ews::folders::WELL_KNOWN,
            contacts_parent: Some(crate::ews::folders::MSG_FOLDER_ROOT),
        };
        let mirror = match &config.mirror {
            Some(m) => Some(Arc::new(
                crate::mirror::Mirror::new(m.clone()).map_err(AppError::Io)?,
            )),
            None => None,
        };
        Ok(App {
            mirror,
            codec,
            view,
            view_cache: crate::view::ViewCache::default(),
            writer: Arc::new(crate::view::service::Writer::new(
                crm.clone(),
                replica.clone(),
                store.clone(),
            )),
            tokens,
            graph_limit: crate::auth::limit::Limiter::new(crate::auth::limit::Limits {
                per_second: config.graph.per_second,
                concurrent: config.graph.concurrent,
            }),
            warming: std::sync::atomic::AtomicBool::new(false),
            heavy: Arc::new(tokio::sync::Semaphore::new(config.server.heavy_workers)),
            request_memory: Arc::new(tokio::sync::Semaphore::new(
                config.server.max_request_memory_bytes / 1024,
            )),
            ews_limit: crate::auth::limit::Limiter::new(crate::auth::limit::Limits {
                per_second: u32::MAX,
                concurrent: config.ews.concurrent,
            }),
            dav_limit: crate::auth::limit::Limiter::new(crate::auth::limit::Limits {
                per_second: u32::MAX,
                concurrent: config.ews.concurrent,
            }),
            auth: crate::auth::Authenticator::new(Throttle::new(config.auth.clone())),
            signins,
            config,
            store,
            crm,
            replica,
            metrics: Metrics::default(),
            started: Instant::now(),
            load_stats,
        })
    }

    /// Brings the replica up to date with the CRM.
    pub async fn catch_up(&self) -> Result<usize, AppError> {
        Ok(self.replica.catch_up(&self.crm).await?)
    }

    /// One polling step: the backend syncs its local copy of a remote CRM first (the
    /// initial load, or a poll), then the replica catches up. Once the replica is ready a
    /// failed sync only logs: reads keep being served.
    pub async fn refresh(&self) -> Result<usize, AppError> {
        match self.crm.sync().await {
            Ok(()) => {}
            Err(e) if !self.replica.is_ready() => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "CRM sync failed; reads go on from the replica")
            }
        }
        self.catch_up().await
    }

    /// Checks Basic credentials against the replica's users (see
    /// [`crate::auth::Authenticator::check_basic`]).
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        ip: IpAddr,
    ) -> Result<Principal, AuthFailure> {
        self.auth.check_basic(authorization, ip, |login| {
            let e = self.replica.read().ok()?;
            let user = e
                .find_login(login)
                .and_then(|u| e.user_record(u).cloned())?;
            Some(match &self.signins {
                None => user,
                Some(_) => Arc::new(self.signed_in_as((*user).clone())),
            })
        })
    }

    /// A user record as crmgate signs them in: with the sign-in data crmgate keeps, when the
    /// CRM keeps none.
    pub fn signed_in_as(&self, mut user: User) -> User {
        if let Some(s) = &self.signins {
            s.overlay(&mut user);
        }
        user
    }

    /// The grant of a valid Graph bearer token (see [`Tokens::verify`]): from memory for a
    /// token verified before, else the store is read (and a possible revocation written) on
    /// the blocking pool, never on the async worker.
    pub async fn verify_token(
        self: &Arc<Self>,
        token: &str,
    ) -> Option<crate::auth::tokens::TokenInfo> {
        if let Some(answer) = self.tokens.verify_cached(token) {
            return answer;
        }
        let (app, token) = (self.clone(), token.to_owned());
        tokio::task::spawn_blocking(move || app.tokens.verify(&token))
            .await
            .ok()
            .flatten()
    }

    /// The CRM backend's own metrics, in the Prometheus text format.
    pub fn crm_metrics(&self) -> String {
        self.crm.metrics()
    }

    /// Whether CRM webhooks are received (a HubSpot backend with a webhook secret), and the
    /// public URL they are signed for if configured.
    pub fn webhooks(&self) -> Option<Option<String>> {
        match &self.crm {
            Crm::HubSpot(h) => h.webhooks().map(|_| h.webhook_url().map(str::to_owned)),
            _ => None,
        }
    }

    /// Takes one CRM webhook delivery (crm::hubspot::webhook): checked at once; the records
    /// its events name are then read from the CRM and the replica catches up, in the
    /// background (polling stays the safety net). `Err` says why it was refused.
    pub fn receive_webhook(
        self: &Arc<Self>,
        uri: &str,
        body: &[u8],
        timestamp: Option<&str>,
        signature: Option<&str>,
    ) -> Result<(), &'static str> {
        let Crm::HubSpot(hs) = &self.crm else {
            return Err("webhooks are off");
        };
        let Some(receiver) = hs.webhooks() else {
            return Err("webhooks are off");
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let targets = match receiver.accept("POST", uri, body, timestamp, signature, now_ms) {
            Ok(t) => t,
            Err(why) => {
                self.metrics
                    .webhooks_refused
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(reason = why.text(), "HubSpot webhook delivery refused");
                return Err(why.text());
            }
        };
        self.metrics
            .webhooks_accepted
            .fetch_add(1, Ordering::Relaxed);
        if !targets.is_empty() {
            let (app, hs) = (self.clone(), hs.clone());
            tokio::spawn(async move {
                let n = targets.len();
                match hs.confirm(targets).await {
                    Ok(_) => {
                        if let Err(e) = app.catch_up().await {
                            tracing::warn!(error = %e, "replica catch-up after a webhook failed");
                        }
                    }
                    Err(e) => tracing::warn!(
                        error = %e, records = n,
                        "records named by a HubSpot webhook could not be read; the next poll finds them"
                    ),
                }
            });
        }
        Ok(())
    }

    /// The newest audit records, newest last.
    pub fn audit_tail(&self, limit: usize) -> Result<Vec<serde_json::Value>, AppError> {
        Ok(self.writer.audit_tail(limit)?)
    }

    /// Formats every phone number of the replica once, so that first syncs do not pay for
    /// phone parsing (~23 µs a number); `serve` runs it in the background once the replica is
    /// ready. Returns how many numbers it formatted.
    pub fn warm_up(&self) -> usize {
        let numbers: Vec<String> = match self.replica.read() {
            Ok(e) => e
                .ids(Kind::Contact)
                .iter()
                .filter_map(|id| e.contact_record_by_id(id))
                .flat_map(|c| {
                    c.phones
                        .iter()
                        .map(|p| p.number.clone())
                        .collect::<Vec<_>>()
                })
                .collect(),
            Err(_) => return 0,
        };
        let region = &self.config.folders.mapping.default_region;
        for n in &numbers {
            crate::domain::mapping::display_phone(n, region);
        }
        numbers.len()
    }
}

/// Runs a request's heavy part on the blocking pool once one of the `server.heavy_workers`
/// slots is free (waiting in arrival order). The slots keep the async workers' share of the CPU:
/// however many users send expensive requests, at most that many threads do such work, so
/// `/healthz`, sync polls and other light requests answered on the async workers stay fast.
/// `None` if the work panicked.
pub async fn heavy<T: Send + 'static>(
    app: &App,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let _slot = app.heavy.clone().acquire_owned().await.ok()?;
    tokio::task::spawn_blocking(f).await.ok()
}
