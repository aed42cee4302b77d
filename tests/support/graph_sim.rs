//! An in-process, stateful simulator of the Microsoft Graph v1.0 personal-contacts API with
//! application permissions, for the tests of crmgate's mailbox mirror. It is written from the
//! published description in `fixtures/graph/contacts-v1.0-openapi.json` (S) and the facts in
//! `../shared/specs/graph/README.md` (R, with the Microsoft pages it cites), not from any
//! adapter; `tests/graph_sim_contract.rs` checks every answer against S and pins the
//! behaviours below. Where neither says, the choice is the strict one: never more lenient than
//! the real service.
//!
//! Served on `http://127.0.0.1:port`, JSON throughout (`Content-Type: application/json`):
//! - `POST /{tenant}/oauth2/v2.0/token`: client credentials ([`GraphSim::TENANT`] or
//!   [`GraphSim::TENANT_DOMAIN`], [`GraphSim::CLIENT_ID`], [`GraphSim::CLIENT_SECRET`],
//!   [`GraphSim::SCOPE`]);
//! - `/v1.0/users/{user-id}/contactFolders`: list, create; `…/contactFolders/{id}`: get, `PATCH`
//!   (rename, extended properties), `DELETE` (its contacts and child folders go with it);
//!   `…/contactFolders/{id}/childFolders`: list, create (Microsoft's contactfolder-list-
//!   childfolders and contactfolder-post-childfolders pages: the same contactFolder shapes as
//!   `/contactFolders`, which lists only the default folder's children);
//! - `/v1.0/users/{user-id}/contactFolders/{id}/contacts` and `/v1.0/users/{user-id}/contacts`
//!   (the default Contacts folder): list, create; `…/{contact-id}`: get, `PATCH`, `DELETE`;
//! - `GET /v1.0/users/{user-id}/contactFolders/{id}/contacts/delta` and
//!   `GET /v1.0/users/{user-id}/contactFolders/delta` (also `delta()`, `microsoft.graph.delta`);
//! - `POST /v1.0/$batch`.
//!
//! `{user-id}` is the object id or the userPrincipalName, without regard to case; segment
//! names are matched without regard to case, and OData key syntax (`users('x')/
//! contactFolders('y')`) is understood (delta links use it, as Graph's do). Every answer has
//! `request-id` and `client-request-id` (echoed) headers; error bodies are S's `ODataError`,
//! their `innerError` (service-specific in S) holds `date`, `request-id` and
//! `client-request-id` as in Microsoft's json-batching example. Entity and collection answers
//! carry `@odata.context`.
//!
//! Strict choices and their sources:
//! - Authentication (R): every Graph request (and the batch envelope) needs
//!   `Authorization: Bearer` with an unexpired token the endpoint issued, else 401
//!   `InvalidAuthenticationToken` with `WWW-Authenticate`; tokens live 3599 s unless
//!   [`GraphSim::set_access_ttl`] says otherwise; [`GraphSim::set_secret`] refuses the old
//!   secret for new grants (tokens issued stay valid); `common`, `organizations` and
//!   `consumers` are refused for client credentials (AADSTS50059), an unknown tenant is
//!   AADSTS90002, a wrong secret 401 `invalid_client` AADSTS7000215, a wrong scope 400
//!   `invalid_scope`, another grant 400 `unsupported_grant_type`. Certificate credentials
//!   ([`GraphSim::add_certificate`], Microsoft Entra ID's "certificate credentials" page):
//!   `client_assertion_type` must be the RFC 7523 JWT bearer type and no `client_secret` may
//!   come with it; the assertion is a compact JWS with header `alg` RS256 and `x5t` naming a
//!   registered certificate's SHA-1 thumbprint (base64url), claims `aud` = this token
//!   endpoint's URL, `iss` = `sub` = the client id, a `jti` never seen before, `nbf` ≤ now + 5
//!   min and `exp` > now − 5 min, and a signature the certificate's key verifies; anything else
//!   is 401 `invalid_client` (AADSTS50027 malformed, AADSTS700027 unknown certificate or bad
//!   signature, AADSTS700024 outside its time range, AADSTS700021 wrong issuer/subject).
//!   AADSTS numbers as public reports show them.
//! - Users: an unknown `{user-id}` is 404 `ErrorInvalidUser` ("The requested user '…' is
//!   invalid.", as seen in Graph's issue trackers); [`MailboxState`] gives 404
//!   `MailboxNotEnabledForRESTAPI` or 403 `ErrorAccessDenied`; `/me` is 400 (app-only).
//! - Lists: 10 items per page by default (Outlook's default), `$top` 1..=1000 (a Microsoft
//!   answer on microsoft-graph-docs#4798; more is 400, not clamped), or
//!   `Prefer: odata.maxpagesize` (reported in `Preference-Applied`); `@odata.nextLink`
//!   (absolute, `$top`/`$skip` plus the other options) on every page but the last;
//!   `$count=true` adds `@odata.count`; `$orderby`, `$search` and any `$filter` but the
//!   extended-property one are 400; a system query option given twice, or one the route does
//!   not take, is 400; `+` in a query is a space (Microsoft's delta-query-messages page writes
//!   `$filter=receivedDateTime+ge+{value}`), a plus is `%2B`.
//! - Shapes: without `$select` a contact has every property of S's `contact` (unset strings
//!   null, collections `[]`, addresses `{}`, `fileAs` and `personalNotes` `""`, as in the
//!   contact-get example; the 2026 `primary/secondary/tertiaryEmailAddress` null when unset)
//!   and `@odata.etag` = `W/"<changeKey>"`; a folder has `id`, `displayName`,
//!   `parentFolderId` and no etag. With `$select` (exact, case-sensitive names) only those plus
//!   `id` (and a contact's `@odata.etag`). Extended properties are never returned unless
//!   `$expand=singleValueExtendedProperties($filter=id eq '…')` asks, and then only that one;
//!   an item without it has no `singleValueExtendedProperties` member at all (the docs are
//!   silent; absence is what a client must cope with). Write answers never expand.
//! - Writes: a JSON object with `Content-Type: application/json`, else 400. Unknown
//!   properties are 400 `RequestBodyRead` naming them (Outlook's message); read-only ones
//!   (`id`, `changeKey`, `createdDateTime`, `lastModifiedDateTime`, `parentFolderId`) 400
//!   `ErrorInvalidPropertySet`; navigation properties other than
//!   `singleValueExtendedProperties` 400; wrong types 400. Exchange's fixed slots are
//!   enforced: 3 e-mail addresses, 2 business phones, 2 home phones, 3 IM addresses (400
//!   beyond). A write touching `givenName`, `middleName` or `surname` without `displayName`
//!   regenerates `displayName` (S: the property's description warns of exactly this).
//!   Folders: `displayName` required; a sibling (same parent) with the same name without
//!   regard to case is 409 `ErrorFolderExists`; `parentFolderId` only on create and only the
//!   parent the route names (the create example sends it); the default folder can be read,
//!   not renamed or deleted. `contactFolders/delta` covers the default folder's children.
//! - Versions and ids: every change gives a contact a new `changeKey`; `If-Match` must be the
//!   etag exactly or `*`, else 412 `ErrorIrresolvableConflict` (folders: only `*`). Ids are
//!   long Exchange-like base64 strings, never reused; malformed ones are 400
//!   `ErrorInvalidIdMalformed`, unknown ones 404 `ErrorItemNotFound`. A contact is found only
//!   through its own folder (`/users/{id}/contacts/{id}` only in the default folder); a move
//!   in Outlook ([`GraphSim::user_move`]) gives a new id, as Exchange ids depend on the
//!   folder (`Prefer: IdType="ImmutableId"` is not honoured).
//! - Extended properties (R): ids in the `{type} {guid} Name {name}` or
//!   `{type} {guid} Id 0x8000–0xFFFE` form (the proptag form is for existing MAPI
//!   properties, which the sim does not model: 400); the value a string valid for the type; a
//!   write with an existing id (type and GUID without regard to case, the name exactly)
//!   replaces the value. `$filter=singleValueExtendedProperties/Any(ep: ep/id eq '…')`,
//!   optionally `and ep/value {eq|ne|ge|gt|le|lt} '…'` (`Any`/`any`, `id`/`Id`,
//!   `value`/`Value`): the name case-sensitive, the value compared without regard to case;
//!   a value clause only on `String` properties (others need `cast`, not implemented: 400);
//!   `contains`/`startswith` (messages and events only) and anything else: 400
//!   `ErrorInvalidUrlQueryFilter`. Filtered lists do not include the property.
//! - Delta (R, Microsoft's contact-delta and delta-query-overview pages): only `$select` on
//!   the first call (other options are 400 `ErrorInvalidUrlQuery`, as a public report of the
//!   live service shows for `$top`), none with a state token; pages of
//!   `Prefer: odata.maxpagesize`, at most 200, 200 by default (the only published figure, a
//!   Microsoft Q&A answer); every page has `@odata.nextLink` or `@odata.deltaLink`, never
//!   both. A later round has created and
//!   moved-in items in full (within the `$select`), updated ones as `id`, `@odata.etag` and
//!   only the properties that changed (`changeKey` and `lastModifiedDateTime` change with
//!   every update, so they are among them unless the `$select` leaves them out), removed and
//!   moved-out ones as `{"id", "@removed": {"reason": "deleted"}}`. Order within a round is
//!   shuffled. [`GraphSim::set_delta_replays`]: items repeat within a round, the previous
//!   round's unchanged items come again, and a round ends with an empty page. Tokens are
//!   opaque and bound to mailbox, folder and kind (else 400 `ErrorInvalidSyncStateData`);
//!   after [`GraphSim::expire_delta_tokens`] they are 410 `resyncRequired` with a `Location`
//!   of the initial query and an empty `$deltatoken` (which starts a full round). Delta on a
//!   deleted folder is 404; the undocumented `/users/{id}/contacts/delta` is 400.
//! - `$batch` (R): 1 to 20 items, ids unique without regard to case, `method` (upper case),
//!   `url` required, unknown or cyclic `dependsOn`: the envelope is 400. An item's `url` is
//!   relative and without version (`/v1.0/…` or absolute: item 400); a body needs a
//!   `Content-Type` header (item 400) and must be a JSON object. Items run in waves by
//!   `dependsOn`; a failed item's dependents are 424; answers are shuffled; the envelope is
//!   200 however the items fare.
//! - Limits per app and mailbox ([`Limits`], defaults from R): requests per window, bytes of
//!   request bodies per 5 minutes, concurrent requests; beyond them 429 `TooManyRequests`
//!   with `Retry-After` (message "Please retry again later." as in S's example, or
//!   "Application is over its MailboxConcurrency limit." for concurrency, 1 s). Every batch
//!   item counts like a request, and the parallel items of a batch are concurrent requests
//!   to their mailbox: 6 parallel items to one mailbox get at least two 429s. That follows the
//!   older revision of Microsoft's throttling page; the current one says Graph hands Outlook 4
//!   items of a batch at a time, which is more lenient. A request that arrives before the
//!   `Retry-After` its mailbox was last given has passed still counts, is refused with 429
//!   again and is a violation ([`GraphSim::violations`]) when it was sent after that
//!   `Retry-After` was given (a batch item: when its batch arrived after it); a batch item's
//!   `Retry-After` is given when the envelope is answered. The global per-app limit is not simulated.
//! - Latency 80–150 ms per request and per batch item, held as a concurrency slot
//!   ([`GraphSim::set_latency`]); faults ([`Faults`]): 503/504 before anything is done, or
//!   the connection closed after a write was applied.
//!
//! Not served: photos, open extensions, multi-value extended properties,
//! `$orderby`, `$search`, `cast` in filters, immutable ids. "User in Outlook" operations
//! ([`GraphSim::user_update`] and the other `user_*` functions) bypass authentication and
//! limits but are changes like any other, visible to delta.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default page size of lists.
const LIST_DEFAULT_PAGE: usize = 10;
/// The largest `$top` Outlook lists accept.
const LIST_MAX_TOP: usize = 1000;
/// The largest (and default) delta page.
const DELTA_MAX_PAGE: usize = 200;
/// Items per `$batch`.
const BATCH_MAX: usize = 20;
/// The window of the upload limit.
const UPLOAD_WINDOW: Duration = Duration::from_secs(300);
/// Bytes behind an id (`AAMkA` + base64 of these).
const ID_BYTES: usize = 56;

/// Every property of `microsoft.graph.contact` a contact answer carries, in the order of the
/// contact-get example (the three e-mail slots of 2026 last).
const CONTACT_PROPS: [&str; 41] = [
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "parentFolderId",
    "birthday",
    "fileAs",
    "displayName",
    "givenName",
    "initials",
    "middleName",
    "nickName",
    "surname",
    "title",
    "yomiGivenName",
    "yomiSurname",
    "yomiCompanyName",
    "generation",
    "imAddresses",
    "jobTitle",
    "companyName",
    "department",
    "officeLocation",
    "profession",
    "businessHomePage",
    "assistantName",
    "manager",
    "homePhones",
    "mobilePhone",
    "businessPhones",
    "spouseName",
    "personalNotes",
    "children",
    "emailAddresses",
    "homeAddress",
    "businessAddress",
    "otherAddress",
    "primaryEmailAddress",
    "secondaryEmailAddress",
    "tertiaryEmailAddress",
];

/// Writable string properties.
const STRING_PROPS: [&str; 23] = [
    "assistantName",
    "businessHomePage",
    "companyName",
    "department",
    "displayName",
    "fileAs",
    "generation",
    "givenName",
    "initials",
    "jobTitle",
    "manager",
    "middleName",
    "mobilePhone",
    "nickName",
    "officeLocation",
    "personalNotes",
    "profession",
    "spouseName",
    "surname",
    "title",
    "yomiCompanyName",
    "yomiGivenName",
    "yomiSurname",
];

/// Writable string collections and the number of slots Exchange has for them.
const LIST_PROPS: [(&str, Option<usize>); 5] = [
    ("businessPhones", Some(2)),
    ("homePhones", Some(2)),
    ("imAddresses", Some(3)),
    ("children", None),
    ("categories", None),
];

const ADDRESS_PROPS: [&str; 3] = ["homeAddress", "businessAddress", "otherAddress"];
const ADDRESS_FIELDS: [&str; 5] = ["city", "countryOrRegion", "postalCode", "state", "street"];
const EMAIL_PROPS: [&str; 3] = [
    "primaryEmailAddress",
    "secondaryEmailAddress",
    "tertiaryEmailAddress",
];
const READ_ONLY: [&str; 5] = [
    "id",
    "changeKey",
    "createdDateTime",
    "lastModifiedDateTime",
    "parentFolderId",
];
/// Navigation properties the sim does not write.
const NAV_PROPS: [&str; 3] = ["extensions", "multiValueExtendedProperties", "photo"];
const FOLDER_PROPS: [&str; 3] = ["id", "displayName", "parentFolderId"];
/// MAPI property types of single-value extended properties.
const EXT_TYPES: [&str; 12] = [
    "ApplicationTime",
    "Binary",
    "Boolean",
    "CLSID",
    "Currency",
    "Double",
    "Integer",
    "Long",
    "Object",
    "Short",
    "String",
    "SystemTime",
];

// ---------------------------------------------------------------------------------------------
// Public types

/// What a mailbox answers besides its contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxState {
    /// A normal Exchange Online mailbox.
    Ok,
    /// The user has no (REST-enabled) mailbox: 404 `MailboxNotEnabledForRESTAPI`.
    NoMailbox,
    /// The app may not reach this mailbox (an application access policy): 403
    /// `ErrorAccessDenied`.
    AccessDenied,
}

/// Outlook's limits per app and mailbox.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Requests per `window` (Microsoft: 10,000 per 10 minutes).
    pub requests_per_window: u64,
    /// The request window.
    pub window: Duration,
    /// Concurrent requests (Microsoft: 4).
    pub concurrent: usize,
    /// Bytes of `POST`/`PATCH`/`PUT` bodies per 5 minutes (Microsoft: 150 MB).
    pub upload_bytes_per_5min: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            requests_per_window: 10_000,
            window: Duration::from_secs(600),
            concurrent: 4,
            upload_bytes_per_5min: 150_000_000,
        }
    }
}

/// Fault switches (all off by default).
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Share of requests (and batch items) answered 503 or 504 before anything is done,
    /// half of them with a `Retry-After`.
    pub fail_5xx: f64,
    /// Share of successful writes (or batches with one) whose connection is closed without an
    /// answer after the write was applied.
    pub drop_after_write: f64,
}

/// A contact folder as [`GraphSim::folders`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimFolder {
    /// The folder's id.
    pub id: String,
    /// Its `displayName`.
    pub display_name: String,
    /// Its `parentFolderId` (the default Contacts folder for every folder the API creates).
    pub parent_id: String,
    /// Its single-value extended properties, id as written → value.
    pub ext: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------------------------
// State

struct Folder {
    id: String,
    name: String,
    parent: String,
    ext: Vec<(String, String)>,
    serial: u64,
}

struct Contact {
    id: String,
    folder: String,
    /// Every writable property with its current value.
    props: Map<String, Value>,
    change_key: String,
    created: String,
    modified: String,
    ext: Vec<(String, String)>,
    serial: u64,
}

struct Mailbox {
    upn: String,
    object_id: String,
    state: MailboxState,
    /// Bytes every id of this mailbox starts with.
    key: [u8; 16],
    root_id: String,
    default_folder: String,
    folders: BTreeMap<String, Folder>,
    contacts: BTreeMap<String, Contact>,
    window: VecDeque<Instant>,
    uploads: VecDeque<(Instant, u64)>,
    in_flight: usize,
    max_in_flight: usize,
    throttled_until: Option<Instant>,
    /// When the last `Retry-After` was given (delivered).
    throttled_given: Option<Instant>,
    violations: u64,
    /// Bumped by [`GraphSim::expire_delta_tokens`]; tokens of an older epoch are gone.
    epoch: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Scope {
    /// Contacts of one folder.
    Contacts(String),
    /// The contact folders of the mailbox.
    Folders,
}

#[derive(Clone)]
enum TokenKind {
    /// End of a round: the state then (id → full representation) and the ids the round
    /// delivered (for replays).
    Delta {
        snapshot: Arc<BTreeMap<String, Value>>,
        last_round: Arc<Vec<String>>,
    },
    /// A page of a round: the round's items, where the page starts and the token that ends
    /// the round.
    Page {
        items: Arc<Vec<Value>>,
        offset: usize,
        final_token: String,
        trailing_empty: bool,
    },
}

#[derive(Clone)]
struct SyncToken {
    mb: usize,
    scope: Scope,
    epoch: u64,
    select: Option<Vec<String>>,
    kind: TokenKind,
}

struct State {
    secret: String,
    /// Registered certificates: SHA-1 thumbprint and PKCS#1 RSAPublicKey DER.
    certificates: Vec<(Vec<u8>, Vec<u8>)>,
    /// `jti`s of accepted assertions (a replay is refused).
    assertion_ids: std::collections::HashSet<String>,
    access_ttl: Duration,
    tokens: HashMap<String, Instant>,
    token_grants: u64,
    mailboxes: Vec<Mailbox>,
    limits: Limits,
    latency: (Duration, Duration),
    faults: Faults,
    faults_injected: u64,
    replays: bool,
    by_route: BTreeMap<String, u64>,
    throttled: u64,
    writes: Vec<(String, Value)>,
    sync: HashMap<String, SyncToken>,
    /// Registration order of the delta states per (mailbox, scope), for eviction.
    sync_order: HashMap<(usize, String), std::collections::VecDeque<String>>,
    /// Evicted states: answered like expired ones.
    evicted: HashMap<String, (usize, Scope, Option<Vec<String>>)>,
    serial: u64,
}

struct Shared {
    base: String,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The simulator; stops when dropped.
pub struct GraphSim {
    /// `http://127.0.0.1:port`.
    pub base_url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GraphSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Public API

impl GraphSim {
    /// The directory tenant (GUID form).
    pub const TENANT: &'static str = "5b1f3c2e-8d47-4a9b-b6e1-2c0d9f7a4e31";
    /// The same tenant in domain form.
    pub const TENANT_DOMAIN: &'static str = "crmgate-sim.onmicrosoft.com";
    /// The registered app.
    pub const CLIENT_ID: &'static str = "a3c1e5f7-0b2d-4e6f-8a9c-1d3e5f7a9b0c";
    /// The app's secret (until [`GraphSim::set_secret`] rotates it).
    pub const CLIENT_SECRET: &'static str = "Sim8Q~graph.client-secret_0001";
    /// The only scope client credentials may ask for here.
    pub const SCOPE: &'static str = "https://graph.microsoft.com/.default";

    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start() -> GraphSim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("graph_sim: bind");
        let addr = listener.local_addr().expect("addr");
        let base_url = format!("http://127.0.0.1:{}", addr.port());
        let st = State {
            secret: GraphSim::CLIENT_SECRET.to_owned(),
            certificates: Vec::new(),
            assertion_ids: Default::default(),
            access_ttl: Duration::from_secs(3599),
            tokens: HashMap::new(),
            token_grants: 0,
            mailboxes: Vec::new(),
            limits: Limits::default(),
            latency: (Duration::from_millis(80), Duration::from_millis(150)),
            faults: Faults::default(),
            faults_injected: 0,
            replays: false,
            by_route: BTreeMap::new(),
            throttled: 0,
            writes: Vec::new(),
            sync: HashMap::new(),
            sync_order: HashMap::new(),
            evicted: HashMap::new(),
            serial: 0,
        };
        let shared = Arc::new(Shared {
            base: base_url.clone(),
            state: Mutex::new(st),
        });
        let sh = shared.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                while conns.try_join_next().is_some() {}
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let sh = sh.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(sh.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        GraphSim {
            base_url,
            shared,
            task,
        }
    }

    /// `{base}/{TENANT}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.base_url, GraphSim::TENANT)
    }

    /// `{base}/v1.0`, the Graph root.
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base_url)
    }

    /// How long access tokens live from now on (default 3599 s).
    pub fn set_access_ttl(&self, d: Duration) {
        self.shared.lock().access_ttl = d;
    }

    /// Tokens granted by the token endpoint.
    pub fn token_grants(&self) -> u64 {
        self.shared.lock().token_grants
    }

    /// Rotates the app secret: the old one is refused from now on (issued tokens stay valid).
    pub fn set_secret(&self, secret: &str) {
        self.shared.lock().secret = secret.to_owned();
    }

    /// Registers a certificate on the app, as an admin uploads it in Entra ID: its SHA-1
    /// thumbprint in hex (as the portal shows it) and its RSA public key (PKCS#1 DER).
    pub fn add_certificate(&self, thumbprint_hex: &str, public_key_der: Vec<u8>) {
        let t = thumbprint_hex.trim();
        let sha1: Vec<u8> = (0..t.len() / 2)
            .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).expect("hex thumbprint"))
            .collect();
        self.shared.lock().certificates.push((sha1, public_key_der));
    }

    /// A valid access token without a request to the token endpoint (not counted as a grant).
    pub fn issue_token(&self) -> String {
        let mut st = self.shared.lock();
        let t = random_token(96);
        let until = Instant::now() + st.access_ttl;
        st.tokens.insert(t.clone(), until);
        t
    }

    /// Adds a mailbox (with its empty default Contacts folder); returns the user's object id.
    pub fn add_mailbox(&self, upn: &str) -> String {
        let mut st = self.shared.lock();
        assert!(
            find_mailbox(&st, upn).is_none(),
            "graph_sim: mailbox {upn} exists"
        );
        let mut key = [0u8; 16];
        rand::thread_rng().fill(&mut key);
        let mut mbx = Mailbox {
            upn: upn.to_owned(),
            object_id: guid(),
            state: MailboxState::Ok,
            key,
            root_id: String::new(),
            default_folder: String::new(),
            folders: BTreeMap::new(),
            contacts: BTreeMap::new(),
            window: VecDeque::new(),
            uploads: VecDeque::new(),
            in_flight: 0,
            max_in_flight: 0,
            throttled_until: None,
            throttled_given: None,
            violations: 0,
            epoch: 0,
        };
        st.serial += 1;
        mbx.root_id = new_id(&key, 0, st.serial);
        st.serial += 1;
        let serial = st.serial;
        let def = new_id(&key, 1, serial);
        mbx.default_folder = def.clone();
        mbx.folders.insert(
            def.clone(),
            Folder {
                id: def,
                name: "Contacts".into(),
                parent: mbx.root_id.clone(),
                ext: Vec::new(),
                serial,
            },
        );
        let id = mbx.object_id.clone();
        st.mailboxes.push(mbx);
        id
    }

    /// Sets what a mailbox answers (see [`MailboxState`]).
    pub fn set_mailbox_state(&self, upn: &str, s: MailboxState) {
        let mut st = self.shared.lock();
        let mb = mailbox(&st, upn);
        st.mailboxes[mb].state = s;
    }

    /// Sets the limits per app and mailbox.
    pub fn set_limits(&self, l: Limits) {
        self.shared.lock().limits = l;
    }

    /// Every request and batch item waits a uniformly random time in `min..=max` while it
    /// holds its concurrency slot (default 80–150 ms).
    pub fn set_latency(&self, min: Duration, max: Duration) {
        self.shared.lock().latency = (min, max.max(min));
    }

    /// Sets the fault switches.
    pub fn set_faults(&self, f: Faults) {
        self.shared.lock().faults = f;
    }

    /// Faults injected so far (5xx answers and dropped connections).
    pub fn faults_injected(&self) -> u64 {
        self.shared.lock().faults_injected
    }

    /// Replays on delta: items repeat within a round and in the next round, and a round ends
    /// with an empty page (R: "the same item can show up more than once").
    pub fn set_delta_replays(&self, on: bool) {
        self.shared.lock().replays = on;
    }

    /// Evicts every delta and skip token of the mailbox: they answer 410 Gone from now on.
    pub fn expire_delta_tokens(&self, upn: &str) {
        let mut st = self.shared.lock();
        let mb = mailbox(&st, upn);
        st.mailboxes[mb].epoch += 1;
    }

    /// Requests (and batch items) that arrived while their mailbox was still to wait out a
    /// `Retry-After` it had been given, over all mailboxes.
    pub fn violations(&self) -> u64 {
        self.shared
            .lock()
            .mailboxes
            .iter()
            .map(|m| m.violations)
            .sum()
    }

    /// The violations of one mailbox.
    pub fn violations_for(&self, upn: &str) -> u64 {
        let st = self.shared.lock();
        st.mailboxes[mailbox(&st, upn)].violations
    }

    /// 429 answers given (requests and batch items).
    pub fn throttled(&self) -> u64 {
        self.shared.lock().throttled
    }

    /// The most requests ever in flight at once to the mailbox.
    pub fn max_in_flight(&self, upn: &str) -> usize {
        let st = self.shared.lock();
        st.mailboxes[mailbox(&st, upn)].max_in_flight
    }

    /// Requests received, all and by route kind: `"METHOD {the spec's path template}"`
    /// (`"GET /users/{user-id}/contacts"`, `"POST /$batch"`, `"POST /{tenant}/oauth2/v2.0/
    /// token"`; `"GET (unrouted)"` for paths the spec does not have). Batch items count like
    /// requests once they reach routing (not those refused for their url or headers, nor 424s).
    pub fn requests(&self) -> (u64, BTreeMap<String, u64>) {
        let st = self.shared.lock();
        (st.by_route.values().sum(), st.by_route.clone())
    }

    /// Every write (`POST`, `PATCH`, `PUT`, `DELETE`, batch items included) that reached its
    /// mailbox past authentication and limits, in order: (`"POST /users/x/contactFolders/y/
    /// contacts"` as sent, without version and query; the JSON body or null).
    pub fn writes(&self) -> Vec<(String, Value)> {
        self.shared.lock().writes.clone()
    }

    /// Zeroes the counters (requests, 429s, violations, faults, grants, the most in flight)
    /// and forgets the writes; contents, limits' windows and tokens stay.
    pub fn reset_counters(&self) {
        let mut st = self.shared.lock();
        st.by_route.clear();
        st.throttled = 0;
        st.faults_injected = 0;
        st.token_grants = 0;
        st.writes.clear();
        for m in &mut st.mailboxes {
            m.violations = 0;
            m.max_in_flight = m.in_flight;
        }
    }

    /// The id of the mailbox's default Contacts folder.
    pub fn default_folder_id(&self, upn: &str) -> String {
        let st = self.shared.lock();
        st.mailboxes[mailbox(&st, upn)].default_folder.clone()
    }

    /// The contact folders below the default folder, at any depth (`parent_id` tells where),
    /// in creation order.
    pub fn folders(&self, upn: &str) -> Vec<SimFolder> {
        let st = self.shared.lock();
        let m = &st.mailboxes[mailbox(&st, upn)];
        let mut all: Vec<&Folder> = m
            .folders
            .values()
            .filter(|f| f.id != m.default_folder && within(m, &f.id, &m.default_folder))
            .collect();
        all.sort_by_key(|f| f.serial);
        all.into_iter()
            .map(|f| SimFolder {
                id: f.id.clone(),
                display_name: f.name.clone(),
                parent_id: f.parent.clone(),
                ext: f.ext.iter().cloned().collect(),
            })
            .collect()
    }

    /// The contacts of a folder in creation order: full JSON with `@odata.etag` and a
    /// `singleValueExtendedProperties` list of all their extended properties.
    pub fn contacts(&self, upn: &str, folder_id: &str) -> Vec<Value> {
        let st = self.shared.lock();
        let m = &st.mailboxes[mailbox(&st, upn)];
        folder_contacts(m, folder_id)
            .into_iter()
            .map(inspect_contact)
            .collect()
    }

    /// One contact (any folder) as [`GraphSim::contacts`] shows it.
    pub fn contact(&self, upn: &str, id: &str) -> Option<Value> {
        let st = self.shared.lock();
        let m = &st.mailboxes[mailbox(&st, upn)];
        m.contacts.get(id).map(inspect_contact)
    }

    /// Creates a contact as a user in Outlook would (body as for `POST`); returns its id.
    pub fn user_create(&self, upn: &str, folder_id: &str, body: Value) -> String {
        let mut st = self.shared.lock();
        let mb = mailbox(&st, upn);
        let body = body
            .as_object()
            .cloned()
            .expect("user_create: a JSON object");
        create_contact(&mut st, mb, folder_id, &body)
            .unwrap_or_else(|f| panic!("user_create: {}", f.message))
    }

    /// Changes a contact as a user in Outlook would (body as for `PATCH`).
    pub fn user_update(&self, upn: &str, contact_id: &str, patch: Value) {
        let mut st = self.shared.lock();
        let mb = mailbox(&st, upn);
        let patch = patch
            .as_object()
            .cloned()
            .expect("user_update: a JSON object");
        update_contact(&mut st, mb, contact_id, &patch)
            .unwrap_or_else(|f| panic!("user_update: {}", f.message));
    }

    /// Deletes a contact as a user in Outlook would.
    pub fn user_delete(&self, upn: &str, contact_id: &str) {
        let mut st = self.shared.lock();
        let mb = mailbox(&st, upn);
        let gone = st.mailboxes[mb].contacts.remove(contact_id);
        assert!(gone.is_some(), "user_delete: no contact {contact_id}");
    }

    /// Moves a contact to another folder as a user in Outlook would; returns its new id
    /// (Exchange ids depend on the folder).
    pub fn user_move(&self, upn: &str, contact_id: &str, to_folder_id: &str) -> String {
        let mut st = self.shared.lock();
        let mb = mailbox(&st, upn);
        assert!(
            st.mailboxes[mb].folders.contains_key(to_folder_id),
            "user_move: no folder {to_folder_id}"
        );
        let mut c = st.mailboxes[mb]
            .contacts
            .remove(contact_id)
            .unwrap_or_else(|| panic!("user_move: no contact {contact_id}"));
        st.serial += 1;
        c.serial = st.serial;
        c.id = new_id(&st.mailboxes[mb].key, 2, c.serial);
        c.folder = to_folder_id.to_owned();
        c.change_key = change_key();
        c.modified = now_iso();
        let id = c.id.clone();
        st.mailboxes[mb].contacts.insert(id.clone(), c);
        id
    }

    /// Creates a contact folder as a user in Outlook would; returns its id.
    pub fn user_create_folder(&self, upn: &str, name: &str) -> String {
        let mut st = self.shared.lock();
        let mb = mailbox(&st, upn);
        let body = json!({ "displayName": name });
        let def = st.mailboxes[mb].default_folder.clone();
        create_folder(&mut st, mb, &def, body.as_object().expect("object"))
            .unwrap_or_else(|f| panic!("user_create_folder: {}", f.message))
    }

    /// Renames a contact folder as a user in Outlook would.
    pub fn user_rename_folder(&self, upn: &str, folder_id: &str, name: &str) {
        let mut st = self.shared.lock();
        let mb = mailbox(&st, upn);
        let body = json!({ "displayName": name });
        update_folder(&mut st, mb, folder_id, body.as_object().expect("object"))
            .unwrap_or_else(|f| panic!("user_rename_folder: {}", f.message));
    }

    /// Deletes a contact folder and its contacts as a user in Outlook would.
    pub fn user_delete_folder(&self, upn: &str, folder_id: &str) {
        let mut st = self.shared.lock();
        let mb = mailbox(&st, upn);
        delete_folder(&mut st, mb, folder_id)
            .unwrap_or_else(|f| panic!("user_delete_folder: {}", f.message));
    }
}

fn find_mailbox(st: &State, user: &str) -> Option<usize> {
    st.mailboxes
        .iter()
        .position(|m| m.upn.eq_ignore_ascii_case(user) || m.object_id.eq_ignore_ascii_case(user))
}

fn mailbox(st: &State, upn: &str) -> usize {
    find_mailbox(st, upn).unwrap_or_else(|| panic!("graph_sim: no mailbox {upn}"))
}

fn child_folders(m: &Mailbox) -> Vec<&Folder> {
    children(m, &m.default_folder)
}

/// The folders directly under `parent`, in creation order.
fn children<'a>(m: &'a Mailbox, parent: &str) -> Vec<&'a Folder> {
    let mut v: Vec<&Folder> = m.folders.values().filter(|f| f.parent == parent).collect();
    v.sort_by_key(|f| f.serial);
    v
}

/// Whether folder `id` is `top` or below it.
fn within(m: &Mailbox, id: &str, top: &str) -> bool {
    let mut at = id;
    for _ in 0..64 {
        if at == top {
            return true;
        }
        match m.folders.get(at) {
            Some(f) => at = &f.parent,
            None => return false,
        }
    }
    false
}

fn folder_contacts<'a>(m: &'a Mailbox, folder: &str) -> Vec<&'a Contact> {
    let mut v: Vec<&Contact> = m.contacts.values().filter(|c| c.folder == folder).collect();
    v.sort_by_key(|c| c.serial);
    v
}

fn inspect_contact(c: &Contact) -> Value {
    let mut v = Value::Object(full_contact(c));
    v["@odata.etag"] = json!(etag(&c.change_key));
    v["singleValueExtendedProperties"] = c
        .ext
        .iter()
        .map(|(id, value)| json!({"id": id, "value": value}))
        .collect();
    v
}

// ---------------------------------------------------------------------------------------------
// Answers

/// What one request (or batch item) answers.
struct Answer {
    status: u16,
    body: Option<Value>,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn json(status: u16, v: Value) -> Answer {
        Answer {
            status,
            body: Some(v),
            headers: Vec::new(),
        }
    }

    fn empty(status: u16) -> Answer {
        Answer {
            status,
            body: None,
            headers: Vec::new(),
        }
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Answer {
        self.headers.push((k.to_owned(), v.into()));
        self
    }
}

/// A Graph error before it has its request ids.
struct Fail {
    status: u16,
    code: &'static str,
    message: String,
    headers: Vec<(String, String)>,
}

fn fail(status: u16, code: &'static str, message: impl Into<String>) -> Fail {
    Fail {
        status,
        code,
        message: message.into(),
        headers: Vec::new(),
    }
}

impl Fail {
    fn header(mut self, k: &str, v: impl Into<String>) -> Fail {
        self.headers.push((k.to_owned(), v.into()));
        self
    }

    /// The ODataError body (`microsoft.graph.ODataErrors.ODataError`).
    fn answer(self, ctx: &Ctx) -> Answer {
        let body = json!({"error": {"code": self.code, "message": self.message,
            "innerError": {"date": inner_date(), "request-id": ctx.request_id,
                "client-request-id": ctx.client_request_id}}});
        Answer {
            status: self.status,
            body: Some(body),
            headers: self.headers,
        }
    }
}

/// The ids of one request: `request-id` is new, `client-request-id` echoes the client's.
#[derive(Clone)]
struct Ctx {
    request_id: String,
    client_request_id: String,
}

impl Ctx {
    fn new(client: Option<&str>) -> Ctx {
        let request_id = guid();
        Ctx {
            client_request_id: client.map_or_else(|| request_id.clone(), str::to_owned),
            request_id,
        }
    }
}

fn not_found() -> Fail {
    fail(
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

fn malformed() -> Fail {
    fail(400, "ErrorInvalidIdMalformed", "Id is malformed.")
}

fn bad_body() -> Fail {
    fail(
        400,
        "BadRequest",
        "Unable to read JSON request payload. Please ensure Content-Type header is set and \
         payload is of valid JSON format.",
    )
}

fn no_such_property(name: &str, ty: &str) -> Fail {
    fail(
        400,
        "RequestBodyRead",
        format!(
            "The property '{name}' does not exist on type 'Microsoft.OutlookServices.{ty}'. \
             Make sure to only use property names that are defined by the type or mark the \
             type as open type."
        ),
    )
}

fn bad_value(name: &str, expected: &str) -> Fail {
    fail(
        400,
        "RequestBodyRead",
        format!("Cannot convert the value of property '{name}' to the expected type '{expected}'."),
    )
}

// ---------------------------------------------------------------------------------------------
// HTTP

async fn handle(
    sh: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_owned())))
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let ctx = Ctx::new(headers.get("client-request-id").map(String::as_str));
    let segs: Vec<&str> = path.split('/').collect();
    let (answer, wrote) = if segs.len() == 5 && segs[2..] == ["oauth2", "v2.0", "token"] {
        (
            token_endpoint(&sh, &method, segs[1], &headers, &body),
            false,
        )
    } else if let Some(rest) = path.strip_prefix("/v1.0/") {
        if rest == "$batch" || rest.eq_ignore_ascii_case("%24batch") {
            if method == "POST" {
                batch(&sh, &headers, &body, &ctx).await
            } else {
                let f = fail(
                    405,
                    "ErrorInvalidRequest",
                    "The OData request is not supported.",
                );
                (f.answer(&ctx), false)
            }
        } else {
            let call = Call {
                method,
                path: format!("/{rest}"),
                query,
                headers,
                body,
            };
            single(&sh, call, ctx.clone()).await
        }
    } else {
        let f = fail(
            400,
            "BadRequest",
            format!("Invalid version: the path must start with /v1.0 (got {path})."),
        );
        (f.answer(&ctx), false)
    };
    if wrote {
        let mut st = sh.lock();
        let p = st.faults.drop_after_write;
        if p > 0.0 && rand::random::<f64>() < p {
            st.faults_injected += 1;
            return Err(std::io::Error::other("connection dropped after the write"));
        }
    }
    let mut r = Response::new(Full::new(match &answer.body {
        Some(v) => Bytes::from(v.to_string()),
        None => Bytes::new(),
    }));
    *r.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_REQUEST);
    let h = r.headers_mut();
    if answer.body.is_some() {
        h.insert(
            "content-type",
            hyper::header::HeaderValue::from_static("application/json"),
        );
    }
    for (k, v) in [
        ("request-id", &ctx.request_id),
        ("client-request-id", &ctx.client_request_id),
    ]
    .into_iter()
    .chain(answer.headers.iter().map(|(k, v)| (k.as_str(), v)))
    {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    Ok(r)
}

/// An AAD error body (`TokenErrorResponse`).
fn aad_error(status: u16, error: &str, code: u32, text: &str) -> Answer {
    let (trace, corr) = (guid(), guid());
    let ts = now_iso().replace('T', " ");
    Answer::json(
        status,
        json!({"error": error,
            "error_description": format!(
                "AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {corr} \
                 Timestamp: {ts}"
            ),
            "error_codes": [code], "timestamp": ts, "trace_id": trace, "correlation_id": corr,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}")}),
    )
}

/// `POST /{tenant}/oauth2/v2.0/token`: the client-credentials grant.
fn token_endpoint(
    sh: &Shared,
    method: &str,
    tenant: &str,
    headers: &BTreeMap<String, String>,
    body: &[u8],
) -> Answer {
    let mut st = sh.lock();
    *st.by_route
        .entry(format!("{method} /{{tenant}}/oauth2/v2.0/token"))
        .or_default() += 1;
    if method != "POST" {
        return aad_error(
            400,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    let t = tenant.to_ascii_lowercase();
    if ["common", "organizations", "consumers"].contains(&t.as_str()) {
        return aad_error(
            400,
            "invalid_request",
            50059,
            "No tenant-identifying information found in either the request or implied by any \
             provided credentials.",
        );
    }
    if t != GraphSim::TENANT && t != GraphSim::TENANT_DOMAIN {
        return aad_error(
            400,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID \
                 and are signing into the correct cloud."
            ),
        );
    }
    let form_ct = headers.get("content-type").is_some_and(|c| {
        c.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    let text = String::from_utf8_lossy(body);
    let field = |name: &str| -> Option<String> {
        if !form_ct {
            return None;
        }
        text.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k, true) == name).then(|| percent_decode(v, true))
        })
    };
    let missing = |p: &str| {
        aad_error(
            400,
            "invalid_request",
            900144,
            &format!("The request body must contain the following parameter: '{p}'."),
        )
    };
    let Some(grant) = field("grant_type") else {
        return missing("grant_type");
    };
    if grant != "client_credentials" {
        return aad_error(
            400,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant}'."),
        );
    }
    let Some(client) = field("client_id") else {
        return missing("client_id");
    };
    if client != GraphSim::CLIENT_ID {
        return aad_error(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client}' was not found in the directory \
                 '{tenant}'."
            ),
        );
    }
    let Some(scope) = field("scope") else {
        return missing("scope");
    };
    if scope != GraphSim::SCOPE {
        return aad_error(
            400,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows \
                 must have a scope value with /.default suffixed to the resource identifier \
                 (application ID URI)."
            ),
        );
    }
    if let Some(assertion) = field("client_assertion") {
        if field("client_secret").is_some() {
            return aad_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain only one of 'client_assertion' or \
                 'client_secret'.",
            );
        }
        if field("client_assertion_type").as_deref()
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return aad_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: \
                 'client_assertion_type'.",
            );
        }
        let aud = format!("{}/{tenant}/oauth2/v2.0/token", sh.base);
        if let Err((code, text)) = check_assertion(&mut st, &assertion, &client, &aud) {
            return aad_error(401, "invalid_client", code, &text);
        }
    } else {
        let Some(secret) = field("client_secret") else {
            return aad_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'.",
            );
        };
        if secret != st.secret {
            return aad_error(
                401,
                "invalid_client",
                7000215,
                &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{client}'."
            ),
            );
        }
    }
    st.token_grants += 1;
    let token = random_token(96);
    let ttl = st.access_ttl;
    st.tokens.insert(token.clone(), Instant::now() + ttl);
    Answer::json(
        200,
        json!({"token_type": "Bearer", "expires_in": ttl.as_secs(),
            "ext_expires_in": ttl.as_secs(), "access_token": token}),
    )
    .header("cache-control", "no-store, no-cache")
}

/// Checks a client assertion (see the module notes); the AADSTS code and text when refused.
fn check_assertion(
    st: &mut State,
    jwt: &str,
    client: &str,
    aud: &str,
) -> Result<(), (u32, String)> {
    use base64::Engine as _;
    let malformed = |why: &str| (50027, format!("JWT token is invalid or malformed: {why}."));
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err(malformed("not three parts"));
    }
    let json_part = |p: &str| -> Option<Value> {
        serde_json::from_slice(&b64.decode(p).ok()?)
            .ok()
            .filter(Value::is_object)
    };
    let (Some(header), Some(claims), Ok(sig)) = (
        json_part(parts[0]),
        json_part(parts[1]),
        b64.decode(parts[2]),
    ) else {
        return Err(malformed("a part is not base64url JSON"));
    };
    if header["alg"] != "RS256" {
        return Err(malformed("alg must be RS256 here"));
    }
    let Some(x5t) = header["x5t"].as_str().and_then(|t| b64.decode(t).ok()) else {
        return Err(malformed("no x5t header"));
    };
    let Some(public) = st
        .certificates
        .iter()
        .find(|(t, _)| *t == x5t)
        .map(|(_, k)| k.clone())
    else {
        return Err((
            700027,
            "Client assertion contains an invalid signature. [Reason - The key was not found.]"
                .into(),
        ));
    };
    let input = &jwt[..parts[0].len() + 1 + parts[1].len()];
    if ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, public)
        .verify(input.as_bytes(), &sig)
        .is_err()
    {
        return Err((
            700027,
            "Client assertion failed signature validation.".into(),
        ));
    }
    if claims["aud"] != aud {
        return Err(malformed("the audience claim must be this token endpoint"));
    }
    if claims["iss"] != client || claims["sub"] != client {
        return Err((
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.".into(),
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (Some(nbf), Some(exp)) = (claims["nbf"].as_u64(), claims["exp"].as_u64()) else {
        return Err(malformed("nbf and exp are required"));
    };
    if nbf > now + 300 || exp + 300 < now || exp <= nbf {
        return Err((
            700024,
            "Client assertion is not within its valid time range.".into(),
        ));
    }
    let Some(jti) = claims["jti"].as_str().filter(|j| !j.is_empty()) else {
        return Err(malformed("jti is required"));
    };
    if !st.assertion_ids.insert(jti.to_owned()) {
        return Err(malformed("the assertion was used before (jti)"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Admission: everything before the work itself

/// One Graph request (or batch item) as received.
struct Call {
    method: String,
    /// The path after the version, as sent (`/users/x/contacts`).
    path: String,
    query: String,
    /// Lower-case names.
    headers: BTreeMap<String, String>,
    body: Bytes,
}

impl Call {
    fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PATCH" | "PUT" | "DELETE")
    }

    fn bearer(&self) -> Option<String> {
        bearer(&self.headers)
    }
}

fn bearer(headers: &BTreeMap<String, String>) -> Option<String> {
    let a = headers.get("authorization")?;
    let (scheme, token) = a.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// A request that may run: it holds a concurrency slot of its mailbox until dropped.
struct Admitted {
    call: Call,
    route: Route,
    mb: usize,
    ctx: Ctx,
    _slot: Slot,
}

struct Slot {
    sh: Arc<Shared>,
    mb: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.sh.lock();
        if let Some(m) = st.mailboxes.get_mut(self.mb) {
            m.in_flight = m.in_flight.saturating_sub(1);
        }
    }
}

/// A 429 to be recorded as given to mailbox `.0` for `.1` seconds once it is delivered.
type Given = Option<(usize, u64)>;

/// A fault before anything is done: 503 or 504, half of them with a `Retry-After`.
fn fault(st: &mut State) -> Option<Fail> {
    let p = st.faults.fail_5xx;
    if p <= 0.0 || rand::random::<f64>() >= p {
        return None;
    }
    st.faults_injected += 1;
    let mut rng = rand::thread_rng();
    let f = if rng.gen_bool(0.5) {
        fail(
            503,
            "serviceNotAvailable",
            "The service is temporarily unavailable for maintenance or is overloaded.",
        )
    } else {
        fail(
            504,
            "UnknownError",
            "The gateway did not receive a timely response.",
        )
    };
    Some(if rng.gen_bool(0.5) {
        f.header("Retry-After", rng.gen_range(1..=3).to_string())
    } else {
        f
    })
}

fn check_auth(st: &State, bearer: Option<&str>) -> Result<(), Fail> {
    let www = "Bearer realm=\"\", \
        authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", \
        client_id=\"00000003-0000-0000-c000-000000000000\"";
    let unauth =
        |m: &str| fail(401, "InvalidAuthenticationToken", m).header("WWW-Authenticate", www);
    match bearer.filter(|b| !b.is_empty()) {
        None => Err(unauth("Access token is empty.")),
        Some(t) => match st.tokens.get(t) {
            None => Err(unauth(
                "IDX14100: JWT is not well formed, there are no dots (.).\nThe token needs to be \
                 in JWS or JWE Compact Serialization Format.",
            )),
            Some(until) if Instant::now() >= *until => {
                Err(unauth("Lifetime validation failed, the token is expired."))
            }
            Some(_) => Ok(()),
        },
    }
}

fn secs_until(t: Instant, now: Instant) -> u64 {
    let d = t.saturating_duration_since(now);
    (d.as_millis().div_ceil(1000) as u64).max(1)
}

fn too_many(secs: u64, message: &str) -> Fail {
    fail(429, "TooManyRequests", message).header("Retry-After", secs.to_string())
}

/// Counts the request, then: fault, authentication, route, user, limits. Either the answer
/// that ends the request here (with the 429 it gives, if it is one), or the admitted request.
fn admit(
    sh: &Arc<Shared>,
    call: Call,
    ctx: Ctx,
    bearer: Option<&str>,
    arrived: Instant,
) -> Result<Admitted, (Answer, Given)> {
    let route = parse_route(&call.path);
    let mut st = sh.lock();
    let kind = match &route {
        Ok(r) => format!("{} {}", call.method, r.target.template()),
        Err(_) => format!("{} (unrouted)", call.method),
    };
    *st.by_route.entry(kind).or_default() += 1;
    if let Some(f) = fault(&mut st) {
        return Err((f.answer(&ctx), None));
    }
    if let Err(f) = check_auth(&st, bearer) {
        return Err((f.answer(&ctx), None));
    }
    let route = match route {
        Ok(r) => r,
        Err(f) => return Err((f.answer(&ctx), None)),
    };
    if !route.target.allows(&call.method) {
        let f = fail(
            405,
            "ErrorInvalidRequest",
            "The OData request is not supported.",
        );
        return Err((f.answer(&ctx), None));
    }
    let Some(mb) = find_mailbox(&st, &route.user) else {
        let f = fail(
            404,
            "ErrorInvalidUser",
            format!("The requested user '{}' is invalid.", route.user),
        );
        return Err((f.answer(&ctx), None));
    };
    // Limits: every request counts, throttled or not.
    let limits = st.limits;
    let now = Instant::now();
    let upload = if matches!(call.method.as_str(), "POST" | "PATCH" | "PUT") {
        call.body.len() as u64
    } else {
        0
    };
    let m = &mut st.mailboxes[mb];
    m.window.push_back(now);
    while m
        .window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= limits.window)
    {
        m.window.pop_front();
    }
    if upload > 0 {
        m.uploads.push_back((now, upload));
    }
    while m
        .uploads
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) >= UPLOAD_WINDOW)
    {
        m.uploads.pop_front();
    }
    let retry = "Please retry again later.";
    let over = m
        .window
        .len()
        .saturating_sub(limits.requests_per_window as usize);
    let throttle = if let Some(until) = m.throttled_until.filter(|u| now < *u) {
        // A violation is a request sent after the client was told to wait: one that arrived
        // (for a batch item: whose batch arrived) once the Retry-After had been given. Items
        // of a batch already running when another answer gave it are refused, not counted.
        // A request that left the client while the 429 was on its way (arriving within
        // IN_FLIGHT_GRACE of it being given) could not have known; it is refused, not counted.
        if m.throttled_given
            .is_some_and(|g| arrived >= g + IN_FLIGHT_GRACE)
        {
            m.violations += 1;
        }
        Some((secs_until(until, now), retry))
    } else if over > 0 {
        // Room again once enough of the window (this request included) has aged out.
        let t = m.window.get(over).copied().unwrap_or(now);
        Some((secs_until(t + limits.window, now), retry))
    } else if m.uploads.iter().map(|(_, b)| b).sum::<u64>() > limits.upload_bytes_per_5min {
        let oldest = m.uploads.front().map_or(now, |(t, _)| *t);
        Some((secs_until(oldest + UPLOAD_WINDOW, now), retry))
    } else if m.in_flight >= limits.concurrent {
        Some((1, "Application is over its MailboxConcurrency limit."))
    } else {
        None
    };
    if let Some((secs, message)) = throttle {
        st.throttled += 1;
        return Err((too_many(secs, message).answer(&ctx), Some((mb, secs))));
    }
    m.in_flight += 1;
    m.max_in_flight = m.max_in_flight.max(m.in_flight);
    drop(st);
    Ok(Admitted {
        call,
        route,
        mb,
        ctx,
        _slot: Slot { sh: sh.clone(), mb },
    })
}

/// How long after a `Retry-After` is given a request may still arrive without counting as a
/// violation: the time the answer takes to reach the client, on loopback under load.
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(25);

/// Records a `Retry-After` as given (delivered) to a mailbox.
fn give(sh: &Shared, given: Given) {
    if let Some((mb, secs)) = given {
        let mut st = sh.lock();
        let until = Instant::now() + Duration::from_secs(secs);
        let m = &mut st.mailboxes[mb];
        m.throttled_until = Some(m.throttled_until.map_or(until, |u| u.max(until)));
        m.throttled_given = Some(Instant::now());
    }
}

/// Waits the latency holding the slot, then does the work. `true` when a write was applied.
async fn finish(sh: Arc<Shared>, ad: Admitted) -> (Answer, bool) {
    let d = {
        let (lo, hi) = sh.lock().latency;
        if hi > lo {
            let span = (hi - lo).as_micros() as u64;
            lo + Duration::from_micros(rand::thread_rng().gen_range(0..=span))
        } else {
            lo
        }
    };
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
    let answer = {
        let mut st = sh.lock();
        execute(&mut st, &sh.base, &ad)
    };
    let wrote = ad.call.is_write() && answer.status < 300;
    (answer, wrote)
}

async fn single(sh: &Arc<Shared>, call: Call, ctx: Ctx) -> (Answer, bool) {
    let bearer = call.bearer();
    match admit(sh, call, ctx, bearer.as_deref(), Instant::now()) {
        Err((a, given)) => {
            give(sh, given);
            (a, false)
        }
        Ok(ad) => finish(sh.clone(), ad).await,
    }
}

// ---------------------------------------------------------------------------------------------
// $batch

struct BatchItem {
    id: String,
    method: String,
    url: String,
    headers: BTreeMap<String, String>,
    body: Option<Value>,
    deps: Vec<usize>,
}

fn parse_batch(body: &[u8]) -> Result<Vec<BatchItem>, Fail> {
    let bad = |m: &str| fail(400, "BadRequest", m.to_owned());
    let v: Value =
        serde_json::from_slice(body).map_err(|_| bad("Invalid batch payload format."))?;
    let Some(reqs) = v.get("requests").and_then(Value::as_array) else {
        return Err(bad("Invalid batch payload format: 'requests' is required."));
    };
    if reqs.is_empty() {
        return Err(bad("A batch request must contain at least one request."));
    }
    if reqs.len() > BATCH_MAX {
        return Err(bad(&format!(
            "The number of requests in the batch ({}) exceeds the limit of {BATCH_MAX}.",
            reqs.len()
        )));
    }
    let mut items = Vec::new();
    let mut deps_by_name: Vec<Vec<String>> = Vec::new();
    for r in reqs {
        let Some(o) = r.as_object() else {
            return Err(bad("Each request of a batch must be a JSON object."));
        };
        let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
        let Some(id) = s("id").filter(|i| !i.is_empty()) else {
            return Err(bad("Each request of a batch needs an 'id'."));
        };
        let Some(method) = s("method") else {
            return Err(bad(&format!("Request '{id}' has no 'method'.")));
        };
        // The schema's enum: upper case.
        if !["GET", "POST", "PATCH", "PUT", "DELETE"].contains(&method.as_str()) {
            return Err(bad(&format!(
                "Request '{id}' has an invalid method '{method}'."
            )));
        }
        let Some(url) = s("url") else {
            return Err(bad(&format!("Request '{id}' has no 'url'.")));
        };
        let mut headers = BTreeMap::new();
        match o.get("headers") {
            None => {}
            Some(Value::Object(h)) => {
                for (k, v) in h {
                    let Some(v) = v.as_str() else {
                        return Err(bad(&format!(
                            "Header '{k}' of request '{id}' is not a string."
                        )));
                    };
                    headers.insert(k.to_ascii_lowercase(), v.to_owned());
                }
            }
            Some(_) => {
                return Err(bad(&format!(
                    "The headers of request '{id}' are not an object."
                )))
            }
        }
        let deps = match o.get("dependsOn") {
            None => Vec::new(),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(_) => {
                return Err(bad(&format!(
                    "dependsOn of request '{id}' is not an array of ids."
                )))
            }
        };
        if items
            .iter()
            .any(|i: &BatchItem| i.id.eq_ignore_ascii_case(&id))
        {
            return Err(bad(&format!(
                "The batch contains the request id '{id}' more than once."
            )));
        }
        deps_by_name.push(deps);
        items.push(BatchItem {
            id,
            method,
            url,
            headers,
            body: o.get("body").cloned(),
            deps: Vec::new(),
        });
    }
    for (i, names) in deps_by_name.into_iter().enumerate() {
        for n in names {
            let Some(j) = items.iter().position(|x| x.id.eq_ignore_ascii_case(&n)) else {
                return Err(bad(&format!(
                    "Request '{}' depends on '{n}', which is not in the batch.",
                    items[i].id
                )));
            };
            if j == i {
                return Err(bad(&format!("Request '{n}' depends on itself.")));
            }
            items[i].deps.push(j);
        }
    }
    // No cycles: every item must become ready at some point.
    let mut done = vec![false; items.len()];
    loop {
        let ready: Vec<usize> = (0..items.len())
            .filter(|i| !done[*i] && items[*i].deps.iter().all(|d| done[*d]))
            .collect();
        if ready.is_empty() {
            break;
        }
        for i in ready {
            done[i] = true;
        }
    }
    if done.iter().any(|d| !d) {
        return Err(bad("The dependsOn chains of the batch form a cycle."));
    }
    Ok(items)
}

/// Turns a batch item into a call, or answers it (400) when it cannot be one.
fn batch_call(it: &BatchItem, ctx: &Ctx, envelope_auth: Option<&String>) -> Result<Call, Answer> {
    let bad = |m: String| fail(400, "BadRequest", m).answer(ctx);
    let url = it.url.trim();
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http:") || lower.starts_with("https:") {
        return Err(bad(format!(
            "Invalid request URL '{url}': a batch item's url is relative to the version, \
             e.g. /users/{{id}}/contacts."
        )));
    }
    let url = if url.starts_with('/') {
        url.to_owned()
    } else {
        format!("/{url}")
    };
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let first = path.split('/').nth(1).unwrap_or("").to_ascii_lowercase();
    if first == "v1.0" || first == "beta" || first == "$batch" || first == "%24batch" {
        return Err(bad(format!(
            "Invalid request URL '{url}': a batch item's url has no version and cannot be \
             another batch."
        )));
    }
    let mut headers = it.headers.clone();
    let body = match &it.body {
        None => Bytes::new(),
        Some(b) => {
            if !headers.contains_key("content-type") {
                return Err(bad(format!(
                    "Request '{}' has a body but no Content-Type header.",
                    it.id
                )));
            }
            match b {
                Value::Object(_) => Bytes::from(b.to_string()),
                _ => {
                    return Err(bad(format!(
                        "The body of request '{}' must be a JSON object on this route.",
                        it.id
                    )))
                }
            }
        }
    };
    if let Some(a) = envelope_auth {
        headers.insert("authorization".into(), a.clone());
    }
    Ok(Call {
        method: it.method.clone(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body,
    })
}

/// The batch response item for an answer.
fn batch_response(id: &str, a: Answer) -> Value {
    let mut headers = Map::new();
    if a.body.is_some() {
        headers.insert("Content-Type".into(), json!("application/json"));
    }
    for (k, v) in a.headers {
        headers.insert(k, json!(v));
    }
    let mut item = json!({"id": id, "status": a.status, "headers": headers});
    if let Some(b) = a.body {
        item["body"] = b;
    }
    item
}

/// `POST /v1.0/$batch`: items run in waves (an item runs once everything it depends on has
/// answered); the items of a wave run concurrently, each against its mailbox's limits.
async fn batch(
    sh: &Arc<Shared>,
    headers: &BTreeMap<String, String>,
    body: &[u8],
    ctx: &Ctx,
) -> (Answer, bool) {
    let arrived = Instant::now();
    let auth = headers.get("authorization");
    {
        let mut st = sh.lock();
        *st.by_route.entry("POST /$batch".into()).or_default() += 1;
        if let Some(f) = fault(&mut st) {
            return (f.answer(ctx), false);
        }
        if let Err(f) = check_auth(&st, bearer(headers).as_deref()) {
            return (f.answer(ctx), false);
        }
    }
    if !headers
        .get("content-type")
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"))
    {
        return (bad_body().answer(ctx), false);
    }
    let items = match parse_batch(body) {
        Ok(i) => i,
        Err(f) => return (f.answer(ctx), false),
    };
    let n = items.len();
    let mut results: Vec<Option<Answer>> = (0..n).map(|_| None).collect();
    let mut given: Vec<Given> = Vec::new();
    let mut wrote = false;
    loop {
        let mut ready: Vec<usize> = (0..n)
            .filter(|i| {
                results[*i].is_none() && items[*i].deps.iter().all(|d| results[*d].is_some())
            })
            .collect();
        if ready.is_empty() {
            break;
        }
        ready.shuffle(&mut rand::thread_rng());
        let mut go = Vec::new();
        for i in ready {
            let it = &items[i];
            let ictx = Ctx::new(it.headers.get("client-request-id").map(String::as_str));
            let failed_dep = it
                .deps
                .iter()
                .any(|d| results[*d].as_ref().is_some_and(|a| a.status >= 400));
            if failed_dep {
                let f = fail(
                    424,
                    "FailedDependency",
                    "A request this request depends on failed.",
                );
                results[i] = Some(f.answer(&ictx));
                continue;
            }
            let call = match batch_call(it, &ictx, auth) {
                Ok(c) => c,
                Err(a) => {
                    results[i] = Some(a);
                    continue;
                }
            };
            let b = call.bearer();
            match admit(sh, call, ictx, b.as_deref(), arrived) {
                Ok(ad) => go.push((i, ad)),
                Err((a, g)) => {
                    results[i] = Some(a);
                    given.push(g);
                }
            }
        }
        let mut set = tokio::task::JoinSet::new();
        let started: Vec<usize> = go.iter().map(|(i, _)| *i).collect();
        for (i, ad) in go {
            let sh = sh.clone();
            set.spawn(async move { (i, finish(sh, ad).await) });
        }
        while let Some(r) = set.join_next().await {
            if let Ok((i, (a, w))) = r {
                wrote |= w;
                results[i] = Some(a);
            }
        }
        for i in started {
            if results[i].is_none() {
                results[i] = Some(fail(500, "generalException", "The item failed.").answer(ctx));
            }
        }
    }
    // The envelope delivers the items' Retry-Afters now.
    for g in given {
        give(sh, g);
    }
    let mut responses: Vec<Value> = items
        .iter()
        .zip(results)
        .map(|(it, a)| {
            let a = a.unwrap_or_else(|| fail(500, "generalException", "not run").answer(ctx));
            batch_response(&it.id, a)
        })
        .collect();
    responses.shuffle(&mut rand::thread_rng());
    (Answer::json(200, json!({ "responses": responses })), wrote)
}

// ---------------------------------------------------------------------------------------------
// Routes

#[derive(Clone, Debug)]
enum Target {
    Folders,
    Folder(String),
    ChildFolders(String),
    FolderContacts(String),
    FolderContact(String, String),
    FolderContactsDelta(String),
    FoldersDelta,
    Contacts,
    Contact(String),
    ContactsDelta,
}

impl Target {
    /// The path template of the OpenAPI file.
    fn template(&self) -> &'static str {
        match self {
            Target::Folders => "/users/{user-id}/contactFolders",
            Target::Folder(_) => "/users/{user-id}/contactFolders/{contactFolder-id}",
            Target::ChildFolders(_) => {
                "/users/{user-id}/contactFolders/{contactFolder-id}/childFolders"
            }
            Target::FolderContacts(_) => {
                "/users/{user-id}/contactFolders/{contactFolder-id}/contacts"
            }
            Target::FolderContact(..) => {
                "/users/{user-id}/contactFolders/{contactFolder-id}/contacts/{contact-id}"
            }
            Target::FolderContactsDelta(_) => {
                "/users/{user-id}/contactFolders/{contactFolder-id}/contacts/delta()"
            }
            Target::FoldersDelta => "/users/{user-id}/contactFolders/delta()",
            Target::Contacts => "/users/{user-id}/contacts",
            Target::Contact(_) => "/users/{user-id}/contacts/{contact-id}",
            Target::ContactsDelta => "/users/{user-id}/contacts/delta()",
        }
    }

    fn allows(&self, method: &str) -> bool {
        let ok: &[&str] = match self {
            Target::Folders
            | Target::ChildFolders(_)
            | Target::FolderContacts(_)
            | Target::Contacts => &["GET", "POST"],
            Target::Folder(_) | Target::FolderContact(..) | Target::Contact(_) => {
                &["GET", "PATCH", "DELETE"]
            }
            Target::FolderContactsDelta(_) | Target::FoldersDelta | Target::ContactsDelta => {
                &["GET"]
            }
        };
        ok.contains(&method)
    }
}

struct Route {
    /// The `{user-id}` as sent (decoded).
    user: String,
    target: Target,
}

fn is_delta(s: &str) -> bool {
    [
        "delta",
        "delta()",
        "microsoft.graph.delta",
        "microsoft.graph.delta()",
    ]
    .iter()
    .any(|d| s.eq_ignore_ascii_case(d))
}

/// `name('key')` → (name, key).
fn split_key(s: &str) -> Option<(String, String)> {
    let open = s.find("('")?;
    let inner = s.strip_suffix("')")?.get(open + 2..)?;
    Some((s[..open].to_owned(), inner.replace("''", "'")))
}

fn parse_route(path: &str) -> Result<Route, Fail> {
    let mut segs: Vec<String> = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let s = percent_decode(raw, false);
        match split_key(&s) {
            Some((name, key)) => {
                segs.push(name);
                segs.push(key);
            }
            None => segs.push(s),
        }
    }
    let unknown = |s: &str| {
        fail(
            400,
            "BadRequest",
            format!("Resource not found for the segment '{s}'."),
        )
    };
    let is = |i: usize, name: &str| segs.get(i).is_some_and(|s| s.eq_ignore_ascii_case(name));
    if is(0, "me") {
        return Err(fail(
            400,
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        ));
    }
    if !is(0, "users") {
        return Err(unknown(segs.first().map_or("", String::as_str)));
    }
    let Some(user) = segs.get(1).cloned() else {
        return Err(fail(
            400,
            "BadRequest",
            "The simulator serves only /users/{id}/contactFolders and /users/{id}/contacts.",
        ));
    };
    let target = match segs.len() {
        3 if is(2, "contactFolders") => Target::Folders,
        3 if is(2, "contacts") => Target::Contacts,
        4 if is(2, "contactFolders") && is_delta(&segs[3]) => Target::FoldersDelta,
        4 if is(2, "contactFolders") => Target::Folder(segs[3].clone()),
        4 if is(2, "contacts") && is_delta(&segs[3]) => Target::ContactsDelta,
        4 if is(2, "contacts") => Target::Contact(segs[3].clone()),
        5 if is(2, "contactFolders") && is(4, "contacts") => {
            Target::FolderContacts(segs[3].clone())
        }
        5 if is(2, "contactFolders") && is(4, "childFolders") => {
            Target::ChildFolders(segs[3].clone())
        }
        6 if is(2, "contactFolders") && is(4, "contacts") && is_delta(&segs[5]) => {
            Target::FolderContactsDelta(segs[3].clone())
        }
        6 if is(2, "contactFolders") && is(4, "contacts") => {
            Target::FolderContact(segs[3].clone(), segs[5].clone())
        }
        _ => {
            // Name the first segment that does not fit.
            let bad = match segs.get(2) {
                Some(s) if !is(2, "contactFolders") && !is(2, "contacts") => s,
                _ if segs.len() > 4 && !is(4, "contacts") && !is(4, "childFolders") => &segs[4],
                _ => segs.last().unwrap_or(&user),
            };
            return Err(unknown(bad));
        }
    };
    Ok(Route { user, target })
}

// ---------------------------------------------------------------------------------------------
// Query options

struct Query {
    params: Vec<(String, String)>,
}

impl Query {
    fn parse(raw: &str) -> Result<Query, Fail> {
        let mut params: Vec<(String, String)> = Vec::new();
        for kv in raw.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let (k, v) = (percent_decode(k, true), percent_decode(v, true));
            if params.iter().any(|(x, _)| x.eq_ignore_ascii_case(&k)) {
                return Err(fail(
                    400,
                    "BadRequest",
                    format!(
                        "Query option '{k}' was specified more than once, but it must be \
                         specified at most once."
                    ),
                ));
            }
            params.push((k, v));
        }
        Ok(Query { params })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// 400 for every system query option not in `allowed`.
    fn only(&self, allowed: &[&str]) -> Result<(), Fail> {
        for (k, _) in &self.params {
            if !k.starts_with('$') || allowed.contains(&k.as_str()) {
                continue;
            }
            return Err(match k.as_str() {
                "$select" | "$expand" | "$filter" | "$top" | "$skip" | "$count" | "$orderby"
                | "$search" => fail(
                    400,
                    "ErrorInvalidUrlQuery",
                    format!(
                        "The query parameter '{k}' is not supported on this request (or not \
                         by the simulator)."
                    ),
                ),
                _ => fail(
                    400,
                    "BadRequest",
                    format!("The query parameter '{k}' is not supported."),
                ),
            });
        }
        Ok(())
    }
}

/// `$select=a,b` against the properties of a type.
fn parse_select(q: &Query, allowed: &[&str], ty: &str) -> Result<Option<Vec<String>>, Fail> {
    let Some(v) = q.get("$select") else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for p in v.split(',').map(str::trim) {
        if !allowed.contains(&p) {
            return Err(fail(
                400,
                "RequestBroker--ParseUri",
                format!("Could not find a property named '{p}' on type 'microsoft.graph.{ty}'."),
            ));
        }
        if !out.iter().any(|x| x == p) {
            out.push(p.to_owned());
        }
    }
    Ok(Some(out))
}

/// Pulls a `'quoted'` OData string off the front of `s`.
fn take_quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('\'')?.char_indices().peekable();
    let body = &s[1..];
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                chars.next();
                out.push('\'');
            } else {
                return Some((out, &body[i + 1..]));
            }
        } else {
            out.push(c);
        }
    }
    None
}

/// Pulls a word (given without regard to `case`) and following blanks off the front of `s`.
fn take_word<'a>(s: &'a str, word: &str, any_case: bool) -> Option<&'a str> {
    let head = s.get(..word.len())?;
    let ok = if any_case {
        head.eq_ignore_ascii_case(word)
    } else {
        head == word
    };
    ok.then(|| s[word.len()..].trim_start())
}

/// `$expand=singleValueExtendedProperties($filter=id eq '{id}')` → the property's key.
fn parse_expand(q: &Query) -> Result<Option<String>, Fail> {
    let Some(v) = q.get("$expand") else {
        return Ok(None);
    };
    let bad = || {
        fail(
            400,
            "ErrorInvalidUrlQuery",
            format!(
                "The simulator supports only \
                 $expand=singleValueExtendedProperties($filter=id eq '{{id}}'), not '{v}'."
            ),
        )
    };
    let inner = v
        .trim()
        .strip_prefix("singleValueExtendedProperties(")
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(bad)?;
    let rest = take_word(inner.trim_start(), "$filter=", false).ok_or_else(bad)?;
    let rest = take_word(rest, "id", true).ok_or_else(bad)?;
    let rest = take_word(rest, "eq", false).ok_or_else(bad)?;
    let (id, rest) = take_quoted(rest).ok_or_else(bad)?;
    if !rest.trim().is_empty() {
        return Err(bad());
    }
    let (_, key) = ext_key(&id).ok_or_else(|| bad_ext_id(&id))?;
    Ok(Some(key))
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Eq,
    Ne,
    Ge,
    Gt,
    Le,
    Lt,
}

struct ExtFilter {
    key: String,
    cmp: Option<(Op, String)>,
}

impl ExtFilter {
    fn matches(&self, ext: &[(String, String)]) -> bool {
        let Some((_, v)) = ext
            .iter()
            .find(|(id, _)| ext_key(id).is_some_and(|(_, k)| k == self.key))
        else {
            return false;
        };
        let Some((op, lit)) = &self.cmp else {
            return true;
        };
        let (a, b) = (v.to_lowercase(), lit.to_lowercase());
        match op {
            Op::Eq => a == b,
            Op::Ne => a != b,
            Op::Ge => a >= b,
            Op::Gt => a > b,
            Op::Le => a <= b,
            Op::Lt => a < b,
        }
    }
}

/// `$filter=singleValueExtendedProperties/Any(ep: ep/id eq '{id}' [and ep/value OP '{v}'])`.
fn parse_filter(q: &Query) -> Result<Option<ExtFilter>, Fail> {
    let Some(v) = q.get("$filter") else {
        return Ok(None);
    };
    let bad = |why: &str| {
        fail(
            400,
            "ErrorInvalidUrlQueryFilter",
            format!("'{v}' is not a supported filter expression: {why}"),
        )
    };
    let shape = "only singleValueExtendedProperties/Any(ep: ep/id eq '{id}' and ep/value OP \
                 '{value}') is supported";
    let s = v.trim();
    let s = take_word(s, "singleValueExtendedProperties/", false).ok_or_else(|| bad(shape))?;
    let s = take_word(s, "any(", true).ok_or_else(|| bad(shape))?;
    let s = s.strip_suffix(')').ok_or_else(|| bad(shape))?.trim();
    let (var, s) = s.split_once(':').ok_or_else(|| bad(shape))?;
    let var = var.trim();
    if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(bad(shape));
    }
    let s = s.trim_start();
    let s = take_word(s, &format!("{var}/"), false).ok_or_else(|| bad(shape))?;
    let s = take_word(s, "id", true).ok_or_else(|| bad(shape))?;
    let s = take_word(s, "eq", false).ok_or_else(|| bad("the id is compared with eq only"))?;
    let (id, s) = take_quoted(s).ok_or_else(|| bad(shape))?;
    let (ty, key) = ext_key(&id).ok_or_else(|| bad_ext_id(&id))?;
    let s = s.trim_start();
    if s.is_empty() {
        return Ok(Some(ExtFilter { key, cmp: None }));
    }
    let s = take_word(s, "and", false).ok_or_else(|| bad(shape))?;
    let s = take_word(s, &format!("{var}/"), false).ok_or_else(|| bad(shape))?;
    let s = take_word(s, "value", true).ok_or_else(|| bad(shape))?;
    let (op, s) = [
        ("eq", Op::Eq),
        ("ne", Op::Ne),
        ("ge", Op::Ge),
        ("gt", Op::Gt),
        ("le", Op::Le),
        ("lt", Op::Lt),
    ]
    .into_iter()
    .find_map(|(w, op)| {
        take_word(s, w, false)
            .filter(|r| r.starts_with('\''))
            .map(|r| (op, r))
    })
    .ok_or_else(|| {
        bad(
            "the value is compared with eq, ne, ge, gt, le or lt and a quoted string \
             (contains and startswith are for messages and events)",
        )
    })?;
    if ty != "String" {
        return Err(bad(
            "comparing a non-string property's value needs a cast, which the simulator \
             does not implement",
        ));
    }
    let (lit, s) = take_quoted(s).ok_or_else(|| bad(shape))?;
    if !s.trim().is_empty() {
        return Err(bad(shape));
    }
    Ok(Some(ExtFilter {
        key,
        cmp: Some((op, lit)),
    }))
}

/// The query options of a list.
struct ListOptions {
    select: Option<Vec<String>>,
    filter: Option<ExtFilter>,
    expand: Option<String>,
    /// `$top`, else `Prefer: odata.maxpagesize`, else 10.
    size: usize,
    skip: usize,
    count: bool,
    /// The `Prefer: odata.maxpagesize` honoured (reported as applied).
    preferred: Option<usize>,
}

impl ListOptions {
    fn parse(
        q: &Query,
        prefer: Option<usize>,
        props: &[&str],
        ty: &str,
    ) -> Result<ListOptions, Fail> {
        q.only(&["$select", "$filter", "$expand", "$top", "$skip", "$count"])?;
        let num = |name: &str| -> Result<Option<usize>, Fail> {
            q.get(name)
                .map(|v| {
                    v.trim().parse::<usize>().map_err(|_| {
                        fail(
                            400,
                            "BadRequest",
                            format!("Invalid value '{v}' for the query option '{name}'."),
                        )
                    })
                })
                .transpose()
        };
        let top = num("$top")?;
        if top.is_some_and(|t| !(1..=LIST_MAX_TOP).contains(&t)) {
            return Err(fail(
                400,
                "ErrorInvalidUrlQuery",
                format!("The value of the parameter '$top' must be between 1 and {LIST_MAX_TOP}."),
            ));
        }
        let pref = prefer.map(|p| p.min(LIST_MAX_TOP));
        let count = match q.get("$count") {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => {
                return Err(fail(
                    400,
                    "BadRequest",
                    format!("Invalid value '{v}' for $count."),
                ))
            }
        };
        Ok(ListOptions {
            select: parse_select(q, props, ty)?,
            filter: parse_filter(q)?,
            expand: parse_expand(q)?,
            size: top
                .into_iter()
                .chain(pref)
                .min()
                .unwrap_or(LIST_DEFAULT_PAGE),
            skip: num("$skip")?.unwrap_or(0),
            count,
            preferred: pref,
        })
    }

    /// The item passes the `$filter`.
    fn keeps(&self, ext: &[(String, String)]) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(ext))
    }
}

/// A page of a list: `@odata.nextLink` (this URL with `$top` and the next `$skip`) while
/// items remain.
fn list_answer(
    q: &Query,
    o: &ListOptions,
    all: Vec<Value>,
    context: String,
    url: String,
) -> Answer {
    let total = all.len();
    let mut v = json!({ "@odata.context": context });
    if o.count {
        v["@odata.count"] = json!(total);
    }
    v["value"] = all.into_iter().skip(o.skip).take(o.size).collect();
    if o.skip + o.size < total {
        v["@odata.nextLink"] = json!(format!("{url}?{}", next_query(q, o.size, o.skip + o.size)));
    }
    let a = Answer::json(200, v);
    match o.preferred {
        Some(p) => a.header("Preference-Applied", format!("odata.maxpagesize={p}")),
        None => a,
    }
}

/// `Prefer: odata.maxpagesize=n` (n ≥ 1; anything else is ignored, as preferences may be).
fn max_page_size(headers: &BTreeMap<String, String>) -> Option<usize> {
    headers.get("prefer")?.split(',').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k.trim().eq_ignore_ascii_case("odata.maxpagesize"))
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
            .filter(|n| *n >= 1)
    })
}

/// The query of a list's next page: what was asked for, with `$top` and the new `$skip`.
fn next_query(q: &Query, size: usize, skip: usize) -> String {
    let mut parts: Vec<String> = q
        .params
        .iter()
        .filter(|(k, _)| k != "$top" && k != "$skip")
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    parts.push(format!("$top={size}"));
    parts.push(format!("$skip={skip}"));
    parts.join("&")
}

// ---------------------------------------------------------------------------------------------
// Execution

fn execute(st: &mut State, base: &str, ad: &Admitted) -> Answer {
    let call = &ad.call;
    if call.is_write() {
        let body = serde_json::from_slice(&call.body).unwrap_or(Value::Null);
        st.writes
            .push((format!("{} {}", call.method, call.path), body));
    }
    let r = match st.mailboxes[ad.mb].state {
        MailboxState::NoMailbox => Err(fail(
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        )),
        MailboxState::AccessDenied => Err(fail(
            403,
            "ErrorAccessDenied",
            "Access to OData is disabled: Blocked by tenant configured AppOnly AccessPolicy \
             settings.",
        )),
        MailboxState::Ok => dispatch(st, base, ad),
    };
    r.unwrap_or_else(|f| f.answer(&ad.ctx))
}

fn json_body(call: &Call) -> Result<Map<String, Value>, Fail> {
    let json_ct = call
        .headers
        .get("content-type")
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"));
    if !json_ct {
        return Err(bad_body());
    }
    match serde_json::from_slice::<Value>(&call.body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(bad_body()),
    }
}

fn dispatch(st: &mut State, base: &str, ad: &Admitted) -> Result<Answer, Fail> {
    let call = &ad.call;
    let q = Query::parse(&call.query)?;
    let mb = ad.mb;
    let user = ad.route.user.as_str();
    let def = st.mailboxes[mb].default_folder.clone();
    let prefer = max_page_size(&call.headers);
    let if_match = call.headers.get("if-match").map(String::as_str);
    let ctx_base = format!("{base}/v1.0/$metadata#users('{user}')");
    match (&ad.route.target, call.method.as_str()) {
        // `/contactFolders` is the default folder's children; `childFolders` any folder's.
        (Target::Folders | Target::ChildFolders(_), "GET" | "POST") => {
            let (parent, context) = match &ad.route.target {
                Target::ChildFolders(p) => (
                    p.clone(),
                    format!("{ctx_base}/contactFolders('{p}')/childFolders"),
                ),
                _ => (def, format!("{ctx_base}/contactFolders")),
            };
            if call.method == "POST" {
                q.only(&[])?;
                let b = json_body(call)?;
                let id = create_folder(st, mb, &parent, &b)?;
                let mut v = folder_json(&st.mailboxes[mb].folders[&id], None, None);
                v["@odata.context"] = json!(format!("{context}/$entity"));
                return Ok(Answer::json(201, v));
            }
            let opts = ListOptions::parse(&q, prefer, &FOLDER_PROPS, "contactFolder")?;
            let m = &st.mailboxes[mb];
            find_folder(m, &parent)?;
            let all: Vec<Value> = children(m, &parent)
                .into_iter()
                .filter(|f| opts.keeps(&f.ext))
                .map(|f| folder_json(f, opts.select.as_deref(), opts.expand.as_deref()))
                .collect();
            Ok(list_answer(
                &q,
                &opts,
                all,
                context,
                format!("{base}/v1.0{}", call.path),
            ))
        }
        (Target::Folder(fid), "GET") => {
            q.only(&["$select", "$expand"])?;
            let select = parse_select(&q, &FOLDER_PROPS, "contactFolder")?;
            let expand = parse_expand(&q)?;
            let f = find_folder(&st.mailboxes[mb], fid)?;
            let mut v = folder_json(f, select.as_deref(), expand.as_deref());
            v["@odata.context"] = json!(format!("{ctx_base}/contactFolders/$entity"));
            Ok(Answer::json(200, v))
        }
        (Target::Folder(fid), "PATCH") => {
            q.only(&[])?;
            folder_if_match(if_match)?;
            let b = json_body(call)?;
            update_folder(st, mb, fid, &b)?;
            let f = find_folder(&st.mailboxes[mb], fid)?;
            let mut v = folder_json(f, None, None);
            v["@odata.context"] = json!(format!("{ctx_base}/contactFolders/$entity"));
            Ok(Answer::json(200, v))
        }
        (Target::Folder(fid), "DELETE") => {
            q.only(&[])?;
            folder_if_match(if_match)?;
            delete_folder(st, mb, fid)?;
            Ok(Answer::empty(204))
        }
        (Target::FolderContacts(_) | Target::Contacts, "GET") => {
            let (fid, context) = match &ad.route.target {
                Target::FolderContacts(f) => (
                    f.clone(),
                    format!("{ctx_base}/contactFolders('{f}')/contacts"),
                ),
                _ => (def, format!("{ctx_base}/contacts")),
            };
            let opts = ListOptions::parse(&q, prefer, &CONTACT_PROPS, "contact")?;
            let m = &st.mailboxes[mb];
            find_folder(m, &fid)?;
            let all: Vec<Value> = folder_contacts(m, &fid)
                .into_iter()
                .filter(|c| opts.keeps(&c.ext))
                .map(|c| contact_json(c, opts.select.as_deref(), opts.expand.as_deref()))
                .collect();
            Ok(list_answer(
                &q,
                &opts,
                all,
                context,
                format!("{base}/v1.0{}", call.path),
            ))
        }
        (Target::FolderContacts(_) | Target::Contacts, "POST") => {
            let fid = match &ad.route.target {
                Target::FolderContacts(f) => f.clone(),
                _ => def,
            };
            q.only(&[])?;
            find_folder(&st.mailboxes[mb], &fid)?;
            let b = json_body(call)?;
            let id = create_contact(st, mb, &fid, &b)?;
            let mut v = contact_json(&st.mailboxes[mb].contacts[&id], None, None);
            v["@odata.context"] = json!(format!("{ctx_base}/contacts/$entity"));
            Ok(Answer::json(201, v))
        }
        (Target::FolderContact(..) | Target::Contact(_), method) => {
            let (fid, cid) = match &ad.route.target {
                Target::FolderContact(f, c) => (f.clone(), c.clone()),
                Target::Contact(c) => (def, c.clone()),
                _ => unreachable!("matched above"),
            };
            find_folder(&st.mailboxes[mb], &fid)?;
            let c = find_contact(&st.mailboxes[mb], &fid, &cid)?;
            let context = json!(format!("{ctx_base}/contacts/$entity"));
            match method {
                "GET" => {
                    q.only(&["$select", "$expand"])?;
                    let select = parse_select(&q, &CONTACT_PROPS, "contact")?;
                    let expand = parse_expand(&q)?;
                    let mut v = contact_json(c, select.as_deref(), expand.as_deref());
                    v["@odata.context"] = context;
                    Ok(Answer::json(200, v))
                }
                "PATCH" => {
                    q.only(&[])?;
                    contact_if_match(c, if_match)?;
                    let b = json_body(call)?;
                    update_contact(st, mb, &cid, &b)?;
                    let mut v = contact_json(&st.mailboxes[mb].contacts[&cid], None, None);
                    v["@odata.context"] = context;
                    Ok(Answer::json(200, v))
                }
                _ => {
                    q.only(&[])?;
                    contact_if_match(c, if_match)?;
                    st.mailboxes[mb].contacts.remove(&cid);
                    Ok(Answer::empty(204))
                }
            }
        }
        (Target::FolderContactsDelta(fid), _) => {
            let fid = fid.clone();
            delta(st, base, mb, Scope::Contacts(fid), &q, prefer)
        }
        (Target::FoldersDelta, _) => delta(st, base, mb, Scope::Folders, &q, prefer),
        (Target::ContactsDelta, _) => Err(fail(
            400,
            "ErrorInvalidRequest",
            "The simulator does not serve /users/{id}/contacts/delta: the API reference \
             documents contact delta only per folder \
             (/users/{id}/contactFolders/{id}/contacts/delta).",
        )),
        _ => Err(fail(
            405,
            "ErrorInvalidRequest",
            "The OData request is not supported.",
        )),
    }
}

fn find_folder<'a>(m: &'a Mailbox, id: &str) -> Result<&'a Folder, Fail> {
    if !well_formed(id) {
        return Err(malformed());
    }
    m.folders.get(id).ok_or_else(not_found)
}

fn find_contact<'a>(m: &'a Mailbox, folder: &str, id: &str) -> Result<&'a Contact, Fail> {
    if !well_formed(id) {
        return Err(malformed());
    }
    m.contacts
        .get(id)
        .filter(|c| c.folder == folder)
        .ok_or_else(not_found)
}

fn etag(change_key: &str) -> String {
    format!("W/\"{change_key}\"")
}

fn conflict() -> Fail {
    fail(
        412,
        "ErrorIrresolvableConflict",
        "The send or update operation could not be performed because the change key passed in \
         the request does not match the current change key for the item.",
    )
}

fn contact_if_match(c: &Contact, if_match: Option<&str>) -> Result<(), Fail> {
    match if_match.map(str::trim) {
        None | Some("*") => Ok(()),
        Some(t) if t == etag(&c.change_key) => Ok(()),
        Some(_) => Err(conflict()),
    }
}

fn folder_if_match(if_match: Option<&str>) -> Result<(), Fail> {
    match if_match.map(str::trim) {
        None | Some("*") => Ok(()),
        Some(_) => Err(conflict()),
    }
}

// ---------------------------------------------------------------------------------------------
// Folders

fn folder_json(f: &Folder, select: Option<&[String]>, expand: Option<&str>) -> Value {
    let full = json!({"id": f.id, "displayName": f.name, "parentFolderId": f.parent});
    let mut v = match select {
        None => full,
        Some(sel) => {
            let mut o = Map::new();
            o.insert("id".into(), json!(f.id));
            for p in sel {
                o.insert(p.clone(), full[p.as_str()].clone());
            }
            Value::Object(o)
        }
    };
    if let Some(key) = expand {
        if let Some(p) = ext_find(&f.ext, key) {
            v["singleValueExtendedProperties"] = json!([p]);
        }
    }
    v
}

fn folder_name(v: Option<&Value>) -> Result<Option<String>, Fail> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(Value::String(_)) | Some(Value::Null) => Err(fail(
            400,
            "ErrorInvalidRequest",
            "The folder's displayName cannot be empty.",
        )),
        Some(_) => Err(bad_value("displayName", "Edm.String")),
    }
}

fn check_sibling(m: &Mailbox, parent: &str, name: &str, except: Option<&str>) -> Result<(), Fail> {
    let clash = children(m, parent)
        .iter()
        .any(|f| Some(f.id.as_str()) != except && f.name.to_lowercase() == name.to_lowercase());
    if clash {
        return Err(fail(
            409,
            "ErrorFolderExists",
            "A folder with the specified name already exists.",
        ));
    }
    Ok(())
}

fn folder_body_keys(b: &Map<String, Value>, creating: bool, parent: &str) -> Result<(), Fail> {
    for (k, v) in b {
        match k.as_str() {
            "displayName" | "singleValueExtendedProperties" => {}
            "@odata.type" if odata_type_is(v, "contactFolder") => {}
            "parentFolderId" if creating && v.as_str() == Some(parent) => {}
            "id" | "parentFolderId" => {
                return Err(fail(
                    400,
                    "ErrorInvalidPropertySet",
                    format!("Set action is invalid for property '{k}'."),
                ))
            }
            "childFolders" | "contacts" | "multiValueExtendedProperties" => {
                return Err(fail(
                    400,
                    "ErrorInvalidRequest",
                    format!("The simulator does not write the navigation property '{k}'."),
                ))
            }
            _ => return Err(no_such_property(k, "ContactFolder")),
        }
    }
    Ok(())
}

/// Creates a folder under `parent` (the default folder for `POST /contactFolders`).
fn create_folder(
    st: &mut State,
    mb: usize,
    parent: &str,
    b: &Map<String, Value>,
) -> Result<String, Fail> {
    let parent = find_folder(&st.mailboxes[mb], parent)?.id.clone();
    folder_body_keys(b, true, &parent)?;
    let Some(name) = folder_name(b.get("displayName"))? else {
        return Err(fail(
            400,
            "ErrorInvalidRequest",
            "The folder's displayName is required.",
        ));
    };
    check_sibling(&st.mailboxes[mb], &parent, &name, None)?;
    let mut ext = Vec::new();
    if let Some(v) = b.get("singleValueExtendedProperties") {
        apply_ext(&mut ext, v)?;
    }
    st.serial += 1;
    let serial = st.serial;
    let m = &mut st.mailboxes[mb];
    let id = new_id(&m.key, 1, serial);
    m.folders.insert(
        id.clone(),
        Folder {
            id: id.clone(),
            name,
            parent,
            ext,
            serial,
        },
    );
    Ok(id)
}

fn update_folder(st: &mut State, mb: usize, fid: &str, b: &Map<String, Value>) -> Result<(), Fail> {
    let m = &st.mailboxes[mb];
    let f = find_folder(m, fid)?;
    folder_body_keys(b, false, &f.parent)?;
    let name = folder_name(b.get("displayName"))?;
    if fid == m.default_folder && name.is_some() {
        return Err(fail(
            400,
            "ErrorInvalidRequest",
            "Distinguished folders cannot be renamed.",
        ));
    }
    if let Some(n) = &name {
        check_sibling(m, &f.parent, n, Some(fid))?;
    }
    let mut ext = f.ext.clone();
    if let Some(v) = b.get("singleValueExtendedProperties") {
        apply_ext(&mut ext, v)?;
    }
    if let Some(f) = st.mailboxes[mb].folders.get_mut(fid) {
        if let Some(n) = name {
            f.name = n;
        }
        f.ext = ext;
    }
    Ok(())
}

fn delete_folder(st: &mut State, mb: usize, fid: &str) -> Result<(), Fail> {
    let m = &mut st.mailboxes[mb];
    find_folder(m, fid)?;
    if fid == m.default_folder {
        return Err(fail(
            400,
            "ErrorDeleteDistinguishedFolder",
            "Distinguished folders cannot be deleted.",
        ));
    }
    // The folder with everything below it.
    let gone: HashSet<String> = m
        .folders
        .keys()
        .filter(|id| within(m, id, fid))
        .cloned()
        .collect();
    m.folders.retain(|id, _| !gone.contains(id));
    m.contacts.retain(|_, c| !gone.contains(&c.folder));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Contacts

/// Every property of a contact (no annotations, no extended properties).
fn full_contact(c: &Contact) -> Map<String, Value> {
    let mut o = Map::new();
    for p in CONTACT_PROPS {
        let v = match p {
            "id" => json!(c.id),
            "createdDateTime" => json!(c.created),
            "lastModifiedDateTime" => json!(c.modified),
            "changeKey" => json!(c.change_key),
            "parentFolderId" => json!(c.folder),
            _ => c.props.get(p).cloned().unwrap_or(Value::Null),
        };
        o.insert(p.to_owned(), v);
    }
    o
}

/// A contact as answered: everything, or `id` plus the selection; always `@odata.etag`; the
/// expanded extended property when asked for and present.
fn contact_json(c: &Contact, select: Option<&[String]>, expand: Option<&str>) -> Value {
    let full = full_contact(c);
    let mut o = Map::new();
    o.insert("@odata.etag".into(), json!(etag(&c.change_key)));
    match select {
        None => o.extend(full),
        Some(sel) => {
            o.insert("id".into(), json!(c.id));
            for p in sel {
                o.insert(p.clone(), full.get(p).cloned().unwrap_or(Value::Null));
            }
        }
    }
    if let Some(key) = expand {
        if let Some(p) = ext_find(&c.ext, key) {
            o.insert("singleValueExtendedProperties".into(), json!([p]));
        }
    }
    Value::Object(o)
}

fn default_props() -> Map<String, Value> {
    let mut m = Map::new();
    for p in STRING_PROPS {
        m.insert(p.into(), Value::Null);
    }
    m.insert("fileAs".into(), json!(""));
    m.insert("personalNotes".into(), json!(""));
    m.insert("birthday".into(), Value::Null);
    for (p, _) in LIST_PROPS {
        m.insert(p.into(), json!([]));
    }
    m.insert("emailAddresses".into(), json!([]));
    for p in ADDRESS_PROPS {
        m.insert(p.into(), json!({}));
    }
    for p in EMAIL_PROPS {
        m.insert(p.into(), Value::Null);
    }
    m
}

fn odata_type_is(v: &Value, ty: &str) -> bool {
    v.as_str()
        .is_some_and(|s| s.trim_start_matches('#') == format!("microsoft.graph.{ty}"))
}

fn email_object(name: &str, v: &Value) -> Result<Value, Fail> {
    let Some(o) = v.as_object() else {
        return Err(bad_value(name, "microsoft.graph.emailAddress"));
    };
    for (k, x) in o {
        if k != "address" && k != "name" {
            return Err(no_such_property(k, "EmailAddress"));
        }
        if !(x.is_string() || x.is_null()) {
            return Err(bad_value(&format!("{name}/{k}"), "Edm.String"));
        }
    }
    Ok(v.clone())
}

/// Validates a contact body and applies it to `props`/`ext` (all or nothing).
fn contact_write(
    props: &mut Map<String, Value>,
    ext: &mut Vec<(String, String)>,
    body: &Map<String, Value>,
    creating: bool,
) -> Result<(), Fail> {
    let mut p = props.clone();
    let mut e = ext.clone();
    let mut names_touched = false;
    for (k, v) in body {
        let k = k.as_str();
        if k == "@odata.type" && odata_type_is(v, "contact") {
            continue;
        }
        if READ_ONLY.contains(&k) {
            return Err(fail(
                400,
                "ErrorInvalidPropertySet",
                format!("Set action is invalid for property '{k}'."),
            ));
        }
        if NAV_PROPS.contains(&k) {
            return Err(fail(
                400,
                "ErrorInvalidRequest",
                format!("The simulator does not write the navigation property '{k}'."),
            ));
        }
        if k == "singleValueExtendedProperties" {
            apply_ext(&mut e, v)?;
            continue;
        }
        let new = if STRING_PROPS.contains(&k) {
            if !(v.is_string() || v.is_null()) {
                return Err(bad_value(k, "Edm.String"));
            }
            names_touched |= matches!(k, "givenName" | "middleName" | "surname");
            v.clone()
        } else if k == "birthday" {
            match v {
                Value::Null => Value::Null,
                Value::String(s) if is_rfc3339(s) => v.clone(),
                _ => return Err(bad_value(k, "Edm.DateTimeOffset")),
            }
        } else if let Some((_, max)) = LIST_PROPS.iter().find(|(n, _)| *n == k) {
            let Some(a) = v.as_array().filter(|a| a.iter().all(Value::is_string)) else {
                return Err(bad_value(k, "Collection(Edm.String)"));
            };
            if let Some(max) = max.filter(|m| a.len() > *m) {
                return Err(fail(
                    400,
                    "ErrorInvalidRequest",
                    format!("A contact has room for at most {max} {k}; got {}.", a.len()),
                ));
            }
            v.clone()
        } else if k == "emailAddresses" {
            let Some(a) = v.as_array() else {
                return Err(bad_value(k, "Collection(microsoft.graph.emailAddress)"));
            };
            if a.len() > 3 {
                return Err(fail(
                    400,
                    "ErrorInvalidRequest",
                    format!(
                        "A contact has room for at most 3 emailAddresses; got {}.",
                        a.len()
                    ),
                ));
            }
            let items: Result<Vec<Value>, Fail> = a.iter().map(|x| email_object(k, x)).collect();
            Value::Array(items?)
        } else if ADDRESS_PROPS.contains(&k) {
            match v {
                Value::Null => json!({}),
                Value::Object(o) => {
                    for (f, x) in o {
                        if !ADDRESS_FIELDS.contains(&f.as_str()) {
                            return Err(no_such_property(f, "PhysicalAddress"));
                        }
                        if !(x.is_string() || x.is_null()) {
                            return Err(bad_value(&format!("{k}/{f}"), "Edm.String"));
                        }
                    }
                    v.clone()
                }
                _ => return Err(bad_value(k, "microsoft.graph.physicalAddress")),
            }
        } else if EMAIL_PROPS.contains(&k) {
            if v.is_null() {
                Value::Null
            } else {
                email_object(k, v)?
            }
        } else {
            return Err(no_such_property(k, "Contact"));
        };
        p.insert(k.to_owned(), new);
    }
    if !body.contains_key("displayName") && (creating || names_touched) {
        let name: Vec<&str> = ["givenName", "middleName", "surname"]
            .iter()
            .filter_map(|n| p.get(*n).and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .collect();
        if !name.is_empty() {
            p.insert("displayName".into(), json!(name.join(" ")));
        }
    }
    *props = p;
    *ext = e;
    Ok(())
}

fn create_contact(
    st: &mut State,
    mb: usize,
    folder: &str,
    body: &Map<String, Value>,
) -> Result<String, Fail> {
    find_folder(&st.mailboxes[mb], folder)?;
    let mut props = default_props();
    let mut ext = Vec::new();
    contact_write(&mut props, &mut ext, body, true)?;
    st.serial += 1;
    let serial = st.serial;
    let m = &mut st.mailboxes[mb];
    let id = new_id(&m.key, 2, serial);
    let now = now_iso();
    m.contacts.insert(
        id.clone(),
        Contact {
            id: id.clone(),
            folder: folder.to_owned(),
            props,
            change_key: change_key(),
            created: now.clone(),
            modified: now,
            ext,
            serial,
        },
    );
    Ok(id)
}

fn update_contact(
    st: &mut State,
    mb: usize,
    id: &str,
    body: &Map<String, Value>,
) -> Result<(), Fail> {
    if !well_formed(id) {
        return Err(malformed());
    }
    let c = st.mailboxes[mb]
        .contacts
        .get_mut(id)
        .ok_or_else(not_found)?;
    contact_write(&mut c.props, &mut c.ext, body, false)?;
    c.change_key = change_key();
    c.modified = now_iso();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Extended properties

fn bad_ext_id(id: &str) -> Fail {
    fail(
        400,
        "ErrorInvalidExtendedProperty",
        format!(
            "The extended property id '{id}' is invalid: use '{{type}} {{guid}} Name {{name}}' \
             or '{{type}} {{guid}} Id 0x8000-0xFFFE'."
        ),
    )
}

/// Parses an extended-property id: (its type, a key equal for ids naming the same
/// property: type and GUID without regard to case, the name exactly).
fn ext_key(id: &str) -> Option<(String, String)> {
    let mut it = id.splitn(3, ' ');
    let (ty, g, rest) = (it.next()?, it.next()?, it.next()?);
    let ty = EXT_TYPES.iter().find(|t| t.eq_ignore_ascii_case(ty))?;
    let g = g.strip_prefix('{')?.strip_suffix('}')?;
    let groups: Vec<&str> = g.split('-').collect();
    let guid_ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(x, n)| x.len() == n && x.bytes().all(|c| c.is_ascii_hexdigit()));
    if !guid_ok {
        return None;
    }
    let (kind, what) = rest.split_once(' ')?;
    let tail = if kind.eq_ignore_ascii_case("name") {
        if what.is_empty() {
            return None;
        }
        format!("name {what}")
    } else if kind.eq_ignore_ascii_case("id") {
        let h = what
            .strip_prefix("0x")
            .or_else(|| what.strip_prefix("0X"))?;
        let n = u32::from_str_radix(h, 16).ok()?;
        if !(0x8000..=0xfffe).contains(&n) {
            return None;
        }
        format!("id 0x{n:04x}")
    } else {
        return None;
    };
    Some((
        (*ty).to_owned(),
        format!("{} {} {tail}", ty.to_lowercase(), g.to_lowercase()),
    ))
}

fn ext_find(ext: &[(String, String)], key: &str) -> Option<Value> {
    ext.iter()
        .find(|(id, _)| ext_key(id).is_some_and(|(_, k)| k == key))
        .map(|(id, v)| json!({"id": id, "value": v}))
}

fn ext_value_ok(ty: &str, v: &str) -> bool {
    match ty {
        "Integer" | "Long" | "Short" => v.trim().parse::<i64>().is_ok(),
        "Double" | "Currency" => v.trim().parse::<f64>().is_ok(),
        "Boolean" => v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false"),
        "SystemTime" | "ApplicationTime" => is_rfc3339(v),
        "CLSID" => ext_key(&format!("String {{{v}}} Name x")).is_some(),
        "Binary" => b64_decode(v).is_some(),
        _ => true,
    }
}

/// Creates or replaces (by id) the properties of a `singleValueExtendedProperties` array.
fn apply_ext(ext: &mut Vec<(String, String)>, v: &Value) -> Result<(), Fail> {
    let Some(a) = v.as_array() else {
        return Err(bad_value(
            "singleValueExtendedProperties",
            "Collection(microsoft.graph.singleValueLegacyExtendedProperty)",
        ));
    };
    for p in a {
        let Some(o) = p.as_object() else {
            return Err(bad_value(
                "singleValueExtendedProperties",
                "microsoft.graph.singleValueLegacyExtendedProperty",
            ));
        };
        for k in o.keys() {
            if k != "id" && k != "value" {
                return Err(no_such_property(k, "SingleValueLegacyExtendedProperty"));
            }
        }
        let Some(id) = o.get("id").and_then(Value::as_str) else {
            return Err(fail(
                400,
                "ErrorInvalidExtendedProperty",
                "An extended property needs an id.",
            ));
        };
        let (ty, key) = ext_key(id).ok_or_else(|| bad_ext_id(id))?;
        let Some(value) = o.get("value").and_then(Value::as_str) else {
            return Err(fail(
                400,
                "ErrorInvalidExtendedPropertyValue",
                format!("The value of extended property '{id}' must be a string."),
            ));
        };
        if !ext_value_ok(&ty, value) {
            return Err(fail(
                400,
                "ErrorInvalidExtendedPropertyValue",
                format!("'{value}' is not a valid {ty} value for extended property '{id}'."),
            ));
        }
        match ext
            .iter_mut()
            .find(|(x, _)| ext_key(x).is_some_and(|(_, k)| k == key))
        {
            Some(slot) => slot.1 = value.to_owned(),
            None => ext.push((id.to_owned(), value.to_owned())),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Delta

fn delta_base(base: &str, m: &Mailbox, scope: &Scope) -> String {
    match scope {
        Scope::Contacts(f) => format!(
            "{base}/v1.0/users('{}')/contactFolders('{f}')/contacts/delta",
            m.object_id
        ),
        Scope::Folders => format!("{base}/v1.0/users('{}')/contactFolders/delta", m.object_id),
    }
}

fn bad_sync_state() -> Fail {
    fail(
        400,
        "ErrorInvalidSyncStateData",
        "The sync state data is corrupt or otherwise invalid.",
    )
}

/// Delta states kept per mailbox and scope; older ones are evicted (the delta overview: the
/// token lifetime for Outlook entities depends on a cache that evicts old tokens) and answer
/// like an expired state.
const TOKENS_KEPT: usize = 16;

fn register(st: &mut State, t: SyncToken) -> String {
    let s = random_token(48);
    let key = (t.mb, format!("{:?}", t.scope));
    st.sync.insert(s.clone(), t);
    let order = st.sync_order.entry(key).or_default();
    order.push_back(s.clone());
    while order.len() > TOKENS_KEPT {
        if let Some(old) = order.pop_front() {
            if let Some(gone) = st.sync.remove(&old) {
                st.evicted.insert(old, (gone.mb, gone.scope, gone.select));
            }
        }
    }
    s
}

fn delta(
    st: &mut State,
    base: &str,
    mb: usize,
    scope: Scope,
    q: &Query,
    prefer: Option<usize>,
) -> Result<Answer, Fail> {
    if let Scope::Contacts(fid) = &scope {
        find_folder(&st.mailboxes[mb], fid)?;
    }
    let link_base = delta_base(base, &st.mailboxes[mb], &scope);
    let size = prefer.unwrap_or(DELTA_MAX_PAGE).min(DELTA_MAX_PAGE);
    let skip = q.get("$skiptoken").filter(|s| !s.is_empty());
    let dtok = q.get("$deltatoken").filter(|s| !s.is_empty());
    let page = DeltaPage {
        link_base,
        mb,
        scope: scope.clone(),
        size,
        prefer: prefer.is_some(),
    };
    let (token, want_page) = match (skip, dtok) {
        (Some(_), Some(_)) => return Err(bad_sync_state()),
        (Some(s), None) => (s.to_owned(), true),
        (None, Some(d)) => (d.to_owned(), false),
        (None, None) => {
            let resource = match scope {
                Scope::Contacts(_) => "Contacts",
                Scope::Folders => "ContactFolders",
            };
            if let Some((k, _)) = q
                .params
                .iter()
                .find(|(k, _)| k != "$select" && k != "$deltatoken")
            {
                return Err(fail(
                    400,
                    "ErrorInvalidUrlQuery",
                    format!(
                        "The following parameters are not supported with change tracking over \
                         the '{resource}' resource: '{k}'."
                    ),
                ));
            }
            let select = match scope {
                Scope::Contacts(_) => parse_select(q, &CONTACT_PROPS, "contact")?,
                Scope::Folders => parse_select(q, &FOLDER_PROPS, "contactFolder")?,
            };
            return Ok(round(st, base, &page, select, None));
        }
    };
    if q.params.len() != 1 {
        return Err(fail(
            400,
            "ErrorInvalidUrlQuery",
            "Query options are given on the first delta call only; later calls use the nextLink \
             or deltaLink unchanged.",
        ));
    }
    let Some(t) = st.sync.get(&token).cloned() else {
        if let Some((emb, escope, select)) = st.evicted.get(&token) {
            if *emb == mb && *escope == scope {
                return Err(resync_required(select.as_deref(), &page.link_base));
            }
        }
        return Err(bad_sync_state());
    };
    let is_page = matches!(t.kind, TokenKind::Page { .. });
    if t.mb != mb || t.scope != scope || is_page != want_page {
        return Err(bad_sync_state());
    }
    if t.epoch != st.mailboxes[mb].epoch {
        return Err(resync_required(t.select.as_deref(), &page.link_base));
    }
    Ok(match t.kind {
        TokenKind::Page {
            items,
            offset,
            final_token,
            trailing_empty,
        } => serve_page(
            st,
            base,
            &page,
            &t.select,
            items,
            offset,
            final_token,
            trailing_empty,
        ),
        TokenKind::Delta {
            snapshot,
            last_round,
        } => round(
            st,
            base,
            &page,
            t.select.clone(),
            Some((snapshot, last_round)),
        ),
    })
}

/// The end of the previous round: its snapshot and the ids it delivered.
type PrevRound = (Arc<BTreeMap<String, Value>>, Arc<Vec<String>>);

/// Where a delta page is served and how big pages are.
struct DeltaPage {
    link_base: String,
    mb: usize,
    scope: Scope,
    size: usize,
    prefer: bool,
}

/// Computes a round (everything on the first call; the changes since `prev` otherwise),
/// registers the token that ends it and serves its first page.
fn round(
    st: &mut State,
    base: &str,
    page: &DeltaPage,
    select: Option<Vec<String>>,
    prev: Option<PrevRound>,
) -> Answer {
    let m = &st.mailboxes[page.mb];
    // (id, every property, etag)
    let cur: Vec<(String, Map<String, Value>, Option<String>)> = match &page.scope {
        Scope::Contacts(f) => folder_contacts(m, f)
            .into_iter()
            .map(|c| (c.id.clone(), full_contact(c), Some(etag(&c.change_key))))
            .collect(),
        Scope::Folders => child_folders(m)
            .into_iter()
            .map(|f| {
                let full = match folder_json(f, None, None) {
                    Value::Object(o) => o,
                    _ => Map::new(),
                };
                (f.id.clone(), full, None)
            })
            .collect(),
    };
    let selected = |k: &str| select.as_ref().is_none_or(|s| s.iter().any(|x| x == k));
    let full_item = |id: &str, full: &Map<String, Value>, et: &Option<String>| {
        let mut o = Map::new();
        if let Some(e) = et {
            o.insert("@odata.etag".into(), json!(e));
        }
        o.insert("id".into(), json!(id));
        for (k, v) in full {
            if k != "id" && selected(k) {
                o.insert(k.clone(), v.clone());
            }
        }
        Value::Object(o)
    };
    let removed = |id: &str| json!({"id": id, "@removed": {"reason": "deleted"}});
    let mut items: Vec<Value> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    match &prev {
        None => {
            for (id, full, et) in &cur {
                items.push(full_item(id, full, et));
                ids.push(id.clone());
            }
        }
        Some((snap, last)) => {
            for (id, full, et) in &cur {
                match snap.get(id).and_then(Value::as_object) {
                    None => items.push(full_item(id, full, et)),
                    Some(old) if old != full => {
                        let mut o = Map::new();
                        if let Some(e) = et {
                            o.insert("@odata.etag".into(), json!(e));
                        }
                        o.insert("id".into(), json!(id));
                        for (k, v) in full {
                            if k != "id" && old.get(k) != Some(v) && selected(k) {
                                o.insert(k.clone(), v.clone());
                            }
                        }
                        items.push(Value::Object(o));
                    }
                    Some(_) => continue,
                }
                ids.push(id.clone());
            }
            for id in snap.keys() {
                if !cur.iter().any(|(c, _, _)| c == id) {
                    items.push(removed(id));
                    ids.push(id.clone());
                }
            }
            if st.replays {
                // The previous round's items once more, as they are now.
                for id in last.iter().filter(|i| !ids.contains(i)) {
                    match cur.iter().find(|(c, _, _)| c == id) {
                        Some((id, full, et)) => items.push(full_item(id, full, et)),
                        None if !snap.contains_key(id) => items.push(removed(id)),
                        None => {}
                    }
                }
            }
        }
    }
    let mut rng = rand::thread_rng();
    if st.replays && !items.is_empty() {
        let mut dups: Vec<Value> = items
            .iter()
            .filter(|_| rng.gen_bool(0.5))
            .cloned()
            .collect();
        if dups.is_empty() {
            dups.push(items[0].clone());
        }
        items.extend(dups);
    }
    items.shuffle(&mut rng);
    let snapshot: BTreeMap<String, Value> = cur
        .into_iter()
        .map(|(id, full, _)| (id, Value::Object(full)))
        .collect();
    let epoch = st.mailboxes[page.mb].epoch;
    let final_token = register(
        st,
        SyncToken {
            mb: page.mb,
            scope: page.scope.clone(),
            epoch,
            select: select.clone(),
            kind: TokenKind::Delta {
                snapshot: Arc::new(snapshot),
                last_round: Arc::new(ids),
            },
        },
    );
    let trailing = st.replays;
    serve_page(
        st,
        base,
        page,
        &select,
        Arc::new(items),
        0,
        final_token,
        trailing,
    )
}

/// One page of a round: `@odata.nextLink` while items (or the trailing empty page) remain,
/// else `@odata.deltaLink`.
#[allow(clippy::too_many_arguments)]
fn serve_page(
    st: &mut State,
    base: &str,
    page: &DeltaPage,
    select: &Option<Vec<String>>,
    items: Arc<Vec<Value>>,
    offset: usize,
    final_token: String,
    trailing_empty: bool,
) -> Answer {
    let end = (offset + page.size).min(items.len());
    let value: Vec<Value> = items
        .get(offset..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let ty = match page.scope {
        Scope::Contacts(_) => "contact",
        Scope::Folders => "contactFolder",
    };
    let mut v = json!({"@odata.context": format!("{base}/v1.0/$metadata#Collection({ty})")});
    if end < items.len() || trailing_empty {
        let epoch = st.mailboxes[page.mb].epoch;
        let t = register(
            st,
            SyncToken {
                mb: page.mb,
                scope: page.scope.clone(),
                epoch,
                select: select.clone(),
                kind: TokenKind::Page {
                    items: items.clone(),
                    offset: end,
                    final_token,
                    trailing_empty: trailing_empty && end < items.len(),
                },
            },
        );
        v["@odata.nextLink"] = json!(format!("{}?$skiptoken={t}", page.link_base));
    } else {
        v["@odata.deltaLink"] = json!(format!("{}?$deltatoken={final_token}", page.link_base));
    }
    v["value"] = Value::Array(value);
    let a = Answer::json(200, v);
    if page.prefer {
        a.header(
            "Preference-Applied",
            format!("odata.maxpagesize={}", page.size),
        )
    } else {
        a
    }
}

// ---------------------------------------------------------------------------------------------
// Ids, tokens, encodings, time

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (ci, chunk) in s.chunks(4).enumerate() {
        let last = ci == s.len() / 4 - 1;
        let mut n = 0u32;
        let mut pad = 0;
        for (i, c) in chunk.iter().enumerate() {
            let v = if *c == b'=' && last && i >= 2 {
                pad += 1;
                0
            } else if pad > 0 {
                return None;
            } else {
                B64.iter().position(|x| x == c)? as u32
            };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// A new Exchange-style id: `AAMkA` + base64 (`/`→`-`, `+`→`_`) of the mailbox key, the kind
/// (0 root, 1 folder, 2 contact), a serial and random bytes. Never reused.
fn new_id(key: &[u8; 16], kind: u8, serial: u64) -> String {
    let mut b = Vec::with_capacity(ID_BYTES);
    b.extend_from_slice(key);
    b.push(kind);
    b.extend_from_slice(&serial.to_be_bytes());
    let mut rnd = [0u8; ID_BYTES - 25];
    rand::thread_rng().fill(&mut rnd[..]);
    b.extend_from_slice(&rnd);
    format!("AAMkA{}", b64(&b).replace('/', "-").replace('+', "_"))
}

fn well_formed(id: &str) -> bool {
    id.strip_prefix("AAMkA")
        .and_then(|r| b64_decode(&r.replace('-', "/").replace('_', "+")))
        .is_some_and(|b| b.len() == ID_BYTES)
}

fn change_key() -> String {
    let mut b = [0u8; 21];
    rand::thread_rng().fill(&mut b[..]);
    format!("EQAAABYAAAA{}", b64(&b))
}

/// 410 `resyncRequired` with the `Location` of a new round (with the round's `$select`).
fn resync_required(select: Option<&[String]>, link_base: &str) -> Fail {
    let select = select
        .map(|s| format!("$select={}&", s.join(",")))
        .unwrap_or_default();
    fail(
        410,
        "resyncRequired",
        "The delta token is no longer valid; restart with a full synchronization.",
    )
    .header("Location", format!("{link_base}?{select}$deltatoken="))
}

fn guid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `n` random URL-safe characters.
fn random_token(n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| A[rng.gen_range(0..A.len())] as char)
        .collect()
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-._~$'(),".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

/// (year, month, day, hour, minute, second) of a unix time.
fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem / 60 % 60, rem % 60)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `2026-11-01T08:00:00Z`, Graph's form of Outlook timestamps.
fn now_iso() -> String {
    let (y, mo, d, h, mi, s) = civil(unix_now());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `innerError.date`: Graph writes it without a zone.
fn inner_date() -> String {
    now_iso().trim_end_matches('Z').to_owned()
}

/// RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        s.get(r)
            .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|t| t.parse::<u32>().ok())
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return false;
    }
    let (Some(_), Some(mo), Some(d), Some(h), Some(mi), Some(se)) = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    ) else {
        return false;
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &r[n..];
    }
    rest == "Z"
        || (rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && rest.as_bytes()[3] == b':'
            && rest[1..3]
                .bytes()
                .chain(rest[4..].bytes())
                .all(|c| c.is_ascii_digit()))
}
