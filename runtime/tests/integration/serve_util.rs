//! A live server on loopback for the serving tests, and a raw HTTP/1.1 client that can also
//! misbehave (half-send, hold connections).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use lkd_runtime::{bind, ServeConfig, SessionConfig};
use tokio::sync::oneshot;

use crate::common::model;

pub struct Running {
    rt: tokio::runtime::Runtime,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<lkd_runtime::Result<()>>>,
}

impl Running {
    pub fn start(mut cfg: ServeConfig) -> Self {
        if cfg.addr == "127.0.0.1:8080" {
            cfg.addr = "127.0.0.1:0".into();
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(bind(cfg)).unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let task = rt.spawn(server.run(async {
            let _ = rx.await;
        }));
        Self {
            rt,
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Signals shutdown and waits (bounded) for the server to stop; returns how long it took.
    pub fn stop(&mut self) -> Duration {
        let start = Instant::now();
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        let done = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(20), task).await });
        done.expect("server did not stop within 20 s")
            .unwrap()
            .unwrap();
        start.elapsed()
    }
}

/// A server config for fixture model `name`, one intra-op thread.
pub fn config(name: &str) -> ServeConfig {
    let mut cfg = ServeConfig::new(model(name));
    cfg.session = SessionConfig {
        intra_threads: Some(1),
        warmup: 1,
        ..SessionConfig::default()
    };
    cfg
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The message of an error reply, checking it has the one error shape `{"error": "..."}`.
    pub fn error(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{}",
            self.text()
        );
        let v = self.json();
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("error body is not an object: {v}"));
        assert_eq!(obj.len(), 1, "error body has extra fields: {v}");
        obj["error"]
            .as_str()
            .unwrap_or_else(|| panic!("`error` is not a string: {v}"))
            .to_string()
    }
}

/// Parses one response from `raw` (the bytes read until the server closed).
pub fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed response: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    } else if let Some(n) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
    {
        body.truncate(n);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&s[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&s[eol + 2..eol + 2 + n]);
        s = &s[eol + 2 + n + 2..];
    }
    out
}

/// One request on a fresh connection (`Connection: close`), with extra headers.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_reply(&raw)
}

pub fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"")
}

/// Reads until the server closes the connection or `limit` passes; returns what arrived and when
/// the connection ended (None: still open at `limit`).
pub fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return (raw, None);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (raw, Some(start.elapsed())),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (raw, None)
            }
            // A reset is the server closing too.
            Err(_) => return (raw, Some(start.elapsed())),
        }
    }
}
