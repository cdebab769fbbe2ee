//! `serve` on the command line, shared by `lkd serve` and `lkd-run serve`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{parse_device, EngineArgs, PreprocessArgs};
use crate::error::{Result, RuntimeError};
use crate::server::{validate_model_name, BearerToken, Limits, ModelSpec, ServeConfig};
use crate::session::SessionConfig;
use lkd_util::Device;

fn flag(expected: &'static str, found: &str) -> RuntimeError {
    RuntimeError::Flag {
        expected,
        found: found.to_string(),
    }
}

fn parse_named_model(s: &str) -> Result<ModelSpec> {
    let (name, path) = s.split_once('=').ok_or_else(|| flag("NAME=PATH", s))?;
    validate_model_name(name)?;
    if path.is_empty() {
        return Err(flag("a file after `=` in NAME=PATH", s));
    }
    Ok(ModelSpec {
        name: name.to_string(),
        path: PathBuf::from(path),
    })
}

/// Milliseconds, at least 1.
fn parse_ms(s: &str) -> Result<Duration> {
    match s.parse::<u64>() {
        Ok(ms) if ms >= 1 => Ok(Duration::from_millis(ms)),
        _ => Err(flag("a whole number of milliseconds ≥ 1", s)),
    }
}

fn parse_positive(s: &str) -> Result<usize> {
    s.parse::<usize>()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| flag("an integer ≥ 1", s))
}

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// ONNX model to serve, named after its file stem.
    #[arg(value_name = "MODEL", required_unless_present = "named_models")]
    pub model: Option<PathBuf>,
    /// A model served under NAME (`/v2/models/NAME`, `/v1/classify?model=NAME`); repeatable.
    /// The first model given is the default for /v1/classify.
    #[arg(long = "model", value_name = "NAME=PATH", value_parser = parse_named_model)]
    pub named_models: Vec<ModelSpec>,
    /// Listen address HOST:PORT (names such as localhost are resolved). A non-loopback address
    /// needs --auth-token-file or --insecure-no-auth.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// File holding the bearer token clients must send (`Authorization: Bearer <token>`) on every
    /// route but the health checks; at least 16 characters.
    #[arg(long, value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Serve a non-loopback address without authentication (only behind a layer that authenticates).
    #[arg(long, conflicts_with = "auth_token_file")]
    pub insecure_no_auth: bool,
    /// Most images per session run.
    #[arg(long, default_value_t = 8, value_parser = parse_positive)]
    pub max_batch: usize,
    /// How long a batcher waits for more requests after the first.
    #[arg(long, default_value_t = 5)]
    pub max_wait_ms: u64,
    /// Requests that may wait for a model's batcher; more are answered 503.
    #[arg(long, default_value_t = 64, value_parser = parse_positive)]
    pub queue: usize,
    /// Largest accepted request body; larger ones are answered 413.
    #[arg(long, default_value_t = 8 << 20, value_parser = parse_positive)]
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers (from connecting, or from the first byte of
    /// a later request); the connection is closed after it.
    #[arg(long, default_value = "10000", value_parser = parse_ms)]
    pub header_timeout_ms: Duration,
    /// Time a client has to send a request body once the headers are in; 408 after it.
    #[arg(long, default_value = "30000", value_parser = parse_ms)]
    pub body_timeout_ms: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    #[arg(long, default_value = "60000", value_parser = parse_ms)]
    pub idle_timeout_ms: Duration,
    /// Open connections; at the cap a new one replaces the oldest connection with no request
    /// in progress, or gets 503 when all are busy.
    #[arg(long, default_value_t = 1024, value_parser = parse_positive)]
    pub max_connections: usize,
    /// Images decoded at once across all requests (default: the number of cores).
    #[arg(long, value_parser = parse_positive)]
    pub max_decodes: Option<usize>,
    /// After SIGTERM/Ctrl-C, how long requests in progress may take before they are dropped.
    #[arg(long, default_value = "10000", value_parser = parse_ms)]
    pub grace_ms: Duration,
    /// Predictions per /v1/classify response unless the request sets `?top_k=`.
    #[arg(long, default_value_t = 5, value_parser = parse_positive)]
    pub top_k: usize,
    /// Intra-op threads per model (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: Device,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

impl ServeArgs {
    /// The server configuration these flags describe (reads the token file).
    pub fn config(&self) -> Result<ServeConfig> {
        let mut models: Vec<ModelSpec> = self.model.iter().map(ModelSpec::from_path).collect();
        models.extend(self.named_models.iter().cloned());
        let mut cfg = ServeConfig::with_models(models);
        cfg.session = SessionConfig {
            device: self.device,
            intra_threads: self.threads,
            warmup: 2,
            ..SessionConfig::default()
        };
        cfg.engine = self.engine.engine()?;
        cfg.preprocess = self.preprocess.overrides();
        cfg.addr = self.addr.clone();
        cfg.max_batch = self.max_batch;
        cfg.max_wait = Duration::from_millis(self.max_wait_ms);
        cfg.queue = self.queue;
        cfg.default_top_k = self.top_k;
        let defaults = Limits::default();
        cfg.limits = Limits {
            max_body_bytes: self.max_body_bytes,
            header_timeout: self.header_timeout_ms,
            body_timeout: self.body_timeout_ms,
            idle_timeout: self.idle_timeout_ms,
            max_connections: self.max_connections,
            max_decodes: self.max_decodes.unwrap_or(defaults.max_decodes),
            shutdown_grace: self.grace_ms,
        };
        cfg.auth = self
            .auth_token_file
            .as_deref()
            .map(BearerToken::from_file)
            .transpose()?;
        cfg.insecure_no_auth = self.insecure_no_auth;
        Ok(cfg)
    }
}

/// Serves until Ctrl-C or SIGTERM.
pub fn run_serve(args: &ServeArgs) -> Result<()> {
    if args.threads == Some(0) {
        return Err(RuntimeError::Server("--threads must be at least 1".into()));
    }
    crate::server::serve_blocking(args.config()?)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> std::result::Result<ServeArgs, String> {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map(|c| c.serve)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn positional_and_named_models_combine() {
        let a = parse(&[
            "m.onnx",
            "--model",
            "digits=d/g.onnx",
            "--model",
            "rgb=r.onnx",
        ])
        .unwrap();
        let cfg = a.config().unwrap();
        let names: Vec<&str> = cfg.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["m", "digits", "rgb"]);
        assert_eq!(cfg.models[1].path, PathBuf::from("d/g.onnx"));
        assert_eq!(cfg.addr, "127.0.0.1:8080");
        assert_eq!(cfg.limits.header_timeout, Duration::from_secs(10));
        assert!(cfg.auth.is_none() && !cfg.insecure_no_auth);
        let only_named = parse(&["--model", "a=x.onnx", "--grace-ms", "250"])
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(only_named.limits.shutdown_grace, Duration::from_millis(250));
    }

    #[test]
    fn engine_flags_reach_the_config() {
        let cfg = parse(&["m.onnx"]).unwrap().config().unwrap();
        assert_eq!(cfg.engine, crate::Engine::Ort);
        let cfg = parse(&["m.onnx", "--engine", "openvino", "--precision", "bf16"])
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(
            cfg.engine,
            crate::Engine::OpenVino {
                precision: crate::Precision::Bf16
            }
        );
        let e = parse(&["m.onnx", "--precision", "f32"])
            .unwrap()
            .config()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "invalid engine setting: {}",
                crate::cli::PRECISION_NEEDS_OPENVINO
            )
        );
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        assert!(parse(&[]).unwrap_err().contains("required"));
        let e = parse(&["--model", "a/b=x.onnx"]).unwrap_err();
        assert!(e.contains("invalid model name `a/b`"), "{e}");
        let e = parse(&["--model", "x.onnx"]).unwrap_err();
        assert!(e.contains("expected NAME=PATH, found `x.onnx`"), "{e}");
        let e = parse(&["m.onnx", "--header-timeout-ms", "0"]).unwrap_err();
        assert!(e.contains("whole number of milliseconds ≥ 1"), "{e}");
        let e = parse(&["m.onnx", "--max-connections", "0"]).unwrap_err();
        assert!(e.contains("expected an integer ≥ 1, found `0`"), "{e}");
        let e = parse(&["m.onnx", "--auth-token-file", "t", "--insecure-no-auth"]).unwrap_err();
        assert!(e.contains("cannot be used with"), "{e}");
        let missing = parse(&["m.onnx", "--auth-token-file", "/nonexistent/token"]).unwrap();
        let e = missing.config().unwrap_err().to_string();
        assert!(e.contains("cannot read `/nonexistent/token`"), "{e}");
    }
}
