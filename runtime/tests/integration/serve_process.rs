//! `lkd-run serve` as a process, as an edge device runs it: the same flags as `lkd serve`, a
//! refusal to expose itself without a token, and SIGTERM honoured within the grace period even
//! with half-sent requests open.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::model;
use crate::serve_util::{get, read_until_closed};

fn lkd_run() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lkd-run"));
    c.arg("serve");
    c
}

struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

/// Starts `lkd-run serve ARGS --addr 127.0.0.1:0` and reads its address from the start-up line.
fn spawn(args: &[&str]) -> Server {
    spawn_at(args, "127.0.0.1:0")
}

fn spawn_at(args: &[&str], addr: &str) -> Server {
    let mut child = lkd_run()
        .args(args)
        .args(["--addr", addr, "--threads", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("lkd-run serve exited before serving:\n{log}"))
            .unwrap();
        log.push_str(&line);
        log.push('\n');
        if let Some(rest) = line.split(" on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let log = Arc::new(Mutex::new(log));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    Server { child, addr, log }
}

#[test]
fn sigterm_with_half_sent_requests_ends_within_the_grace_period() {
    let digits = format!("digits={}", model("gray28").display());
    let mut server = spawn(&[
        "--model",
        &digits,
        "--grace-ms",
        "2000",
        "--header-timeout-ms",
        "60000",
        "--body-timeout-ms",
        "60000",
    ]);
    assert_eq!(get(server.addr, "/v2/models/digits/ready").status, 200);
    let mut head = TcpStream::connect(server.addr).unwrap();
    head.write_all(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut body = TcpStream::connect(server.addr).unwrap();
    body.write_all(
        b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 9999\r\n\r\n{\"in",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let start = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = server.child.kill();
            panic!("lkd-run serve still running 10 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    eprintln!(
        "lkd-run serve exited {took:?} after SIGTERM with two half-sent requests open (grace 2 s)"
    );
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(read_until_closed(&mut head, Duration::from_secs(1))
        .1
        .is_some());
    assert!(read_until_closed(&mut body, Duration::from_secs(1))
        .1
        .is_some());
    std::thread::sleep(Duration::from_millis(50));
    assert!(server.log.lock().unwrap().contains("server stopped"));
}

#[test]
fn a_public_address_without_a_token_is_refused() {
    let out = lkd_run()
        .arg(model("gray28"))
        .args(["--addr", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`0.0.0.0:0` (0.0.0.0:0) is not a loopback address")
            && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
}

#[test]
fn a_host_name_address_is_resolved() {
    let m = model("gray28");
    let mut server = spawn_at(&[m.to_str().unwrap()], "localhost:0");
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    assert_eq!(get(server.addr, "/v2/health/ready").status, 200);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
