//! The service configuration: one validated [`Config`], layered with figment.
//!
//! Layers, each overriding the one before:
//! 1. defaults ([`Config::default`]);
//! 2. a TOML file: `--config FILE`, or `config/minidb.toml` when present;
//! 3. `MINIDB_*` environment variables, nested with `__` (`MINIDB_SERVER__LISTEN`);
//! 4. MiniDBGo's variables `FLUSH_SIZE`, `MAX_MEM_MB` (memtable MiB) and `DB_PATH`;
//! 5. command-line flags ([`Overrides`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::engine::{Compression, Options, SyncPolicy};

/// The default configuration file, read when present and no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "config/minidb.toml";

/// A configuration error; the message names the key and the reason.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// HTTP server settings.
    pub server: ServerConfig,
    /// Engine and data directory settings.
    pub storage: StorageConfig,
    /// The memory budget.
    pub memory: MemoryConfig,
    /// Logs, traces and metrics.
    pub telemetry: TelemetryConfig,
    /// Document expiry.
    pub expiry: ExpiryConfig,
    /// The change feed.
    pub changes: ChangesConfig,
    /// API keys.
    pub auth: AuthConfig,
    /// TLS.
    pub tls: TlsConfig,
}

/// `[expiry]`: the sweeper that deletes expired documents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExpiryConfig {
    /// How often the sweeper looks for expired documents: the longest an expired document
    /// still counts in `_collections` (reads never return it).
    pub sweep_interval_ms: u64,
    /// Most documents one sweeper pass deletes before it lets other work run.
    pub sweep_batch: usize,
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        ExpiryConfig {
            sweep_interval_ms: 1000,
            sweep_batch: 1000,
        }
    }
}

/// `[auth]`: API keys; off unless `keys_file` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// The keys file (one `sha256:<hex> role=... [collections=...] [name=...]` per line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_file: Option<PathBuf>,
    /// `/metrics` needs a key too (a read key without collection limit).
    pub protect_metrics: bool,
    /// How often the keys file is checked for changes, in milliseconds.
    pub reload_interval_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            keys_file: None,
            protect_metrics: false,
            reload_interval_ms: 5000,
        }
    }
}

/// `[changes]`: the change feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChangesConfig {
    /// How long deletions (and expiries) stay in the feed; a reader resuming from before
    /// the oldest one kept gets 410.
    pub retention_secs: u64,
    /// The longest `feed=longpoll` waits (`timeout` is capped to it).
    pub max_longpoll_ms: u64,
}

impl Default for ChangesConfig {
    fn default() -> Self {
        ChangesConfig {
            retention_secs: 86_400,
            max_longpoll_ms: 25_000,
        }
    }
}

/// `[tls]`: HTTPS; off unless `cert_file` and `key_file` are set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// A TLS handshake must finish within this many seconds.
    pub handshake_timeout_secs: u64,
    /// How often the certificate and key are checked for changes, in milliseconds.
    pub reload_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            handshake_timeout_secs: 10,
            reload_interval_ms: 5000,
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address to listen on (`host:port`; port 0 picks a free port).
    pub listen: String,
    /// Largest request body, in bytes; larger gets 413.
    pub max_body_bytes: u64,
    /// Largest `_search` response, in bytes (at least one document is always sent).
    pub max_response_bytes: u64,
    /// Most requests in flight; more get 503 with `Retry-After` at once.
    pub max_in_flight: usize,
    /// Whole-request timeout, in seconds.
    pub request_timeout_secs: u64,
    /// Timeout for reading a request's headers, in seconds.
    pub header_timeout_secs: u64,
    /// A request's whole body must arrive within this many seconds, or it gets 408.
    pub body_timeout_secs: u64,
    /// Idle keep-alive connections are closed after this many seconds.
    pub idle_timeout_secs: u64,
    /// On SIGTERM/SIGINT, in-flight requests get at most this many seconds to finish.
    pub shutdown_drain_secs: u64,
    /// Origins allowed by CORS (`"*"` allows any).
    pub cors_origins: Vec<String>,
    /// Most open connections (TLS handshakes included); more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:6866".into(),
            max_body_bytes: 10 << 20,
            max_response_bytes: 16 << 20,
            max_in_flight: 100,
            request_timeout_secs: 30,
            header_timeout_secs: 15,
            body_timeout_secs: 10,
            idle_timeout_secs: 60,
            shutdown_drain_secs: 30,
            cors_origins: vec!["http://localhost:3000".into()],
            max_connections: 1024,
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// Records per memtable before it is frozen and flushed (MiniDBGo's FLUSH_SIZE).
    pub flush_size: usize,
    /// Bytes per memtable, in MiB (MiniDBGo's MAX_MEM_MB).
    pub memtable_mb: usize,
    /// Frozen memtables queued for flush before writes get 503.
    pub max_immutable_memtables: usize,
    /// WAL sync policy: `always`, `none` or `interval:<ms>`.
    pub sync: String,
    /// Block cache size, in MiB.
    pub block_cache_mb: usize,
    /// SSTable block compression: `lz4` or `none`.
    pub compression: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            flush_size: 10_000,
            memtable_mb: 16,
            max_immutable_memtables: 3,
            sync: "always".into(),
            block_cache_mb: 32,
            compression: "lz4".into(),
        }
    }
}

/// `[memory]`: the process memory budget (bytes wins over MiB when both are set).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryConfig {
    /// The budget in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    /// The budget in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_mb: Option<u64>,
    /// The container's memory limit (Kubernetes passes it through the downward API); the
    /// budget is then 80% of it, as for a detected cgroup limit, leaving room for what
    /// lives outside the allocator (binary pages, stacks, allocator metadata).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_limit_bytes: Option<u64>,
}

impl MemoryConfig {
    /// The configured budget in bytes, if any.
    pub fn limit(&self) -> Option<u64> {
        self.limit_bytes
            .or_else(|| self.limit_mb.map(|mb| mb.saturating_mul(1 << 20)))
            .or_else(|| self.container_limit_bytes.map(|b| b / 100 * 80))
    }
}

/// `[telemetry]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// Log level or filter directive (`info`, `minidb=debug,warn`, ...).
    pub log_level: String,
    /// Log format: `json` or `text`.
    pub log_format: String,
    /// OTLP endpoint for traces; none disables export.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of traces and logs.
    pub service_name: String,
    /// One access log line per request (target `minidb::access`, level info).
    pub access_log: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_level: "info".into(),
            log_format: "json".into(),
            otlp_endpoint: None,
            service_name: "minidb".into(),
            access_log: true,
        }
    }
}

/// Command-line overrides (the last layer).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--listen ADDR`.
    pub listen: Option<String>,
    /// `--data-dir DIR`.
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Loads the configuration from every layer and validates it.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::load_with(overrides, std::env::vars())
    }

    /// [`Config::load`] with an explicit environment (tests).
    pub fn load_with(
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match &overrides.config_file {
            Some(file) => {
                if !file.exists() || file.is_dir() {
                    return Err(ConfigError(format!(
                        "--config {}: no such file",
                        file.display()
                    )));
                }
                fig = fig.merge(Toml::file_exact(file));
            }
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                fig = fig.merge(Toml::file_exact(DEFAULT_CONFIG_FILE));
            }
            None => {}
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        // MINIDB_SECTION__KEY=value, parsed like TOML values ("30" is a number).
        let mut nested = Figment::new();
        let mut legacy = Figment::new();
        for (k, v) in &env {
            if let Some(rest) = k.strip_prefix("MINIDB_") {
                let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
                if parts.len() == 2 && parts.iter().all(|p| !p.is_empty()) {
                    let value = parse_env_value(v);
                    nested = nested.merge(Serialized::default(&parts.join("."), value));
                }
            }
            let target = match k.as_str() {
                "FLUSH_SIZE" => "storage.flush_size",
                "MAX_MEM_MB" => "storage.memtable_mb",
                "DB_PATH" => "storage.data_dir",
                _ => continue,
            };
            legacy = legacy.merge(Serialized::default(target, parse_env_value(v)));
        }
        fig = fig.merge(nested).merge(legacy);
        if let Some(listen) = &overrides.listen {
            fig = fig.merge(Serialized::default("server.listen", listen));
        }
        if let Some(dir) = &overrides.data_dir {
            fig = fig.merge(Serialized::default("storage.data_dir", dir));
        }
        let config: Config = fig.extract().map_err(|e| {
            let mut msg = String::new();
            for err in e {
                if !msg.is_empty() {
                    msg.push_str("; ");
                }
                let key = err.path.join(".");
                msg.push_str(&format!("{key}: {}", err.kind));
                if let Some(src) = &err.metadata {
                    msg.push_str(&format!(" (from {})", src.name));
                }
            }
            ConfigError(msg)
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the error names the key and the reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: String| Err(ConfigError(format!("{key}: {why}")));
        let s = &self.server;
        if let Err(e) = s.listen.parse::<SocketAddr>() {
            return fail(
                "server.listen",
                format!("{:?} is not a host:port socket address ({e})", s.listen),
            );
        }
        for (key, v) in [
            ("server.max_body_bytes", s.max_body_bytes),
            ("server.max_response_bytes", s.max_response_bytes),
            ("server.max_in_flight", s.max_in_flight as u64),
            ("server.request_timeout_secs", s.request_timeout_secs),
            ("server.header_timeout_secs", s.header_timeout_secs),
            ("server.body_timeout_secs", s.body_timeout_secs),
            ("server.idle_timeout_secs", s.idle_timeout_secs),
            ("expiry.sweep_interval_ms", self.expiry.sweep_interval_ms),
            ("expiry.sweep_batch", self.expiry.sweep_batch as u64),
            ("changes.retention_secs", self.changes.retention_secs),
            ("changes.max_longpoll_ms", self.changes.max_longpoll_ms),
            ("server.max_connections", s.max_connections as u64),
            (
                "tls.handshake_timeout_secs",
                self.tls.handshake_timeout_secs,
            ),
            ("storage.flush_size", self.storage.flush_size as u64),
            ("storage.memtable_mb", self.storage.memtable_mb as u64),
            (
                "storage.max_immutable_memtables",
                self.storage.max_immutable_memtables as u64,
            ),
        ] {
            if v == 0 {
                return fail(key, "must be at least 1".into());
            }
        }
        for o in &s.cors_origins {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return fail(
                    "server.cors_origins",
                    format!("{o:?} is not \"*\" or an http(s):// origin"),
                );
            }
            // The rule of an HTTP header value (`http::HeaderValue::from_str`).
            if !o.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f)) {
                return fail(
                    "server.cors_origins",
                    format!("{o:?} is not a valid header value"),
                );
            }
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return fail("storage.data_dir", "must not be empty".into());
        }
        if self.storage.memtable_mb > 64 << 10 {
            return fail("storage.memtable_mb", "must be at most 65536".into());
        }
        if self.storage.block_cache_mb > 1 << 20 {
            return fail("storage.block_cache_mb", "must be at most 1048576".into());
        }
        parse_sync(&self.storage.sync).map_err(|e| ConfigError(format!("storage.sync: {e}")))?;
        parse_compression(&self.storage.compression)
            .map_err(|e| ConfigError(format!("storage.compression: {e}")))?;
        if self.memory.limit_bytes == Some(0) || self.memory.limit_mb == Some(0) {
            return fail(
                "memory.limit_bytes/limit_mb",
                "must be positive when set".into(),
            );
        }
        if self
            .memory
            .container_limit_bytes
            .is_some_and(|b| b < 16 << 20)
        {
            return fail(
                "memory.container_limit_bytes",
                "must be at least 16 MiB when set".into(),
            );
        }
        let t = &self.telemetry;
        if !matches!(t.log_format.as_str(), "json" | "text") {
            return fail(
                "telemetry.log_format",
                format!("{:?} is not \"json\" or \"text\"", t.log_format),
            );
        }
        if t.log_level.trim().is_empty() {
            return fail("telemetry.log_level", "must not be empty".into());
        }
        if t.service_name.trim().is_empty() {
            return fail("telemetry.service_name", "must not be empty".into());
        }
        if let Some(ep) = &t.otlp_endpoint {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return fail(
                    "telemetry.otlp_endpoint",
                    format!(
                        "{:?} is not an http(s):// URL",
                        crate::redact::redact_url(ep)
                    ),
                );
            }
        }
        for (key, ms) in [
            ("auth.reload_interval_ms", self.auth.reload_interval_ms),
            ("tls.reload_interval_ms", self.tls.reload_interval_ms),
        ] {
            if !(100..=3_600_000).contains(&ms) {
                return fail(key, "must be between 100 and 3600000".into());
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return fail(
                "tls.cert_file/tls.key_file",
                "give both (TLS on) or neither (plain HTTP)".into(),
            );
        }
        self.engine_options()
            .validate()
            .map_err(|e| ConfigError(format!("storage: {e}")))?;
        Ok(())
    }

    /// The listen address (validated).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .listen
            .parse()
            .map_err(|e| ConfigError(format!("server.listen: {e}")))
    }

    /// Engine options from `[storage]` (no memory budget or listener attached).
    pub fn engine_options(&self) -> Options {
        let st = &self.storage;
        Options {
            flush_size: st.flush_size,
            memtable_bytes: st.memtable_mb.saturating_mul(1 << 20),
            max_immutable_memtables: st.max_immutable_memtables,
            sync: parse_sync(&st.sync).unwrap_or(SyncPolicy::Always),
            block_cache_bytes: st.block_cache_mb.saturating_mul(1 << 20),
            compression: parse_compression(&st.compression).unwrap_or(Compression::Lz4),
            ..Options::default()
        }
    }

    /// Durations of `[server]`.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.server.request_timeout_secs)
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Parses an environment value like a TOML value: numbers, booleans, arrays; else a string.
fn parse_env_value(raw: &str) -> toml::Value {
    let trimmed = raw.trim();
    if let Ok(v) = format!("v = {trimmed}").parse::<toml::Table>() {
        if let Some(v) = v.get("v") {
            return v.clone();
        }
    }
    if trimmed.starts_with('[') && trimmed.ends_with(']') {
        // [a, b] without quotes: a list of strings.
        let items = trimmed[1..trimmed.len() - 1]
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .filter(|s| !s.is_empty())
            .map(toml::Value::String)
            .collect();
        return toml::Value::Array(items);
    }
    toml::Value::String(raw.to_string())
}

/// Parses `always`, `none` or `interval:<ms>`.
pub fn parse_sync(s: &str) -> Result<SyncPolicy, String> {
    match s {
        "always" => Ok(SyncPolicy::Always),
        "none" => Ok(SyncPolicy::None),
        _ => match s.strip_prefix("interval:").map(str::parse::<u64>) {
            Some(Ok(ms)) if ms > 0 => Ok(SyncPolicy::Interval(Duration::from_millis(ms))),
            _ => Err(format!(
                "{s:?} is not \"always\", \"none\" or \"interval:<ms>\" with ms > 0"
            )),
        },
    }
}

/// Parses `lz4` or `none`.
pub fn parse_compression(s: &str) -> Result<Compression, String> {
    match s {
        "lz4" => Ok(Compression::Lz4),
        "none" => Ok(Compression::None),
        _ => Err(format!("{s:?} is not \"lz4\" or \"none\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn no_file() -> Overrides {
        Overrides {
            config_file: Some(PathBuf::from("/dev/null")),
            ..Overrides::default()
        }
    }

    #[test]
    fn defaults() {
        let c = Config::load_with(&no_file(), env(&[])).map_err(|e| e.to_string());
        assert_eq!(c, Ok(Config::default()));
        let c = Config::default();
        assert_eq!(c.server.listen, "127.0.0.1:6866");
        assert_eq!(c.storage.data_dir, PathBuf::from("./data"));
        assert_eq!(c.server.max_body_bytes, 10 << 20);
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"0.0.0.0:1\"\nmax_in_flight = 7\n[storage]\nflush_size = 5\nmemtable_mb = 2\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let ov = Overrides {
            config_file: Some(file.clone()),
            ..Overrides::default()
        };
        let c = Config::load_with(&ov, env(&[])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.server.listen.as_str(), c.server.max_in_flight),
            ("0.0.0.0:1", 7)
        );
        let e = env(&[
            ("MINIDB_SERVER__LISTEN", "127.0.0.1:2"),
            ("MINIDB_STORAGE__FLUSH_SIZE", "6"),
            (
                "MINIDB_SERVER__CORS_ORIGINS",
                "[\"http://a\", \"http://b\"]",
            ),
            ("FLUSH_SIZE", "9"),
            ("MAX_MEM_MB", "3"),
            ("DB_PATH", "/tmp/x"),
            ("MINIDB_PORT", "tcp://10.0.0.1:6866"),
        ]);
        let c = Config::load_with(&ov, e.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.server.listen, "127.0.0.1:2");
        assert_eq!(c.storage.flush_size, 9, "legacy FLUSH_SIZE beats MINIDB_*");
        assert_eq!(c.storage.memtable_mb, 3);
        assert_eq!(c.storage.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.server.cors_origins, vec!["http://a", "http://b"]);
        let ov2 = Overrides {
            listen: Some("127.0.0.1:3".into()),
            data_dir: Some("/tmp/y".into()),
            ..ov
        };
        let c = Config::load_with(&ov2, e).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.server.listen, "127.0.0.1:3");
        assert_eq!(c.storage.data_dir, PathBuf::from("/tmp/y"));
    }

    #[test]
    fn errors_name_the_key() {
        let err = |pairs: &[(&str, &str)]| {
            Config::load_with(&no_file(), env(pairs))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(&[("MINIDB_SERVER__LISTEN", "nope")]).contains("server.listen"));
        assert!(err(&[("FLUSH_SIZE", "abc")]).contains("flush_size"));
        assert!(err(&[("FLUSH_SIZE", "0")]).contains("storage.flush_size"));
        assert!(err(&[("MINIDB_STORAGE__SYNC", "sometimes")]).contains("storage.sync"));
        assert!(err(&[("MINIDB_STORAGE__COMPRESSION", "zstd")]).contains("storage.compression"));
        assert!(err(&[("MINIDB_TELEMETRY__LOG_FORMAT", "xml")]).contains("log_format"));
        assert!(err(&[("MINIDB_SERVER__MAX_IN_FLIGHT", "-1")]).contains("max_in_flight"));
        let e = err(&[(
            "MINIDB_TELEMETRY__OTLP_ENDPOINT",
            "ftp://user:secret@collector:21/?token=abc",
        )]);
        assert!(e.contains("telemetry.otlp_endpoint"), "{e}");
        assert!(!e.contains("secret") && !e.contains("abc"), "{e}");
        let e = err(&[("MINIDB_TLS__CERT_FILE", "/c.pem")]);
        assert!(e.contains("tls.cert_file/tls.key_file"), "{e}");
        let e = err(&[("MINIDB_AUTH__RELOAD_INTERVAL_MS", "5")]);
        assert!(e.contains("auth.reload_interval_ms"), "{e}");
        let e = err(&[("MINIDB_SERVER__MAX_CONNECTIONS", "0")]);
        assert!(e.contains("server.max_connections"), "{e}");
        let e = err(&[("MINIDB_TELEMETRY__ACCESS_LOG", "sometimes")]);
        assert!(e.contains("access_log"), "{e}");
        assert!(Config::load_with(
            &Overrides {
                config_file: Some("/nonexistent.toml".into()),
                ..Overrides::default()
            },
            env(&[])
        )
        .is_err());
    }

    #[test]
    fn sync_and_compression() {
        assert_eq!(parse_sync("always"), Ok(SyncPolicy::Always));
        assert_eq!(
            parse_sync("interval:50"),
            Ok(SyncPolicy::Interval(Duration::from_millis(50)))
        );
        assert!(parse_sync("interval:0").is_err());
        assert!(parse_compression("gzip").is_err());
    }

    #[test]
    fn printed_config_parses_back() {
        let text = Config::default().to_toml();
        let back: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, Config::default());
    }

    #[test]
    fn shipped_file_is_valid_and_complete() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_FILE);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        // Every key appears (commented) in the shipped file.
        let rendered = Config {
            memory: MemoryConfig {
                limit_bytes: Some(1),
                limit_mb: Some(1),
                container_limit_bytes: Some(1 << 30),
            },
            telemetry: TelemetryConfig {
                otlp_endpoint: Some("http://x".into()),
                ..TelemetryConfig::default()
            },
            auth: AuthConfig {
                keys_file: Some("/k".into()),
                ..AuthConfig::default()
            },
            tls: TlsConfig {
                cert_file: Some("/c".into()),
                key_file: Some("/k".into()),
                ..TlsConfig::default()
            },
            ..Config::default()
        }
        .to_toml();
        for line in rendered.lines() {
            if let Some((key, _)) = line.split_once(" = ") {
                assert!(text.contains(&format!("# {key} = ")), "{key} undocumented");
            }
        }
        let ov = Overrides {
            config_file: Some(path),
            ..Overrides::default()
        };
        assert!(Config::load_with(&ov, env(&[])).is_ok());
    }

    #[test]
    fn container_limit_gives_an_80_percent_budget_unless_a_limit_is_set() {
        let mut m = MemoryConfig {
            container_limit_bytes: Some(500 << 20),
            ..MemoryConfig::default()
        };
        assert_eq!(m.limit(), Some(400 << 20));
        m.limit_mb = Some(300);
        assert_eq!(m.limit(), Some(300 << 20));
    }
}
