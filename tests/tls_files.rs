//! TLS with configured certificate files (certs/), a client that trusts only the test CA,
//! and the request limits of the listener.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use support::fixture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_configured_certificate_and_bounds_requests() {
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    let cfg = format!(
        "[server]\ntls = {{cert = \"{}\", key = \"{}\"}}\nmax_header_bytes = 8192\n",
        certs.join("localhost.pem").display(),
        certs.join("localhost.key").display()
    );
    let s = support::TestServer::start(&fixture("demo.json"), &cfg).await;
    let ca = std::fs::read(certs.join("ca.pem")).expect("ca");
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("pem"))
        .build()
        .expect("client");
    let r = client
        .get(s.url("/healthz"))
        .send()
        .await
        .expect("TLS with the test CA");
    assert_eq!(r.status(), 200);
    // The self-signed certificate of the data dir is not what is served now.
    let own = std::fs::read(s.dir.path().join("tls/cert.pem"));
    assert!(
        own.is_err(),
        "no self-signed certificate is generated when files are configured"
    );

    // An oversized request head is refused, not buffered.
    let r = client
        .get(s.url("/healthz"))
        .header("x-big", "a".repeat(20_000))
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status(), 431, "oversized head"),
        Err(e) => assert!(
            e.is_request() || e.is_connect() || e.to_string().contains("closed"),
            "{e}"
        ),
    }
    s.stop().await;
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_crmgate"))
        .args([
            "serve",
            "--insecure-http",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--seed")
        .arg(fixture("demo.json"))
        .env("CRMGATE_LOG", "warn")
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = c.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = c.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "never ready");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Plain HTTP on a non-loopback address is refused at start.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_crmgate"))
        .args(["serve", "--insecure-http", "--listen", "0.0.0.0:1"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("loopback"));

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let start = std::time::Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(exit.success(), "graceful stop exits 0, got {exit}");
}
