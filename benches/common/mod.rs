//! Load generation shared by the benchmarks: raw hyper HTTP/1.1 clients on keep-alive
//! connections, latency percentiles, and a trivial hyper server as the same-run baseline.
#![allow(dead_code, unreachable_pub, missing_docs)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// A request to send repeatedly.
#[derive(Clone)]
pub struct Call {
    /// Method.
    pub method: &'static str,
    /// Path and query.
    pub path: String,
    /// Authorization header.
    pub auth: String,
    /// Body (empty for GET).
    pub body: String,
    /// Content type of the body.
    pub content_type: &'static str,
}

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub async fn connect(port: u16) -> Sender {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send
}

pub async fn send(s: &mut Sender, c: &Call) -> (u16, String) {
    let req = Request::builder()
        .method(c.method)
        .uri(&c.path)
        .header("host", "127.0.0.1")
        .header("authorization", &c.auth)
        .header("content-type", c.content_type)
        .body(Full::new(Bytes::from(c.body.clone())))
        .expect("request");
    s.ready().await.expect("ready");
    let resp = s.send_request(req).await.expect("send");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// 32 connections sending `call` for `secs` after a one-second warm-up; returns
/// (requests/s, p50 ms, p99 ms).
pub async fn load(port: u16, call: &Call, secs: u64) -> (f64, f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (stop, count, call) = (stop.clone(), count.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = connect(port).await;
            let mut lat = Vec::with_capacity(100_000);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (status, _) = send(&mut s, &call).await;
                assert!(status == 200 || status == 207, "status {status}");
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                count.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c0 = count.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let n = count.load(Ordering::Relaxed) - c0;
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<f64> = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (n as f64 / elapsed, pct(0.5), pct(0.99))
}

/// A trivial hyper server answering every request with `body` (the baseline).
pub async fn trivial(body: Bytes, content_type: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        let mut r = Response::new(Full::new(body));
                        r.headers_mut()
                            .insert("content-type", content_type.parse().expect("h"));
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

pub fn between<'a>(s: &'a str, a: &str, b: &str) -> Option<&'a str> {
    let i = s.find(a)? + a.len();
    let j = s[i..].find(b)? + i;
    Some(&s[i..j])
}
