//! Listeners, TLS, routing, limits, health and graceful shutdown. No business logic: routes
//! hand over to the admin API (and later the EWS and Graph faces).
//!
//! May import everything above it.

// Handlers return a ready response as their error: it is built once, on the way out.
#![allow(clippy::result_large_err)]

pub mod carddav_routes;
pub mod ews_routes;
pub mod graph_routes;
pub use crate::http;
pub mod tls;
pub mod webhook_routes;

use crate::app::{App, AuthFailure};
use crate::auth::Principal;
use http::{error, text, Resp};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Time a new connection has to send its request head while connection slots run short.
const PRESSED_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Open connections per client address.
#[derive(Default)]
struct PerIp(Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>>);

/// One connection's place in [`PerIp`], given back on drop.
struct IpSlot(
    Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>>,
    IpAddr,
);

impl PerIp {
    fn enter(&self, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut m = self.0.lock().ok()?;
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot(self.0.clone(), ip))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.0.lock() {
            if let Some(n) = m.get_mut(&self.1) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.1);
                }
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests finish
/// within the configured grace period.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let tls = tls::server_config(&app.config)?.map(tokio_rustls::TlsAcceptor::from);
    let cfg = app.config.server.clone();
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Raised while connection slots run short: idle keep-alive connections close, so sockets
    // that send nothing cannot keep new clients out.
    let (shed_tx, shed_rx) = watch::channel(0u64);
    let mut conns = JoinSet::new();
    // The mailbox mirror runs beside the listener while it serves.
    let mirror = app
        .mirror
        .clone()
        .map(|m| tokio::spawn(m.run(app.clone(), stop_rx.clone())));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (stream, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let max_here = if remote.ip().is_loopback() && !cfg.per_ip_limits_loopback {
            usize::MAX
        } else {
            cfg.max_connections_per_ip
        };
        let Some(ip_slot) = per_ip.enter(remote.ip(), max_here) else {
            tracing::warn!(%remote, "connection limit per address reached; closing");
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "connection limit reached; closing");
            shed_tx.send_modify(|v| *v = v.wrapping_add(1));
            continue;
        };
        let short = limit.available_permits() < cfg.max_connections / 8;
        if short {
            shed_tx.send_modify(|v| *v = v.wrapping_add(1));
        }
        // Under pressure a new connection gets little time to send its head.
        let header_timeout = if short {
            cfg.header_timeout.min(PRESSED_HEADER_TIMEOUT)
        } else {
            cfg.header_timeout
        };
        let _ = stream.set_nodelay(true);
        let (app, tls, mut stop, mut shed) =
            (app.clone(), tls.clone(), stop_rx.clone(), shed_rx.clone());
        shed.mark_unchanged();
        let cfg = cfg.clone();
        conns.spawn(async move {
            let _permit = permit;
            let _ip_slot = ip_slot;
            let svc = {
                let app = app.clone();
                service_fn(move |req| handle(app.clone(), remote, req))
            };
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(cfg.max_header_bytes.max(8192))
                .keep_alive(true);
            macro_rules! drive {
                ($io:expr) => {{
                    let conn = builder.serve_connection(TokioIo::new($io), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        r = conn.as_mut() => { if let Err(e) = r { tracing::debug!(%remote, error = %e, "connection ended"); } }
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                        _ = shed.changed() => {
                            // Closes at once when idle, after the answer otherwise.
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                }};
            }
            match tls {
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(header_timeout, acceptor.accept(stream));
                    tokio::select! {
                        r = handshake => match r {
                            Ok(Ok(s)) => drive!(s),
                            Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                        },
                        // A handshake still unfinished when slots run short gives its slot up.
                        _ = shed.changed() => tracing::debug!(%remote, "TLS handshake shed"),
                    }
                }
                None => drive!(stream),
            }
        });
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop_tx.send(true);
    if let Some(m) = mirror {
        if tokio::time::timeout(cfg.shutdown_grace, m).await.is_err() {
            tracing::warn!("the mailbox mirror did not stop in the grace period");
        }
    }
    let grace = cfg.shutdown_grace;
    if tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(
            open = conns.len(),
            "grace period over; closing remaining connections"
        );
        conns.abort_all();
    }
    Ok(())
}

async fn handle(
    app: Arc<App>,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let timeout = app.config.server.request_timeout;
    // hyper's read buffer bounds the head only loosely (it admits one more read past its
    // size); the configured bound is enforced here on what was parsed.
    let head_bytes = head_size(&req);
    let mut resp = if head_bytes > app.config.server.max_header_bytes {
        let mut r = error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header_too_large",
            &format!(
                "the request head is larger than {} bytes",
                app.config.server.max_header_bytes
            ),
        );
        http::close_connection(&mut r);
        r
    } else {
        match tokio::time::timeout(timeout, route(&app, remote.ip(), req)).await {
            Ok(r) => r,
            Err(_) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the request took too long",
            ),
        }
    };
    let status = resp.status();
    let counter = match status.as_u16() {
        200..=399 => &app.metrics.requests_2xx,
        400..=499 => &app.metrics.requests_4xx,
        _ => &app.metrics.requests_5xx,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    resp.headers_mut()
        .insert("server", HeaderValue::from_static("crmgate"));
    tracing::info!(
        target: "crmgate::access",
        %remote, %method, path = %path, status = status.as_u16(),
        micros = start.elapsed().as_micros() as u64
    );
    Ok(resp)
}

/// Bytes of a request's head as sent: request line and header lines.
fn head_size(req: &Request<Incoming>) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    req.headers()
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

async fn route(app: &Arc<App>, ip: IpAddr, req: Request<Incoming>) -> Resp {
    let path = req.uri().path();
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if !app.replica.is_ready() {
                text(StatusCode::SERVICE_UNAVAILABLE, "loading the CRM\n")
            } else if app.warming.load(Ordering::Acquire) {
                text(StatusCode::SERVICE_UNAVAILABLE, "warming up\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        "/metrics" => text(StatusCode::OK, metrics(app)),
        "/hubspot/webhooks" => webhook_routes::hubspot(app, req).await,
        p if p.starts_with("/v1.0/") => graph_routes::handle(app, ip, req).await,
        "/oauth2/v2.0/token" => graph_routes::token(app, ip, req).await,
        "/.well-known/carddav" => carddav_routes::well_known(),
        p if p == "/dav" || p.starts_with("/dav/") => carddav_routes::handle(app, ip, req).await,
        p if p.eq_ignore_ascii_case("/ews/exchange.asmx") => {
            ews_routes::exchange(app, ip, req).await
        }
        p if p.eq_ignore_ascii_case("/ews/services.wsdl") => ews_routes::wsdl(),
        p if p.eq_ignore_ascii_case("/autodiscover/autodiscover.svc") => {
            ews_routes::autodiscover(app, ip, req, true).await
        }
        p if p.eq_ignore_ascii_case("/autodiscover/autodiscover.xml") => {
            ews_routes::autodiscover(app, ip, req, false).await
        }
        p if p == "/admin/v1" || p.starts_with("/admin/v1/") => {
            let principal = match authenticate(app, ip, &req).await {
                Ok(p) => p,
                Err(resp) => return resp,
            };
            if !principal.is_admin() {
                return error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the admin API needs a user whose role is admin",
                );
            }
            crate::admin::handle(app, &principal, req).await
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    }
}

/// The scheme clients reach this server by (for URLs in answers and signed URLs).
pub(crate) fn scheme(app: &App) -> &'static str {
    if app.config.server.tls == crate::config::TlsMode::Off {
        "http"
    } else {
        "https"
    }
}

/// Runs `f` with a session over a read view of the replica (not across an await).
pub(crate) fn with_session<T>(
    app: &App,
    principal: &Principal,
    f: impl FnOnce(&crate::view::Session<'_>) -> T,
) -> Option<T> {
    let engine = app.replica.read().ok()?;
    let session = crate::view::Session::open(
        &app.view_cache,
        &engine,
        &app.codec,
        &app.view,
        &principal.login,
        principal.is_admin(),
    )?;
    Some(f(&session))
}

/// Authenticates a request with Basic credentials, or answers it: 401 with a challenge, after
/// the throttle's delay, or 429 while the source is locked out.
pub async fn authenticate(
    app: &App,
    ip: IpAddr,
    req: &Request<Incoming>,
) -> Result<Principal, Resp> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let challenge = |mut r: Resp| {
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"crmgate\", charset=\"UTF-8\""),
        );
        r
    };
    match app.authenticate(header, ip) {
        Ok(p) => Ok(p),
        Err(AuthFailure::Missing) => Err(challenge(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "sign in with Basic credentials",
        ))),
        Err(AuthFailure::Invalid { delay }) => {
            tokio::time::sleep(delay).await;
            Err(challenge(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "wrong login or password",
            )))
        }
        Err(AuthFailure::Locked { retry_after }) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "locked_out",
                "too many failed logins; try again later",
            );
            let secs = retry_after.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                r.headers_mut().insert(RETRY_AFTER, v);
            }
            Err(r)
        }
    }
}

fn metrics(app: &App) -> String {
    use std::fmt::Write;
    let m = &app.metrics;
    let mut s = String::new();
    let ready = app.replica.is_ready() as u8;
    let (seq, counts) = match app.replica.read() {
        Ok(e) => (e.seq(), e.counts().to_vec()),
        Err(_) => (0, Vec::new()),
    };
    let _ = writeln!(
        s,
        "# TYPE crmgate_replica_ready gauge\ncrmgate_replica_ready {ready}"
    );
    let _ = writeln!(
        s,
        "# TYPE crmgate_replica_seq gauge\ncrmgate_replica_seq {seq}"
    );
    let _ = writeln!(s, "# TYPE crmgate_records gauge");
    for (k, n) in counts {
        let _ = writeln!(s, "crmgate_records{{kind=\"{}\"}} {n}", k.plural());
    }
    let crm_up = app.replica.last_error().is_none() as u8;
    let _ = writeln!(s, "# TYPE crmgate_crm_up gauge\ncrmgate_crm_up {crm_up}");
    let _ = writeln!(s, "# TYPE crmgate_http_responses_total counter");
    for (class, c) in [
        ("2xx", &m.requests_2xx),
        ("4xx", &m.requests_4xx),
        ("5xx", &m.requests_5xx),
    ] {
        let _ = writeln!(
            s,
            "crmgate_http_responses_total{{class=\"{class}\"}} {}",
            c.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        s,
        "# TYPE crmgate_auth_failures_total counter\ncrmgate_auth_failures_total {}",
        app.auth.failures()
    );
    let _ = writeln!(
        s,
        "# TYPE crmgate_auth_lockouts_total counter\ncrmgate_auth_lockouts_total {}",
        app.auth.lockouts()
    );
    let _ = writeln!(
        s,
        "# TYPE crmgate_crm_writes_total counter\ncrmgate_crm_writes_total {}",
        app.writer.writes()
    );
    let _ = writeln!(
        s,
        "# TYPE crmgate_write_replans_total counter\ncrmgate_write_replans_total {}\n\
         # TYPE crmgate_write_replan_streak_max gauge\ncrmgate_write_replan_streak_max {}",
        app.writer.replans(),
        app.writer.longest_replan_streak()
    );
    let _ = writeln!(
        s,
        "# TYPE crmgate_uptime_seconds gauge\ncrmgate_uptime_seconds {}",
        app.started.elapsed().as_secs()
    );
    let _ = writeln!(
        s,
        "# TYPE crmgate_webhooks_total counter\ncrmgate_webhooks_total{{outcome=\"accepted\"}} {}\n\
         crmgate_webhooks_total{{outcome=\"refused\"}} {}",
        m.webhooks_accepted.load(Ordering::Relaxed),
        m.webhooks_refused.load(Ordering::Relaxed)
    );
    s.push_str(&app.crm_metrics());
    if let Some(m) = &app.mirror {
        s.push_str(&m.metrics());
    }
    s
}
